"""Shared pieces of the fault-injection tests: a fake trainer that prints steps, golf started as a real process,
and the three checks every fault ends with (the row, its steps, the log)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from golf.launch.supervise import descendants
from golf.store import Store

REPO = Path(__file__).resolve().parent.parent
STEP_LINE = re.compile(r"^step:(\d+)/\d+ train_loss:")


def counting_trainer(steps: int = 100000, every_s: float = 0.05, then: str = "") -> str:
    """A trainer that writes its pid to $FAKE_DIR/trainer.pid and prints one step line every `every_s`. Like a real
    one that logs through a handler, a broken stdout does not end it: only a signal does (so a test that sees it
    gone after golf's death sees golf's doing, not a broken pipe's)."""
    return textwrap.dedent(f"""\
        import os, sys, time
        open(os.path.join(os.environ["FAKE_DIR"], "trainer.pid"), "w").write(str(os.getpid()))
        for s in range(1, {steps} + 1):
            try:
                print(f"step:{{s}}/{steps} train_loss:{{7 - s / 100000:.5f}} train_time:{{s * 50}}ms "
                      "step_avg:50.00ms", flush=True)
            except OSError:
                pass
            time.sleep({every_s})
        """) + then


def write_spec(workdir: Path, data: Path, script: str, extra: str = "", name: str = "fault") -> Path:
    (workdir / "train_fault.py").write_text(script, encoding="utf-8")
    spec = workdir / f"{name}.yaml"
    spec.write_text(f"name: {name}\ntrainer: train_fault.py\nseeds: [1]\ndata: {{path: {data}}}\n"
                    f"env: {{FAKE_DIR: {workdir}}}\n{extra}", encoding="utf-8")
    return spec


def start_golf(spec: Path, db: Path, *args: str, cwd: Path | None = None,
               preexec: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "golf_cli.main", "run", str(spec), "--db", str(db), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                            preexec_fn=preexec)


def wait_for(condition: Callable[[], object], timeout_s: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def trainer_pid(workdir: Path) -> int | None:
    path = workdir / "trainer.pid"
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


def wait_for_steps(workdir: Path, log_glob: str = "runs/*/train.log", steps: int = 5) -> int:
    """Wait until the trainer runs and its log holds `steps` step lines; returns the trainer's pid."""
    def ready() -> int | None:
        pid = trainer_pid(workdir)
        logs = list(workdir.glob(log_glob))
        return pid if pid and logs and len(logged_steps(logs[0])) >= steps else None

    return int(wait_for(ready, what="the trainer's first steps"))  # type: ignore[arg-type]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def wait_dead(pid: int, timeout_s: float = 30.0) -> None:
    wait_for(lambda: not alive(pid), timeout_s, f"pid {pid} to end")


def torchrun_of(golf: subprocess.Popen[bytes], worker: int) -> int:
    """The process between golf and the worker."""
    for pid in descendants(golf.pid):
        if worker in descendants(pid):
            return pid
    raise AssertionError("no torchrun between golf and the worker")


def logged_steps(log: Path) -> list[int]:
    return [int(m.group(1)) for line in log.read_text(errors="replace").splitlines()
            if (m := STEP_LINE.match(line))]


def assert_recorded(db: Path, status: str, stop_reason: str | None = None) -> object:
    """The one run's row has `status` (never `running`), and every step line of its log is a step row."""
    runs = Store(db).list_runs()
    assert len(runs) == 1, [r.name for r in runs]
    run = runs[0]
    assert run.status == status, (run.status, run.stop_reason)
    if stop_reason is not None:
        assert run.stop_reason == stop_reason, run.stop_reason
    assert run.ended_at is not None
    logged = logged_steps(Path(run.log_path))
    stored = [s.step for s in Store(db).steps(run.id)]
    assert stored == logged and logged, (len(stored), len(logged))
    assert run.steps == logged[-1]
    return run


def stop(proc: subprocess.Popen[bytes]) -> str:
    """Wait for golf to end (kill it if it hangs) and return its output."""
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("golf did not end: " + out.decode(errors="replace")[-2000:]) from None
    return out.decode(errors="replace")


def without_torchrun(monkeypatch: object) -> None:
    """Start community trainers with python directly (what golf does around the process is the same; torchrun's
    own start-up takes seconds on a loaded CI box). The signal tests keep torchrun: it is their subject."""
    import golf.launch.plan

    def direct(nproc: int, trainer: Path | None = None, *args: object, **kwargs: object) -> list[str]:
        assert trainer is not None, "only community trainers run without torchrun"
        return [sys.executable, str(trainer)]

    monkeypatch.setattr(golf.launch.plan, "torchrun_argv", direct)  # type: ignore[attr-defined]
