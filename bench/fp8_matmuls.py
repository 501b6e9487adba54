"""Would FP8 matmuls speed up the trainer? bf16 against e4m3 at the #549 stack's shapes (48 x 2048 tokens, d 512).

    python bench/fp8_matmuls.py --out fp8.json

1. Bare GEMMs: bf16 `mm` against `torch._scaled_mm` on operands already in e4m3 (the tensor cores' ceiling).
2. The MLP (RMSNorm -> fc -> LeakyReLU(0.5)^2 -> proj, residual) forward + backward inside torch.compile: bf16,
   FP8 forward and input gradient (per-row scales), and FP8 weight gradients too; the scaling and casts are
   plain torch ops that inductor fuses into their producers. Each variant's relative error (output and
   gradients) is measured against the same computation in fp32.
Session 7 (H200): FP8 lost (MLP 2.31 ms against 2.08; the trainer 582 against 569 ms/step), so the trainer has
no FP8 path; this script keeps the measurement (bench/NOTES.md).
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from attention_backends import time_ms  # bench/, beside this script
from torch import Tensor

from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import MLP

ITERS = 30

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K) -> e4m3 (M, K) and fp32 scales (M, 1) with x ≈ q · scale, each row's amax at 448."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True).clamp_min(1e-30)
    q = (xf * (E4M3_MAX / amax)).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q, amax / E4M3_MAX


def scaled_matmul(a: Tensor, b_t: Tensor, out_dtype: torch.dtype) -> Tensor:
    """a (M, K) · b_tᵀ for b_t (N, K), both quantized per row of K: (M, N) in out_dtype."""
    aq, a_scale = quantize_rows(a)
    bq, b_scale = quantize_rows(b_t)
    # cuBLAS wants the second operand column-major: bq.t() of a row-major (N, K) is exactly that
    return torch._scaled_mm(aq, bq.t(), scale_a=a_scale, scale_b=b_scale.t(), out_dtype=out_dtype)


class _FP8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, wgrad_fp8: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.wgrad_fp8 = wgrad_fp8
        return scaled_matmul(x, weight, x.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = scaled_matmul(grad_out, weight.t().contiguous(), x.dtype)  # dY (M, N) · W (N, K)
        if ctx.wgrad_fp8:
            grad_w = scaled_matmul(grad_out.t().contiguous(), x.t().contiguous(), weight.dtype)
        else:
            grad_w = grad_out.t().mm(x).to(weight.dtype)
        return grad_x, grad_w, None


def fp8_linear(x: Tensor, weight: Tensor, wgrad_fp8: bool = False) -> Tensor:
    """F.linear(x, weight) with FP8 products; x (..., K), weight (N, K) in x's dtype; K and N multiples of 16."""
    lead = x.shape[:-1]
    y = _FP8Linear.apply(x.reshape(-1, x.size(-1)), weight, wgrad_fp8)
    return y.view(*lead, weight.size(0))


def bare_gemms(tokens: int, dim: int, hidden: int) -> list[dict]:
    rows = []
    shapes = {"fc fwd": (tokens, dim, hidden), "proj fwd": (tokens, hidden, dim), "qkv fwd": (tokens, dim, 2 * dim),
              "fc wgrad": (hidden, tokens, dim)}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        aq, bq = a.to(E4M3), b.to(E4M3)
        sa = torch.ones(m, 1, device="cuda")
        sb = torch.ones(1, n, device="cuda")
        bf16_ms = time_ms(partial(torch.mm, a, b.t()), ITERS)
        fp8_ms = time_ms(partial(torch._scaled_mm, aq, bq.t(), scale_a=sa, scale_b=sb,
                                 out_dtype=torch.bfloat16), ITERS)
        flops = 2 * m * n * k
        rows.append({"gemm": name, "m": m, "k": k, "n": n, "bf16_ms": bf16_ms, "fp8_ms": fp8_ms,
                     "bf16_tflops": flops / bf16_ms / 1e9, "fp8_tflops": flops / fp8_ms / 1e9})
    return rows


