"""`golf eval RUN`: a recorded CPU run's artifact scored again (real torchrun, real trainer, no training)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from golf_cli.main import app

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

TRAIN = ["--set", "ITERATIONS=4", "VAL_LOSS_EVERY=0", "TRAIN_LOG_EVERY=2", "WARMDOWN_ITERS=2",
         "TRAIN_BATCH_TOKENS=4096", "VAL_BATCH_SIZE=8192", "EVAL_STRIDE=128", "EVAL_BATCH_SEQS=8", "TTT_ENABLED=1",
         "TTT_CHUNK_TOKENS=4096", "TTT_BATCH_SEQS=4", "TTT_EPOCHS=1"]


TRAIN_KNOBS = {item.split("=")[0] for item in TRAIN if "=" in item}


def _show(db: Path, ref: str) -> dict[str, Any]:
    out = runner.invoke(app, ["show", ref, "--format", "json", "--db", str(db)])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    import os

    from golf.data.sample import build_sample

    work = tmp_path_factory.mktemp("eval_cli")
    sample = build_sample(work / "sample", max_files=20)
    db = work / "runs.db"
    old = os.getcwd()
    os.chdir(work)
    try:
        result = runner.invoke(app, ["run", str(REPO / "specs" / "smoke.yaml"), "--db", str(db), "--data",
                                     str(sample.data_path), *TRAIN])
        assert result.exit_code == 0, result.output[-3000:]
        yield work, _show(db, "smoke-s1337")
    finally:
        os.chdir(old)


def _eval(work: Path, *args: str) -> Any:
    import os

    old = os.getcwd()
    os.chdir(work)
    try:
        return runner.invoke(app, ["eval", "smoke-s1337", "--db", str(work / "runs.db"), *args])
    finally:
        os.chdir(old)


def test_same_knobs_reproduce_the_parents_scores_and_ttt_lr_changes_only_post_ttt(trained: Any) -> None:
    work, parent = trained
    db = work / "runs.db"
    assert parent["status"] == "completed" and parent["post_ttt_bpb"] is not None
    same = _eval(work, "--name", "same")
    assert same.exit_code == 0, same.output[-3000:]
    child = _show(db, "same")
    assert child["status"] == "completed" and child["seed"] == parent["seed"]
    for key in ("total_bytes", "model_bytes", "bytes_breakdown"):
        assert child[key] == parent[key], key
    # the scores as the logs print them (8 decimals), equal up to one unit of the last: a CI run once saw sliding_bpb
    # 4.06617494 against 4.06617493 (CPU float math in another process, rounded at a digit's edge); TTT_LR below
    # moves post_ttt by far more
    for key in ("post_quant_bpb", "post_quant_loss", "sliding_bpb", "sliding_loss", "post_ttt_bpb", "post_ttt_loss"):
        assert child[key] == pytest.approx(parent[key], rel=0, abs=1.5e-8), key
    assert child["pre_quant_bpb"] is None and child["steps"] is None  # no training, no float weights
    assert child["config"]["EVAL_ONLY_PATH"] == parent["artifact_path"]
    if "parent_id" in child:
        assert child["parent_id"] == parent["id"]
    assert child["group_hash"] != parent["group_hash"]  # a re-score is not another seed of the training group

    lr = _eval(work, "--set", "TTT_LR=0.05", "--name", "lr")
    assert lr.exit_code == 0, lr.output[-3000:]
    other = _show(db, "lr")
    for key in ("post_quant_bpb", "sliding_bpb"):
        assert other[key] == pytest.approx(parent[key], rel=0, abs=1.5e-8), key
    assert abs(other["post_ttt_bpb"] - parent["post_ttt_bpb"]) > 1e-6
    assert other["spec_name"] == "smoke+eval+TTT_LR=0.05" and other["config"]["TTT_LR"] == "0.05"


def test_refusals_are_one_line_exit_2(trained: Any, tmp_path: Path) -> None:
    work, parent = trained
    bad = _eval(work, "--set", "MATRIX_BITS=6")
    assert bad.exit_code == 2 and "MATRIX_BITS changes the artifact or the training" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    pre = _eval(work, "--set", "TTT_PRE_QUANT=1")
    assert pre.exit_code == 2 and "TTT_PRE_QUANT" in pre.output

    artifact = Path(parent["artifact_path"])
    moved = artifact.with_name(artifact.name + ".away")
    artifact.rename(moved)
    try:
        gone = _eval(work)
        assert gone.exit_code == 2 and "is not on disk any more" in gone.output
    finally:
        moved.rename(artifact)

    # an artifact whose tensors no longer fit the model (the code changed the format): refused
    from golf.store import Store

    store = Store(work / "runs.db")
    row = store.resolve_run("smoke-s1337")
    config = dict(row.config)
    store.update_run(row.id, config={**config, "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1"})
    try:
        changed = _eval(work)
        assert changed.exit_code == 2 and "the code changed the artifact format or the model" in changed.output
    finally:
        store.update_run(row.id, config=config)
    names = {r["name"] for r in json.loads(runner.invoke(app, ["ls", "--format", "json", "--db",
                                                               str(work / "runs.db")]).stdout)}
    assert "smoke-s1337-eval" not in names  # nothing was recorded for a refusal


def test_ablate_eval_only_sweeps_ttt_over_the_base_runs(trained: Any) -> None:
    import os

    import yaml

    work, parent = trained
    spec = yaml.safe_load((REPO / "specs" / "smoke.yaml").read_text())
    spec["env"].update({k: v for k, v in parent["config"].items() if k in spec["env"] or k in TRAIN_KNOBS})
    spec["env"].update({"DATA_PATH": parent["config"]["DATA_PATH"],
                        "TOKENIZER_PATH": parent["config"]["TOKENIZER_PATH"]})
    path = work / "base.yaml"
    path.write_text(yaml.safe_dump(spec))
    old = os.getcwd()
    os.chdir(work)
    try:
        out = runner.invoke(app, ["ablate", str(path), "--eval-only", "--vary", "TTT_LR=0.03", "--db",
                                  str(work / "runs.db"), "--format", "json"])
    finally:
        os.chdir(old)
    assert out.exit_code == 0, out.output[-3000:]
    assert f"reusing run {parent['id']}" in out.output  # the base is the trained run: nothing retrained
    child = _show(work / "runs.db", "smoke-s1337-eval")
    assert child["parent_id"] == parent["id"] and child["config"]["TTT_LR"] == "0.03"
    assert child["post_quant_bpb"] == parent["post_quant_bpb"] and child["post_ttt_bpb"] != parent["post_ttt_bpb"]
    bad = runner.invoke(app, ["ablate", str(path), "--eval-only", "--vary", "MLP_MULT=3", "--db",
                              str(work / "runs.db")])
    assert bad.exit_code == 2 and "MLP_MULT changes the artifact or the training" in bad.output


def test_ls_names_the_parent_of_a_rescore(trained: Any) -> None:
    work, parent = trained
    out = runner.invoke(app, ["ls", "--db", str(work / "runs.db"), "--format", "csv"])
    assert out.exit_code == 0, out.output
    header, *rows = out.stdout.strip().splitlines()
    col = header.split(",").index("eval of")
    by_name = {r.split(",")[1]: r.split(",")[col] for r in rows}
    assert by_name["same"] == parent["id"] and by_name["smoke-s1337"] == ""


def test_a_rescore_may_change_the_doc_attention_kernel_only() -> None:
    """DOC_ATTENTION_KERNEL picks kernels (the same scores): a re-score may change it, not DOC_ATTENTION itself."""
    from golf.errors import GolfError
    from golf.launch.evalrun import check_eval_sets

    assert check_eval_sets({"DOC_ATTENTION_KERNEL": "sdpa"}) == {"DOC_ATTENTION_KERNEL": "sdpa"}
    with pytest.raises(GolfError, match="DOC_ATTENTION: DOC_ATTENTION changes the artifact"):
        check_eval_sets({"DOC_ATTENTION": "0"})
