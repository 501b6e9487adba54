"""The trainer's process tree tied to golf's life: signals forwarded, parent-death signal, no orphans.

- SIGINT, SIGTERM and SIGHUP (a closed ssh session) sent to golf go to torchrun's process group; SIGKILL to it and
  every worker after KILL_GRACE_S, or at once on a second signal.
- torchrun is started with Linux's parent-death signal (SIGTERM, so torchrun still stops its workers): a `kill -9`
  of golf ends the run instead of leaving it training unseen.
- torchrun starts each worker in a session of its own, so a `kill -9` of torchrun would orphan them: golf keeps a
  list of the tree's processes (pid + start time, so a reused pid is never hit), adds every process still holding
  the trainer's output pipe, and ends them once torchrun is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

KILL_GRACE_S = 15.0
SNAPSHOT_EVERY_S = 0.5  # how often the tree below torchrun is listed (a /proc scan: a few ms)
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def parent_death_signal(signum: int = signal.SIGTERM) -> Any:
    """A preexec_fn that makes the child receive `signum` when golf dies (Linux; None elsewhere)."""
    if _LIBC is None:
        return None
    parent = os.getpid()

    def set_pdeathsig() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # golf died between fork and prctl: the signal would never come
            os.kill(os.getpid(), signum)

    return set_pdeathsig


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[19]) if len(fields) > 19 else None


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "(comm)", which may contain spaces
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def pipe_holders(inode: int) -> list[int]:
    """Processes (other than golf) with the pipe `inode` open (Linux /proc; empty elsewhere)."""
    target, found = f"pipe:[{inode}]", []
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


class Supervisor:
    """Owns the trainer's process tree: forwards golf's signals, stops it on request, leaves nothing behind."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.signal_name: str | None = None  # the user's signal, if one came
        self.stopped_by: str | None = None  # golf's own reason for stopping the trainer (stall, log error, ...)
        self.stop_detail: str | None = None
        self.deadline: float | None = None
        self._signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._tree: dict[int, int] = {}  # pid -> start time, every process seen below torchrun
        self._snapshot_at = 0.0

    # -- signals
    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; the default behaviour then applies
        for sig in FORWARDED:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        if self._signum is not None:  # signalled while the trainer was being started
            self._send(self._signum)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            self._signum = signum
            self.deadline = time.monotonic() + KILL_GRACE_S
            self._send(signal.SIGTERM if signum == signal.SIGHUP else signum)
        else:
            self.kill()

    def stop(self, reason: str, detail: str | None = None) -> None:
        """golf's own decision (a rule the user set, or a log that cannot be written): SIGTERM, SIGKILL later."""
        if self.stopped_by is None and self.signal_name is None:
            self.stopped_by, self.stop_detail = reason, detail
            self.deadline = time.monotonic() + KILL_GRACE_S
            self._send(signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        return self.signal_name is not None or self.stopped_by is not None

    # -- the tree
    def tick(self) -> None:
        """Called a few times a second: escalate a stop that is taking too long; keep the list of the tree."""
        if self.proc is None:
            return
        alive = self.proc.poll() is None
        if alive and time.monotonic() - self._snapshot_at >= SNAPSHOT_EVERY_S:
            self._snapshot_at = time.monotonic()
            for pid in descendants(self.proc.pid):
                if pid not in self._tree:
                    started = start_time(pid)
                    if started is not None:
                        self._tree[pid] = started
        if self.deadline is not None and time.monotonic() > self.deadline:
            if alive:
                self.kill()
            else:
                self.deadline = None
                self.end_orphans()

    def _send(self, signum: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL torchrun's group and every worker (torchrun starts each worker in a session of its own)."""
        self.deadline = None
        if self.proc is not None and self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                self._tree.setdefault(pid, start_time(pid) or 0)
            self._send(signal.SIGKILL)
        self.end_orphans(signal.SIGKILL)

    def end_orphans(self, signum: int = signal.SIGKILL) -> list[int]:
        """Signal every process of the tree that outlived torchrun (only those whose start time still matches)."""
        if self.proc is not None and self.proc.stdout is not None and not self.proc.stdout.closed:
            with contextlib.suppress(OSError, ValueError):
                for pid in pipe_holders(os.fstat(self.proc.stdout.fileno()).st_ino):
                    self._tree.setdefault(pid, start_time(pid) or 0)
        hit = []
        for pid, started in list(self._tree.items()):
            if start_time(pid) != started:  # gone, or the pid now belongs to someone else
                self._tree.pop(pid, None)
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum) if os.getpgid(pid) == pid else os.kill(pid, signum)
                hit.append(pid)
        return hit

    def orphans_alive(self) -> bool:
        return any(start_time(pid) == started for pid, started in self._tree.items())
