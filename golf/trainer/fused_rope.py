"""q/k RMSNorm + partial RoPE (+ the per-head query gain) in one Triton pass each way (FUSED_QK_NORM_ROPE_ENABLED).

out = rope(rms_norm(x)) * gain[head], x (B, T, H, D) read in place (a strided view of the fused q/k/v projection's
output). The compiled plain path runs this as inductor kernels that write the normalised, rotated query twice (once
before the gain, kept for the gain's gradient) and re-read the gradient three times in the backward; here the
forward writes the output and one fp32 rstd per row, and the backward reads the output's gradient, x and rstd once,
recomputes the rest in registers, and writes dx and one partial sum per row for the gain's gradient. fp32 math,
one rounding at each output (as inductor's fused kernels do). Triton on CUDA, or on a CPU under TRITON_INTERPRET=1
(the tests); anywhere else, and with the knob off, the model keeps the plain path.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from .fused_ce import triton_available

# (token, head) rows per program and warps, autotuned once per head layout on a GPU, not per row count, so that
# evaluation's many batch shapes do not each pay a tuning (32 x 64 dims: 2,048 elements in flight); the
# interpreter takes the first
ROPE_CONFIGS: tuple[tuple[int, int], ...] = ((32, 4), (16, 2), (64, 4), (64, 8), (128, 8))
ROPE_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # triton reads it at import, so it is fixed per process
RMS_EPS = torch.finfo(torch.float32).eps  # F.rms_norm's default for bf16 and fp32 inputs (its opmath type's eps)
_ROPE_KERNEL: Any = None


def plain_norm_rope(x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None) -> Tensor:
    """The unfused reference in fp32: rope(rms_norm(x)) * gain, tables (T, 1, half) rotating dims [0, 2*half)."""
    xf = x.float()
    n = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + RMS_EPS)
    half = cos.size(-1)
    c, s = cos.float(), sin.float()
    x1, x2, rest = n[..., :half], n[..., half:2 * half], n[..., 2 * half:]
    out = torch.cat((x1 * c + x2 * s, x2 * c - x1 * s, rest), dim=-1)
    return out if gain is None else out * gain.float()[:, None]


def fused_rope_available() -> bool:
    """Whether FUSED_QK_NORM_ROPE_ENABLED can run the kernels in this process (else the plain path)."""
    return triton_available()


def fused_rope_runs_on(x: Tensor, cos: Tensor) -> bool:
    """CUDA (or the interpreter), a power-of-two head size, and position tables shared by every row (T, 1, half):
    DOC_ATTENTION's per-row positions take the plain path."""
    d = x.size(-1)
    return (x.is_cuda or ROPE_INTERPRETED) and cos.dim() == 3 and d & (d - 1) == 0 and d <= 256


