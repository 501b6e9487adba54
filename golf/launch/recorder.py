"""The run's row kept in line with its log, without ever holding the trainer up.

The launcher's thread parses lines and hands what changed to a `StoreWriter`, whose own thread writes it: a store
that is locked past its busy timeout, on a full disk, or briefly unreadable only delays the writes (they are kept
and retried, newest values winning), and a value the store cannot hold is dropped with a note instead of failing
the run. train.log stays the record in any case: `golf repair` rebuilds a row from it and from `golf_status.json`,
the run's end as golf saw it, written into the run folder before the final store write.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from golf.logparse import LogParser, ParsedRun
from golf.store import Run, Store
from golf.store.fields import fields_from_parsed
from golf.store.models import now

STATUS_FILE = "golf_status.json"
RETRY_MIN_S, RETRY_MAX_S = 0.5, 5.0
STORE_WAIT_AT_END_S = 75.0  # at the end, how long golf waits for a store that is still unavailable
STEP_COLUMNS = ("train_loss", "val_loss", "val_bpb", "train_time_ms", "step_avg_ms")
_UNSET = object()


def store_unavailable(exc: BaseException) -> bool:
    """True for errors of the store itself (locked, disk full, I/O): worth retrying. False for a value or row the
    store refuses (an integer too large for SQLite, a constraint): retrying the same write would fail again."""
    import sqlite3

    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.IntegrityError, sqlite3.IntegrityError)):
        return False
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.DatabaseError, sqlite3.OperationalError,
                            sqlite3.DatabaseError, OSError, TimeoutError))


def one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # sqlalchemy wraps the driver's error; its text is the useful part
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def fields_of(parsed: ParsedRun, non_record_reason: str | None = None, parse_errors: int = 0) -> dict[str, Any]:
    """The row's fields a log gives (the same while it streams and when `golf repair` reads it again)."""
    out = fields_from_parsed(parsed)
    out["non_record_reason"] = parsed.non_record_reason or non_record_reason
    out["malformed_lines"] = parsed.malformed + parse_errors
    return out


def step_rows(parsed: ParsedRun) -> dict[int, dict[str, float]]:
    return {step: dict(row) for step, row in parsed.curve.items() if any(c in row for c in STEP_COLUMNS)}


class StoreWriter:
    """A thread that writes a run's fields and step rows; `submit` never blocks on the store."""

    def __init__(self, store: Store, run_id: str, note: Callable[[str], None]) -> None:
        self.store, self.run_id, self.note = store, run_id, note
        self.failing: str | None = None  # why the store is unavailable right now
        self.dropped: list[str] = []  # what the store refused (kept in train.log)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._fields: dict[str, Any] = {}
        self._steps: dict[int, dict[str, float]] = {}
        self._beat = False
        self._closing = False
        self._abandoned = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name=f"golf-store-{run_id}", daemon=True)
        self._thread.start()

    def submit(self, fields: dict[str, Any], steps: dict[int, dict[str, float]], heartbeat: bool = True) -> None:
        with self._lock:
            self._fields.update(fields)
            for step, row in steps.items():
                self._steps.setdefault(step, {}).update(row)
            self._beat = self._beat or heartbeat
        self._wake.set()

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._fields or self._steps or self._busy)

    def close(self, timeout_s: float) -> bool:
        """Write what is left (waiting at most `timeout_s`); True when everything reached the store."""
        self._closing = True
        self._wake.set()
        try:
            self._thread.join(timeout_s)
        except KeyboardInterrupt:  # the user stops waiting for the store; the run folder has the record
            self._abandoned = True
            return False
        if self._thread.is_alive():
            self._abandoned = True  # golf has said the store missed the end: `golf repair` writes it, not a late retry
            return False
        return not self.pending

    def _take(self) -> tuple[dict[str, Any], dict[int, dict[str, float]], bool]:
        with self._lock:
            taken = self._fields, self._steps, self._beat
            self._fields, self._steps, self._beat = {}, {}, False
            self._busy = bool(taken[0] or taken[1] or taken[2])
            return taken

    def _put_back(self, fields: dict[str, Any], steps: dict[int, dict[str, float]]) -> None:
        with self._lock:  # what was submitted meanwhile is newer: it wins
            self._fields = {**fields, **self._fields}
            for step, row in steps.items():
                self._steps[step] = {**row, **self._steps.get(step, {})}
            self._busy = False

    def _loop(self) -> None:
        delay = RETRY_MIN_S
        while True:
            self._wake.wait(None if not self._closing else 0.05)
            self._wake.clear()
            if self._abandoned:
                return
            fields, steps, beat = self._take()
            if not (fields or steps or beat):
                if self._closing:
                    return
                continue
            try:
                self._write(fields, steps, beat)
            except Exception as exc:  # the store is unavailable: keep everything, try again later
                self._put_back(fields, steps)
                if self.failing is None:
                    self.note(f"golf: runs.db unavailable ({one_line(exc)}); the run goes on and train.log keeps "
                              "everything; retrying")
                self.failing = one_line(exc)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._wake.set()
                continue
            with self._lock:
                self._busy = False
            if self.failing is not None:
                self.note("golf: runs.db is back; the buffered rows are written")
                self.failing = None
            delay = RETRY_MIN_S

    def _write(self, fields: dict[str, Any], steps: dict[int, dict[str, float]], beat: bool) -> None:
        try:
            self.store.update_run(self.run_id, **fields)
            self.store.upsert_steps(self.run_id, steps)
        except Exception as exc:
            if store_unavailable(exc):
                raise
            self._write_one_by_one(fields, steps)  # find the values the store refuses; keep the rest
        if beat:
            heartbeat = getattr(self.store, "heartbeat", None)
            if heartbeat is not None:
                heartbeat(self.run_id)

    def _write_one_by_one(self, fields: dict[str, Any], steps: dict[int, dict[str, float]]) -> None:
        attempts: list[tuple[str, Callable[[], None]]] = [
            (f"field {key}={value!r}", lambda k=key, v=value: self.store.update_run(self.run_id, **{k: v}))
            for key, value in fields.items()]
        attempts += [(f"step {step}", lambda s=step, r=row: self.store.upsert_steps(self.run_id, {s: r}))
                     for step, row in steps.items()]
        for what, write in attempts:
            try:
                write()
            except Exception as exc:
                if store_unavailable(exc):
                    raise
                self.dropped.append(what)
                self.note(f"golf: runs.db refused {what[:120]} ({one_line(exc)}); train.log keeps it")


