"""Where and with what a run was launched: git state, host, GPUs, library versions.

Nothing here imports torch (the launcher must start fast); versions come from package metadata and GPUs
from nvidia-smi.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import golf


@dataclass(frozen=True)
class Provenance:
    golf_version: str
    git_commit: str | None
    git_dirty: bool | None
    host: str
    gpu_name: str | None
    gpu_count: int
    torch_version: str | None
    python_version: str

    def as_fields(self) -> dict[str, object]:
        return asdict(self)


def collect(cwd: str | os.PathLike[str] | None = None) -> Provenance:
    commit, dirty = git_state(cwd)
    gpu_name, gpu_count = gpu_info()
    return Provenance(
        golf_version=golf.__version__,
        git_commit=commit,
        git_dirty=dirty,
        host=socket.gethostname(),  # the store's reconcile_stale compares against this
        gpu_name=gpu_name,
        gpu_count=gpu_count,
        torch_version=package_version("torch"),
        python_version=platform.python_version(),
    )


def _git(args: list[str], cwd: Path) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(cwd: str | os.PathLike[str] | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of the working tree at `cwd`; (None, None) outside git."""
    where = Path(cwd or Path.cwd())
    if _git(["rev-parse", "--is-inside-work-tree"], where) is None:
        return None, None
    head = _git(["rev-parse", "HEAD"], where)
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    commit = head.strip() if head else None  # None before the first commit
    dirty = bool(status.strip()) if status is not None else None
    return commit, dirty


def gpu_info() -> tuple[str | None, int]:
    """(name of the first visible GPU, number of visible GPUs); (None, 0) without NVIDIA GPUs."""
    if shutil.which("nvidia-smi") is None:
        return None, 0
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid,name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None, 0
    if done.returncode != 0:
        return None, 0
    gpus = [tuple(part.strip() for part in line.split(",", 2)) for line in done.stdout.splitlines() if line.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        gpus = [g for w in wanted for g in gpus if len(g) == 3 and (g[0] == w or g[1].startswith(w))]
    if not gpus:
        return None, 0
    return gpus[0][-1], len(gpus)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
