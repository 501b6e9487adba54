"""`golf ablate` (real planning, a stand-in for the launcher that counts launches) and ablation rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from golf.analysis.ablation import change_text, parse_labels
from golf.errors import GolfError
from golf.launch.ablate import parse_vary
from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()


def bpb_of(knobs: dict[str, str], seed: int) -> float:
    """The stand-in trainer's score: XSA helps 0.001 per layer, EMA 0.002; seeds add ±0.0002 of noise."""
    noise = {1: 0.0001, 2: -0.0002, 3: 0.0001}.get(seed, 0.0)
    return 1.2000 - 0.001 * int(knobs["XSA_LAST_N"]) - 0.002 * (knobs["EMA_ENABLED"] == "1") + noise


class FakeLauncher:
    """Stands in for golf.launch.runner.execute: records each launch and writes the finished run's row."""

    def __init__(self) -> None:
        self.launches: list[tuple[str, int]] = []
        self.fail: set[tuple[str, int]] = set()

    def __call__(self, plan: Any, store: Store, live: bool = True, command: str | None = None) -> Run:
        self.launches.append((plan.spec.name, plan.seed))
        bpb = bpb_of(plan.knobs, plan.seed)
        failed = (plan.spec.name, plan.seed) in self.fail
        return store.create_run(Run(
            id=plan.run_id, name=plan.name, spec_name=plan.spec.name, spec=plan.spec.to_dict(),
            config=dict(plan.knobs), config_hash=plan.config_hash, code_hash=plan.code_hash,
            group_hash=plan.group_hash, seed=plan.seed, status="failed" if failed else "completed",
            final_bpb=None if failed else bpb, final_loss=None if failed else bpb * 1.69, final_stage="sliding",
            sliding_bpb=None if failed else bpb, post_quant_bpb=None if failed else bpb + 0.02,
            total_bytes=15_000_000 + 1000 * int(plan.knobs["XSA_LAST_N"]),
            step_avg_ms=80.0 + int(plan.knobs["XSA_LAST_N"]),
        ))


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> FakeLauncher:
    import golf.launch.runner

    fake = FakeLauncher()
    monkeypatch.setattr(golf.launch.runner, "execute", fake)
    return fake


@pytest.fixture
def spec(workdir: Path, tiny_data: Path) -> Path:
    path = workdir / "base.yaml"
    path.write_text(f"name: base\nseeds: [1, 2, 3]\ndata: {{path: {tiny_data}}}\nenv: {{NUM_LAYERS: 11}}\n"
                    "labels: {'XSA_LAST_N=4': 'XSA on the last 4 layers'}\n", encoding="utf-8")
    return path


def ablate(spec: Path, *args: str) -> Any:
    return runner.invoke(app, ["ablate", str(spec), "--db", "runs.db", *args])


def test_ablate_runs_missing_cells_once_and_then_reuses_them(spec: Path, launcher: FakeLauncher) -> None:
    args = ["--vary", "XSA_LAST_N=4,11", "--label", "XSA_LAST_N=11=XSA on all 11 layers", "--format", "json"]
    first = ablate(spec, *args)
    assert first.exit_code == 0, first.output
    assert sorted(launcher.launches) == sorted((name, seed) for name in ("base", "base+XSA_LAST_N=4",
                                                                         "base+XSA_LAST_N=11") for seed in (1, 2, 3))
    rows = json.loads(first.stdout)
    assert [r["change"] for r in rows] == ["Base: base", "XSA on the last 4 layers (XSA_LAST_N=4)",
                                           "XSA on all 11 layers (XSA_LAST_N=11)"]
    # XSA on 11 layers: −0.011 bpb against XSA off; the per-seed noise cancels in the mean of the same seeds
    assert rows[2]["delta_bpb"] == pytest.approx(-0.011)
    assert rows[1]["delta_bpb"] == pytest.approx(-0.004)
    assert rows[2]["delta_bytes"] == 11_000 and rows[2]["delta_step_avg_ms"] == pytest.approx(11.0)
    assert rows[2]["n"] == 3 and rows[2]["p_value"] < 0.001

    launcher.launches.clear()
    second = ablate(spec, *args)
    assert second.exit_code == 0, second.output
    assert launcher.launches == []  # everything was already in the store
    assert json.loads(second.stdout) == rows
    assert "9 reused, 0 launched" in second.stderr

    # the same table from the store: variants are named base+KEY=VALUE; labels come from the runs' spec
    table = runner.invoke(app, ["ablation-table", "base", "base+XSA_LAST_N=4", "base+XSA_LAST_N=11",
                                "--db", "runs.db", "--format", "json"])
    assert table.exit_code == 0, table.output
    from_store = json.loads(table.stdout)
    assert [r["change"] for r in from_store] == ["Base: base", "XSA on the last 4 layers (XSA_LAST_N=4)",
                                                 "XSA_LAST_N 0→11"]
    assert [r["delta_bpb"] for r in from_store] == [r["delta_bpb"] for r in rows]


