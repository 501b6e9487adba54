"""Fault injection, processes: SIGHUP to golf, kill -9 of golf, of torchrun and of the worker. Each case ends with
no process of the run left, a row that is not `running`, and every step of train.log in the store."""

from __future__ import annotations

import os
import signal
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
