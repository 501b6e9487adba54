"""The LeakyReLU² MLP with its activation fused into the GEMMs around it (FUSED_MLP_ENABLED).

y = leaky_relu(x W_upᵀ, slope)² W_downᵀ. The compiled plain path writes h = x W_upᵀ (cuBLAS), reads it back to
write a = leaky(h)² (a pointwise kernel), and in the backward writes dA = dY W_down (cuBLAS) only for a pointwise
kernel to read it with h and write dH. The fused path does the activation in the epilogue of a Triton up-projection
(h accumulated in fp32; a and h written in the input dtype) and the derivative in the epilogue of a Triton dA GEMM
(dH = (dY W_down) * 2 leaky(h) leaky'(h), so dA never reaches memory). The down projection and the three other
backward products stay cuBLAS (torch.matmul). Per call at 98,304 tokens x hidden 2048 in bf16 that is 8 hidden-sized
passes over HBM instead of 11 (bench/fused_mlp.py says what the time is). Triton runs on CUDA, or on a CPU under
TRITON_INTERPRET=1 (the tests); anywhere else the model keeps the plain path.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from .fused_ce import triton_available

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): Hopper-sized tiles for K = 512 (8 k-steps of 64); a 128 x 256
# fp32 accumulator needs 8 warps to stay in registers. Autotuned once per (M, N, K).
MLP_GEMM_CONFIGS: tuple[tuple[int, int, int, int, int], ...] = (
    (128, 128, 64, 4, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (128, 128, 64, 4, 3))
MLP_GROUP_M = 8  # tiles walked in groups of 8 rows of tiles, so neighbouring programs share B in L2
# Tests only: one (BLOCK_M, BLOCK_N, BLOCK_K) for the interpreter's tiny shapes (autotuning needs a GPU to time).
MLP_TEST_BLOCKS: tuple[int, int, int] | None = None
MLP_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # triton reads it at import, so it is fixed per process
_MLP_KERNELS: dict[Any, Any] = {}


def fused_mlp_available() -> bool:
    """Whether FUSED_MLP_ENABLED can run the kernels in this process (else the model keeps the plain path)."""
    return triton_available()


def fused_mlp_runs_on(x: Tensor) -> bool:
    """The kernels run on CUDA tensors, and on CPU tensors only under the interpreter."""
    return x.is_cuda or MLP_INTERPRETED


def fused_mlp_line(enabled: bool, device: torch.device) -> str | None:
    """The log line that says which MLP path FUSED_MLP_ENABLED=1 got (None with the knob off)."""
    if not enabled:
        return None
    if fused_mlp_available() and (device.type == "cuda" or MLP_INTERPRETED):
        return "fused_mlp:enabled kernel:triton"
    return f"fused_mlp:fallback path:plain reason:{'no triton' if not fused_mlp_available() else device.type}"


def plain_mlp(x: Tensor, w_up: Tensor, w_down: Tensor, slope: float) -> Tensor:
    """The unfused reference: leaky_relu(x W_upᵀ, slope)² W_downᵀ (slope 0: ReLU²), as the model's MLP writes it."""
    import torch.nn.functional as F

    h = F.linear(x, w_up)
    h = F.leaky_relu(h, slope) if slope else torch.relu(h)
    return F.linear(h.square(), w_down)


def _mlp_kernels() -> Any:
    """(forward, backward) autotuned Triton GEMMs; triton is imported here, never at module import."""
    key = MLP_TEST_BLOCKS
    if key in _MLP_KERNELS:
        return _MLP_KERNELS[key]
    import triton
    import triton.language as tl

    # One kernel, two epilogues. C = A B with A (M, K) and B (K, N) addressed through strides, so W_up (N, K)
    # serves as B = W_upᵀ and W_down (dim, hidden) as B directly.
    # BACKWARD=0: h = C, writes h and leaky(h)² (slope: leaky's negative slope). BACKWARD=1: reads h, writes
    # C * d/dh leaky(h)² = C * (h > 0 ? 2h : 2 slope² h).
    @triton.jit
    def mlp_gemm_kernel(a_ptr, b_ptr, h_ptr, out_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn,
                        stride_hm, stride_om, slope, BACKWARD: tl.constexpr, UPCAST: tl.constexpr,
                        EVEN_K: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                        GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        tiles_m = tl.cdiv(M, BLOCK_M)
        tiles_n = tl.cdiv(N, BLOCK_N)
        per_group = GROUP_M * tiles_n
        first_m = (pid // per_group) * GROUP_M
        group_rows = min(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (pid % per_group) % group_rows
        pid_n = (pid % per_group) // group_rows
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ks = tl.arange(0, BLOCK_K)
        row_ok = rows < M
        col_ok = cols < N
        a_ptrs = a_ptr + rows[:, None].to(tl.int64) * stride_am + ks[None, :] * stride_ak
        b_ptrs = b_ptr + ks[:, None] * stride_bk + cols[None, :] * stride_bn
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            if EVEN_K:
                a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
                b = tl.load(b_ptrs, mask=col_ok[None, :], other=0.0)
            else:
                k_left = K - k * BLOCK_K
                a = tl.load(a_ptrs, mask=row_ok[:, None] & (ks[None, :] < k_left), other=0.0)
                b = tl.load(b_ptrs, mask=(ks[:, None] < k_left) & col_ok[None, :], other=0.0)
            if UPCAST:  # the interpreter multiplies bf16 as its uint16 storage; fp32 copies are exact
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
            a_ptrs += BLOCK_K * stride_ak
            b_ptrs += BLOCK_K * stride_bk
        inside = row_ok[:, None] & col_ok[None, :]
        h_at = h_ptr + rows[:, None].to(tl.int64) * stride_hm + cols[None, :]
        out_at = out_ptr + rows[:, None].to(tl.int64) * stride_om + cols[None, :]
        if BACKWARD:
            h = tl.load(h_at, mask=inside, other=0.0).to(tl.float32)
            slope_term = 2.0 * slope * slope
            grad = acc * tl.where(h > 0, 2.0 * h, slope_term * h)
            tl.store(out_at, grad.to(out_ptr.dtype.element_ty), mask=inside)
        else:
            leaky = tl.where(acc > 0, acc, slope * acc)
            tl.store(h_at, acc.to(h_ptr.dtype.element_ty), mask=inside)
            tl.store(out_at, (leaky * leaky).to(out_ptr.dtype.element_ty), mask=inside)

    if key is None:
        configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": MLP_GROUP_M},
                                 num_warps=warps, num_stages=stages)
                   for bm, bn, bk, warps, stages in MLP_GEMM_CONFIGS]
    else:
        bm, bn, bk = key
        configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 2}, num_warps=4)]
    even_k = triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
    # two tuners over one kernel: forward and backward time (and cache) their configs apart
    forward = triton.autotune(configs=configs, key=["M", "N", "K"])(even_k(mlp_gemm_kernel))
    backward = triton.autotune(configs=configs, key=["M", "N", "K"])(even_k(mlp_gemm_kernel))
    _MLP_KERNELS[key] = (forward, backward)
    return _MLP_KERNELS[key]


