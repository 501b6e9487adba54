"""Launch a planned run and record it: row first, then torchrun, its log streamed to disk, parsed, stored.

Guarantees: the run row exists before the trainer starts; every log line is on disk as soon as it is read;
parsed metrics and step rows reach the store every ~1.5 s and at the end, through a writer thread that a locked or
full store only delays (golf.launch.recorder); Ctrl-C, SIGTERM and SIGHUP are forwarded to the trainer's process
group and golf's death ends the trainer (golf.launch.supervise). What stops a trainer: the user's signal, a rule
the user set (stall timeout, stop on divergence), or a train.log that cannot be written (the run would go
unrecorded). The row's status is never left `running` by a run that ended.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from golf.errors import GolfError
from golf.launch.live import RunDisplay, expected_stages
from golf.launch.plan import TRAIN_GPT, RunPlan
from golf.launch.provenance import collect
from golf.launch.recorder import Recorder, one_line, store_unavailable
from golf.launch.supervise import Supervisor, parent_death_signal
from golf.logparse import LogParser
from golf.store import Run, Store
from golf.trainer.codebytes import KEPT_TRAINER_ENV

FLUSH_EVERY_S = 1.5
PIPE_GRACE_S = 5.0  # after torchrun exits, how long to wait for stray writers still holding the pipe
ORPHAN_GRACE_S = 2.0  # SIGTERM first, SIGKILL this much later, for workers that outlived torchrun
CREATE_ATTEMPTS = 3  # tries at creating the row before launch (each may wait the store's busy timeout)
STALLED, DIVERGED, LOG_FAILED = "stalled", "diverged", "log write failed"
_ARTIFACT = re.compile(r"(final_model\.[\w.+-]+)")
_EOF = object()


def signal_exit_code(run: Run) -> int:
    """The exit code golf should give for a finished run: 0, 130 (SIGINT), 143 (SIGTERM), 129 (SIGHUP) or 1."""
    if run.status == "completed":
        return 0
    if run.status == "interrupted":
        return {"SIGTERM": 143, "SIGHUP": 129}.get(run.stop_reason or "", 130)
    return 1


def execute(plan: RunPlan, store: Store, live: bool = True, command: str | None = None,
            stall_timeout: float | None = None, stop_on_divergence: bool | None = None, verbose: bool = False,
            cell_id: str | None = None) -> Run:
    """Run a plan to its end and return its final row. `command` (default: the torchrun command line) is recorded
    as the run's command. `stall_timeout` (seconds without a new log line) and `stop_on_divergence` are the user's
    rules for stopping a trainer (default: the spec's). `cell_id`: the sweep queue's cell this run is (golf sweep
    finds its run by it)."""
    stall_timeout = plan.spec.stall_timeout if stall_timeout is None else stall_timeout
    stop_on_divergence = plan.spec.stop_on_divergence if stop_on_divergence is None else stop_on_divergence
    run_dir = plan.run_dir.absolute()
    train_gpt = plan.one_file()  # before anything is written: a trainer that cannot be bundled starts nothing
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise GolfError(f"{run_dir}: cannot create the run folder ({exc.strerror})") from None
    log_path = run_dir / "train.log"
    try:
        _write_atomic(run_dir / "spec.yaml", _run_spec_yaml(plan))
        _write_atomic(run_dir / TRAIN_GPT, train_gpt)  # the exact file this run ran: export-record ships it
        log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - closed by the `with log` below
    except OSError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise GolfError(f"{run_dir}: cannot write the run folder ({exc.strerror}); nothing was started") from None
    try:
        row = _create_row(plan, store, run_dir, log_path, command, hashlib.sha256(train_gpt).hexdigest(), cell_id)
    except BaseException:
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    display = RunDisplay(f"{row.name}", enabled=live, batch_tokens=_float(plan.knobs.get("TRAIN_BATCH_TOKENS")),
                         wallclock_cap_s=_float(plan.knobs.get("MAX_WALLCLOCK_SECONDS")), verbose=verbose,
                         stages=expected_stages(plan.knobs) if plan.bundled else None)
    recorder = Recorder(store, row, plan.non_record_reason, display.note)
    env = {**os.environ, **plan.env, KEPT_TRAINER_ENV: str(run_dir / TRAIN_GPT)}
    supervisor = Supervisor()
    supervisor.install()  # before the launch: a Ctrl-C from here on reaches the trainer, however early
    proc: subprocess.Popen[bytes] | None = None
    pump: _Pump | None = None
    try:
        with log, display:
            try:
                proc = subprocess.Popen(plan.argv, cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=parent_death_signal())
            except OSError as exc:
                message = f"golf: cannot start {plan.argv[0]}: {exc.strerror}"
                with contextlib.suppress(OSError):
                    log.write((message + "\n").encode())
                display.note(message)
                return recorder.finish(status="failed", exit_code=None, stop_reason=f"launch failed: {exc.strerror}",
                                       artifact=None, run_dir=run_dir)
            supervisor.attach(proc)
            pump = _Pump(proc, log)
            _watch(proc, pump, recorder, display, supervisor, stall_timeout, stop_on_divergence)
            exit_code = proc.wait()
    except BaseException:
        supervisor.kill()
        with contextlib.suppress(Exception):  # keep the original error, whatever happens to the store here
            recorder.finish(status="failed", exit_code=proc.poll() if proc else None,
                            stop_reason="golf crashed while monitoring", artifact=None, run_dir=run_dir, wait_s=5)
        raise
    finally:
        supervisor.uninstall()
    stop_reason = _stop_reason(exit_code, recorder.parser, supervisor, pump, display.cause)
    return recorder.finish(status=_status(exit_code, recorder.parser, supervisor, pump),
                           exit_code=exit_code, stop_reason=stop_reason,
                           artifact=_artifact(run_dir, pump.artifact_named), run_dir=run_dir)


def _status(exit_code: int, parser: LogParser, supervisor: Supervisor, pump: _Pump) -> str:
    if supervisor.signal_name is not None:
        return "interrupted"
    if supervisor.stopped_by == STALLED:
        return "stalled"
    if pump.log_error is not None:
        return "failed"  # whatever the exit code: the log is incomplete
    if parser.run.diverged:
        return "diverged"
    return "completed" if exit_code == 0 else "failed"


def _stop_reason(exit_code: int, parser: LogParser, supervisor: Supervisor, pump: _Pump,
                 cause: str | None = None) -> str | None:
    if supervisor.signal_name is not None:
        return supervisor.signal_name
    if supervisor.stopped_by is not None:
        return supervisor.stop_detail or supervisor.stopped_by
    if pump.log_error is not None:  # the trainer ended before golf could stop it
        return f"cannot write train.log ({pump.log_error})"
    if parser.run.stop_reason:
        return parser.run.stop_reason
    if exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    if exit_code and cause:
        return cause  # the trainer's own error line, e.g. `ShardError: ...`
    return f"exit code {exit_code}" if exit_code else None


def _watch(proc: subprocess.Popen[bytes], pump: _Pump, recorder: Recorder, display: RunDisplay,
           supervisor: Supervisor, stall_timeout: float | None, stop_on_divergence: bool) -> None:
    """Follow the trainer's output to its end: the pump thread writes each line to the log at once; this thread
    parses, displays, applies the user's stop rules and hands what changed to the store writer."""
    last_flush = last_line = time.monotonic()
    exited_at: float | None = None
    orphans_termed = False
    while True:
        try:
            item = pump.lines.get(timeout=0.25)
        except queue.Empty:
            item = None
        if item is _EOF:
            break
        if item is not None:
            last_line = time.monotonic()
            text = item.decode("utf-8", errors="replace").rstrip("\r\n")
            recorder.feed(text)
            display.line(text, recorder.parser.run)
        if pump.log_error is not None and not supervisor.stopping:
            display.note(f"golf: cannot write {pump.log.name} ({pump.log_error}); stopping the trainer")
            supervisor.stop(LOG_FAILED, f"cannot write train.log ({pump.log_error})")
        if stall_timeout and not supervisor.stopping and time.monotonic() - last_line > stall_timeout:
            display.note(f"golf: no output for {stall_timeout:g} s (stall timeout); stopping the trainer")
            supervisor.stop(STALLED, f"no output for {stall_timeout:g} s")
        if stop_on_divergence and recorder.parser.run.diverged and not supervisor.stopping:
            display.note("golf: the run diverged (stop_on_divergence); stopping the trainer")
            supervisor.stop(DIVERGED, "diverged")
        supervisor.tick()
        if time.monotonic() - last_flush >= FLUSH_EVERY_S:
            recorder.flush()
            last_flush = time.monotonic()
        if proc.poll() is not None:
            # torchrun is gone; a worker it left behind (kill -9 of torchrun) would train on unseen: end it
            exited_at = exited_at or time.monotonic()
            if not orphans_termed:
                supervisor.end_orphans(signal.SIGTERM)
                orphans_termed = True
            elif time.monotonic() - exited_at > ORPHAN_GRACE_S:
                supervisor.end_orphans(signal.SIGKILL)
            if item is None and time.monotonic() - exited_at > PIPE_GRACE_S:
                break


class _Pump:
    """A thread that drains the trainer's pipe whatever happens: each line goes to the log at once (a log that
    cannot be written is noted, and the pipe still drained, so the trainer never blocks on it) and to `lines`."""

    def __init__(self, proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        assert proc.stdout is not None
        self.stream, self.log = proc.stdout, log
        self.lines: queue.Queue[Any] = queue.Queue()
        self.log_error: str | None = None
        self.artifact_named: str | None = None
        self.thread = threading.Thread(target=self._run, name="golf-log-pump", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self.stream.readline, b""):
                if self.log_error is None:
                    try:
                        _write_all(self.log, raw)  # unbuffered file: on disk before anything else happens to it
                    except (OSError, ValueError) as exc:
                        self.log_error = getattr(exc, "strerror", None) or str(exc)
                match = _ARTIFACT.search(raw.decode("utf-8", errors="replace"))
                if match:
                    self.artifact_named = match.group(1)
                self.lines.put(raw)
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(_EOF)


def _write_all(log: IO[bytes], data: bytes) -> None:
    """An unbuffered write may be short (a disk filling up): write the rest, so a failure raises, never truncates
    a line silently."""
    view = memoryview(data)
    while view:
        written = log.write(view)
        if not written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _artifact(run_dir: Path, named: str | None) -> str | None:
    """The artifact file the log named, else the newest final_model.* in the run folder."""
    if named and (run_dir / named).is_file():
        return str(run_dir / named)
    files = [p for p in run_dir.glob("final_model.*") if p.is_file()]
    if not files:
        return None
    return str(max(files, key=lambda p: (p.stat().st_mtime_ns, p.name)))


def _create_row(plan: RunPlan, store: Store, run_dir: Path, log_path: Path, command: str | None,
                train_gpt_sha256: str | None = None, cell_id: str | None = None) -> Run:
    from sqlalchemy.exc import IntegrityError

    provenance = collect()
    spec = plan.spec
    reported = spec.reported.get("val_bpb")
    fields: dict[str, Any] = dict(
        id=plan.run_id, name=plan.name, spec_name=spec.name, experiment=spec.experiment,
        spec_path=str(spec.path.resolve()) if spec.path is not None else None,
        spec=_run_spec(plan), config=dict(plan.knobs), config_hash=plan.config_hash, code_hash=plan.code_hash,
        train_gpt_sha256=train_gpt_sha256,
        group_hash=plan.group_hash, seed=plan.seed, tags=list(spec.tags), status="running",
        command=command or plan.command_line, trainer=plan.trainer, nproc=plan.nproc, pid=os.getpid(),
        run_dir=str(run_dir), log_path=str(log_path), source="golf",
        reported_bpb=float(reported) if isinstance(reported, (int, float)) else None,
        non_record_reason=plan.non_record_reason, parent_id=plan.parent_id, cell_id=cell_id,
        **provenance.as_fields(),
    )
    unavailable = 0
    for attempt in range(20):
        try:
            return store.create_run(Run(**fields))
        except IntegrityError:
            # another golf took the name between planning and now: take the next free one
            if attempt == 19:
                raise
            fields["name"] = store.unique_name(plan.name)
        except Exception as exc:
            # nothing runs yet: a store that stays unavailable refuses the launch (after a few tries)
            if not store_unavailable(exc):
                raise
            unavailable += 1
            if unavailable >= CREATE_ATTEMPTS:
                raise GolfError(f"{store.path}: cannot record the run ({one_line(exc)}); nothing was started") \
                    from None
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _run_spec(plan: RunPlan) -> dict[str, Any]:
    """The resolved spec of this one run (its seed only)."""
    data = plan.spec.to_dict()
    data["seeds"] = [plan.seed]
    return data


def _run_spec_yaml(plan: RunPlan) -> str:
    import yaml

    return yaml.safe_dump(_run_spec(plan), sort_keys=False, allow_unicode=True)


def _write_atomic(path: Path, content: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    os.replace(tmp, path)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
