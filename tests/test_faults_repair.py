"""The log is the record: after golf dies (kill -9) or the store stays unavailable to the end of a run, the row is
brought back in line with train.log by `golf repair`, by the next `golf run`, and by ingesting the log again
(which repairs the run instead of adding a second one)."""

from __future__ import annotations

import json
import sqlite3
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from faultkit import (
    assert_recorded,
    counting_trainer,
    logged_steps,
    start_golf,
    torchrun_of,
    wait_dead,
    wait_for_steps,
    without_torchrun,
    write_spec,
)
from typer.testing import CliRunner

import golf.launch.recorder
import golf.store.db
from golf.store import Run, Store
from golf.store.db import STALE_REASON
from golf.store.models import now
from golf_cli.main import app

runner = CliRunner()


@pytest.fixture
def quick_death(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row counts as dead 1 s after its last heartbeat (instead of 3 beats + the 30 s busy timeout)."""
    monkeypatch.setattr(golf.store.db, "STALE_AFTER_S", 1.0)


def test_kill_9_of_golf_ends_the_trainer_and_repair_restores_every_step(workdir: Path, tiny_data: Path, db: Path,
                                                                        quick_death: None) -> None:
    golf = start_golf(write_spec(workdir, tiny_data, counting_trainer(every_s=0.01)), db, cwd=workdir)
    worker = wait_for_steps(workdir, steps=50)
    torchrun = torchrun_of(golf, worker)
    golf.kill()
    golf.communicate()
    wait_dead(torchrun, 20)  # the parent-death signal reached torchrun, which ended its worker
    wait_dead(worker, 20)
    run_id = Store(db).list_runs()[0].id
    log = Path(Store(db).get(run_id).log_path)
    assert len(Store(db).steps(run_id)) < len(logged_steps(log))  # the last ~1.5 s never reached the store
    time.sleep(1.2)
    listed = runner.invoke(app, ["ls", "--format", "json", "--db", str(db)])
    assert json.loads(listed.stdout)[0]["status"] == "failed"  # a reader already shows it dead
    result = runner.invoke(app, ["repair", "--db", str(db), "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["id"], row["status_before"], row["status"]) == (run_id, "running", "failed")
    run = assert_recorded(db, "failed", STALE_REASON)
    assert row["steps"] == len(logged_steps(log)) and run.steps == logged_steps(log)[-1]
    # ingesting the same log repairs the same run: still one run
    again = runner.invoke(app, ["ingest", str(log), "--db", str(db)])
    assert again.exit_code == 0, again.output
    assert "1 golf runs repaired from their logs" in again.output
    assert [r.id for r in Store(db).list_runs()] == [run_id]


def test_a_store_unavailable_to_the_end_is_repaired_from_the_run_folder(workdir: Path, tiny_data: Path, db: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        quick_death: None) -> None:
    without_torchrun(monkeypatch)
    monkeypatch.setattr(golf.store.db, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(golf.launch.recorder, "STORE_WAIT_AT_END_S", 1.0)
    script = textwrap.dedent("""\
        import os, time
        for s in range(1, 41):
            print(f"step:{s}/40 train_loss:{7 - s / 100:.4f} train_time:{s * 10}ms step_avg:10.00ms", flush=True)
            if s == 3:
                open(os.path.join(os.environ["FAKE_DIR"], "at_step"), "w").close()
                time.sleep(2)  # the store gets the first steps; then another process locks it
            time.sleep(0.02)
        print("final_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000")
        """)
    spec = write_spec(workdir, tiny_data, script)
    release = threading.Event()

    def hold_the_lock() -> None:
        while not (workdir / "at_step").exists():
            time.sleep(0.05)
        time.sleep(1.8)
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        release.wait(60)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)])
    time.sleep(0.5)  # longer than the busy timeout: a write still waiting on the lock gives up
    release.set()
    holder.join(10)
    assert result.exit_code == 0, result.output[-3000:]  # the run completed; only its recording lagged
    assert "runs.db stayed unavailable (database is locked)" in result.output
    run_id = Store(db).list_runs()[0].id
    end = json.loads((workdir / "runs" / run_id / "golf_status.json").read_text())
    assert end["status"] == "completed" and end["exit_code"] == 0
    stored = Store(db).get(run_id)
    assert stored.status == "running" and len(Store(db).steps(run_id)) < 40
    time.sleep(1.2)  # its heartbeat stops with golf
    fixed = runner.invoke(app, ["repair", run_id, "--db", str(db)])
    assert fixed.exit_code == 0, fixed.output
    run = assert_recorded(db, "completed")
    assert run.exit_code == 0 and run.final_bpb == 1.2 and len(Store(db).steps(run_id)) == 40


def test_a_live_run_is_not_repaired_and_a_missing_log_is_one_line(workdir: Path, db: Path) -> None:
    store = Store(db)
    store.create_run(Run(id="live", name="live", status="running", log_path=str(workdir / "x.log")))
    store.heartbeat("live")
    result = runner.invoke(app, ["repair", "live", "--db", str(db)])
    assert result.exit_code == 2 and "being recorded by a live golf process" in result.output
    result = runner.invoke(app, ["repair", "live", "--force", "--db", str(db)])
    assert result.exit_code == 2 and "x.log is missing; nothing to repair from" in result.output
    assert Store(db).get("live").status == "running"


def test_the_next_golf_run_repairs_a_dead_run_first(workdir: Path, tiny_data: Path, db: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    without_torchrun(monkeypatch)
    dead_log = workdir / "runs" / "dead1" / "train.log"
    dead_log.parent.mkdir(parents=True)
    dead_log.write_text("".join(f"step:{s}/9 train_loss:{6 - s / 10:.4f} train_time:{s}ms step_avg:1.00ms\n"
                                for s in range(1, 8)))
    store = Store(db)
    store.create_run(Run(id="dead1", name="dead", status="running", log_path=str(dead_log),
                         run_dir=str(dead_log.parent)))
    store.upsert_steps("dead1", {1: {"train_loss": 5.9}})
    store.update_run("dead1", heartbeat_at=now() - timedelta(hours=1))
    spec = write_spec(workdir, tiny_data, 'print("step:1/1 train_loss:5.0000 train_time:1ms step_avg:1.00ms")\n')
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "run dead's golf process died; repaired from its log (failed, 7 steps)" in result.output
    dead = Store(db).get("dead1")
    assert dead.status == "failed" and dead.steps == 7 and len(Store(db).steps("dead1")) == 7
