"""The run store under several writers at once, and the lookups the CLI relies on."""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path

import pytest

from golf.store import Run, RunNotFound, Store

WRITERS, RUNS_EACH, STEPS_EACH = 4, 6, 40


def _writer(db: str, writer: int, start: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    start.wait()
    store = Store(db)  # every writer opens (and, first, creates) the store at the same moment
    for r in range(RUNS_EACH):
        run_id = f"w{writer}r{r}"
        store.create_run(Run(id=run_id, name=store.unique_name(f"run-{writer}-{r}"), seed=writer * 100 + r))
        for step in range(STEPS_EACH):
            # each step in two halves, as the launcher flushes them: a train line, later the val line
            store.upsert_steps(run_id, {step: {"train_loss": writer + r + step / 1000}})
            if step % 10 == 0:
                store.upsert_steps(run_id, {step: {"val_loss": step / 100, "val_bpb": step / 200}})
                store.update_run(run_id, steps=step, final_bpb=writer + r / 10)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(db), w, start)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS  # no "database is locked" in any writer

    store = Store(db)
    runs = store.list_runs()
    assert len(runs) == WRITERS * RUNS_EACH
    for w in range(WRITERS):
        for r in range(RUNS_EACH):
            run = store.get(f"w{w}r{r}")
            assert run is not None and run.seed == w * 100 + r
            assert run.steps == 30 and run.final_bpb == pytest.approx(w + r / 10)
            steps = store.steps(run.id)
            assert [s.step for s in steps] == list(range(STEPS_EACH))
            assert all(s.train_loss == pytest.approx(w + r + s.step / 1000) for s in steps)
            assert [s.step for s in steps if s.val_loss is not None] == [0, 10, 20, 30]
            assert all(s.val_bpb == pytest.approx(s.step / 200) for s in steps if s.val_loss is not None)


def test_lookup_by_id_prefix_and_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    store.create_run(Run(id="abc123", name="first"))
    store.create_run(Run(id="abd456", name="second"))
    assert store.resolve_run("first").id == "abc123"
    assert store.resolve_run("abd").id == "abd456"
    assert store.resolve_run("abc123").name == "first"
    with pytest.raises(RunNotFound, match="ambiguous"):
        store.resolve_run("ab")
    with pytest.raises(RunNotFound, match="no run with id or name 'zzz'"):
        store.resolve_run("zzz")


def test_reconcile_marks_only_dead_owners(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    host = socket.gethostname()
    dead_pid = _dead_pid()
    store.create_run(Run(id="a", name="a", status="running", pid=dead_pid, host=host))
    store.create_run(Run(id="b", name="b", status="running", pid=os.getpid(), host=host))
    store.create_run(Run(id="c", name="c", status="running", pid=dead_pid, host="another-host"))
    assert store.reconcile_stale() == 1
    assert {r.id: r.status for r in store.list_runs()} == {"a": "failed", "b": "running", "c": "running"}


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_running_row_is_dead_by_its_heartbeat_age_not_its_host_or_pid(tmp_path: Path) -> None:
    from datetime import timedelta

    from golf.store.db import STALE_AFTER_S, STALE_REASON
    from golf.store.models import now

    store = Store(tmp_path / "runs.db")
    beat = now()
    ages = {"fresh": 0.0, "late": STALE_AFTER_S - 5, "gone": STALE_AFTER_S + 5, "moved": STALE_AFTER_S + 60}
    for run_id, age in ages.items():
        # "gone" belongs to this very (live) process, "moved" to another host: neither counts, only the beat
        store.create_run(Run(id=run_id, name=run_id, status="running", pid=os.getpid(), host=socket.gethostname()
                             if run_id != "moved" else "elsewhere", heartbeat_at=beat - timedelta(seconds=age)))
    reader = Store(store.path, readonly=True)
    shown = {r.id: (r.status, r.stop_reason) for r in reader.list_runs()}
    assert shown == {"fresh": ("running", None), "late": ("running", None), "gone": ("failed", STALE_REASON),
                     "moved": ("failed", STALE_REASON)}
    assert {r.id: r.status for r in store.runs_where(status="running")} == dict.fromkeys(ages, "running")  # unwritten

    assert store.reconcile_stale() == 2
    assert {r.id: r.status for r in store.list_runs()} == {"fresh": "running", "late": "running", "gone": "failed",
                                                          "moved": "failed"}
    gone = store.get("gone")
    assert gone is not None and gone.ended_at == gone.heartbeat_at  # it died at its last beat
    assert store.reconcile_stale() == 0

    store.heartbeat("gone")  # it was only held up (a lock longer than the stale age): running again
    gone = store.get("gone")
    assert gone is not None and (gone.status, gone.stop_reason, gone.ended_at) == ("running", None, None)
    assert (now() - gone.heartbeat_at).total_seconds() < 5  # type: ignore[operator]
    store.update_run("fresh", status="completed", stop_reason="done")
    store.heartbeat("fresh")  # a beat never reopens a run that ended for another reason
    assert store.get("fresh").status == "completed"  # type: ignore[union-attr]
