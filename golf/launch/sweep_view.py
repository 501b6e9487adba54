"""What a sweep shows while it runs: one line per cell event (start, reuse, end), and on a terminal a status line
redrawn under them: cells by state, the lanes in use, and an ETA from the finished cells' times."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import IO, Any

from golf.store.models import now


def eta_s(cells: Sequence[Mapping[str, Any]], lanes: int, at: datetime | None = None) -> float | None:
    """Seconds until the queue is done, from the mean time of the cells that ran to their end here (None before
    one has): the queued cells' work plus what the running ones have left, spread over the lanes."""
    at = at or now()
    times = [(c["ended_at"] - c["started_at"]).total_seconds() for c in cells
             if c["state"] in ("completed", "failed", "stalled") and not c.get("reused")
             and c.get("started_at") and c.get("ended_at")]
    if not times:
        return None
    mean = sum(times) / len(times)
    queued = sum(1 for c in cells if c["state"] == "queued")
    left = sum(max(mean - (at - c["started_at"]).total_seconds(), 0.0) for c in cells
               if c["state"] == "running" and c.get("started_at"))
    return (queued * mean + left) / max(lanes, 1)


def duration_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def status_text(sweep_id: str, cells: Sequence[Mapping[str, Any]], lanes: int) -> str:
    from golf.launch.queue import counts

    by_state = counts(cells)
    parts = [f"{n} {state}" for state, n in by_state.items() if n]
    lanes_used = sorted({c["lane"] for c in cells if c["state"] == "running" and c.get("lane")})
    lane_text = f" · lanes {' '.join(lanes_used)}" if lanes_used else ""
    return f"sweep {sweep_id}: {', '.join(parts)}{lane_text} · ETA {duration_text(eta_s(cells, lanes))}"


class SweepView:
    """Cell events as lines (stderr); on a terminal, the status line below them is redrawn after each."""

    def __init__(self, sweep_id: str, lanes: int, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        self.sweep_id, self.lanes = sweep_id, lanes
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._status = False

    def event(self, kind: str, cell: Mapping[str, Any], detail: str, cells: Sequence[Mapping[str, Any]]) -> None:
        if kind == "tick":
            if self.tty:
                self._clear()
                self.stream.write(status_text(self.sweep_id, cells, self.lanes))
                self._status = True
                self.stream.flush()
            return
        what = f"cell {cell['id']} {cell['spec_name']} seed {cell['seed']}"
        if kind == "start":
            line = f"golf sweep: start {what} {detail}"
        elif kind == "reuse":
            line = f"golf sweep: reuse {what}: run {detail} completed before"
        elif kind == "reattach":
            line = f"golf sweep: reattached {what} (still running)"
        else:
            run = f" run {cell['run_id']}" if cell.get("run_id") else ""
            line = f"golf sweep: {cell['state']} {what}{run}: {detail}"
        self._clear()
        self.stream.write(line + "\n")
        if self.tty:
            self.stream.write(status_text(self.sweep_id, cells, self.lanes))
            self._status = True
        self.stream.flush()

    def close(self) -> None:
        if self._status:
            self.stream.write("\n")
            self.stream.flush()
            self._status = False

    def _clear(self) -> None:
        if self._status:
            self.stream.write("\r\x1b[K")
            self._status = False
