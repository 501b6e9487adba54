"""The user's stop rules (stall timeout, stop on divergence) and the launcher's own races: a silent trainer is
`stalled`, a NaN loss is `diverged` and stops a run only when the user asked for it, a run name taken between
planning and launch gets the next free one."""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path

import pytest
from faultkit import alive, assert_recorded, logged_steps, trainer_pid, without_torchrun, write_spec
from typer.testing import CliRunner

from golf.launch import execute, plan_runs
from golf.spec import load_spec
from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _direct(monkeypatch: pytest.MonkeyPatch) -> None:
    without_torchrun(monkeypatch)


def silent_after(steps: int) -> str:
    return textwrap.dedent(f"""\
        import os, time
        open(os.path.join(os.environ["FAKE_DIR"], "trainer.pid"), "w").write(str(os.getpid()))
        for s in range(1, {steps} + 1):
            print(f"step:{{s}}/100 train_loss:{{7 - s / 100:.4f}} train_time:{{s * 10}}ms step_avg:10.00ms", flush=True)
        time.sleep(300)  # hangs without a word (a deadlocked collective, a dead NFS mount)
        """)


def test_a_silent_trainer_is_stopped_as_stalled(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = write_spec(workdir, tiny_data, silent_after(5))
    started = time.monotonic()
    result = runner.invoke(app, ["run", str(spec), "--db", str(db), "--stall-timeout", "1.5"])
    assert time.monotonic() - started < 60
    assert result.exit_code == 1, result.output[-3000:]
    assert "no output for 1.5 s (stall timeout); stopping the trainer" in result.output
    run = assert_recorded(db, "stalled", "no output for 1.5 s")
    assert logged_steps(Path(run.log_path)) == [1, 2, 3, 4, 5]
    assert not alive(trainer_pid(workdir))


def test_the_spec_key_sets_the_stall_timeout_and_the_flag_wins(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = write_spec(workdir, tiny_data, silent_after(3), extra="stall_timeout: 1\n")
    assert load_spec(spec).stall_timeout == 1.0
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)])
    assert result.exit_code == 1
    assert_recorded(db, "stalled", "no output for 1 s")
    bad = write_spec(workdir, tiny_data, silent_after(3), extra="stall_timeout: -5\n", name="bad")
    result = runner.invoke(app, ["run", str(bad), "--db", str(db)])
    assert result.exit_code == 2 and "stall_timeout: expected a positive number of seconds" in result.output
    result = runner.invoke(app, ["run", str(spec), "--db", str(db), "--stall-timeout", "0"])
    assert result.exit_code == 2 and "--stall-timeout 0: expected a positive number" in result.output
    assert len(Store(db).list_runs()) == 1  # neither bad input started a run


def nan_then_more(stop_marker: str = "") -> str:
    """A community trainer that keeps going after a NaN train loss (the bundled one stops itself)."""
    return textwrap.dedent(f"""\
        import os, time
        open(os.path.join(os.environ["FAKE_DIR"], "trainer.pid"), "w").write(str(os.getpid()))
        print("step:1/40 train_loss:6.9000 train_time:10ms step_avg:10.00ms", flush=True)
        print("step:2/40 train_loss:NaN train_time:20ms step_avg:10.00ms", flush=True)
        for s in range(3, 41):
            print(f"step:{{s}}/40 train_loss:nan train_time:{{s * 10}}ms step_avg:10.00ms", flush=True)
            time.sleep(0.1)
        {stop_marker}
        """)


def test_a_nan_loss_marks_the_run_diverged_and_the_trainer_runs_on(workdir: Path, tiny_data: Path,
                                                                   db: Path) -> None:
    result = runner.invoke(app, ["run", str(write_spec(workdir, tiny_data, nan_then_more())), "--db", str(db)])
    assert result.exit_code == 1
    run = assert_recorded(db, "diverged")
    assert logged_steps(Path(run.log_path)) == list(range(1, 41))  # golf did not stop it: no rule was set
    steps = Store(db).steps(run.id)
    assert steps[0].train_loss == 6.9
    assert steps[1].train_loss is None or math.isnan(steps[1].train_loss)  # SQLite stores NaN as NULL
    assert steps[1].train_time_ms == 20.0  # the NaN line itself made the row


def test_stop_on_divergence_stops_the_trainer(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = write_spec(workdir, tiny_data, nan_then_more())
    result = runner.invoke(app, ["run", str(spec), "--db", str(db), "--stop-on-divergence"])
    assert result.exit_code == 1
    assert "the run diverged (stop_on_divergence); stopping the trainer" in result.output
    run = assert_recorded(db, "diverged", "diverged")
    assert len(logged_steps(Path(run.log_path))) < 40
    assert not alive(trainer_pid(workdir))


def test_a_name_taken_between_planning_and_launch_gets_the_next(workdir: Path, tiny_data: Path, db: Path) -> None:
    script = 'print("step:1/1 train_loss:5.0000 train_time:10ms step_avg:10.00ms")\n'
    plan = plan_runs(load_spec(write_spec(workdir, tiny_data, script)), Store(db))[0]
    Store(db).create_run(Run(id="other", name=plan.name, status="completed"))  # another golf won the race
    run = execute(plan, Store(db), live=False)
    assert run.status == "completed" and run.name == f"{plan.name}-2"
    assert Store(db).get("other").name == plan.name
