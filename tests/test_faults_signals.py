"""Fault injection, processes: SIGHUP to golf, kill -9 of golf, of torchrun and of the worker. Each case ends with
no process of the run left, a row that is not `running`, and every step of train.log in the store."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from faultkit import (
    alive,
    assert_recorded,
    counting_trainer,
    start_golf,
    stop,
    torchrun_of,
    wait_dead,
    wait_for_steps,
    write_spec,
)


def test_sighup_to_golf_interrupts_like_sigterm(workdir: Path, tiny_data: Path, db: Path) -> None:
    golf = start_golf(write_spec(workdir, tiny_data, counting_trainer()), db, cwd=workdir)
    worker = wait_for_steps(workdir)
    golf.send_signal(signal.SIGHUP)  # an ssh session closing
    out = stop(golf)
    assert golf.returncode == 129, out[-2000:]
    wait_dead(worker, 10)
    assert_recorded(db, "interrupted", "SIGHUP")


def test_kill_9_of_torchrun_ends_its_worker(workdir: Path, tiny_data: Path, db: Path) -> None:
    golf = start_golf(write_spec(workdir, tiny_data, counting_trainer()), db, cwd=workdir)
    worker = wait_for_steps(workdir)
    torchrun = torchrun_of(golf, worker)
    os.kill(torchrun, signal.SIGKILL)
    out = stop(golf)
    assert golf.returncode == 1, out[-2000:]
    wait_dead(worker, 10)  # golf ends the worker torchrun left behind
    run = assert_recorded(db, "failed", "killed by SIGKILL")
    assert run.exit_code == -signal.SIGKILL


def test_kill_9_of_the_worker_fails_the_run(workdir: Path, tiny_data: Path, db: Path) -> None:
    golf = start_golf(write_spec(workdir, tiny_data, counting_trainer()), db, cwd=workdir)
    worker = wait_for_steps(workdir)
    torchrun = torchrun_of(golf, worker)
    os.kill(worker, signal.SIGKILL)
    out = stop(golf)
    assert golf.returncode == 1, out[-2000:]
    assert not alive(torchrun)
    run = assert_recorded(db, "failed")
    assert run.exit_code not in (0, None)


def test_an_unread_stdout_never_blocks_the_trainer_and_ctrl_c_still_works(workdir: Path, tiny_data: Path,
                                                                          db: Path) -> None:
    """golf's own output a pipe nobody reads (`golf run ... | stuck`): the run still ends and is recorded; a Ctrl-C
    ends golf."""
    from golf.store import Store

    lines = "".join(f"step:{s}/3000 train_loss:{7 - s / 10000:.4f} train_time:{s}ms step_avg:1.00ms {'-' * 1000}\\n"
                    for s in range(1, 3001))  # 3 MB: far more than a pipe holds
    script = f"import sys\nsys.stdout.write({lines!r})\nsys.stdout.flush()\n"
    golf = start_golf(write_spec(workdir, tiny_data, script), db, cwd=workdir)  # stdout=PIPE, never read here

    def recorded() -> bool:
        runs = Store(db).list_runs() if db.exists() else []
        return bool(runs) and runs[0].status == "completed"

    from faultkit import wait_for
    wait_for(recorded, 90, "the run to be recorded while golf's stdout is full")
    try:
        golf.wait(timeout=20)  # golf ends by itself, its unread output left behind
    except subprocess.TimeoutExpired:
        golf.send_signal(signal.SIGINT)  # else a Ctrl-C must end it
        try:
            golf.wait(timeout=20)
        finally:
            if golf.poll() is None:
                golf.kill()
        raise AssertionError("golf hung on its own output after the run was recorded") from None
    assert golf.returncode == 0
    assert_recorded(db, "completed")