def mlp_block(hp: Hyperparameters, mode: str) -> torch.nn.Module:
    """The trainer's MLP; mode bf16 | fp8 (forward and input gradient) | fp8-all (weight gradients too)."""
    mlp = MLP(hp, 0).cuda()
    torch.nn.init.normal_(mlp.proj.weight, std=0.02)  # zero-init would make every gradient but one trivial
    if mode != "bf16":
        for lin in (mlp.fc, mlp.proj):
            lin.forward = (lambda m: lambda x: fp8_linear(x, m.weight.to(x.dtype), mode == "fp8-all"))(lin)
    return mlp


def run_block(mlp: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + mlp(F.rms_norm(x, (x.size(-1),)))


def forward_backward(step, mlp: torch.nn.Module, x: Tensor, grad_out: Tensor) -> None:
    mlp.zero_grad(set_to_none=True)
    x.grad = None
    step(x).backward(grad_out)


def mlp_variants(tokens: int, hp0: Hyperparameters) -> list[dict]:
    torch.manual_seed(0)
    x_ref = torch.randn(tokens, hp0.model_dim, device="cuda")
    grad_out = torch.randn_like(x_ref).bfloat16()
    base = mlp_block(hp0, "bf16")
    ref_state = {k: v.clone() for k, v in base.state_dict().items()}

    def exact() -> tuple[torch.Tensor, list[torch.Tensor]]:  # fp32 everywhere
        base.float().zero_grad()
        x = x_ref.clone().requires_grad_()
        y = run_block(base, x)
        y.backward(grad_out.float())
        return y.detach(), [x.grad] + [p.grad.clone() for p in base.parameters()]

    y32, g32 = exact()
    rows = []
    for name, mode in (("bf16", "bf16"), ("fp8 fwd+dgrad", "fp8"), ("fp8 all three", "fp8-all")):
        mlp = mlp_block(hp0, mode)
        mlp.load_state_dict(ref_state)
        step = torch.compile(lambda x, m=mlp: run_block(m, x), dynamic=False)
        x = x_ref.bfloat16().requires_grad_()

        fwd_bwd = partial(forward_backward, step, mlp, x, grad_out)
        ms = time_ms(fwd_bwd, ITERS)
        fwd_bwd()
        y = step(x).detach().float()
        grads = [x.grad.float()] + [p.grad.float() for p in mlp.parameters()]
        rel = [float((g - r).norm() / r.norm()) for g, r in zip(grads, g32, strict=True)]
        rows.append({"variant": name, "fwd_bwd_ms": ms, "rel_err_out": float((y - y32).norm() / y32.norm()),
                     "rel_err_grad_x": rel[0], "rel_err_grad_fc": rel[1], "rel_err_grad_proj": rel[2]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=48 * 2048)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    hp = Hyperparameters.from_env({"MODEL_DIM": "512", "MLP_MULT": "3", "NEGATIVE_SLOPE": "0.5"})
    hidden = int(hp.mlp_mult * hp.model_dim)
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens": args.tokens,
              "gemms": bare_gemms(args.tokens, hp.model_dim, hidden), "mlp": mlp_variants(args.tokens, hp)}
    for row in report["gemms"]:
        print(f"gemm {row['gemm']:9s} m={row['m']} k={row['k']} n={row['n']}: bf16 {row['bf16_ms']:.3f} ms "
              f"({row['bf16_tflops']:.0f} TFLOP/s)  fp8 {row['fp8_ms']:.3f} ms ({row['fp8_tflops']:.0f} TFLOP/s)")
    for row in report["mlp"]:
        print(f"mlp {row['variant']:14s} fwd+bwd {row['fwd_bwd_ms']:.3f} ms  rel.err out {row['rel_err_out']:.2e} "
              f"dx {row['rel_err_grad_x']:.2e} dW_fc {row['rel_err_grad_fc']:.2e} "
              f"dW_proj {row['rel_err_grad_proj']:.2e}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
