"""Process setup under torchrun: device, process group, compute dtype and rank-0 logging."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed: bool = False

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
    return Runtime(device=device, rank=rank, local_rank=local_rank, world_size=world_size, distributed=distributed)


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
