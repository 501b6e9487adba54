"""The Slurm executor: each sweep cell one Slurm job, submitted through submitit (`pip install 'golf[slurm]'`).

The job runs the cell's command (a `golf run ...`) as a child process with the cell's environment, its output
appended to the cell's log, and returns the child's exit code, which submitit pickles beside the job. That
`golf run` records itself through the same runner and parser as any run, but into a store of its own
(`<folder>/cells/<cell>.<n>.db`, the `--db` of its command replaced): SQLite's WAL works only among processes of
one host, so compute nodes never write the sweep's runs.db. When the job has ended, the handle's `poll` (run by
the sweep's golf, on the submitting host) copies the cell's run and its steps into the sweep's runs.db, then
reports the exit code. So a Slurm cell's run is in runs.db once its job ends; while it runs, its train.log under
runs/ (a filesystem the nodes share) is where it is followed: `golf logs -f RUN --db <folder>/cells/<cell>.<n>.db`.

Options (`SlurmOptions`; the spec's `slurm:` mapping, or `golf sweep --slurm-*` flags, which win):

    partition              the partition (sbatch --partition); default: the cluster's
    time                   time limit of a job in minutes (default 60)
    cpus_per_task          CPUs of the job's one task per node (sbatch --cpus-per-task)
    mem_gb                 memory per node in GB
    account                the account charged (sbatch --account)
    job_name               the job's name (default golf-<cell id>)
    nodes                  nodes per cell (default 1); each node gets the cell's GPUs (sbatch --gpus-per-node)
    rdzv_port              torchrun's rendezvous port on the first node (nodes > 1; default 29400)
    additional_parameters  anything else sbatch takes, e.g. {qos: high, constraint: h100} (submitit's
                           slurm_additional_parameters)
    folder                 where submitit keeps each job's pickles and its own logs (default runs/submitit)
    cluster                `slurm`, or `local` for submitit's local executor (tests, a dry run on one box)

GPUs per job are the cell's (`CellLaunch.gpus`, its nproc). A multi-node cell (`nodes: 2`) runs one task per node;
each task starts the cell's `golf run` with `--nnodes N --node-rank <its node> --rdzv-endpoint <first node>:<port>`
(torchrun's c10d rendezvous) and MASTER_ADDR/MASTER_PORT set from the job's node list; node 0's log is the cell's
log, node k's is `<log>.node<k>`. Only single-node cells are tested here (submitit's local executor is one node).

Job ids: the Slurm job id (the local executor's: its controller's pid), stored on the queue row; `reattach`
rebuilds the handle from the submitit folder, so `golf sweep resume` finds jobs an earlier golf submitted.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from golf.errors import GolfError
from golf.launch.executor import CellLaunch

NO_EXIT_CODE = -1  # what poll() says of a job that ended without reporting one (cancelled, timed out, node failure)
RESULT_GRACE_S = 15.0  # a finished job's result file may show up late on a network filesystem
CLUSTERS = ("slurm", "local")
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: int = 60
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    job_name: str | None = None
    nodes: int = 1
    rdzv_port: int = 29400
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    folder: str = "runs/submitit"
    cluster: str = "slurm"

    @classmethod
    def key_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "slurm") -> SlurmOptions:
        """Options from a spec's `slurm:` mapping or the CLI's flags (keys may be written with - or _; None values
        are left at their defaults). One GolfError line naming the key and what is valid otherwise."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise GolfError(f"{where}: expected a mapping of {', '.join(cls.key_names())}, got {type(data).__name__}")
        values: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key not in cls.key_names():
                close = difflib.get_close_matches(key, cls.key_names(), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise GolfError(f"{where}.{raw_key}: unknown key; {hint}valid keys: {', '.join(cls.key_names())}")
            if value is not None:
                values[key] = _checked(key, value, f"{where}.{raw_key}")
        return cls(**values)

    def merged(self, flags: Mapping[str, Any] | None) -> SlurmOptions:
        """These options (a spec's keys) with the command line's `--slurm-KEY` flags over them, where not None;
        `additional_parameters` are added to the spec's (a flag's value wins)."""
        values: dict[str, Any] = {}
        for raw_key, value in (flags or {}).items():
            key = str(raw_key).replace("-", "_")
            where = f"--slurm-{key.replace('_', '-')}"
            if key not in self.key_names():
                raise GolfError(f"{where}: not a Slurm option; valid: {', '.join(self.key_names())}")
            if value is not None:
                values[key] = _checked(key, value, where)
        if "additional_parameters" in values:
            values["additional_parameters"] = {**self.additional_parameters, **values["additional_parameters"]}
        return replace(self, **values)

    def to_mapping(self) -> dict[str, Any]:
        """Every option as plain JSON values: what a sweep stores on its row and `make_executor` takes back."""
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), dict) else v) for f in fields(self)}

    def parameters(self, cell: CellLaunch) -> dict[str, Any]:
        """submitit's AutoExecutor parameters for one cell (the slurm_* ones are ignored by the local cluster)."""
        params: dict[str, Any] = {
            "name": self.job_name or f"golf-{cell.cell_id}", "timeout_min": self.time, "nodes": self.nodes,
            "tasks_per_node": 1, "gpus_per_node": cell.gpus}
        if self.cpus_per_task is not None:
            params["cpus_per_task"] = self.cpus_per_task
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.cluster == "slurm":
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.account:
                params["slurm_account"] = self.account
            if self.additional_parameters:
                params["slurm_additional_parameters"] = dict(self.additional_parameters)
        return params


