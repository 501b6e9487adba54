"""The run-store API over runs.db (SQLite in WAL mode): one layer for every reader and writer of the store.

A writer (`Store(path)`) checks the file before it writes a byte (golf.store.schema), migrates an older store once,
and waits up to BUSY_TIMEOUT_MS for another writer. A reader (`Store(path, readonly=True)`, what ls, show, compare,
leaderboard and export use) opens the file with `mode=ro`: it never writes, never migrates (fields an older store
lacks read as empty), and in WAL mode never waits on a writer. Reads are plain SQL over the columns the file has,
decoded by the types of golf.store.models: rows in, rows out. Only the golf process writes; torchrun ranks never
open the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import case, create_engine, event, insert, update
from sqlalchemy import types as sa_types
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel

from golf.errors import GolfError
from golf.paths import resolve_db_path
from golf.store.models import Run, Step, now
from golf.store.schema import connect_readonly, inspect, migrate

BUSY_TIMEOUT_MS = 30_000
# A reader waits at most this long, and only on a store in rollback-journal mode mid-write (WAL readers never wait).
READ_TIMEOUT_MS = 1_000
# How often the golf process recording a run touches its row (the runner's flush interval), and the age after which
# a `running` row whose heartbeat stopped is dead: three missed beats plus a writer's whole busy timeout (a beat may
# wait that long on another process's lock).
HEARTBEAT_EVERY_S = 1.5
STALE_AFTER_S = 3 * HEARTBEAT_EVERY_S + BUSY_TIMEOUT_MS / 1000
STALE_REASON = "golf process died (no heartbeat)"

_STEP_COLUMNS = ("train_loss", "val_loss", "val_bpb", "train_time_ms", "step_avg_ms")
_RUN_TABLE = Run.__table__  # type: ignore[attr-defined]
_STEP_TABLE = Step.__table__  # type: ignore[attr-defined]
_TABLES = ("run", "step", "sweep", "cell")  # the tables read through `columns` (the sweep queue's in golf.launch.queue)


class RunNotFound(GolfError):
    pass


def _kinds(table: Any) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The JSON, datetime and boolean columns of a table (decoded from SQLite's text and integers on read)."""
    def of(kind: type) -> frozenset[str]:  # a TypeDecorator (sqlmodel's UTCDateTime) is judged by what it wraps
        return frozenset(c.name for c in table.columns if isinstance(getattr(c.type, "impl_instance", c.type), kind))
    return of(sa_types.JSON), of(sa_types.DateTime), of(sa_types.Boolean)


_DECODE = {t: _kinds(SQLModel.metadata.tables[t]) for t in _TABLES}