def _rope_kernel() -> Any:
    """Compile-once Triton kernels (triton is imported here, never at module import: CPU boxes lack it)."""
    global _ROPE_KERNEL
    if _ROPE_KERNEL is not None:
        return _ROPE_KERNEL
    import triton
    import triton.language as tl

    configs = [triton.Config({"ROWS": rows}, num_warps=warps)
               for rows, warps in ROPE_CONFIGS[:1 if ROPE_INTERPRETED else None]]

    # One kernel for both directions (BACKWARD is a compile-time switch): they share the row/column set-up, and
    # Triton resolves helper functions as module globals, which this lazily built kernel cannot have.
    @triton.autotune(configs=configs, key=["HEADS", "DIM", "HALF", "HAS_GAIN", "BACKWARD"])
    @triton.jit
    def norm_rope_kernel(x_ptr, token_stride, head_stride, cos_ptr, sin_ptr, gain_ptr, out_ptr, rstd_ptr,
                         grad_ptr, gain_dot_ptr, n_rows, seq_len, eps, HEADS: tl.constexpr, DIM: tl.constexpr,
                         HALF: tl.constexpr, HAS_GAIN: tl.constexpr, BACKWARD: tl.constexpr, ROWS: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        live = rows < n_rows
        token = rows // HEADS
        head = rows % HEADS
        d = tl.arange(0, DIM)
        # each column's rotation partner, the sign of the partner's term and the (t, d mod half) table entry
        first = d < HALF
        in_rope = d < 2 * HALF
        partner = tl.where(first, d + HALF, tl.where(in_rope, d - HALF, d))
        sign = tl.where(first, 1.0, -1.0)[None, :]
        at_table = (token % seq_len)[:, None] * HALF + (d % HALF)[None, :]
        in_table = in_rope[None, :] & live[:, None]
        c = tl.load(cos_ptr + at_table, mask=in_table, other=1.0).to(tl.float32)
        s = tl.load(sin_ptr + at_table, mask=in_table, other=0.0).to(tl.float32)
        at_x = (token.to(tl.int64) * token_stride + head * head_stride)[:, None]
        at_out = rows.to(tl.int64)[:, None] * DIM  # outputs and their gradients are contiguous (B, T, H, D)
        x = tl.load(x_ptr + at_x + d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
        xp = tl.load(x_ptr + at_x + partner[None, :], mask=live[:, None], other=0.0).to(tl.float32)
        if HAS_GAIN:
            gain = tl.load(gain_ptr + head, mask=live, other=0.0).to(tl.float32)[:, None]
        if not BACKWARD:
            rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / DIM + eps)
            out = (x * c + sign * xp * s) * rstd[:, None]
            if HAS_GAIN:
                out = out * gain
            tl.store(out_ptr + at_out + d[None, :], out, mask=live[:, None])
            tl.store(rstd_ptr + rows, rstd, mask=live)
        else:
            rstd = tl.load(rstd_ptr + rows, mask=live, other=0.0)[:, None]
            n = x * rstd
            g = tl.load(grad_ptr + at_out + d[None, :], mask=live[:, None], other=0.0).to(tl.float32)
            gp = tl.load(grad_ptr + at_out + partner[None, :], mask=live[:, None], other=0.0).to(tl.float32)
            if HAS_GAIN:
                tl.store(gain_dot_ptr + rows, tl.sum(g * (n * c + sign * xp * rstd * s), axis=1), mask=live)
                g, gp = g * gain, gp * gain
            # the rotation's transpose: the partner's term carries the opposite sign
            dn = g * c - sign * gp * s
            dx = (dn - n * (tl.sum(dn * n, axis=1) / DIM)[:, None]) * rstd
            tl.store(out_ptr + at_out + d[None, :], dx, mask=live[:, None])

    _ROPE_KERNEL = norm_rope_kernel
    return _ROPE_KERNEL


def _rope_layout(x: Tensor) -> tuple[Tensor, int, int]:
    """x (B, T, H, D) as rows (token, head) reached by token and head strides; copied only if it is not."""
    b, t, h, d = x.shape
    if x.stride(-1) != 1 or x.stride(0) != t * x.stride(1):
        x = x.contiguous()
    return x, x.stride(1), x.stride(2)


def _rope_grid(n_rows: int) -> Any:
    return lambda meta: ((n_rows + meta["ROWS"] - 1) // meta["ROWS"],)


@torch.library.custom_op("golf_fused_rope::forward", mutates_args=())
def _rope_forward(x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None) -> tuple[Tensor, Tensor]:
    b, t, h, d = x.shape
    x, token_stride, head_stride = _rope_layout(x)
    out = torch.empty((b, t, h, d), device=x.device, dtype=x.dtype)
    rstd = torch.empty((b * t * h,), device=x.device, dtype=torch.float32)
    _rope_kernel()[_rope_grid(b * t * h)](
        x, token_stride, head_stride, cos.contiguous(), sin.contiguous(), x if gain is None else gain, out, rstd,
        out, rstd, b * t * h, t, RMS_EPS, HEADS=h, DIM=d, HALF=cos.size(-1), HAS_GAIN=gain is not None,
        BACKWARD=False)
    return out, rstd


@_rope_forward.register_fake
def _rope_forward_fake(x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None) -> tuple[Tensor, Tensor]:
    b, t, h, d = x.shape
    return x.new_empty((b, t, h, d)), x.new_empty((b * t * h,), dtype=torch.float32)


@torch.library.custom_op("golf_fused_rope::backward", mutates_args=())
def _rope_backward(grad: Tensor, x: Tensor, rstd: Tensor, cos: Tensor, sin: Tensor,
                    gain: Tensor | None) -> tuple[Tensor, Tensor]:
    b, t, h, d = x.shape
    x, token_stride, head_stride = _rope_layout(x)
    dx = torch.empty((b, t, h, d), device=x.device, dtype=x.dtype)
    # per row: sum(grad * rotated), every live row written by the kernel; k has no gain, hence nothing to reduce
    gain_dot = torch.empty((b * t * h if gain is not None else 1,), device=x.device, dtype=torch.float32)
    _rope_kernel()[_rope_grid(b * t * h)](
        x, token_stride, head_stride, cos.contiguous(), sin.contiguous(), x if gain is None else gain, dx, rstd,
        grad.contiguous(), gain_dot, b * t * h, t, RMS_EPS, HEADS=h, DIM=d, HALF=cos.size(-1),
        HAS_GAIN=gain is not None, BACKWARD=True)
    return dx, gain_dot.view(-1, h).sum(0) if gain is not None else rstd.new_zeros((h,))


@_rope_backward.register_fake
def _rope_backward_fake(grad: Tensor, x: Tensor, rstd: Tensor, cos: Tensor, sin: Tensor,
                         gain: Tensor | None) -> tuple[Tensor, Tensor]:
    b, t, h, d = x.shape
    return x.new_empty((b, t, h, d)), x.new_empty((h,), dtype=torch.float32)


def _rope_setup(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor, Tensor | None], output: tuple[Tensor, Tensor]) -> None:
    x, cos, sin, gain = inputs
    ctx.save_for_backward(x, output[1], cos, sin, gain)
    ctx.gain_dtype = None if gain is None else gain.dtype


def _rope_grad(ctx: Any, grad: Tensor, _drstd: Tensor | None) -> tuple[Tensor, None, None, Tensor | None]:
    x, rstd, cos, sin, gain = ctx.saved_tensors
    dx, dgain = torch.ops.golf_fused_rope.backward(grad, x, rstd, cos, sin, gain)
    return dx, None, None, None if ctx.gain_dtype is None else dgain.to(ctx.gain_dtype)


_rope_forward.register_autograd(_rope_grad, setup_context=_rope_setup)


def fused_norm_rope(x: Tensor, cos: Tensor, sin: Tensor, gain: Tensor | None = None) -> Tensor:
    """rope(rms_norm(x)) * gain through the Triton kernels; x (B, T, H, D), tables (T, 1, half), gain (H,)."""
    out, _ = torch.ops.golf_fused_rope.forward(x, cos, sin, gain)
    return out