def _checked(key: str, value: Any, where: str) -> Any:
    if key in ("time", "cpus_per_task", "nodes", "rdzv_port"):
        low = {"rdzv_port": 1}.get(key, 1)
        high = {"rdzv_port": 65535}.get(key)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            bound = f"{low}..{high}" if high else f">= {low}"
            raise GolfError(f"{where}: {value!r}: expected a whole number {bound}"
                            + (" (minutes)" if key == "time" else ""))
        return value
    if key == "mem_gb":
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise GolfError(f"{where}: {value!r}: expected a positive number of GB")
        return float(value)
    if key == "additional_parameters":
        if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()):
            raise GolfError(f"{where}: expected a mapping of sbatch option -> value, e.g. {{qos: high}}")
        return dict(value)
    if key == "cluster" and value not in CLUSTERS:
        raise GolfError(f"{where}: {value!r}: expected one of {', '.join(CLUSTERS)}")
    if not isinstance(value, str) or not value.strip():
        raise GolfError(f"{where}: {value!r}: expected text")
    return value


# -- the job: what runs on the compute node ----------------------------------------------------------------------

def run_cell(argv: list[str], env: dict[str, str], log_path: str, cwd: str, rdzv_port: int = 29400) -> int:
    """The body of one cell's Slurm job: the cell's command as a child, its exit code returned.

    The child is in a session of its own with the parent-death signal, so a job killed outright (scancel's
    SIGKILL, the local executor's kill) still stops its `golf run`, which then stops the trainer and records the
    run. SIGINT/SIGTERM/SIGHUP to the job are passed on to the child, which records the run as interrupted.
    """
    from golf.launch.supervise import parent_death_signal

    argv, env, log = list(argv), {**os.environ, **env}, Path(log_path)
    nodes, node, master = _job_nodes()
    if nodes > 1:  # one task per node: each node's golf run joins torchrun's rendezvous on the first node
        argv += ["--nnodes", str(nodes), "--node-rank", str(node), "--rdzv-endpoint", f"{master}:{rdzv_port}"]
        env.update(MASTER_ADDR=master, MASTER_PORT=str(rdzv_port))
        if node:  # the run is node 0's: the other nodes' golf run rows and logs stay beside it
            log = log.with_name(f"{log.name}.node{node}")
            argv = _with_db(argv, f"{_db_of(argv, cwd)}.node{node}")[0]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=parent_death_signal(signal.SIGTERM))

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        return proc.wait()
    finally:  # submitit raised (the time limit is near): stop the cell before the job's result is written
        if proc.poll() is None:
            forward(signal.SIGTERM, None)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                forward(signal.SIGKILL, None)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _job_nodes() -> tuple[int, int, str]:
    """(nodes, this node's rank, the first node's host name) of the running job (1, 0, localhost outside one)."""
    try:
        import submitit

        job = submitit.JobEnvironment()
        return job.num_nodes, job.node, job.hostnames[0]
    except (ImportError, RuntimeError, KeyError, IndexError):
        return 1, 0, "localhost"


# -- the submitting side -----------------------------------------------------------------------------------------

def _db_of(argv: Sequence[str], cwd: str | os.PathLike[str]) -> Path:
    """The store a `golf run` command writes: its --db, else $GOLF_DB, else ./runs.db (absolute, against cwd)."""
    from golf.paths import resolve_db_path

    value = None
    for k, arg in enumerate(argv):
        if arg == "--db" and k + 1 < len(argv):
            value = argv[k + 1]
        elif arg.startswith("--db="):
            value = arg.removeprefix("--db=")
    return Path(cwd) / resolve_db_path(value)


def _with_db(argv: Sequence[str], db: str, cwd: str | os.PathLike[str] = ".") -> tuple[list[str], Path]:
    """The command writing `db` instead, and the store it wrote before."""
    was = _db_of(argv, cwd)
    out: list[str] = []
    skip = False
    for k, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == "--db" and k + 1 < len(argv):
            skip = True
        elif not arg.startswith("--db="):
            out.append(arg)
    return [*out, "--db", db], was


