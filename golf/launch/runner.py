"""Launch a planned run and record it: row first, then torchrun, its log streamed to disk, parsed, stored.

Guarantees: the run row exists before the trainer starts; every log line is on disk as soon as it is read;
parsed metrics and step rows reach the store every ~1.5 s and at the end; Ctrl-C / SIGTERM is forwarded to the
trainer's process group (SIGKILL after a grace period) and the run is recorded as interrupted with everything
parsed so far.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from golf.errors import GolfError
from golf.launch.live import RunDisplay
from golf.launch.plan import RunPlan
from golf.launch.provenance import collect
from golf.logparse import LogParser
from golf.store import Run, Store
from golf.store.models import now

FLUSH_EVERY_S = 1.5
KILL_GRACE_S = 15.0
PIPE_GRACE_S = 5.0  # after torchrun exits, how long to wait for stray writers still holding the pipe
_ARTIFACT = re.compile(r"(final_model\.[\w.+-]+)")
_EXTRA_METRICS = ("iterations", "peak_mem_reserved_mib", "quant_label", "stop_reason")
_STEP_COLUMNS = ("train_loss", "val_loss", "val_bpb", "train_time_ms", "step_avg_ms")
_EOF = object()


def signal_exit_code(run: Run) -> int:
    """The exit code golf should give for a finished run: 0, 130 (SIGINT), 143 (SIGTERM) or 1."""
    if run.status == "completed":
        return 0
    if run.status == "interrupted":
        return 143 if run.stop_reason == "SIGTERM" else 130
    return 1


def execute(plan: RunPlan, store: Store, live: bool = True, command: str | None = None) -> Run:
    """Run a plan to its end and return its final row. `command` (default: the torchrun command line) is recorded
    as the run's command."""
    run_dir = plan.run_dir.absolute()
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise GolfError(f"{run_dir}: cannot create the run folder ({exc.strerror})") from None
    log_path = run_dir / "train.log"
    _write_atomic(run_dir / "spec.yaml", _run_spec_yaml(plan))
    run = _create_row(plan, store, run_dir, log_path, command)
    recorder = _Recorder(store, run.id, plan)
    display = RunDisplay(f"{run.name}", enabled=live, batch_tokens=_float(plan.knobs.get("TRAIN_BATCH_TOKENS")),
                         wallclock_cap_s=_float(plan.knobs.get("MAX_WALLCLOCK_SECONDS")))
    env = {**os.environ, **plan.env}
    supervisor = _Supervisor()
    supervisor.install()  # before the launch: a Ctrl-C from here on reaches the trainer, however early
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "ab", buffering=0) as log, display:
            try:
                proc = subprocess.Popen(plan.argv, cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                message = f"golf: cannot start {plan.argv[0]}: {exc.strerror}"
                log.write((message + "\n").encode())
                display.note(message)
                return recorder.finish(status="failed", exit_code=None, stop_reason=f"launch failed: {exc.strerror}",
                                       run_dir=run_dir)
            supervisor.attach(proc)
            _stream(proc, log, recorder, display, supervisor)
            exit_code = proc.wait()
    except BaseException:
        supervisor.kill()
        with contextlib.suppress(Exception):  # keep the original error, whatever happens to the store here
            recorder.finish(status="failed", exit_code=proc.poll() if proc else None,
                            stop_reason="golf crashed while monitoring", run_dir=run_dir)
        raise
    finally:
        supervisor.uninstall()
    return recorder.finish(status=_status(exit_code, recorder.parser, supervisor), exit_code=exit_code,
                           stop_reason=_stop_reason(exit_code, recorder.parser, supervisor), run_dir=run_dir)


def _status(exit_code: int, parser: LogParser, supervisor: _Supervisor) -> str:
    if supervisor.signal_name is not None:
        return "interrupted"
    if parser.run.diverged:
        return "diverged"
    return "completed" if exit_code == 0 else "failed"


def _stop_reason(exit_code: int, parser: LogParser, supervisor: _Supervisor) -> str | None:
    if supervisor.signal_name is not None:
        return supervisor.signal_name
    if parser.run.stop_reason:
        return parser.run.stop_reason
    if exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    return f"exit code {exit_code}" if exit_code else None


def _stream(proc: subprocess.Popen[bytes], log: IO[bytes], recorder: _Recorder, display: RunDisplay,
            supervisor: _Supervisor) -> None:
    """Read the trainer's output to its end: a thread writes each line to the log at once; this thread parses,
    displays and flushes to the store."""
    lines: queue.Queue[Any] = queue.Queue()
    assert proc.stdout is not None
    pump = threading.Thread(target=_pump, args=(proc.stdout, log, lines), daemon=True)
    pump.start()
    last_flush = time.monotonic()
    exited_at: float | None = None
    while True:
        try:
            item = lines.get(timeout=0.25)
        except queue.Empty:
            item = None
        if item is _EOF:
            break
        if item is not None:
            text = item.decode("utf-8", errors="replace").rstrip("\r\n")
            recorder.feed(text)
            display.line(text, recorder.parser.run)
        supervisor.tick()
        if time.monotonic() - last_flush >= FLUSH_EVERY_S:
            recorder.flush()
            last_flush = time.monotonic()
        if proc.poll() is not None:
            # torchrun is gone; orphaned workers may still hold the pipe open: do not wait on them forever
            exited_at = exited_at or time.monotonic()
            if item is None and time.monotonic() - exited_at > PIPE_GRACE_S:
                break


def _pump(stream: IO[bytes], log: IO[bytes], lines: queue.Queue[Any]) -> None:
    try:
        for raw in iter(stream.readline, b""):
            log.write(raw)  # unbuffered file: on disk before anything else happens to the line
            lines.put(raw)
    except (OSError, ValueError):
        pass
    finally:
        lines.put(_EOF)


class _Supervisor:
    """Forwards SIGINT/SIGTERM sent to golf to the trainer's process group; SIGKILLs it (and every descendant)
    after KILL_GRACE_S, or at once on a second signal."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.signal_name: str | None = None
        self.deadline: float | None = None
        self._signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; the default behaviour then applies
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        if self._signum is not None:  # signalled while the trainer was being started
            self._send(self._signum)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            self._signum = signum
            self.deadline = time.monotonic() + KILL_GRACE_S
            self._send(signum)
        else:
            self.kill()

    def tick(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline and self.proc is not None \
                and self.proc.poll() is None:
            self.kill()

    def _send(self, signum: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL torchrun's group and its workers (torchrun starts each worker in a session of its own)."""
        self.deadline = None
        if self.proc is None or self.proc.poll() is not None:
            return
        targets = _descendants(self.proc.pid)
        self._send(signal.SIGKILL)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "(comm)", which may contain spaces
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class _Recorder:
    """Parses lines and writes what changed to the store."""

    def __init__(self, store: Store, run_id: str, plan: RunPlan) -> None:
        self.store, self.run_id, self.plan = store, run_id, plan
        self.parser = LogParser()
        self.artifact_named: str | None = None
        self._flushed_steps: dict[int, dict[str, float]] = {}
        self._flushed_fields: dict[str, Any] = {}

    def feed(self, line: str) -> None:
        self.parser.feed(line)
        match = _ARTIFACT.search(line)
        if match:
            self.artifact_named = match.group(1)

    def fields(self) -> dict[str, Any]:
        parsed = self.parser.run
        out = dict(parsed.metrics())
        for name in _EXTRA_METRICS:
            out[name] = getattr(parsed, name)
        out["bytes_breakdown"] = parsed.bytes_breakdown
        out["non_record_reason"] = parsed.non_record_reason or self.plan.non_record_reason
        out["malformed_lines"] = parsed.malformed
        return out

    def flush(self) -> None:
        fields = {k: v for k, v in self.fields().items() if self._flushed_fields.get(k, _EOF) != v}
        if fields:
            self.store.update_run(self.run_id, **fields)
            self._flushed_fields.update(fields)
        changed = {step: dict(row) for step, row in self.parser.run.curve.items()
                   if self._flushed_steps.get(step) != row and any(c in row for c in _STEP_COLUMNS)}
        if changed:
            self.store.upsert_steps(self.run_id, changed)
            self._flushed_steps.update(changed)

    def finish(self, status: str, exit_code: int | None, stop_reason: str | None, run_dir: Path) -> Run:
        self.flush()
        self.store.update_run(self.run_id, status=status, exit_code=exit_code, ended_at=now(),
                              stop_reason=stop_reason, artifact_path=_artifact(run_dir, self.artifact_named))
        run = self.store.get(self.run_id)
        assert run is not None
        return run


def _artifact(run_dir: Path, named: str | None) -> str | None:
    """The artifact file the log named, else the newest final_model.* in the run folder."""
    if named and (run_dir / named).is_file():
        return str(run_dir / named)
    files = [p for p in run_dir.glob("final_model.*") if p.is_file()]
    if not files:
        return None
    return str(max(files, key=lambda p: (p.stat().st_mtime_ns, p.name)))


def _create_row(plan: RunPlan, store: Store, run_dir: Path, log_path: Path, command: str | None) -> Run:
    from sqlalchemy.exc import IntegrityError

    provenance = collect()
    spec = plan.spec
    reported = spec.reported.get("val_bpb")
    fields: dict[str, Any] = dict(
        id=plan.run_id, name=plan.name, spec_name=spec.name,
        spec_path=str(spec.path.resolve()) if spec.path is not None else None,
        spec=_run_spec(plan), config=dict(plan.knobs), config_hash=plan.config_hash, code_hash=plan.code_hash,
        group_hash=plan.group_hash, seed=plan.seed, tags=list(spec.tags), status="running",
        command=command or plan.command_line, trainer=plan.trainer, nproc=plan.nproc, pid=os.getpid(),
        run_dir=str(run_dir), log_path=str(log_path), source="golf",
        reported_bpb=float(reported) if isinstance(reported, (int, float)) else None,
        non_record_reason=plan.non_record_reason, **provenance.as_fields(),
    )
    for attempt in range(20):
        try:
            return store.create_run(Run(**fields))
        except IntegrityError:
            # another golf took the name between planning and now: take the next free one
            if attempt == 19:
                raise
            fields["name"] = store.unique_name(plan.name)
    raise AssertionError("unreachable")


def _run_spec(plan: RunPlan) -> dict[str, Any]:
    """The resolved spec of this one run (its seed only)."""
    data = plan.spec.to_dict()
    data["seeds"] = [plan.seed]
    return data


def _run_spec_yaml(plan: RunPlan) -> str:
    import yaml

    return yaml.safe_dump(_run_spec(plan), sort_keys=False, allow_unicode=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
