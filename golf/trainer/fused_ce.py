"""Softcapped cross-entropy fused into one pass over the logits (FUSED_CE_ENABLED).

The plain path softcaps the (B*T, V) logits into a new fp32 tensor, then runs cross-entropy over it, and its
backward keeps both. The fused path reads the raw logits (bf16 on GPUs) once per row: it applies
cap * tanh(x / cap) in registers, keeps a running max and sum of exponentials (online log-sum-exp), and stores
only the per-row loss and log-sum-exp; the backward recomputes the softcap from the raw logits and writes the
gradient in their dtype. Triton kernels on CUDA, imported lazily; anywhere else (and with the knob off) the
plain path. Targets < 0 (IGNORE_TARGET) get zero loss and zero gradient, and the mean skips them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_COLS = 1024
NUM_WARPS = 4
_KERNELS: Any = None


def plain_softcapped_ce(logits: Tensor, targets: Tensor, cap: float) -> Tensor:
    """Per-row loss (N,) fp32 of cross-entropy over cap * tanh(logits / cap): the unfused reference."""
    z = cap * torch.tanh(logits.float() / cap)
    return F.cross_entropy(z, targets, reduction="none", ignore_index=-100)


def _kernels() -> Any:
    """Compile-once Triton kernels (triton is imported here, never at module import: CPU boxes lack it)."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    import triton
    import triton.language as tl

    # Triton resolves names as globals, so the softcap is written out in each kernel:
    # cap * tanh(x / cap) with tanh(u) = 2 * sigmoid(2u) - 1.
    @triton.jit
    def forward_kernel(logits_ptr, row_stride, targets_ptr, loss_ptr, lse_ptr, n_cols, cap,
                       BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * row_stride
        running_max = -float("inf")
        running_sum = 0.0
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            inside = cols < n_cols
            x = tl.load(base + cols, mask=inside, other=0.0).to(tl.float32)
            z = tl.where(inside, cap * (2.0 * tl.sigmoid(x * (2.0 / cap)) - 1.0), -float("inf"))
            new_max = tl.maximum(running_max, tl.max(z, axis=0))
            running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
            running_max = new_max
        lse = running_max + tl.log(running_sum)
        target = tl.load(targets_ptr + row)
        valid = target >= 0
        x_target = tl.load(base + tl.where(valid, target, 0)).to(tl.float32)
        z_target = cap * (2.0 * tl.sigmoid(x_target * (2.0 / cap)) - 1.0)
        tl.store(lse_ptr + row, lse)
        tl.store(loss_ptr + row, tl.where(valid, lse - z_target, 0.0))

    @triton.jit
    def backward_kernel(logits_ptr, row_stride, grad_ptr, grad_row_stride, targets_ptr, lse_ptr, dloss_ptr,
                        n_cols, cap, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * row_stride
        out = grad_ptr + row * grad_row_stride
        target = tl.load(targets_ptr + row)
        lse = tl.load(lse_ptr + row)
        dloss = tl.where(target >= 0, tl.load(dloss_ptr + row).to(tl.float32), 0.0)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            inside = cols < n_cols
            x = tl.load(base + cols, mask=inside, other=0.0).to(tl.float32)
            th = 2.0 * tl.sigmoid(x * (2.0 / cap)) - 1.0
            prob = tl.exp(cap * th - lse)
            dz = dloss * (prob - tl.where(cols == target, 1.0, 0.0))
            tl.store(out + cols, dz * (1.0 - th * th), mask=inside)  # d softcap / dx = 1 - tanh^2

    _KERNELS = (forward_kernel, backward_kernel)
    return _KERNELS


@torch.library.custom_op("golf_fused_ce::forward", mutates_args=())
def _fused_forward(logits: Tensor, targets: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    forward_kernel, _ = _kernels()
    logits, targets = logits.contiguous(), targets.contiguous()
    rows, cols = logits.shape
    loss = torch.empty(rows, device=logits.device, dtype=torch.float32)
    lse = torch.empty(rows, device=logits.device, dtype=torch.float32)
    forward_kernel[(rows,)](logits, logits.stride(0), targets, loss, lse, cols, float(cap),
                            BLOCK=BLOCK_COLS, num_warps=NUM_WARPS)
    return loss, lse


@_fused_forward.register_fake
def _fused_forward_fake(logits: Tensor, targets: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    rows = logits.shape[0]
    return logits.new_empty(rows, dtype=torch.float32), logits.new_empty(rows, dtype=torch.float32)


@torch.library.custom_op("golf_fused_ce::backward", mutates_args=())
def _fused_backward(logits: Tensor, targets: Tensor, lse: Tensor, dloss: Tensor, cap: float) -> Tensor:
    _, backward_kernel = _kernels()
    logits, targets, dloss = logits.contiguous(), targets.contiguous(), dloss.contiguous()
    grad = torch.empty_like(logits)
    rows, cols = logits.shape
    backward_kernel[(rows,)](logits, logits.stride(0), grad, grad.stride(0), targets, lse, dloss, cols, float(cap),
                             BLOCK=BLOCK_COLS, num_warps=NUM_WARPS)
    return grad


@_fused_backward.register_fake
def _fused_backward_fake(logits: Tensor, targets: Tensor, lse: Tensor, dloss: Tensor, cap: float) -> Tensor:
    return torch.empty_like(logits)


def _fused_ce_setup(ctx: Any, inputs: tuple[Tensor, Tensor, float], output: tuple[Tensor, Tensor]) -> None:
    logits, targets, cap = inputs
    ctx.save_for_backward(logits, targets, output[1])
    ctx.cap = cap


def _fused_ce_backward(ctx: Any, dloss: Tensor, _dlse: Tensor | None) -> tuple[Tensor, None, None]:
    logits, targets, lse = ctx.saved_tensors
    return torch.ops.golf_fused_ce.backward(logits, targets, lse, dloss, ctx.cap), None, None


_fused_forward.register_autograd(_fused_ce_backward, setup_context=_fused_ce_setup)


def fused_softcapped_ce(logits: Tensor, targets: Tensor, cap: float) -> Tensor:
    """Per-row loss (N,) fp32 through the Triton kernels (CUDA, or CPU under TRITON_INTERPRET=1)."""
    loss, _ = torch.ops.golf_fused_ce.forward(logits, targets, float(cap))
    return loss


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def softcapped_ce_mean(logits: Tensor, targets: Tensor, cap: float, fused: bool) -> Tensor:
    """Mean loss over the targets that are not ignored; fused on CUDA when asked, else the plain path."""
    if fused and logits.is_cuda:
        losses = fused_softcapped_ce(logits, targets, cap)
        return losses.sum() / (targets >= 0).sum().clamp_min(1)
    z = cap * torch.tanh(logits.float() / cap)
    return F.cross_entropy(z, targets, ignore_index=-100)