def _grid(m: int, n: int) -> Any:
    import triton

    return lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)


@torch.library.custom_op("golf_fused_mlp::forward", mutates_args=())
def _mlp_forward(x: Tensor, w_up: Tensor, w_down: Tensor, slope: float) -> tuple[Tensor, Tensor, Tensor]:
    """x (M, dim), w_up (hidden, dim), w_down (dim, hidden) -> y (M, dim), a = leaky(h)² and h (M, hidden)."""
    forward, _ = _mlp_kernels()
    x = x.contiguous()
    m, k = x.shape
    n = w_up.shape[0]
    h = x.new_empty(m, n)
    a = x.new_empty(m, n)
    forward[_grid(m, n)](x, w_up, h, a, m, n, k, x.stride(0), x.stride(1), w_up.stride(1), w_up.stride(0),
                         h.stride(0), a.stride(0), float(slope), BACKWARD=False, UPCAST=MLP_INTERPRETED)
    return torch.matmul(a, w_down.t()), a, h


@_mlp_forward.register_fake
def _mlp_forward_fake(x: Tensor, w_up: Tensor, w_down: Tensor, slope: float) -> tuple[Tensor, Tensor, Tensor]:
    m, n = x.shape[0], w_up.shape[0]
    return x.new_empty(m, w_down.shape[0]), x.new_empty(m, n), x.new_empty(m, n)


@torch.library.custom_op("golf_fused_mlp::hidden_grad", mutates_args=())
def _mlp_hidden_grad(grad_y: Tensor, w_down: Tensor, h: Tensor, slope: float) -> Tensor:
    """dH = (dY W_down) * d/dh leaky(h)², the dA product never written: grad_y (M, dim), h (M, hidden)."""
    _, backward = _mlp_kernels()
    grad_y, h = grad_y.contiguous(), h.contiguous()
    m, k = grad_y.shape
    n = w_down.shape[1]
    grad_h = torch.empty_like(h)
    backward[_grid(m, n)](grad_y, w_down, h, grad_h, m, n, k, grad_y.stride(0), grad_y.stride(1), w_down.stride(0),
                          w_down.stride(1), h.stride(0), grad_h.stride(0), float(slope), BACKWARD=True,
                          UPCAST=MLP_INTERPRETED)
    return grad_h


@_mlp_hidden_grad.register_fake
def _mlp_hidden_grad_fake(grad_y: Tensor, w_down: Tensor, h: Tensor, slope: float) -> Tensor:
    return torch.empty_like(h)


def _mlp_setup(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor, float], output: tuple[Tensor, Tensor, Tensor]) -> None:
    x, w_up, w_down, slope = inputs
    _, a, h = output
    ctx.save_for_backward(x, w_up, w_down, a, h)
    ctx.slope = slope
    ctx.mark_non_differentiable(a, h)  # outputs only so that the backward can have them
    ctx.set_materialize_grads(False)


def _mlp_backward(ctx: Any, grad_y: Tensor | None, _grad_a: Tensor | None,
                  _grad_h: Tensor | None) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
    if grad_y is None:
        return None, None, None, None
    x, w_up, w_down, a, h = ctx.saved_tensors
    grad_y = grad_y.contiguous()
    grad_h = torch.ops.golf_fused_mlp.hidden_grad(grad_y, w_down, h, ctx.slope)
    return grad_h @ w_up, grad_h.t() @ x.contiguous(), grad_y.t() @ a, None


_mlp_forward.register_autograd(_mlp_backward, setup_context=_mlp_setup)


def fused_mlp(x: Tensor, w_up: Tensor, w_down: Tensor, slope: float) -> Tensor:
    """plain_mlp through the Triton kernels: x (..., dim), w_up (hidden, dim), w_down (dim, hidden), one dtype."""
    lead = x.shape[:-1]
    y, _, _ = torch.ops.golf_fused_mlp.forward(x.reshape(-1, x.shape[-1]), w_up, w_down, float(slope))
    return y.reshape(*lead, w_down.shape[0])
