"""Where a sweep's cells run. A cell is one `golf run` process (it records itself in runs.db through the same
runner and parser as any run); an executor only starts, watches and stops those processes. The local lanes
executor and the Slurm executor (submitit) implement the same two small protocols, so the sweep scheduler and
the persistent queue never ask where a cell runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class CellLaunch:
    """What it takes to run one queued cell."""

    cell_id: str  # the queue row's id
    argv: list[str]  # the command of one cell: a `golf run ...` invocation
    log_path: Path  # the cell process's own stdout and stderr (the trainer's train.log is the run's)
    gpus: int = 1  # GPUs the cell needs (nproc_per_node)
    env: dict[str, str] = field(default_factory=dict)  # added to the environment: CUDA_VISIBLE_DEVICES, ports, ...


class CellHandle(Protocol):
    """A started cell."""

    job_id: str  # a pid for local lanes, a Slurm job id for Slurm: stored on the queue row

    def poll(self) -> int | None:
        """The cell's exit code once it has ended, else None."""
        ...

    def cancel(self) -> None:
        """Stop the cell (SIGTERM to a local process group, scancel for Slurm); idempotent."""
        ...


class Executor(Protocol):
    """`pins_gpus` (optional, default False): the scheduler packs cells onto GPU ids itself and passes each its
    CUDA_VISIBLE_DEVICES and rendezvous endpoint (local lanes); otherwise it only caps the cells in flight at
    `--lanes` and the executor places them (Slurm)."""

    name: str  # "local" or "slurm", stored on the queue row

    def submit(self, cell: CellLaunch) -> CellHandle:
        ...

    def reattach(self, job_id: str) -> CellHandle | None:
        """The handle of a cell started by an earlier golf (for `golf sweep resume`), or None when it is gone."""
        ...


# name -> module:class. An executor's module is imported only when a sweep uses it (the Slurm one needs submitit).
EXECUTORS = {"local": "golf.launch.lanes:LocalLanesExecutor", "slurm": "golf.launch.slurm:SlurmExecutor"}


def executor_named(name: str, **options: object) -> Executor:
    """The executor `--executor NAME` asks for, built with its options (GolfError for an unknown or absent one)."""
    import importlib

    from golf.errors import GolfError

    target = EXECUTORS.get(name)
    if target is None:
        raise GolfError(f"--executor {name}: expected one of {', '.join(EXECUTORS)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the executor is there but a library it needs is not (submitit)
            raise GolfError(f"--executor {name}: needs the {exc.name} package (pip install {exc.name})") from None
        raise GolfError(f"--executor {name}: not available in this golf ({module_name} is not installed)") from None
    return getattr(module, class_name)(**options)
