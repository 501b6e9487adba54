"""`golf run specs/smoke.yaml` end to end with the bundled trainer (real torchrun, real training on CPU),
scaled down to a few steps on a small build of the sample data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf_cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (REPO / "golf" / "trainer" / "__main__.py").exists(),
                       reason="the bundled trainer (golf/trainer/__main__.py) is not written yet"),
]

ITERATIONS = 8


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory):
    """A small sample build (a few dozen stdlib files): enough tokens for a few steps, quick to evaluate."""
    from golf.data.sample import build_sample

    return build_sample(tmp_path_factory.mktemp("small_sample"), max_files=60)


def test_smoke_spec_runs_and_records_real_metrics(workdir: Path, db: Path, small_sample) -> None:
    result = runner.invoke(app, [
        "run", str(REPO / "specs" / "smoke.yaml"), "--db", str(db), "--data", str(small_sample.data_path),
        "--set", f"ITERATIONS={ITERATIONS}", "--set", "VAL_LOSS_EVERY=4", "--set", "TRAIN_LOG_EVERY=1",
        "--set", "WARMDOWN_ITERS=2", "--set", "TRAIN_BATCH_TOKENS=4096", "--set", "VAL_BATCH_SIZE=8192",
    ])
    assert result.exit_code == 0, result.output[-3000:]

    listed = json.loads(runner.invoke(app, ["ls", "--format", "json", "--db", str(db)]).stdout)
    assert [r["name"] for r in listed] == ["smoke-s1337"]
    shown = runner.invoke(app, ["show", "smoke-s1337", "--format", "json", "--db", str(db)])
    data = json.loads(shown.stdout)
    assert data["status"] == "completed" and data["exit_code"] == 0
    assert data["trainer"] == "bundled"
    for key in ("final_bpb", "post_quant_bpb", "pre_quant_bpb", "step_avg_ms"):
        assert isinstance(data[key], float) and data[key] > 0, key
    assert 0.5 < data["final_bpb"] < 10
    assert data["steps"] == ITERATIONS
    assert data["total_bytes"] == data["model_bytes"] + data["code_bytes"]
    artifact = Path(data["artifact_path"])
    assert artifact.parent == Path(data["run_dir"])
    assert artifact.stat().st_size == data["model_bytes"]  # the logged size is the file golf found
    curve = {row["step"]: row for row in data["curve"]}
    assert set(range(1, ITERATIONS + 1)) <= set(curve)
    assert all(curve[s]["train_loss"] is not None for s in range(1, ITERATIONS + 1))
    assert curve[ITERATIONS]["val_bpb"] is not None and curve[4]["val_bpb"] is not None
    # the log on disk is what was parsed
    log = Path(data["log_path"]).read_text()
    assert f"val_bpb:{data['final_bpb']:.8f}" in log
    assert "\nattention:sdpa requested:auto " in log  # no GPU: auto falls back to SDPA, and the log says so
    assert data["config"]["NUM_LAYERS"] == "2" and data["config"]["ITERATIONS"] == str(ITERATIONS)