class Recorder:
    """Parses lines (a line the parser chokes on is counted, never fatal) and submits what changed."""

    def __init__(self, store: Store, row: Run, non_record_reason: str | None, note: Callable[[str], None]) -> None:
        self.row = row
        self.run_id = row.id
        self.note = note
        self.non_record_reason = non_record_reason
        self.parser = LogParser()
        self.parse_errors = 0
        self.writer = StoreWriter(store, row.id, note)
        self.store = store
        self._submitted_steps: dict[int, dict[str, float]] = {}
        self._submitted_fields: dict[str, Any] = {}

    def feed(self, line: str) -> None:
        try:
            self.parser.feed(line)
        except Exception as exc:  # a parser bug must not cost the run: the line is in train.log
            self.parse_errors += 1
            if self.parse_errors == 1:
                self.note(f"golf: could not parse a log line ({type(exc).__name__}: {exc}); it stays in train.log")

    def fields(self) -> dict[str, Any]:
        return fields_of(self.parser.run, self.non_record_reason, self.parse_errors)

    def flush(self) -> None:
        try:
            fields = {k: v for k, v in self.fields().items() if self._submitted_fields.get(k, _UNSET) != v}
            changed = {step: row for step, row in step_rows(self.parser.run).items()
                       if self._submitted_steps.get(step) != row}
        except Exception as exc:
            self.parse_errors += 1
            if self.parse_errors == 1:
                self.note(f"golf: could not read the parsed metrics ({type(exc).__name__}: {exc})")
            fields, changed = {}, {}
        self.writer.submit(fields, changed)
        self._submitted_fields.update(fields)
        self._submitted_steps.update(changed)

    def finish(self, status: str, exit_code: int | None, stop_reason: str | None, artifact: str | None,
               run_dir: Path, wait_s: float | None = None) -> Run:
        """Record the end: golf_status.json in the run folder first, then the store (waiting for it a while)."""
        end = {"status": status, "exit_code": exit_code, "ended_at": now(), "stop_reason": stop_reason,
               "artifact_path": artifact}
        write_status_file(run_dir, {**end, "run_id": self.run_id})
        self.flush()
        self.writer.submit(end, {})
        wait = STORE_WAIT_AT_END_S if wait_s is None else wait_s
        if self.writer.pending and self.writer.failing:
            self.note(f"golf: waiting up to {wait:.0f} s for runs.db ({self.writer.failing}) to record the end")
        if self.writer.close(wait):
            try:
                run = self.store.get(self.run_id)
                if run is not None:
                    return run
            except Exception as exc:
                self.writer.failing = one_line(exc)
        self.note(f"golf: runs.db stayed unavailable ({self.writer.failing or 'timed out'}); run {self.run_id} is "
                  f"recorded in {run_dir}; `golf repair {self.run_id}` writes it into the store")
        values = {**self.row.model_dump(), **self.fields(), **end}
        return Run(**{k: v for k, v in values.items() if v is not None or k in end})


def write_status_file(run_dir: Path, end: dict[str, Any]) -> bool:
    """The run's end as golf saw it (status, exit code, reason, time), atomically; False if it cannot be written
    (the disk may be what failed)."""
    data = {k: (v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v) for k, v in end.items()}
    path = run_dir / STATUS_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return False


def read_status_file(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
