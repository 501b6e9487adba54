"""Causal GQA attention for the model: SDPA, or FlashAttention-4's kernels (package flash-attn-4) when installed.

ATTN_BACKEND picks the kernels: `sdpa` lets PyTorch choose (cuDNN on Hopper, inside torch.compile); `fa4` runs
FA4's CuTe DSL forward and backward through the custom ops below, which torch.compile treats as opaque kernels;
`auto` takes FA4 where it measured faster (bench/NOTES.md, session 6). The `math` kernels are the ops' reference
in plain PyTorch: the CPU tests compare them with SDPA's autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .hparams import KnobError

FA4_PACKAGE = "flash-attn-4"
# FA4's per-call host work (Python dispatch and launch) is hidden only behind enough GPU work. On one H200 with
# the #549 stack: 98,304 tokens per micro-step ran 548 ms/step against SDPA's 566; 16,384 ran 215 against 156.
FA4_MIN_MICRO_TOKENS = 65_536


def fa4_version() -> str | None:
    """The installed flash-attn-4 version if its kernels import, else None."""
    try:
        from importlib.metadata import version

        import flash_attn.cute.interface  # noqa: F401
    except Exception:  # ImportError, or a broken CUDA/CuTe install: either way FA4 is not usable
        return None
    return version(FA4_PACKAGE)


def auto_backend(fa4_usable: bool, micro_batch_tokens: int) -> str:
    """What `auto` runs: FA4 where it is usable and each call is big enough to hide its host work, else SDPA."""
    return "fa4" if fa4_usable and micro_batch_tokens >= FA4_MIN_MICRO_TOKENS else "sdpa"


def resolve_backend(requested: str, device: torch.device, micro_batch_tokens: int) -> str:
    """The backend to run for ATTN_BACKEND=`requested` (auto | sdpa | fa4) on `device`."""
    if requested == "sdpa":
        return requested
    hopper_or_blackwell = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] in (9, 10)
    usable = hopper_or_blackwell and fa4_version() is not None
    if requested == "auto":
        return auto_backend(usable, micro_batch_tokens)
    if not usable:
        raise KnobError(f"ATTN_BACKEND={requested} needs a Hopper or Blackwell GPU and the {FA4_PACKAGE} package "
                        f"(pip install 'golf[fa4]'); valid without them: auto, sdpa")
    return requested


def causal_attention(q: Tensor, k: Tensor, v: Tensor, backend: str) -> Tensor:
    """Causal attention of q (B, T, H, D) over k, v (B, T, Hkv, D); H a multiple of Hkv; returns (B, T, H, D)."""
    if backend == "sdpa":
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=k.size(2) != q.size(2))
        return y.transpose(1, 2)
    # K/V go in expanded to the query heads: FA4's backward then writes dK/dV per head instead of accumulating
    # them across the group in fp32 buffers that need zeroing and a conversion pass; autograd sums the heads
    # back, fused by inductor (bench/NOTES.md, session 7: -4.5 ms/step on pr549). The kernels read dense
    # (B, T, H, D) tensors; inside torch.compile the copies fuse into the producers.
    if k.size(2) != q.size(2):
        group = q.size(2) // k.size(2)
        k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
    return torch.ops.golf.attention_forward(q.contiguous(), k.contiguous(), v.contiguous(), backend)[0]


# -- the custom ops: forward -> (out, log-sum-exp of the scaled scores), backward from them (the flash recipe)

@torch.library.custom_op("golf::attention_forward", mutates_args=())
def attention_forward(q: Tensor, k: Tensor, v: Tensor, kernel: str) -> tuple[Tensor, Tensor]:
    """out (B, T, H, D) contiguous and lse (B, H, T) fp32; kernel: fa4 | math."""
    if kernel == "fa4":
        from flash_attn.cute.interface import _flash_attn_fwd

        out, lse = _flash_attn_fwd(q, k, v, causal=True, return_lse=True)[:2]
        return out, lse
    return _math_forward(q, k, v)


@attention_forward.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, kernel: str) -> tuple[Tensor, Tensor]:
    b, t, h, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty((b, h, t), dtype=torch.float32)


@torch.library.custom_op("golf::attention_backward", mutates_args=())
def attention_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                       kernel: str) -> tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv from the forward's out and lse; kernel: fa4 | math."""
    dout = dout.contiguous()
    if kernel == "fa4":
        from flash_attn.cute.interface import _flash_attn_bwd

        dq, dk, dv = _flash_attn_bwd(q, k, v, out, dout, lse, causal=True)[:3]
        return dq, dk, dv
    return _math_backward(dout, q, k, v, out, lse)


@attention_backward.register_fake
def _(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
      kernel: str) -> tuple[Tensor, Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _save(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: tuple) -> None:
    q, k, v, kernel = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.kernel = kernel


def _backward(ctx: torch.autograd.function.FunctionCtx, dout: Tensor, _dlse: Tensor) -> tuple:
    q, k, v, out, lse = ctx.saved_tensors  # type: ignore[attr-defined]
    dq, dk, dv = torch.ops.golf.attention_backward(dout, q, k, v, out, lse, ctx.kernel)  # type: ignore[attr-defined]
    return dq, dk, dv, None


attention_forward.register_autograd(_backward, setup_context=_save)


def _expand_kv(x: Tensor, group: int) -> Tensor:
    """(B, T, Hkv, D) -> (B, H, T, D) fp32, kv head h // group for query head h."""
    return x.repeat_interleave(group, dim=2).transpose(1, 2).float()


def _scores(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    group, scale = q.size(2) // k.size(2), q.size(-1) ** -0.5
    qh, kh = q.transpose(1, 2).float(), _expand_kv(k, group)
    t = q.size(1)
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return (qh @ kh.transpose(-1, -2) * scale).masked_fill(future, float("-inf")), qh, kh, scale


def _math_forward(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    s, _, _, _ = _scores(q, k)
    lse = s.logsumexp(-1)
    out = (s - lse.unsqueeze(-1)).exp() @ _expand_kv(v, q.size(2) // k.size(2))
    return out.transpose(1, 2).to(q.dtype).contiguous(), lse


def _math_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                   lse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The flash backward: P from the saved lse, D = rowsum(dO * O), dS = P * (dP - D); GQA grads summed per group."""
    s, qh, kh, scale = _scores(q, k)
    group = q.size(2) // k.size(2)
    p = (s - lse.unsqueeze(-1)).exp()
    do, o = dout.transpose(1, 2).float(), out.transpose(1, 2).float()
    ds = p * (do @ _expand_kv(v, group).transpose(-1, -2) - (do * o).sum(-1, keepdim=True))
    dq = ds @ kh * scale
    dk, dv = ds.transpose(-1, -2) @ qh * scale, p.transpose(-1, -2) @ do

    def per_kv_head(x: Tensor, like: Tensor) -> Tensor:
        b, h, t, d = x.shape
        return x.view(b, h // group, group, t, d).sum(2).transpose(1, 2).to(like.dtype).contiguous()

    return dq.transpose(1, 2).to(q.dtype).contiguous(), per_kv_head(dk, k), per_kv_head(dv, v)