def record_cell_runs(cell_db: Path, db: Path) -> list[str]:
    """Copy the runs a cell's job recorded in its own store, with their steps, into the sweep's store (run by the
    sweep's golf, on the submitting host, once the job has ended). Again is harmless: a run already there is
    replaced by the job's row; a name another run took meanwhile gets the next free one. Returns the run ids."""
    from golf.store import Run, Store

    if not cell_db.exists():
        return []
    source, target = Store(cell_db, readonly=True), Store(db)
    copied = []
    for record in source.records():
        run = Run(**record)
        taken = target.query("SELECT id FROM run WHERE name = ? AND id != ?", (run.name, run.id))
        if taken:
            run.name = target.unique_name(run.name)
        steps = {int(row["step"]): row for row in source.step_records([run.id])[run.id]}
        target.put_run(run, steps, replace=True)
        copied.append(run.id)
    return copied


class SlurmCell:
    """A submitted cell: a submitit Job (its own, or rebuilt from the folder by `reattach`)."""

    def __init__(self, job: Any, pid: int | None = None, stores: Mapping[str, str] | None = None) -> None:
        self.job = job
        self.job_id = str(job.job_id)
        self._pid = pid  # a reattached local job: its controller's pid (submitit keeps no process for it)
        self._ended_at: float | None = None
        self.stores = dict(stores or {})  # {"cell_db": the job's own store, "db": the sweep's runs.db}
        self._recorded = False

    def poll(self) -> int | None:
        code = self._code()
        if code is None:
            return None
        if not self._recorded and self.stores:
            try:
                record_cell_runs(Path(self.stores["cell_db"]), Path(self.stores["db"]))
            except (GolfError, OSError):  # the sweep's store is busy or the file not visible yet: next poll
                return None
            self._recorded = True
        return code

    def _code(self) -> int | None:
        code = _result_code(self.job)
        if code is not None:
            return code
        if not self._ended():
            return None
        self._ended_at = self._ended_at or time.monotonic()
        if time.monotonic() - self._ended_at < RESULT_GRACE_S and not _is_local(self.job):
            return None
        return NO_EXIT_CODE

    def _ended(self) -> bool:
        if self._pid is not None:
            return not _controller_alive(self._pid, self.job.paths.folder)
        if _is_local(self.job) and getattr(self.job, "_process", None) is None:
            return True
        return bool(self.job.done())

    def cancel(self) -> None:
        """scancel (Slurm: SIGTERM to the job's processes, SIGKILL after the cluster's KillWait), or SIGTERM to the
        local job's controller, which passes it to the job; nothing for an ended job. Either way the job's body
        passes it to the cell's golf run, which stops its trainer and records the run, and the job returns the
        cell's exit code. (submitit's own local cancel is SIGINT, after which the controller kills the job within a
        second, before a golf run has recorded anything.)"""
        if self._code() is not None:
            return
        if _is_local(self.job):
            with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                os.kill(self._pid or int(self.job_id), signal.SIGTERM)
            return
        self.job.cancel(check=False)


def _is_local(job: Any) -> bool:
    return type(job).__name__ == "LocalJob"


def _result_code(job: Any) -> int | None:
    """The exit code the job pickled (each task's; the first nonzero), NO_EXIT_CODE for a job that raised, None
    before every task has written its result."""
    from submitit.core.utils import pickle_load

    tasks = job._sub_jobs or [job]  # a multi-node job has one result per task
    codes = []
    for task in tasks:
        path = task.paths.result_pickle
        if not path.exists():
            return None
        try:
            outcome, value = pickle_load(path)
        except (EOFError, OSError):  # being written
            return None
        codes.append(int(value) if outcome == "success" and isinstance(value, int) else NO_EXIT_CODE)
    return next((c for c in codes if c != 0), 0)


