"""The local executor: each cell a `golf run` process of its own, in a process group of its own, on the GPUs of its
lane (the scheduler passes CUDA_VISIBLE_DEVICES and a rendezvous port per lane; golf.launch.sweep).

A cell outlives the golf that started it (a SIGKILL of `golf sweep`, a closed terminal): it records itself, and
`golf sweep resume` reattaches to it by its job id, `<pid>:<start time>`, so a reused pid is never mistaken for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from golf.launch.executor import CellLaunch
from golf.launch.supervise import start_time

UNKNOWN_EXIT = -1  # what poll() says of an ended cell that an earlier golf started (its exit code is not ours)


class LocalCell:
    """A started cell: our child (exit code known) or a process an earlier golf started (reattached)."""

    def __init__(self, pid: int, proc: subprocess.Popen[bytes] | None = None, started: int | None = None) -> None:
        self.pid, self.proc, self.started = pid, proc, started
        self.job_id = f"{pid}:{started}" if started is not None else str(pid)

    def poll(self) -> int | None:
        if self.proc is not None:
            return self.proc.poll()
        return None if _same_process(self.pid, self.started) else UNKNOWN_EXIT

    def cancel(self) -> None:
        """SIGTERM to the cell's process group: its `golf run` stops the trainer and records the run."""
        if self.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)


class LocalLanesExecutor:
    name = "local"
    pins_gpus = True  # the scheduler gives each cell its GPUs and its own rendezvous port

    def __init__(self, cwd: str | os.PathLike[str] | None = None) -> None:
        self.cwd = Path(cwd) if cwd is not None else None

    def submit(self, cell: CellLaunch) -> LocalCell:
        cell.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(cell.log_path, "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(cell.argv, cwd=self.cwd, env={**os.environ, **cell.env}, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return LocalCell(proc.pid, proc, start_time(proc.pid))

    def reattach(self, job_id: str) -> LocalCell | None:
        pid_text, _, started_text = job_id.partition(":")
        if not pid_text.isdigit():
            return None
        pid, started = int(pid_text), int(started_text) if started_text.isdigit() else None
        return LocalCell(pid, None, started) if _same_process(pid, started) else None


def _same_process(pid: int, started: int | None) -> bool:
    """The process is alive and is the one started then (its start time, where the system tells it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started is None:
        return True
    if start_time(pid) != started:
        return False
    try:  # a zombie (ended, not yet reaped by its parent) is gone too
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] != "Z"
