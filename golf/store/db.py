"""Opening runs.db (SQLite in WAL mode, busy timeout, schema version + migrations) and the run-store API.

Only the golf process writes here; torchrun ranks never open the store.
"""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, select

from golf.errors import GolfError
from golf.paths import resolve_db_path
from golf.store.models import SCHEMA_VERSION, Meta, Run, Step, now

BUSY_TIMEOUT_MS = 30_000

# version -> SQL statements that bring a store from version-1 to version. Append, never edit.
MIGRATIONS: dict[int, Sequence[str]] = {}


class RunNotFound(GolfError):
    pass


class Store:
    """The run store. Cheap to open; every method uses its own short transaction."""

    def __init__(self, path: str | os.PathLike[str] | None = None, create: bool = True) -> None:
        self.path = resolve_db_path(path)
        if not create and not self.path.exists():
            raise GolfError(f"{self.path}: no run store here (run `golf run SPEC` first, or pass --db PATH)")
        if self.path.parent and not self.path.parent.exists():
            raise GolfError(f"{self.path}: folder {self.path.parent} does not exist")
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(self.engine, "connect", _on_connect)
        self._migrate()

    # -- schema
    def _migrate(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # one process migrates at a time
            try:
                has_meta = conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").first()
                if not has_meta:
                    SQLModel.metadata.create_all(conn)
                    conn.execute(text("INSERT INTO meta(key, value) VALUES ('schema_version', :v)"),
                                 {"v": str(SCHEMA_VERSION)})
                else:
                    row = conn.exec_driver_sql("SELECT value FROM meta WHERE key='schema_version'").first()
                    version = int(row[0]) if row else 0
                    if version > SCHEMA_VERSION:
                        raise GolfError(f"{self.path}: schema version {version} is newer than this golf "
                                        f"({SCHEMA_VERSION}); upgrade golf")
                    for target in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS.get(target, ()):
                            conn.exec_driver_sql(statement)
                    if version != SCHEMA_VERSION:
                        conn.execute(text("UPDATE meta SET value=:v WHERE key='schema_version'"),
                                     {"v": str(SCHEMA_VERSION)})
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise

    def schema_version(self) -> int:
        with Session(self.engine) as session:
            meta = session.get(Meta, "schema_version")
            return int(meta.value) if meta else 0

    # -- writes
    def create_run(self, run: Run) -> Run:
        with Session(self.engine) as session:
            session.add(run)
            session.commit()
            session.refresh(run)
            return run

    def update_run(self, run_id: str, **fields: Any) -> None:
        if not fields:
            return
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
            if run is None:
                raise RunNotFound(f"no run with id {run_id}")
            for key, value in fields.items():
                if not hasattr(run, key):
                    raise AttributeError(f"Run has no field {key}")
                setattr(run, key, value)
            session.add(run)
            session.commit()

    def upsert_steps(self, run_id: str, rows: Mapping[int, Mapping[str, float]]) -> None:
        """Insert or merge step rows (a train line and a val line at one step share a row)."""
        if not rows:
            return
        columns = ("train_loss", "val_loss", "val_bpb", "train_time_ms", "step_avg_ms")
        sql = (
            "INSERT INTO step (run_id, step, train_loss, val_loss, val_bpb, train_time_ms, step_avg_ms) "
            "VALUES (:run_id, :step, :train_loss, :val_loss, :val_bpb, :train_time_ms, :step_avg_ms) "
            "ON CONFLICT(run_id, step) DO UPDATE SET "
            + ", ".join(f"{c}=COALESCE(excluded.{c}, step.{c})" for c in columns)
        )
        params = [{"run_id": run_id, "step": int(step), **{c: row.get(c) for c in columns}}
                  for step, row in rows.items()]
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)

    def delete_run(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM step WHERE run_id=:r"), {"r": run_id})
            conn.execute(text("DELETE FROM run WHERE id=:r"), {"r": run_id})

    def unique_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`... whichever is free."""
        with Session(self.engine) as session:
            taken = set(session.exec(select(Run.name).where(Run.name.startswith(base))).all())  # type: ignore[union-attr]
        if base not in taken:
            return base
        n = 2
        while f"{base}-{n}" in taken:
            n += 1
        return f"{base}-{n}"

    def reconcile_stale(self) -> int:
        """Mark runs left 'running' by a golf process that no longer exists on this host as failed."""
        host = socket.gethostname()
        fixed = 0
        with Session(self.engine) as session:
            for run in session.exec(select(Run).where(Run.status == "running", Run.host == host)).all():
                if run.pid is not None and not _pid_alive(run.pid):
                    run.status = "failed"
                    run.stop_reason = run.stop_reason or "golf process died"
                    run.ended_at = run.ended_at or now()
                    session.add(run)
                    fixed += 1
            session.commit()
        return fixed

    # -- reads
    def get(self, run_id: str) -> Run | None:
        with Session(self.engine) as session:
            return session.get(Run, run_id)

    def resolve_run(self, ref: str) -> Run:
        """A run by id, id prefix or name; a clear error listing candidates otherwise."""
        with Session(self.engine) as session:
            run = session.get(Run, ref) or session.exec(select(Run).where(Run.name == ref)).first()
            if run is not None:
                return run
            matches = session.exec(select(Run).where(Run.id.startswith(ref))).all()  # type: ignore[union-attr]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                names = ", ".join(f"{m.id} ({m.name})" for m in matches[:8])
                raise RunNotFound(f"run {ref!r} is ambiguous: {names}")
            similar = session.exec(select(Run.name).where(Run.name.contains(ref)).limit(8)).all()  # type: ignore[union-attr]
        hint = f"; similar: {', '.join(similar)}" if similar else "; `golf ls` lists runs"
        raise RunNotFound(f"no run with id or name {ref!r}{hint}")

    def list_runs(self, status: str | None = None, tag: str | None = None, limit: int | None = None,
                  source: str | None = None) -> list[Run]:
        """Newest first."""
        with Session(self.engine) as session:
            query = select(Run).order_by(Run.started_at.desc(), Run.id.desc())  # type: ignore[attr-defined]
            if status:
                query = query.where(Run.status == status)
            if source:
                query = query.where(Run.source == source)
            if tag:
                query = query.where(text("EXISTS (SELECT 1 FROM json_each(run.tags) WHERE json_each.value = :tag)")
                                    .bindparams(tag=tag))
            if limit:
                query = query.limit(limit)
            return list(session.exec(query).all())

    def runs_where(self, **equals: Any) -> list[Run]:
        with Session(self.engine) as session:
            query = select(Run)
            for key, value in equals.items():
                query = query.where(getattr(Run, key) == value)
            return list(session.exec(query.order_by(Run.started_at)).all())  # type: ignore[arg-type]

    def steps(self, run_id: str) -> list[Step]:
        with Session(self.engine) as session:
            return list(session.exec(select(Step).where(Step.run_id == run_id).order_by(Step.step)).all())  # type: ignore[arg-type]

    def steps_for(self, run_ids: Iterable[str]) -> dict[str, list[Step]]:
        ids = list(run_ids)
        out: dict[str, list[Step]] = {r: [] for r in ids}
        if not ids:
            return out
        with Session(self.engine) as session:
            query = select(Step).where(Step.run_id.in_(ids)).order_by(Step.run_id, Step.step)  # type: ignore[attr-defined]
            for row in session.exec(query).all():
                out[row.run_id].append(row)
        return out


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


def engine_of(store: Store) -> Engine:
    return store.engine