class Store:
    """The run store. Cheap to open; every method uses its own short transaction."""

    def __init__(self, path: str | os.PathLike[str] | None = None, create: bool = True,
                 readonly: bool = False) -> None:
        self.path = resolve_db_path(path)
        self.readonly = readonly
        if (readonly or not create) and not self.path.exists():
            raise GolfError(f"{self.path}: no run store here (run `golf run SPEC` first, or pass --db PATH)")
        if self.path.parent and not self.path.parent.exists():
            raise GolfError(f"{self.path}: folder {self.path.parent} does not exist")
        found = inspect(self.path, (READ_TIMEOUT_MS if readonly else BUSY_TIMEOUT_MS) / 1000)
        self.engine: Engine
        if readonly:
            if found.kind != "golf":
                raise GolfError(f"{self.path}: an empty file, no run store yet (`golf run SPEC` creates one)")
            self.columns = {t: [c.name for c in SQLModel.metadata.tables[t].columns
                                if c.name in found.columns.get(t, ())] for t in _TABLES}
            self.engine = create_engine("sqlite://", poolclass=NullPool,
                                        creator=lambda: _reader_connection(self.path))
            return
        _check_writable(self.path)
        self.columns = {t: [c.name for c in SQLModel.metadata.tables[t].columns] for t in _TABLES}
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(self.engine, "connect", _on_connect)
        if not found.current:
            self._migrate()

    # -- schema
    def _migrate(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # one process migrates at a time
            try:
                migrate(conn, self.path)
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise

    def schema_version(self) -> int:
        rows = self.query("SELECT value FROM meta WHERE key='schema_version'")
        return int(rows[0]["value"]) if rows else 0

    # -- writes
    def create_run(self, run: Run) -> Run:
        self._writable()
        with Session(self.engine) as session:
            session.add(run)
            session.commit()
            session.refresh(run)
            return run

    def put_run(self, run: Run, steps: Mapping[int, Mapping[str, float]], replace: bool = False) -> None:
        """A whole run and its steps in one transaction (ingest); `replace` drops the run's old row and steps."""
        self._writable()
        step_rows = [{"run_id": run.id, "step": int(s), **{c: row.get(c) for c in _STEP_COLUMNS}}
                     for s, row in steps.items()]
        with self.engine.begin() as conn:
            if replace:
                conn.exec_driver_sql("DELETE FROM step WHERE run_id=?", (run.id,))
                conn.exec_driver_sql("DELETE FROM run WHERE id=?", (run.id,))
            conn.execute(insert(_RUN_TABLE), [run.model_dump()])
            if step_rows:
                conn.execute(insert(_STEP_TABLE), step_rows)

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        self._writable()
        unknown = [k for k in fields if k not in _RUN_TABLE.c or k == "id"]
        if unknown:
            raise AttributeError(f"Run has no field {unknown[0]}")
        with self.engine.begin() as conn:
            done = conn.execute(update(_RUN_TABLE).where(_RUN_TABLE.c.id == run_id).values(**fields))
        if done.rowcount == 0:
            raise RunNotFound(f"no run with id {run_id}")

    def upsert_steps(self, run_id: str, rows: Mapping[int, Mapping[str, float]]) -> None:
        """Insert or merge step rows (a train line and a val line at one step share a row)."""
        if not rows:
            return
        self._writable()
        sql = (
            f"INSERT INTO step (run_id, step, {', '.join(_STEP_COLUMNS)}) "
            f"VALUES (?, ?, {', '.join('?' * len(_STEP_COLUMNS))}) "
            "ON CONFLICT(run_id, step) DO UPDATE SET "
            + ", ".join(f"{c}=COALESCE(excluded.{c}, step.{c})" for c in _STEP_COLUMNS)
        )
        params = [(run_id, int(step), *(row.get(c) for c in _STEP_COLUMNS)) for step, row in rows.items()]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql, params)

    def delete_run(self, run_id: str) -> None:
        self._writable()
        with self.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM step WHERE run_id=?", (run_id,))
            conn.exec_driver_sql("DELETE FROM run WHERE id=?", (run_id,))

    def heartbeat(self, run_id: str) -> None:
        """The recording golf process is alive. A row another golf had declared dead (a beat held up by a lock
        longer than STALE_AFTER_S) is running again."""
        self._writable()
        t = _RUN_TABLE
        revived = (t.c.status == "failed") & (t.c.stop_reason == STALE_REASON)
        with self.engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == run_id).values(
                heartbeat_at=now(),
                status=case((revived, "running"), else_=t.c.status),
                stop_reason=case((revived, None), else_=t.c.stop_reason),
                ended_at=case((revived, None), else_=t.c.ended_at),
            ))

    def reconcile_stale(self) -> int:
        """Mark `running` rows whose golf process is gone as failed (see `is_dead`); the number marked."""
        self._writable()
        fixed = 0
        for record in self.records("status = 'running'"):
            if not is_dead(record):
                continue
            beat = record.get("heartbeat_at")
            t = _RUN_TABLE
            same_beat = t.c.heartbeat_at.is_(None) if beat is None else t.c.heartbeat_at == beat
            with self.engine.begin() as conn:  # only if no beat came in since it was read
                done = conn.execute(update(t).where(t.c.id == record["id"], t.c.status == "running", same_beat)
                                    .values(status="failed", stop_reason=record.get("stop_reason") or STALE_REASON,
                                            ended_at=record.get("ended_at") or beat or now()))
            fixed += done.rowcount
        return fixed

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A SQLAlchemy connection in one write transaction (committed on leaving), for the other tables' writers
        (the sweep queue)."""
        self._writable()
        with self.engine.begin() as conn:
            yield conn

    # -- reads: rows
    def table_records(self, table: str, where: str = "1", params: Sequence[Any] = (),
                      order: str = "rowid") -> list[dict[str, Any]]:
        """Rows of one of the store's tables as dicts, decoded as `records()` does; none from a store (read
        read-only) that predates the table."""
        if not self.columns.get(table):
            return []
        sql = f"SELECT {', '.join(self.columns[table])} FROM {table} WHERE {where} ORDER BY {order}"
        return [_decoded(table, row) for row in self.query(sql, params)]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read-only SQL query (`?` placeholders) as dicts."""
        with self._errors(), self.engine.connect() as conn:
            result = conn.exec_driver_sql(sql, tuple(params)) if params else conn.exec_driver_sql(sql)
            keys = list(result.keys())
            return [dict(zip(keys, row, strict=True)) for row in result]

    def records(self, where: str = "1", params: Sequence[Any] = (), order: str = "started_at, id",
                limit: int | None = None) -> list[dict[str, Any]]:
        """Run rows as dicts under the store's field names: every field of models.Run (None where an older store
        lacks it), JSON decoded, datetimes aware (UTC)."""
        sql = f"SELECT {', '.join(self.columns['run'])} FROM run WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_decoded("run", row) for row in self.query(sql, params)]

    def records_by_id(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        """Run rows in the order of `ids` (unknown ids left out)."""
        ids = list(dict.fromkeys(ids))
        if not ids:
            return []
        found = {r["id"]: r for r in self.records(f"id IN ({','.join('?' * len(ids))})", ids)}
        return [found[i] for i in ids if i in found]

    def step_records(self, run_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Step rows per run, in step order."""
        ids = list(dict.fromkeys(run_ids))
        out: dict[str, list[dict[str, Any]]] = {r: [] for r in ids}
        if not ids:
            return out
        rows = self.query(f"SELECT {', '.join(self.columns['step'])} FROM step "
                          f"WHERE run_id IN ({','.join('?' * len(ids))}) ORDER BY run_id, step", ids)
        for row in rows:
            out[row["run_id"]].append(_decoded("step", row))
        return out

    def completed_run_id(self, group_hash: str, seed: int | None) -> str | None:
        """The newest completed run of a group with this seed, if any (what `ablate` reuses)."""
        rows = self.query("SELECT id FROM run WHERE group_hash = ? AND seed IS ? AND status = 'completed' "
                          "ORDER BY started_at DESC, id DESC LIMIT 1", (group_hash, seed))
        return rows[0]["id"] if rows else None

    def log_file(self, run: Mapping[str, Any]) -> Path | None:
        """A run's log: where golf recorded it, else runs/<id>/train.log beside this store (a runs.db copied off
        the GPU box together with its runs/ folder)."""
        recorded = run.get("log_path")
        if recorded and Path(recorded).is_file():
            return Path(recorded)
        beside = self.path.resolve().parent / "runs" / str(run.get("id")) / "train.log"
        return beside if beside.is_file() else None

    # -- reads: Run and Step objects
    def get(self, run_id: str) -> Run | None:
        found = self.records("id = ?", (run_id,))
        return self._run(found[0]) if found else None

    def resolve_run(self, ref: str) -> Run:
        """A run by id, id prefix or name; a clear error listing candidates otherwise."""
        found = self.records("id = ?", (ref,)) or self.records("name = ?", (ref,))
        if found:
            return self._run(found[0])
        matches = self.records("id >= ? AND id < ?", (ref, ref + "\U0010ffff"))
        if len(matches) == 1:
            return self._run(matches[0])
        if len(matches) > 1:
            names = ", ".join(f"{m['id']} ({m['name']})" for m in matches[:8])
            raise RunNotFound(f"run {ref!r} is ambiguous: {names}")
        similar = [r["name"] for r in self.query("SELECT name FROM run WHERE instr(name, ?) > 0 LIMIT 8", (ref,))]
        hint = f"; similar: {', '.join(similar)}" if similar else "; `golf ls` lists runs"
        raise RunNotFound(f"no run with id or name {ref!r}{hint}")

    def list_runs(self, status: str | None = None, tag: str | None = None, limit: int | None = None,
                  source: str | None = None) -> list[Run]:
        """Newest first. A reader shows a `running` row whose golf is gone (is_dead) as failed."""
        where, params = ["1"], []
        if status:
            where.append("status = ?")
            params.append(status)
        if source:
            where.append("source = ?")
            params.append(source)
        if tag:
            where.append("EXISTS (SELECT 1 FROM json_each(run.tags) WHERE json_each.value = ?)")
            params.append(tag)
        rows = self.records(" AND ".join(where), params, order="started_at DESC, id DESC", limit=limit)
        return [self._run(r) for r in rows]

    def runs_where(self, **equals: Any) -> list[Run]:
        unknown = [k for k in equals if k not in self.columns["run"]]
        if unknown:
            raise AttributeError(f"Run has no field {unknown[0]}")
        where = " AND ".join(f"{k} IS ?" for k in equals) or "1"
        return [self._run(r) for r in self.records(where, list(equals.values()), order="started_at")]

    def unique_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`... whichever is free."""
        rows = self.query("SELECT name FROM run WHERE name >= ? AND name < ?", (base, base + "\U0010ffff"))
        taken = {r["name"] for r in rows}
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    def steps(self, run_id: str) -> list[Step]:
        return self.steps_for([run_id])[run_id]

    def steps_for(self, run_ids: Iterable[str]) -> dict[str, list[Step]]:
        return {r: [Step(**row) for row in rows] for r, rows in self.step_records(run_ids).items()}

    # -- internals
    def _run(self, record: dict[str, Any]) -> Run:
        if self.readonly and is_dead(record):  # what the next writer will record (a reader writes nothing)
            record = {**record, "status": "failed", "stop_reason": record.get("stop_reason") or STALE_REASON}
        return Run(**record)

    def _writable(self) -> None:
        if self.readonly:
            raise GolfError(f"{self.path}: opened read-only; this command does not write to the run store")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """A reader turns SQLite's failures into one line; a writer's callers (the runner) handle their own."""
        try:
            yield
        except DBAPIError as exc:
            if not self.readonly:
                raise
            raise GolfError(f"{self.path}: cannot read the run store ({exc.orig})") from None


def is_dead(record: Mapping[str, Any], at: datetime | None = None) -> bool:
    """Whether a `running` row's golf process is gone: its heartbeat is older than STALE_AFTER_S. A row that never
    had a heartbeat (written by an older golf) is judged by its owner's pid on this host."""
    if record.get("status") != "running":
        return False
    beat = record.get("heartbeat_at")
    if beat is not None:
        return ((at or now()) - beat).total_seconds() > STALE_AFTER_S
    pid = record.get("pid")
    return record.get("host") == socket.gethostname() and pid is not None and not _pid_alive(pid)


def _decoded(table: str, row: dict[str, Any]) -> dict[str, Any]:
    json_cols, time_cols, bool_cols = _DECODE[table]
    out = dict.fromkeys((c.name for c in SQLModel.metadata.tables[table].columns), None)
    for key, value in row.items():
        if value is not None:
            if key in json_cols and isinstance(value, str):
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            elif key in time_cols and isinstance(value, str):
                with contextlib.suppress(ValueError):  # kept in UTC without an offset (sqlmodel's UTCDateTime)
                    value = datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
            elif key in bool_cols:
                value = bool(value)
        out[key] = value
    if table == "run" and out.get("tags") is None:
        out["tags"] = []
    return out


def _reader_connection(path: Path) -> sqlite3.Connection:
    conn = connect_readonly(path, READ_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA query_only=1")
    return conn


def _check_writable(path: Path) -> None:
    """A writer needs the file and its folder (SQLite puts runs.db-wal and -shm beside it). Permission bits are
    read as the user meant them: a file marked read-only is not written, even by root."""
    for target, what in ((path, "file"), (path.parent, "folder")):
        if not target.exists():
            continue
        mode = stat.S_IMODE(target.stat().st_mode)
        if not os.access(target, os.W_OK) or not mode & 0o222:
            raise GolfError(f"{path}: the {what} {target} is read-only, so golf cannot record runs there "
                            "(read-only commands such as `golf ls` still work; pass --db PATH for a writable store)")


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    _ensure_wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _ensure_wal(cur: Any) -> None:
    """Switch a new store to WAL. The switch needs the database to itself and SQLite does not wait on the busy
    timeout for it, so several golf processes creating one store at once retry here rather than fail."""
    if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02 + random.random() * 0.08)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_to_dict(run: Run) -> dict[str, Any]:
    """Plain JSON-ready dict with the store's field names."""
    data = run.model_dump()
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = value.isoformat(timespec="seconds")
    return data
