"""`golf sweep` / `golf ablate --lanes`: an ablation's cells as a persistent queue, run in parallel lanes.

Planning is `golf ablate`'s (golf.launch.ablate.plan_ablation). Each cell is one (step, seed): one `golf run`
process that records itself in runs.db (found again by its cell id). The queue is seed-major: each seed's base
and variants sit side by side, so a sweep stopped halfway still gives paired comparisons. The scheduler packs cells
needing k GPUs onto k free GPU ids (never two cells on one GPU), each lane its own CUDA_VISIBLE_DEVICES and
rendezvous port; the rest wait in queue order. A (group_hash, seed) with a completed run is never launched again
(ablate's reuse rule), also on resume. A cell that diverges or stalls ends as that; the sweep goes on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golf.errors import GolfError
from golf.launch.executor import CellHandle, CellLaunch, Executor
from golf.launch.queue import (
    CELL_STATE_OF_RUN,
    RETRYABLE,
    cell_id,
    cells_of,
    get_sweep,
    run_of_cell,
    sweep_alive,
    update_cell,
    update_sweep,
)
from golf.store import Store
from golf.store.db import HEARTBEAT_EVERY_S, is_dead
from golf.store.models import now

PORT_BASE = 29600  # lane k's torchrun rendezvous: 127.0.0.1:PORT_BASE + k (k: the lane's first GPU slot)
POLL_S = 0.2
TICK_S = 5.0
CANCEL_WAIT_S = 30.0  # on Ctrl-C: how long the running cells get to stop and record themselves

Event = Callable[[str, Mapping[str, Any], str], None]  # (kind, cell row, detail)


# -- lanes -------------------------------------------------------------------------------------------------------

def visible_gpu_ids() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES's ids, else nvidia-smi's indices; none on CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    count = sum(1 for line in done.stdout.splitlines() if line.startswith("GPU ")) if done.returncode == 0 else 0
    return [str(i) for i in range(count)]


def lane_gpus(lanes: str, pins_gpus: bool = True) -> tuple[int, list[str] | None]:
    """(lanes, the GPU ids they share) for `--lanes N|auto`. auto: one lane per visible GPU (1 on CPU). An
    executor that places cells itself (Slurm) gets no GPU ids: N is the cells in flight."""
    text = lanes.strip().lower()
    if text != "auto" and (not text.isdigit() or int(text) < 1):
        raise GolfError(f"--lanes {lanes}: expected a positive integer or auto (one lane per visible GPU)")
    if not pins_gpus:
        return (int(text) if text != "auto" else 0), None  # 0: every cell at once
    ids = visible_gpu_ids()
    if text == "auto":
        return max(len(ids), 1), ids or ["0"]
    n = int(text)
    if ids and n > len(ids):
        raise GolfError(f"--lanes {n}: only {len(ids)} GPUs visible ({','.join(ids)}); use --lanes auto or fewer")
    return n, (ids or [str(i) for i in range(n)])[:n]


# -- planning ----------------------------------------------------------------------------------------------------

@dataclass
class SweepPlan:
    sweep: dict[str, Any]
    cells: list[dict[str, Any]] = field(default_factory=list)


def plan_sweep(steps: Sequence[Any], sweep_id: str, *, db_path: Path, spec_path: Path,
               base_sets: Mapping[str, str], executor: str, lanes: int, gpu_ids: list[str] | None,
               data: str | None = None,
               cumulative: bool = False, labels: Mapping[str, str] | None = None,
               stall_timeout: float | None = None, stop_on_divergence: bool | None = None,
               command: str | None = None, log_dir: Path | None = None,
               executor_options: Mapping[str, Any] | None = None) -> SweepPlan:
    """The sweep row and its cells, seed-major (seed 1: base, variants; seed 2: ...)."""
    from golf.spec import env_text

    if any(step.eval_only for step in steps):
        raise GolfError("--eval-only re-scores run inside golf itself; drop --lanes (or use golf ablate)")
    cwd = Path.cwd()
    log_dir = log_dir or cwd / "runs" / "sweeps" / sweep_id
    sweep = dict(id=sweep_id, name=steps[0].spec.name, spec_path=str(spec_path), command=command, cwd=str(cwd),
                 executor=executor, lanes=lanes, gpu_ids=gpu_ids, state="running",
                 steps=[{"change": s.change, "spec_name": s.spec.name} for s in steps],
                 options={"cumulative": cumulative, "labels": dict(labels or {}), "stall_timeout": stall_timeout,
                          "stop_on_divergence": stop_on_divergence,
                          "executor_options": dict(executor_options or {})})
    cells: list[dict[str, Any]] = []
    n_seeds = max(len(step.plans) for step in steps)
    for k in range(n_seeds):
        for index, step in enumerate(steps):
            if k >= len(step.plans):
                continue
            plan = step.plans[k]
            if gpu_ids is not None and plan.nproc > len(gpu_ids):
                raise GolfError(f"{step.spec.name}: a cell needs {plan.nproc} GPUs (nproc) but the lanes have "
                                f"{len(gpu_ids)} ({','.join(gpu_ids)}); raise --lanes or lower --nproc")
            cid = cell_id(sweep_id, len(cells))
            sets = {key: env_text(value) for key, value in {**base_sets, **step.sets}.items()}
            argv = [sys.executable, "-m", "golf_cli.main", "run", str(spec_path), "--seed", str(plan.seed),
                    "--name", step.spec.experiment, "--nproc", str(plan.nproc), "--db", str(db_path),
                    "--cell", cid]
            if data is not None:  # --data of the sweep: a folder made absolute (cells may run elsewhere)
                argv += ["--data", data if data == "sample" else str(Path(data).absolute())]
            for key, value in sets.items():
                argv += ["--set", f"{key}={value}"]
            if stall_timeout is not None:
                argv += ["--stall-timeout", f"{stall_timeout:g}"]
            if stop_on_divergence is not None:
                argv.append("--stop-on-divergence" if stop_on_divergence else "--no-stop-on-divergence")
            cells.append(dict(id=cid, sweep_id=sweep_id, position=len(cells), step=index, spec_name=step.spec.name,
                              spec_path=str(spec_path), sets=sets, argv=argv, seed=plan.seed,
                              group_hash=plan.group_hash, gpus=plan.nproc, executor=executor, state="queued",
                              log_path=str(log_dir / f"{cid}.log")))
    return SweepPlan(sweep, cells)


# -- the scheduler -----------------------------------------------------------------------------------------------

class Scheduler:
    """Runs a sweep's queued cells through an executor until none is queued or running."""

    def __init__(self, store: Store, sweep_id: str, executor: Executor, on_event: Event | None = None,
                 handles: Mapping[str, CellHandle] | None = None, poll_s: float = POLL_S) -> None:
        self.store, self.sweep_id, self.executor = store, sweep_id, executor
        self.on_event = on_event or (lambda kind, cell, detail: None)
        self.poll_s = poll_s
        sweep = get_sweep(store, sweep_id)
        self.pins = bool(getattr(executor, "pins_gpus", False))
        in_flight = int(sweep.get("lanes") or 0) or len(cells_of(store, sweep_id))
        self.slots: list[str] = list(sweep.get("gpu_ids") or []) if self.pins else [str(i) for i in range(in_flight)]
        self.handles: dict[str, CellHandle] = dict(handles or {})
        self.held: dict[str, list[str]] = {}
        for cell in cells_of(store, sweep_id):  # reattached cells keep their GPUs
            if cell["id"] in self.handles:
                self.held[cell["id"]] = self._lane_of(cell)

    def _lane_of(self, cell: Mapping[str, Any]) -> list[str]:
        if self.pins:
            return [g for g in str(cell.get("lane") or "").split(",") if g]
        free = [s for s in self.slots if s not in self._busy()]
        return free[:1]

    def _busy(self) -> set[str]:
        return {g for gpus in self.held.values() for g in gpus}

    def run(self) -> dict[str, Any]:
        """Schedule to the end; the sweep row's final state. Ctrl-C (or SIGTERM/SIGHUP) stops the running cells
        and queues them again (`golf sweep resume` reruns them), then raises KeyboardInterrupt."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
        for s in previous:
            signal.signal(s, _interrupt)
        update_sweep(self.store, self.sweep_id, state="running", pid=os.getpid(), heartbeat_at=now(),
                     ended_at=None)
        try:
            self._loop()
        except KeyboardInterrupt:
            self._stop_all(requeue=True)
            update_sweep(self.store, self.sweep_id, state="interrupted", ended_at=now())
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        cells = cells_of(self.store, self.sweep_id)
        states = {c["state"] for c in cells}
        sweep = get_sweep(self.store, self.sweep_id)
        final = "cancelled" if sweep["state"] == "cancelled" else \
            "completed" if states <= {"completed"} else "failed"
        update_sweep(self.store, self.sweep_id, state=final, ended_at=now())
        return get_sweep(self.store, self.sweep_id)

    def _loop(self) -> None:
        last_beat = last_tick = 0.0
        while True:
            if time.monotonic() - last_beat >= HEARTBEAT_EVERY_S:
                update_sweep(self.store, self.sweep_id, heartbeat_at=now())
                last_beat = time.monotonic()
            if time.monotonic() - last_tick >= TICK_S:
                self.on_event("tick", {}, "")  # the live view redraws its status line (ETA, lanes)
                last_tick = time.monotonic()
            cancelled_sweep = get_sweep(self.store, self.sweep_id)["state"] == "cancelled"
            cells = {c["id"]: c for c in cells_of(self.store, self.sweep_id)}
            for cid, handle in self.handles.items():  # `golf queue cancel` from elsewhere
                if cells[cid]["state"] == "cancelled" or cancelled_sweep:
                    handle.cancel()
            for cid, handle in list(self.handles.items()):
                code = handle.poll()
                if code is not None:
                    self._finish(cells[cid], code)
            if not cancelled_sweep:
                self._dispatch()
            queued = any(c["state"] == "queued" for c in cells_of(self.store, self.sweep_id))
            if not self.handles and (not queued or cancelled_sweep):
                return
            time.sleep(self.poll_s)

    def _dispatch(self) -> None:
        cells = cells_of(self.store, self.sweep_id)
        running_keys = {(c["group_hash"], c["seed"]) for c in cells if c["state"] == "running"}
        for cell in cells:
            if cell["state"] != "queued":
                continue
            done = self.store.completed_run_id(cell["group_hash"], cell["seed"]) if cell["group_hash"] else None
            if done is not None:  # this config and seed completed before (in this sweep or anywhere): reuse it
                if update_cell(self.store, cell["id"], was="queued", state="completed", run_id=done, reused=True,
                               ended_at=now()):
                    self.on_event("reuse", {**cell, "state": "completed", "run_id": done}, done)
                continue
            if (cell["group_hash"], cell["seed"]) in running_keys:
                continue  # its twin (a variant equal to another) is running: reuse its run when it completes
            free = [s for s in self.slots if s not in self._busy()]
            need = int(cell["gpus"] or 1) if self.pins else 1
            if need > len(free):
                return  # queue order: the rest wait for a free lane
            lane = free[:need]
            self._start(cell, lane)
            running_keys.add((cell["group_hash"], cell["seed"]))

    def _start(self, cell: Mapping[str, Any], lane: list[str]) -> None:
        import golf

        # the cell's golf is this golf, whatever else is on sys.path (as plan_runs does for the trainer)
        package_root = str(Path(golf.__file__).resolve().parent.parent)
        argv = list(cell["argv"])
        env = {"PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        if self.pins:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(lane)
            argv += ["--rdzv-endpoint", f"127.0.0.1:{PORT_BASE + self.slots.index(lane[0])}"]
        launch = CellLaunch(cell_id=cell["id"], argv=argv, log_path=Path(cell["log_path"]),
                            gpus=int(cell["gpus"] or 1), env=env)
        if not update_cell(self.store, cell["id"], was="queued", state="running", lane=",".join(lane),
                           started_at=now(), ended_at=None, exit_code=None, run_id=None,
                           attempts=int(cell["attempts"] or 0) + 1):
            return  # cancelled meanwhile
        try:
            handle = self.executor.submit(launch)
        except OSError as exc:
            update_cell(self.store, cell["id"], was="running", state="failed", ended_at=now())
            self.on_event("end", {**cell, "state": "failed"}, f"cannot start: {exc.strerror or exc}")
            return
        update_cell(self.store, cell["id"], job_id=handle.job_id)
        self.handles[cell["id"]] = handle
        self.held[cell["id"]] = lane
        self.on_event("start", {**cell, "state": "running", "lane": ",".join(lane), "job_id": handle.job_id,
                                "started_at": now()},
                      f"on lane {','.join(lane)}" if self.pins else f"as job {handle.job_id}")

    def _finish(self, cell: Mapping[str, Any], code: int) -> None:
        self.handles.pop(cell["id"], None)
        self.held.pop(cell["id"], None)
        run = run_of_cell(self.store, cell["id"])
        status = run["status"] if run else None
        state = CELL_STATE_OF_RUN.get(status or "", "failed")
        fields = {"run_id": run["id"] if run else None, "exit_code": code if code >= 0 else None,
                  "ended_at": now()}
        if update_cell(self.store, cell["id"], was="running", state=state, **fields):
            detail = status or f"no run recorded (exit code {code}; see {cell['log_path']})"
        else:  # cancelled while it ran
            update_cell(self.store, cell["id"], **fields)
            state, detail = "cancelled", status or "cancelled"
        self.on_event("end", {**cell, **fields, "state": state}, detail)

    def _stop_all(self, requeue: bool) -> None:
        for handle in self.handles.values():
            handle.cancel()
        deadline = time.monotonic() + CANCEL_WAIT_S
        while self.handles and time.monotonic() < deadline:
            for cid, handle in list(self.handles.items()):
                if handle.poll() is not None:
                    self.handles.pop(cid)
                    if requeue:
                        update_cell(self.store, cid, was="running", state="queued", job_id=None, lane=None)
            time.sleep(0.1)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


# -- resume ------------------------------------------------------------------------------------------------------

@dataclass
class ResumeReport:
    reattached: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)  # cells whose process was gone before their run ended
    settled: list[str] = field(default_factory=list)  # cells whose process was gone, their run ended meanwhile
    retried: list[str] = field(default_factory=list)
    handles: dict[str, CellHandle] = field(default_factory=dict)


class RunRowHandle:
    """A cell followed through its run row: one whose job id golf never wrote down (it died between starting the
    cell and recording it) while its `golf run` lives on, beating its heartbeat."""

    def __init__(self, store: Store, run: Mapping[str, Any]) -> None:
        self.store, self.run_id = store, str(run["id"])
        self.pid, self.host = run.get("pid"), run.get("host")
        self.job_id = f"run:{self.run_id}"

    def poll(self) -> int | None:
        found = self.store.records("id = ?", (self.run_id,))
        if found and found[0]["status"] == "running" and not is_dead(found[0]):
            return None
        code = found[0].get("exit_code") if found else None
        return int(code) if code is not None else -1

    def cancel(self) -> None:
        import contextlib
        import socket

        if self.pid is not None and self.host == socket.gethostname() and self.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(self.pid), signal.SIGTERM)  # the cell's golf run leads its process group


def latest_unfinished(store: Store) -> str | None:
    """The newest sweep with a cell not completed (what `golf sweep resume` without SWEEP picks)."""
    from golf.launch.queue import sweeps

    for sweep in reversed(sweeps(store)):
        if any(c["state"] != "completed" for c in cells_of(store, sweep["id"])):
            return str(sweep["id"])
    return None


def prepare_resume(store: Store, sweep_id: str, executor: Executor, retry_failed: bool = False,
                   dry_run: bool = False) -> ResumeReport:
    """Bring a sweep's queue in line with what is still running: a cell whose process lives on is reattached; one
    whose process is gone takes its run's end state, or is queued again when its run never ended (golf or the
    machine died). With `retry_failed`, failed, stalled and cancelled cells are queued again."""
    sweep = get_sweep(store, sweep_id)
    if sweep_alive(sweep):
        raise GolfError(f"sweep {sweep_id} is being run by golf (pid {sweep['pid']} on {sweep['host']}); wait for "
                        f"it, or stop it with `golf queue cancel {sweep_id}`")
    report = ResumeReport()
    for cell in cells_of(store, sweep_id):
        if cell["state"] == "running":
            handle = executor.reattach(cell["job_id"]) if cell.get("job_id") else None
            run = run_of_cell(store, cell["id"])
            if handle is None and run is not None and run["status"] == "running" and not is_dead(run):
                handle = RunRowHandle(store, run)  # alive, but golf died before it wrote down the job id
            if handle is not None:
                report.reattached.append(cell["id"])
                report.handles[cell["id"]] = handle
                continue
            ended = run is not None and run["status"] in CELL_STATE_OF_RUN and run["status"] != "interrupted"
            if ended:
                report.settled.append(cell["id"])
                if not dry_run:
                    update_cell(store, cell["id"], was="running", state=CELL_STATE_OF_RUN[run["status"]],
                                run_id=run["id"], ended_at=run.get("ended_at") or now())
            else:
                report.requeued.append(cell["id"])
                if not dry_run:
                    update_cell(store, cell["id"], was="running", state="queued", job_id=None, lane=None)
        elif retry_failed and cell["state"] in RETRYABLE:
            report.retried.append(cell["id"])
            if not dry_run:
                update_cell(store, cell["id"], was=cell["state"], state="queued", job_id=None, lane=None)
    return report


def step_run_ids(store: Store, sweep_id: str) -> list[list[str]]:
    """Per ablation row, the runs of its cells in seed order (what its group in the table is made of)."""
    sweep = get_sweep(store, sweep_id)
    out: list[list[str]] = [[] for _ in sweep.get("steps") or []]
    for cell in sorted(cells_of(store, sweep_id), key=lambda c: (c["step"], c["position"])):
        if cell.get("run_id") and cell["step"] < len(out):
            out[cell["step"]].append(cell["run_id"])
    return out
