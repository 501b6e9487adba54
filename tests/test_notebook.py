"""golf.runs() / golf.steps(): the store as DataFrames; `import golf` imports no pandas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import golf
from golf.errors import GolfError
from golf.store import Run, Store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    db = tmp_path / "runs.db"
    store = Store(db)
    for run_id, seed, bpb, layers in (("a1", 1, 1.25, "9"), ("a2", 2, 1.23, "9"), ("b1", 1, 1.20, "11")):
        store.create_run(Run(id=run_id, name=f"{run_id}-s{seed}", seed=seed, status="completed", trainer="bundled",
                             spec_name="base" if layers == "9" else "deep", group_hash=f"g{layers}",
                             final_bpb=bpb, bytes_breakdown={"mlp": 100 * seed, "code": 7},
                             config={"NUM_LAYERS": layers, "MLP_MULT": "3.0", "TIE_EMBEDDINGS": "0",
                                     "SEED": str(seed), "CUSTOM_ENV": "x"}))
    store.upsert_steps("a1", {0: {"val_loss": 7.0}, 10: {"train_loss": 3.0}})
    store.upsert_steps("a2", {0: {"val_loss": 6.5}, 10: {"train_loss": 2.5, "val_bpb": 1.5}})
    store.upsert_steps("b1", {5: {"train_loss": 4.0}})
    return db


def test_runs_has_every_field_typed_knobs_and_flattened_dicts(store_path: Path) -> None:
    frame = golf.runs(store_path)
    assert sorted(frame["id"]) == ["a1", "a2", "b1"]
    assert set(Run.model_fields) - {"config", "bytes_breakdown"} <= set(frame.columns)
    row = frame.set_index("id").loc["b1"]
    assert row["knob.NUM_LAYERS"] == 11 and row["knob.MLP_MULT"] == 3.0 and bool(row["knob.TIE_EMBEDDINGS"]) is False
    assert row["knob.CUSTOM_ENV"] == "x"  # not a knob: its text
    assert row["bytes_breakdown.mlp"] == 100 and row["group_hash"] == "g11" and row["final_bpb"] == 1.20


def test_runs_filters_by_field_or_knob_name(store_path: Path) -> None:
    assert sorted(golf.runs(store_path, NUM_LAYERS=9)["id"]) == ["a1", "a2"]
    assert list(golf.runs(store_path, group_hash="g9", seed=2)["id"]) == ["a2"]
    assert sorted(golf.runs(store_path, seed=[1, 2], spec_name="base")["id"]) == ["a1", "a2"]
    with pytest.raises(GolfError, match="no column 'NO_SUCH'"):
        golf.runs(store_path, NO_SUCH=1)


def test_steps_of_a_run_and_of_a_group(store_path: Path) -> None:
    one = golf.steps("a2", store_path)
    assert list(one["step"]) == [0, 10] and list(one["run_id"]) == ["a2", "a2"]
    assert one["val_bpb"].iloc[1] == 1.5 and one["train_loss"].iloc[1] == 2.5
    group = golf.steps("group:g9", store_path)
    assert sorted(zip(group["run_id"], group["step"], strict=True)) == [("a1", 0), ("a1", 10), ("a2", 0), ("a2", 10)]
    assert sorted(golf.steps("base", store_path)["run_id"].unique()) == ["a1", "a2"]  # a spec name
    with pytest.raises(GolfError, match="no run, group or spec"):
        golf.steps("nothing", store_path)


def test_import_golf_imports_no_pandas() -> None:
    code = "import sys, golf; assert callable(golf.runs); print(sorted(m for m in ('pandas', 'torch', 'sqlmodel') " \
           "if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
