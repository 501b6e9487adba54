"""A runs.db golf must not write (corrupt, not golf's, read-only), met by `golf run` end to end: one line, exit 2,
the file's bytes untouched, no run folder and no trainer started."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from faultkit import write_spec
from typer.testing import CliRunner

from golf.store import Store
from golf_cli.main import app

runner = CliRunner()


def corrupt(db: Path) -> None:
    Store(db).engine.dispose()
    data = bytearray(db.read_bytes())
    data[:16] = b"definitely not!!"  # SQLite's header: "SQLite format 3\0"
    db.write_bytes(bytes(data))


def foreign(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")


def read_only(db: Path) -> None:
    Store(db).engine.dispose()
    os.chmod(db, 0o444)


@pytest.mark.parametrize("damage, message", [(corrupt, "not a readable SQLite database"),
                                              (foreign, "not a golf run store"),
                                              (read_only, "is read-only, so golf cannot record runs there")])
def test_golf_run_refuses_a_store_it_must_not_write(workdir: Path, tiny_data: Path, db: Path, damage: object,
                                                    message: str) -> None:
    damage(db)  # type: ignore[operator]
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    spec = write_spec(workdir, tiny_data, 'open("started", "w").close()\n')
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)])
    assert result.exit_code == 2, result.output[-2000:]
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not (workdir / "runs").exists() and not list(workdir.rglob("started"))
