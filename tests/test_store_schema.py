"""The store against files it did not just create: an older golf's runs.db (the committed v1 fixture), a store
whose write lock another process holds, and files that are not golf stores at all."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import golf.store.schema as schema
from golf.store import Run, Store
from golf.store.models import SCHEMA_VERSION
from golf_cli.main import app

FIXTURE = Path(__file__).parent / "fixtures" / "runs_schema_v1.db"
runner = CliRunner()


def _raw(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    path = tmp_path / "runs.db"
    shutil.copyfile(FIXTURE, path)
    return path


def test_fixture_is_schema_version_1() -> None:
    assert _raw(FIXTURE, "SELECT value FROM meta WHERE key='schema_version'") == [("1",)]
    columns = {r[1] for r in _raw(FIXTURE, "PRAGMA table_info(run)")}
    assert "heartbeat_at" not in columns  # what the migration has to add


def test_a_newer_golf_migrates_the_v1_store_once_and_keeps_every_row(v1: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    runs_before = {r[0]: r[1:] for r in _raw(v1, "SELECT id, name, status, seed, final_bpb, sliding_bpb, config, tags "
                                                 "FROM run")}
    steps_before = _raw(v1, "SELECT run_id, step, train_loss, val_loss, val_bpb, train_time_ms, step_avg_ms FROM step "
                            "ORDER BY run_id, step")
    assert len(runs_before) == 4 and len(steps_before) == 9
    calls = []
    real = schema.migrate
    monkeypatch.setattr("golf.store.db.migrate", lambda *a: (calls.append(1), real(*a)))

    store = Store(v1)
    assert calls == [1] and store.schema_version() == SCHEMA_VERSION
    assert _raw(v1, "SELECT value FROM meta WHERE key='schema_version'") == [(str(SCHEMA_VERSION),)]
    assert {r[0]: r[1:] for r in _raw(v1, "SELECT id, name, status, seed, final_bpb, sliding_bpb, config, tags "
                                          "FROM run")} == runs_before
    assert _raw(v1, "SELECT run_id, step, train_loss, val_loss, val_bpb, train_time_ms, step_avg_ms FROM step "
                    "ORDER BY run_id, step") == steps_before
    # the new fields exist and are empty; the API reads the old rows in full
    assert _raw(v1, "SELECT count(*) FROM run WHERE heartbeat_at IS NOT NULL") == [(0,)]
    base = store.resolve_run("base-s1337")
    assert base.heartbeat_at is None and base.tags == ["smoke", "v1"] and base.config["NUM_LAYERS"] == "9"
    assert base.bytes_breakdown == {"embeddings": 1000, "mlp": 2000} and base.post_ttt_bpb == pytest.approx(1.17)
    assert [s.step for s in store.steps("base1")] == [0, 10, 20]
    assert store.steps("base1")[2].val_loss == pytest.approx(3.4)
    ingested = store.list_runs(source="ingested")
    assert [r.name for r in ingested] == ["rec-s1"] and ingested[0].final_bpb == pytest.approx(1.23456789)
    # new writes use the new field
    store.heartbeat("live7")
    assert store.get("live7").heartbeat_at is not None  # type: ignore[union-attr]

    store.engine.dispose()
    before = _digest(v1)
    again = Store(v1)  # current now: not migrated, not even locked
    assert calls == [1]
    assert again.get("base0") is not None and _digest(v1) == before


def test_a_reader_reads_an_older_store_without_migrating_it(v1: Path) -> None:
    before = _digest(v1)
    reader = Store(v1, readonly=True)
    assert reader.schema_version() == 1
    runs = {r.name: r for r in reader.list_runs()}
    assert set(runs) == {"base-s1337", "base-s42", "live-s7", "rec-s1"}
    assert runs["base-s42"].heartbeat_at is None and runs["base-s42"].sliding_bpb == pytest.approx(1.19)
    assert [s.train_loss for s in reader.steps("base0")] == [None, 3.0, 2.5]
    with pytest.raises(Exception, match="read-only"):
        reader.update_run("base0", status="failed")
    result = runner.invoke(app, ["ls", "--db", str(v1), "--format", "json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["compare", "base-s1337", "base-s42", "--db", str(v1), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert _digest(v1) == before
    assert not Path(str(v1) + "-wal").exists()  # no journal-mode switch either


_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE run SET tags = tags")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_read_commands_answer_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = Store(db)
    store.create_run(Run(id="a1", name="a", status="completed", group_hash="g" * 16, final_bpb=1.2, final_loss=2.0,
                         final_stage="post_quant", post_quant_bpb=1.2, post_quant_loss=2.0))
    store.create_run(Run(id="b1", name="b", status="completed", group_hash="h" * 16, final_bpb=1.1, final_loss=1.9,
                         final_stage="post_quant", post_quant_bpb=1.1, post_quant_loss=1.9))
    store.upsert_steps("a1", {1: {"train_loss": 3.0}})
    store.engine.dispose()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(db), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        probe = sqlite3.connect(db, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # the lock really is held
            probe.execute("BEGIN IMMEDIATE")
        probe.close()
        for args in (["ls"], ["show", "a"], ["compare", "a", "b"], ["leaderboard"], ["ablation-table", "a", "b"]):
            started = time.monotonic()
            result = runner.invoke(app, [*args, "--db", str(db), "--format", "json"])
            elapsed = time.monotonic() - started
            assert result.exit_code == 0, (args, result.output)
            assert elapsed < 5, (args, elapsed)  # far from the 30 s busy timeout: nothing waited on the lock
        listed = runner.invoke(app, ["ls", "--db", str(db), "--format", "json"]).stdout
        assert '"a1"' in listed and '"b1"' in listed
        assert holder.poll() is None  # still holding it
    finally:
        holder.kill()
        holder.wait()


def _foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    conn.execute("INSERT INTO notes (text) VALUES ('mine')")
    conn.commit()
    conn.close()


def _newer(path: Path) -> None:
    Store(path).engine.dispose()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()


def _corrupt(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)


def _not_sqlite(path: Path) -> None:
    path.write_text("step:1/10 train_loss:2.0\n" * 200)


def _commands(db: Path, tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "some.log"
    log.write_text("step:1/10 train_loss:2.0 train_time:10ms step_avg:10.00ms\n")
    return [["ls"], ["ls", "--format", "json"], ["show", "x"], ["compare", "x", "y"], ["leaderboard"],
            ["ablation-table", "x", "y"], ["export-record", "x", "--out", str(tmp_path / "out")],
            ["ingest", str(log)], ["bench", "x"]]


@pytest.mark.parametrize(("make", "message"), [
    (_foreign, "not a golf run store"), (_newer, "newer golf"), (_corrupt, "not a readable SQLite database"),
    (_not_sqlite, "not a readable SQLite database"),
])
def test_a_file_golf_must_not_touch_is_one_line_exit_2_and_left_as_it_was(tmp_path: Path, make, message) -> None:
    db = tmp_path / "runs.db"
    make(db)
    before = _digest(db)
    for args in _commands(db, tmp_path):
        result = runner.invoke(app, [*args, "--db", str(db)])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("golf: error: ") and message in lines[0], (args, lines)
        assert str(db) in lines[0]
        assert _digest(db) == before, args
        assert not Path(str(db) + "-wal").exists() and not Path(str(db) + "-journal").exists()


def test_a_read_only_store_is_read_but_not_written(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    db = folder / "runs.db"
    store = Store(db)
    store.create_run(Run(id="r1", name="one", status="completed", final_bpb=1.25, final_stage="pre_quant"))
    store.engine.dispose()
    db.chmod(0o444)
    try:
        listed = runner.invoke(app, ["ls", "--db", str(db), "--format", "json"])
        assert listed.exit_code == 0 and '"r1"' in listed.stdout
        log = tmp_path / "some.log"
        log.write_text("step:1/10 train_loss:2.0 train_time:10ms step_avg:10.00ms\n")
        result = runner.invoke(app, ["ingest", str(log), "--db", str(db)])
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [
            f"golf: error: {db}: the file {db} is read-only, so golf cannot record runs there (read-only commands "
            "such as `golf ls` still work; pass --db PATH for a writable store)"]
        db.chmod(0o644)
        folder.chmod(0o555)  # SQLite could not create runs.db-wal beside it
        result = runner.invoke(app, ["ingest", str(log), "--db", str(db)])
        assert result.exit_code == 2 and f"the folder {folder} is read-only" in result.stderr
        listed = runner.invoke(app, ["show", "one", "--db", str(db), "--format", "json"])
        assert listed.exit_code == 0 and '"final_bpb": 1.25' in listed.stdout
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)


def test_an_empty_file_becomes_a_store_for_a_writer_only(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    db.touch()
    result = runner.invoke(app, ["ls", "--db", str(db)])
    assert result.exit_code == 2 and "no run store yet" in result.stderr and db.stat().st_size == 0
    assert Store(db).schema_version() == SCHEMA_VERSION
