"""`golf sweep --executor slurm` through submitit's local executor: the cells' job ids are on the queue rows, a
sweep whose golf was killed is resumed by reattaching to its jobs (nothing launched twice), and every cell's run
is recorded in the sweep's runs.db once its job has ended (by the submitting golf, from the job's own store)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from test_sweep import cells, fake, golf_process, launches, runner, wait_for  # noqa: F401 - fake is a fixture

from golf.errors import GolfError
from golf.store import Store
from golf_cli.main import app

pytest.importorskip("submitit")


def test_a_killed_slurm_sweep_resumes_by_reattaching_to_its_jobs(fake: Path, db: Path) -> None:  # noqa: F811
    sweep = golf_process("sweep", "fake.yaml", "--vary", "MY_KNOB=1", "--seeds", "1", "--set", "SLEEP_S=3",
                         "--executor", "slurm", "--slurm-cluster", "local", "--slurm-time", "5", "--lanes", "2",
                         "--db", str(db))
    try:
        def both_running() -> list[dict[str, object]] | None:
            if not db.exists():
                return None
            try:
                rows = cells(db)
            except (GolfError, IndexError):  # the store or the sweep not written yet
                return None
            started = [e for e in launches(fake) if e["event"] == "start"]
            ok = len(rows) == 2 and all(c["state"] == "running" and c["job_id"] for c in rows) and len(started) == 2
            return rows if ok else None
        running = wait_for(both_running, timeout=60, what="both cells' jobs running")
        sweep.send_signal(signal.SIGKILL)  # golf dies; the jobs (submitit's controllers) live on
        sweep.wait(10)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    job_ids = [c["job_id"] for c in running]
    assert all(str(j).isdigit() for j in job_ids) and len(set(job_ids)) == 2
    assert Store(db, readonly=True).list_runs() == []  # the jobs write stores of their own, never the sweep's

    result = runner.invoke(app, ["sweep", "resume", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "2 cells reattached" in result.output
    rows = cells(db)
    assert [(c["state"], c["executor"], c["job_id"], c["exit_code"]) for c in rows] == [
        ("completed", "slurm", j, 0) for j in job_ids]
    assert len([e for e in launches(fake) if e["event"] == "start"]) == 2  # each cell's trainer ran once
    store = Store(db, readonly=True)
    runs = [store.get(c["run_id"]) for c in rows]
    assert [(r.status, r.cell_id, r.steps) for r in runs] == [("completed", c["id"], 2) for c in rows]  # type: ignore
    for job_id in job_ids:  # the exit code came from the job's own result file
        assert (fake / "runs" / "submitit" / f"{job_id}_0_result.pkl").is_file()