def test_ablate_reruns_failed_cells(spec: Path, launcher: FakeLauncher) -> None:
    launcher.fail = {("base+XSA_LAST_N=11", 2)}
    first = ablate(spec, "--vary", "XSA_LAST_N=11", "--seeds", "1,2")
    assert first.exit_code == 1  # a cell failed: the table is printed, the exit code says so
    assert "1 failed" in first.stderr
    assert len(launcher.launches) == 4
    launcher.launches.clear()
    launcher.fail = set()
    second = ablate(spec, "--vary", "XSA_LAST_N=11", "--seeds", "1,2", "--format", "json")
    assert second.exit_code == 0, second.output
    assert launcher.launches == [("base+XSA_LAST_N=11", 2)]  # only the failed cell runs again
    assert json.loads(second.stdout)[1]["n"] == 2


def test_ablate_dry_run_launches_nothing(spec: Path, launcher: FakeLauncher) -> None:
    result = ablate(spec, "--vary", "XSA_LAST_N=11", "--dry-run", "--format", "json")
    assert result.exit_code == 0, result.output
    assert launcher.launches == []
    plan = json.loads(result.stdout)
    assert len(plan) == 6 and {p["action"] for p in plan} == {"launch"}


def test_ablate_cumulative_in_the_records_style(spec: Path, launcher: FakeLauncher) -> None:
    result = ablate(spec, "--vary", "XSA_LAST_N=11", "--vary", "EMA_ENABLED=1", "--cumulative", "--format", "md")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| Change | Pre-TTT bpb | Post-TTT bpb | Delta |")
    assert lines[2].startswith("| Base: base | 1.2000 | 1.2000 |")
    assert lines[3].startswith("| + XSA_LAST_N 0→11 | 1.1890 | 1.1890 | \u22120.0110")
    assert lines[4].startswith("| + EMA_ENABLED 0→1 | 1.1870 | 1.1870 | \u22120.0020")  # against the row above
    # the EMA cell ran with XSA already on
    assert ("base+XSA_LAST_N=11+EMA_ENABLED=1", 1) in launcher.launches


def test_ablate_validates_everything_before_launching(spec: Path, launcher: FakeLauncher) -> None:
    bad = ablate(spec, "--vary", "XSA_LAST_N=4,99")
    assert bad.exit_code == 2 and "XSA_LAST_N" in bad.stderr
    typo = ablate(spec, "--vary", "XSA_LAST=4")
    assert typo.exit_code == 2 and "XSA_LAST_N" in typo.stderr
    assert launcher.launches == []


def test_parse_vary_and_labels() -> None:
    assert parse_vary(["XSA_LAST_N=4,11"]) == [("XSA_LAST_N", ["4", "11"])]
    assert parse_vary(["VE_LAYERS=9,10"]) == [("VE_LAYERS", ["9,10"])]  # a list knob: one value
    assert parse_vary(["RECUR_LAYERS=3,4;4,5"]) == [("RECUR_LAYERS", ["3,4", "4,5"])]
    assert parse_labels(["XSA_LAST_N=11=XSA on all 11 layers"]) == {"XSA_LAST_N=11": "XSA on all 11 layers"}
    for bad in (["XSA_LAST_N"], ["xsa=1"], ["XSA_LAST_N=4,"]):
        with pytest.raises(GolfError):
            parse_vary(bad)
    with pytest.raises(GolfError):
        parse_labels(["XSA_LAST_N=11"])
    assert change_text("XSA_LAST_N", "4", "11") == "XSA_LAST_N 4→11"
    assert change_text("XSA_LAST_N", "4", "11", {"XSA_LAST_N=11": "XSA-all"}) == "XSA-all (XSA_LAST_N=11)"
