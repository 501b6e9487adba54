"""Fault injection, the store: a write lock held far past the busy timeout, a value SQLite cannot hold, several
`golf run` at once on one runs.db. The recorder may be delayed; it never stops the trainer or loses a step."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from faultkit import REPO, assert_recorded, logged_steps, without_torchrun, write_spec
from typer.testing import CliRunner

import golf.store.db
from golf.launch.recorder import StoreWriter
from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _direct(monkeypatch: pytest.MonkeyPatch) -> None:
    without_torchrun(monkeypatch)
CONCURRENT = int(os.environ.get("GOLF_FAULT_CONCURRENT", "4"))  # bench/fault_cases.py runs 8


def steady_trainer(steps: int, every_s: float, signal_at: int | None = None) -> str:
    """Prints `steps` step lines; at step `signal_at` it touches $FAKE_DIR/at_step (the test's cue); exits 0."""
    return textwrap.dedent(f"""\
        import os, time
        for s in range(1, {steps} + 1):
            print(f"step:{{s}}/{steps} train_loss:{{7 - s / 1000:.4f}} train_time:{{s * 10}}ms step_avg:10.00ms",
                  flush=True)
            if s == {signal_at!r}:
                open(os.path.join(os.environ["FAKE_DIR"], "at_step"), "w").close()
            time.sleep({every_s})
        print("final_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000")
        """)


def test_a_lock_held_past_the_busy_timeout_only_delays_the_rows(workdir: Path, tiny_data: Path, db: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(golf.store.db, "BUSY_TIMEOUT_MS", 300)
    spec = write_spec(workdir, tiny_data, steady_trainer(steps=60, every_s=0.08, signal_at=5))
    held = threading.Event()

    def hold_the_lock() -> None:  # another process's long write transaction: 10x the busy timeout
        cue = workdir / "at_step"
        while not cue.exists():
            time.sleep(0.05)
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(3.0)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)])
    holder.join(10)
    assert held.is_set()
    assert result.exit_code == 0, result.output[-3000:]
    assert "runs.db unavailable (database is locked)" in result.output
    assert "runs.db is back" in result.output
    run = assert_recorded(db, "completed")
    assert logged_steps(Path(run.log_path)) == list(range(1, 61))  # the trainer ran to its end
    assert run.final_bpb == 1.2


def test_a_value_sqlite_cannot_hold_is_dropped_not_fatal(workdir: Path, tiny_data: Path, db: Path) -> None:
    script = 'print("model_params:123456789012345678901")\n' + steady_trainer(steps=8, every_s=0.01)
    result = runner.invoke(app, ["run", str(write_spec(workdir, tiny_data, script)), "--db", str(db)])
    assert result.exit_code == 0, result.output[-3000:]
    run = assert_recorded(db, "completed")
    assert run.model_params is None  # 21 digits: beyond SQLite's INTEGER, kept in train.log only
    assert "model_params:123456789012345678901" in Path(run.log_path).read_text()
    assert run.final_bpb == 1.2


def test_store_writer_keeps_the_values_around_one_the_store_refuses(db: Path) -> None:
    store = Store(db)
    store.create_run(Run(id="r", name="r"))
    notes: list[str] = []
    writer = StoreWriter(store, "r", notes.append)
    writer.submit({"model_params": 10**20, "steps": 3, "final_bpb": 1.25},
                  {1: {"train_loss": 6.5}, 2: {"train_loss": 6.25, "train_time_ms": 2.0**70}})
    assert writer.close(10)
    run = store.get("r")
    assert (run.model_params, run.steps, run.final_bpb) == (None, 3, 1.25)
    assert [(s.step, s.train_loss) for s in store.steps("r")] == [(1, 6.5), (2, 6.25)]
    assert writer.dropped == ["field model_params=100000000000000000000"]
    assert any("refused field model_params" in n for n in notes)


def test_store_writer_retries_until_the_store_is_back(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(golf.store.db, "BUSY_TIMEOUT_MS", 100)
    store = Store(db)
    store.create_run(Run(id="r", name="r"))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    notes: list[str] = []
    writer = StoreWriter(store, "r", notes.append)
    writer.submit({"steps": 1}, {1: {"train_loss": 6.0}})
    time.sleep(0.6)
    writer.submit({"steps": 2}, {2: {"train_loss": 5.0}, 1: {"val_loss": 6.5}})  # newer values win when merged
    time.sleep(0.4)
    assert writer.failing == "database is locked" and writer.pending
    conn.execute("COMMIT")
    assert writer.close(15)
    assert store.get("r").steps == 2
    assert [(s.step, s.train_loss, s.val_loss) for s in store.steps("r")] == [(1, 6.0, 6.5), (2, 5.0, None)]
    assert notes[0].startswith("golf: runs.db unavailable (database is locked)") and "is back" in notes[-1]


def test_golf_runs_at_once_lose_no_step(workdir: Path, tiny_data: Path, db: Path) -> None:
    """Concurrent writers through `golf run` itself (not the store API): 4 golf processes, one runs.db (the
    heavier bench/fault_cases.py runs 8)."""
    script = steady_trainer(steps=150, every_s=0.002)
    specs = [write_spec(workdir, tiny_data, script, name=f"c{i}") for i in range(CONCURRENT)]
    for i, spec in enumerate(specs):  # one trainer file each (write_spec reuses the name)
        (workdir / f"train_c{i}.py").write_text(script)
        spec.write_text(spec.read_text().replace("train_fault.py", f"train_c{i}.py"))
    Store(db)  # created once up front: this test is about writes, not about creating a store
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "golf_cli.main", "run", str(s), "--db", str(db)],
                              cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for s in specs]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * CONCURRENT, errors
    runs = Store(db).list_runs()
    assert sorted(r.name for r in runs) == sorted(f"c{i}-s1" for i in range(CONCURRENT))
    for run in runs:
        assert run.status == "completed"
        steps = Store(db).steps(run.id)
        assert [s.step for s in steps] == list(range(1, 151))
        assert all(math.isclose(s.train_loss, round(7 - s.step / 1000, 4)) for s in steps)


def test_values_put_back_after_a_failed_write_never_override_newer_ones(db: Path) -> None:
    store = Store(db)
    store.create_run(Run(id="r", name="r"))
    writer = StoreWriter(store, "r", lambda _note: None)
    assert writer.close(5)  # the thread is gone: what follows only exercises the merge
    writer.submit({"steps": 2}, {1: {"val_loss": 6.5}, 2: {"train_loss": 5.0}})  # arrived while a write failed
    writer._put_back({"steps": 1, "final_bpb": 1.5}, {1: {"train_loss": 6.0, "val_loss": 9.9}})  # the failed write
    assert writer._fields == {"steps": 2, "final_bpb": 1.5}
    assert writer._steps == {1: {"train_loss": 6.0, "val_loss": 6.5}, 2: {"train_loss": 5.0}}
