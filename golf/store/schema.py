"""What the file at a store's path is, and bringing an older golf store up to this golf's schema.

golf looks at a file through a read-only sqlite3 connection before it writes a byte into it: a corrupt file, a
SQLite file that is not a golf store, or a store written by a newer golf is one line (GolfError) and stays untouched.

Migrations are additive and run by themselves: the tables and columns of `golf.store.models` that an older runs.db
lacks are added (new fields are Optional, so old rows read them as empty), then the data steps of `MIGRATIONS` for
each version passed, then `meta.schema_version` is set. A store that is already current is not locked or written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlmodel import SQLModel

from golf.errors import GolfError
from golf.store.models import SCHEMA_VERSION

# version -> SQL run once when a store passes that version, after its new columns exist (to fill them from older
# ones, say). Append, never edit. Adding a column needs no entry here: the column itself is added from models.py.
MIGRATIONS: dict[int, Sequence[str]] = {}

GOLF_TABLES = ("meta", "run", "step", "sweep", "cell")


@dataclass
class Inspection:
    """What is at the path: nothing, an empty SQLite file (a new store may go there) or a golf store."""

    kind: str  # missing | empty | golf
    version: int | None = None
    columns: dict[str, set[str]] = field(default_factory=dict)  # table -> its column names

    @property
    def current(self) -> bool:
        """Nothing to migrate: this golf's version and every table and column of models.py."""
        if self.kind != "golf" or self.version != SCHEMA_VERSION:
            return False
        return not missing_columns(self.columns)


def connect_readonly(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A read-only sqlite3 connection (`mode=ro`): it cannot write, whatever runs on it. A WAL store in a folder that
    this user cannot write (no -shm to create) is opened as immutable: nobody can be writing it from here either."""
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        if "unable to open" not in str(exc) or not path.is_file():
            raise
    return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=timeout_s, check_same_thread=False)


def inspect(path: Path, timeout_s: float) -> Inspection:
    """Look at `path` without writing to it; GolfError for a file golf must not touch."""
    if not path.exists():
        return Inspection("missing")
    if path.is_dir():
        raise GolfError(f"{path}: is a folder, not a run store (pass --db PATH/runs.db)")
    conn = None
    try:
        conn = connect_readonly(path, timeout_s)
        return _inspect(conn, path)
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise GolfError(f"{path}: locked by another process for over {timeout_s:g} s ({exc}); try again") \
                from None
        if "unable to open" in text:
            raise GolfError(f"{path}: cannot open the run store ({exc})") from None
        raise GolfError(f"{path}: not a readable SQLite database ({exc}); golf leaves it untouched "
                        "(pass --db PATH for another store)") from None
    finally:
        if conn is not None:
            conn.close()


def _inspect(conn: sqlite3.Connection, path: Path) -> Inspection:
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    if not tables:
        return Inspection("empty")
    if "meta" not in tables or "run" not in tables:
        shown = ", ".join(sorted(tables)[:6])
        raise GolfError(f"{path}: a SQLite database but not a golf run store (its tables: {shown}); golf leaves "
                        "it untouched (pass --db PATH for a run store)")
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    try:
        version = int(row[0]) if row else None
    except (TypeError, ValueError):
        version = None
    if version is None:
        raise GolfError(f"{path}: not a golf run store (no schema_version in its meta table); golf leaves it "
                        "untouched")
    if version > SCHEMA_VERSION:
        raise GolfError(f"{path}: written by a newer golf (schema version {version}, this golf reads up to "
                        f"{SCHEMA_VERSION}); upgrade golf (pip install -U golf)")
    columns = {name: {r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')} for name in tables}
    return Inspection("golf", version, columns)


def missing_columns(columns: dict[str, set[str]]) -> dict[str, list[str]]:
    """Per table of models.py: the columns an existing store lacks (a missing table lists all of its columns)."""
    out: dict[str, list[str]] = {}
    for table in SQLModel.metadata.sorted_tables:
        have = columns.get(table.name, set())
        lacking = [c.name for c in table.columns if c.name not in have]
        if lacking:
            out[table.name] = lacking
    return out


def migrate(conn: Any, path: Path) -> None:
    """Create a new store or bring an older one up to date. `conn` is a SQLAlchemy connection inside BEGIN
    IMMEDIATE (one process migrates at a time; the others see a current store when they get the lock)."""
    raw = conn.connection.dbapi_connection
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        SQLModel.metadata.create_all(conn)
        conn.exec_driver_sql("INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return
    inspection = _inspect(raw, path)  # again, under the lock: another golf may have migrated meanwhile
    if inspection.current:
        return
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in inspection.columns:
            table.create(conn)
            continue
        for column in table.columns:
            if column.name not in inspection.columns[table.name]:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
        for index in table.indexes:
            index.create(conn, checkfirst=True)
    for target in range((inspection.version or 0) + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS.get(target, ()):
            conn.exec_driver_sql(statement)
    conn.exec_driver_sql("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
