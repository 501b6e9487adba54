"""`golf logs RUN [-f] [-n N]`: the run's train.log printed, its tail, and a follow that ends by itself once the
run's row is no longer running (the lines written until then all printed)."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()
T0 = datetime(2026, 3, 20, 12, 0, tzinfo=timezone.utc)
LINES = [f"step:{s}/20 train_loss:{7 - s / 10:.4f} train_time:{s * 10}ms step_avg:10.00ms\n" for s in range(1, 21)]


def add_run(store: Store, tmp_path: Path, run_id: str, status: str, started: datetime, text: str | None,
            experiment: str = "exp") -> Path:
    log = tmp_path / "runs" / run_id / "train.log"
    if text is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text)
    # a running row of this (live) process, so a reader does not take it for a run whose golf died
    store.create_run(Run(id=run_id, name=f"{experiment}-{run_id}", experiment=experiment, status=status,
                         started_at=started, log_path=str(log), run_dir=str(log.parent), pid=os.getpid(),
                         host=socket.gethostname()))
    return log


def test_prints_the_whole_log_and_its_last_lines(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    add_run(Store(db), tmp_path, "aaa111", "completed", T0, "".join(LINES))
    result = runner.invoke(app, ["logs", "exp-aaa111", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(LINES)
    result = runner.invoke(app, ["logs", "aaa1", "-n", "3", "--db", str(db)])  # an id prefix
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(LINES[-3:])
    result = runner.invoke(app, ["logs", "aaa111", "-n", "100", "--db", str(db)])
    assert result.stdout == "".join(LINES)
    result = runner.invoke(app, ["logs", "aaa111", "-n", "0", "--db", str(db)])
    assert result.exit_code == 0 and result.stdout == ""


def test_an_experiment_means_its_newest_running_run_else_its_newest(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = Store(db)
    add_run(store, tmp_path, "old000", "completed", T0, "old\n")
    add_run(store, tmp_path, "run000", "running", T0 + timedelta(hours=1), "running\n")
    add_run(store, tmp_path, "new000", "failed", T0 + timedelta(hours=2), "newest\n")
    result = runner.invoke(app, ["logs", "exp", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "running\n"
    store.update_run("run000", status="completed")
    result = runner.invoke(app, ["logs", "exp", "--db", str(db)])
    assert result.stdout == "newest\n"


def test_follow_prints_every_appended_line_and_ends_with_the_run(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = Store(db)
    log = add_run(store, tmp_path, "fol111", "running", T0, "".join(LINES[:2]))
    rest = "".join(LINES[2:]) + "pre_quant val_bpb:1.5 done ✓\n"
    encoded = rest.encode()

    def trainer() -> None:  # appends in uneven pieces (lines and a UTF-8 character split), then the row ends
        time.sleep(0.5)
        with open(log, "ab", buffering=0) as f:
            for k in range(0, len(encoded), 37):
                f.write(encoded[k:k + 37])
                time.sleep(0.02)
        Store(db).update_run("fol111", status="completed")

    thread = threading.Thread(target=trainer)
    thread.start()
    started = time.monotonic()
    result = runner.invoke(app, ["logs", "fol111", "-f", "-n", "1", "--db", str(db)])
    thread.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == LINES[1] + rest  # the last line there was, then everything appended, exactly once
    assert time.monotonic() - started < 15


def test_follow_waits_for_a_log_not_written_yet(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    log = add_run(Store(db), tmp_path, "new222", "running", T0, None)

    def trainer() -> None:
        time.sleep(0.4)
        log.parent.mkdir(parents=True)
        log.write_text("first\n")
        time.sleep(0.3)
        with open(log, "a") as f:
            f.write("last\n")
        Store(db).update_run("new222", status="failed")

    thread = threading.Thread(target=trainer)
    thread.start()
    result = runner.invoke(app, ["logs", "new222", "--follow", "--db", str(db)])
    thread.join()
    assert result.exit_code == 0, result.output
    assert result.stdout == "first\nlast\n"


def test_unknown_run_and_missing_log_are_one_line(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    add_run(Store(db), tmp_path, "gone11", "completed", T0, None)
    result = runner.invoke(app, ["logs", "nosuchrun", "--db", str(db)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "nosuchrun" in result.output
    result = runner.invoke(app, ["logs", "gone11", "-f", "--db", str(db)])  # finished: nothing will come
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "has no log file" in result.output
    result = runner.invoke(app, ["logs", "gone11", "-n", "-1", "--db", str(db)])
    assert result.exit_code == 2 and "-n -1" in result.output


def test_ctrl_c_while_following_is_one_line_and_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "runs.db"
    add_run(Store(db), tmp_path, "int111", "running", T0, "one\n")
    real_get = Store.get
    calls = []

    def get(self: Store, run_id: str) -> Run | None:
        calls.append(run_id)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real_get(self, run_id)

    monkeypatch.setattr(Store, "get", get)
    result = runner.invoke(app, ["logs", "int111", "-f", "--db", str(db)])
    assert result.exit_code == 130
    assert result.stdout == "one\n"
    assert result.stderr == "golf: interrupted\n"


def test_lines_written_just_before_the_row_ended_are_printed(tmp_path: Path) -> None:
    """The race follow must win: the runner's last lines land after follow's last read but before the row
    changes; follow sees the row ended and must still print them. A UTF-8 character split between the two
    reads comes out whole."""
    from golf.launch.follow import follow

    log = tmp_path / "train.log"
    tick = "✓".encode()
    log.write_bytes(b"a " + tick[:1])
    out: list[str] = []
    checks = []

    def still_running() -> bool:
        checks.append(1)
        if len(checks) == 2:
            with open(log, "ab") as f:
                f.write(tick[1:] + b"\nfinal\n")
            return False
        return True

    follow(log, still_running, out.append, sleep=lambda _s: None)
    assert "".join(out) == "a ✓\nfinal\n"
