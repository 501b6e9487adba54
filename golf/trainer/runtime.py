"""Process setup under torchrun: device, process group, compute dtype and rank-0 logging."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from .loglines import eval_warmup_line

# GOLF_COMPILE_CPU=1: torch.compile on a CPU too (inductor's C++ backend), as COMPILE does on CUDA; for tests.
COMPILE_CPU_SWITCH = "GOLF_COMPILE_CPU"
_IMPORTED_AT = time.time()  # where /proc cannot say when the process started


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed: bool = False
    compile_on_cpu: bool = False
    compile_cache: str = "off"  # inductor's cache folder (compile_cache.setup_compile_cache), or "off"
    eval_compiled: dict[str, float] = field(default_factory=dict)  # evaluation graph -> seconds its priming took

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def compute_dtype(self) -> torch.dtype:
        # bf16 on GPUs; fp32 on CPU, where bf16 matmuls are slow and tests want exact comparisons
        return torch.bfloat16 if self.is_cuda else torch.float32

    def compiles(self, wanted: bool) -> bool:
        """Whether graphs are torch.compile'd: COMPILE (`wanted`) on CUDA, or on a CPU with GOLF_COMPILE_CPU=1."""
        return wanted and (self.is_cuda or self.compile_on_cpu)

    @contextmanager
    def eval_compile(self, graph: str) -> Iterator[None]:
        """Time the priming of one evaluation graph (compiled on its first call) and log it with the running total
        (`eval_warmup:`), so a run's log says which evaluation graphs it compiled and what they cost."""
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.eval_compiled[graph] = self.eval_compiled.get(graph, 0.0) + time.perf_counter() - t0
        self.log(eval_warmup_line(graph, self.eval_compiled[graph], sum(self.eval_compiled.values())))

    def log(self, msg: str) -> None:
        if self.is_main:
            print(msg, flush=True)

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def all_reduce(self, tensor: torch.Tensor, op: Any = None) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def no_sync(self, model: torch.nn.Module, active: bool) -> AbstractContextManager[Any]:
        """Skip DDP's gradient all-reduce on all but the last micro-step."""
        if active and self.distributed and hasattr(model, "no_sync"):
            return model.no_sync()  # type: ignore[operator]
        return nullcontext()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def setup_runtime() -> Runtime:
    """Read torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK) and open the process group: NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        tune_inductor()
    else:
        device = torch.device("cpu")
    distributed = world_size > 1
    if distributed:
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return Runtime(device=device, rank=rank, local_rank=local_rank, world_size=world_size, distributed=distributed,
                   compile_on_cpu=os.environ.get(COMPILE_CPU_SWITCH, "0") == "1")


def seconds_since_start() -> float:
    """Seconds since this process started (Linux: its start time in /proc, so the interpreter's start and the
    imports count), else since the trainer's modules were imported."""
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks after boot
        return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time() - _IMPORTED_AT


def tune_inductor() -> None:
    """Inductor settings measured on the H100 with the #549 stack (bench/NOTES.md); an env var still wins.

    Mix-order reductions fuse a norm's per-row reduction with the per-channel parameter gradients into one
    kernel; for one layer of the stack that kernel took 4.85 ms where its siblings took 0.5 ms (15 inputs, 8
    accumulators). Off, the step went from 658 to 626 ms/step at 786,432 tokens (torch 2.11).
    """
    import torch._inductor.config as inductor

    if "TORCHINDUCTOR_MIX_ORDER_REDUCTION" not in os.environ and hasattr(inductor.triton, "mix_order_reduction"):
        inductor.triton.mix_order_reduction = False


def environment_lines(rt: Runtime) -> list[str]:
    """Versions and hardware, as greppable `key:value` lines (the run's provenance inside its log)."""
    lines = [
        f"python:{platform.python_version()} torch:{torch.__version__} "
        f"cuda:{torch.version.cuda or 'none'} platform:{platform.platform()}",
    ]
    if rt.is_cuda:
        name = torch.cuda.get_device_name(rt.device).replace(" ", "_")
        major, minor = torch.cuda.get_device_capability(rt.device)
        lines.append(f"gpu:{name} gpu_count:{rt.world_size} capability:{major}.{minor}")
    else:
        lines.append(f"gpu:none cpu_threads:{torch.get_num_threads()}")
    return lines


def nvidia_smi() -> str:
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def python_version() -> str:
    return sys.version.split()[0]