def _controller_alive(pid: int, folder: Path) -> bool:
    """The local executor's controller of this folder still runs as `pid` (not a process that reused the pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat[stat.rfind(")") + 2:][:1] == "Z":
        return False
    return b"submitit.local._local" in cmdline and str(folder).encode() in cmdline


class SlurmExecutor:
    """Cells as Slurm jobs (or submitit's local jobs: `cluster: local`). Implements golf.launch.executor's
    Executor; the sweep scheduler caps the cells in flight, Slurm places them (no GPU pinning here)."""

    name = "slurm"
    pins_gpus = False

    def __init__(self, options: SlurmOptions | Mapping[str, Any] | None = None, *,
                 cwd: str | os.PathLike[str] | None = None, **keys: Any) -> None:
        if not isinstance(options, SlurmOptions):
            options = SlurmOptions.from_mapping({**(options or {}), **keys})
        elif keys:
            options = options.merged(keys)
        self.options = options
        self.cwd = Path(cwd or os.getcwd()).absolute()
        self.folder = (self.cwd / options.folder).absolute()
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if options.cluster == "slurm" and missing:
            raise GolfError(f"--executor slurm: {' and '.join(missing)} not on PATH (submit from a Slurm login node, "
                            "or use cluster: local to run the cells here)")
        self._executor: Any = None
        self._submitit()  # a missing submitit is an error before a sweep queues anything

    def _submitit(self) -> Any:
        if self._executor is None:
            try:
                import submitit
            except ModuleNotFoundError:
                raise GolfError("--executor slurm: needs the submitit package (pip install 'golf[slurm]')") from None
            self._executor = submitit.AutoExecutor(folder=self.folder, cluster=self.options.cluster)
        return self._executor

    def submit(self, cell: CellLaunch) -> SlurmCell:
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        executor = self._submitit()
        executor.update_parameters(**self.options.parameters(cell))
        cell_db = self.folder / "cells" / f"{cell.cell_id}.{uuid.uuid4().hex[:8]}.db"  # one per attempt
        argv, db = _with_db([str(a) for a in cell.argv], str(cell_db), self.cwd)
        cell_db.parent.mkdir(parents=True, exist_ok=True)
        try:
            job = executor.submit(run_cell, argv, dict(cell.env), str(cell.log_path), str(self.cwd),
                                  self.options.rdzv_port)
        except (OSError, FailedJobError, FailedSubmissionError) as exc:  # sbatch refused it (partition, account)
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise GolfError(f"cell {cell.cell_id}: submitting its job failed: "
                            f"{lines[-1] if lines else type(exc).__name__}") from None
        stores = {"cell_id": cell.cell_id, "cell_db": str(cell_db), "db": str(db)}
        sidecar = self._sidecar(str(job.job_id))
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps(stores))
        tmp.replace(sidecar)  # where a later golf finds the job's stores (reattach)
        return SlurmCell(job, stores=stores)

    def _sidecar(self, job_id: str) -> Path:
        return self.folder / f"{job_id}_golf.json"

    def _stores(self, job_id: str) -> dict[str, str] | None:
        try:
            return json.loads(self._sidecar(job_id).read_text())
        except (OSError, ValueError):
            return None

    def reattach(self, job_id: str) -> SlurmCell | None:
        """The handle of a job submitted earlier into this executor's folder; None when the folder has no trace
        of it (or, locally, when it neither runs nor left a result)."""
        self._submitit()
        job_id = str(job_id)
        tasks = list(range(self.options.nodes))
        if self.options.cluster == "local":
            from submitit.local.local import LocalJob

            job = LocalJob(folder=self.folder, job_id=job_id, tasks=tasks)
            if not job_id.isdigit():
                return None
            pid = int(job_id)
            if _result_code(job) is None and not _controller_alive(pid, self.folder):
                return None
            return SlurmCell(job, pid=pid, stores=self._stores(job_id))
        from submitit.slurm.slurm import SlurmJob

        job = SlurmJob(folder=self.folder, job_id=job_id, tasks=tasks)
        if not (self.folder / f"{job_id}_submitted.pkl").exists() and _result_code(job) is None:
            return None
        return SlurmCell(job, stores=self._stores(job_id))


def sweep_options(spec_keys: Mapping[str, Any] | None, flags: Mapping[str, Any] | None = None,
                  where: str = "slurm") -> dict[str, Any]:
    """The Slurm options of a sweep: its spec's `slurm:` keys, the `--slurm-*` flags over them, validated, as the
    plain mapping to store on the sweep's row (so `golf sweep resume` rebuilds the same executor)."""
    return SlurmOptions.from_mapping(spec_keys, where).merged(flags).to_mapping()


def parse_sbatch_params(items: Sequence[str] | None, where: str = "--slurm-param") -> dict[str, str]:
    """`--slurm-param KEY=VALUE` (repeatable): sbatch options submitit has no name for (qos, constraint, ...)."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GolfError(f"{where} {item!r}: expected KEY=VALUE, e.g. qos=high or constraint=h200")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def make_executor(options: Mapping[str, Any], cwd: str | os.PathLike[str] | None = None) -> SlurmExecutor:
    """The Slurm executor for a sweep's options (`sweep_options`, or any mapping of SlurmOptions keys); `cwd` is
    the folder the cells run in (runs/ and the submitit folder are relative to it)."""
    return SlurmExecutor(SlurmOptions.from_mapping(options), cwd=cwd)
