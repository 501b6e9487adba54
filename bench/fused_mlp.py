"""Does FUSED_MLP_ENABLED pay? The fused LeakyReLU² MLP against the torch.compile'd plain one, forward + backward.

    python bench/fused_mlp.py --out fused_mlp.json [--tokens 98304] [--hidden 1536,2048] [--iters 30]

At 48 x 2048 tokens, model dim 512, slope 0.5, bf16, for each hidden width (pr549: 1536, pr1493: 2048):
1. the MLP alone: golf.trainer.fused_mlp.fused_mlp against plain_mlp, each inside torch.compile;
2. the trainer's block around it (RMSNorm -> MLP -> residual, fp32 weights cast to bf16), the trainer's MLP module
   with the knob off and on, both compiled;
3. the up-projection by itself: the Triton GEMM with its epilogue against cuBLAS (torch.mm) alone, the question
   on which the rest turns (session 5 found inductor's Triton GEMM templates losing to cuBLAS at K = 512).
Prints ms and fused/plain ratios, and the max abs difference of the output and the three gradients from the plain
path's, next to the plain path's own difference from fp32 (bf16 noise). Needs a CUDA GPU with triton.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from attention_backends import time_ms  # bench/, beside this script
from torch import Tensor

from golf.trainer import fused_mlp as fm
from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import MLP

SLOPE = 0.5
DIM = 512
DEVICE = "cuda"


def hidden_bytes(tokens: int, hidden: int) -> dict[str, float]:
    """Predicted HBM traffic of hidden-sized (tokens x hidden bf16) tensors per forward + backward, GB.
    Plain: h written, read, a written, read (down proj); dA written, read with h, dH written; a read (dW_down),
    dH read twice (dW_up, dX): 11 passes. Fused: h and a written, a read; h read, dH written; a, dH, dH read: 8."""
    one = tokens * hidden * 2 / 1e9
    return {"plain_gb": 11 * one, "fused_gb": 8 * one, "saved_gb": 3 * one}


def inputs(tokens: int, hidden: int, dtype: torch.dtype = torch.bfloat16) -> list[Tensor]:
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(tokens, DIM, device=DEVICE, generator=gen)
    w_up = torch.randn(hidden, DIM, device=DEVICE, generator=gen) / DIM**0.5
    w_down = torch.randn(DIM, hidden, device=DEVICE, generator=gen) / hidden**0.5
    grad_y = torch.randn(tokens, DIM, device=DEVICE, generator=gen)
    return [t.to(dtype) for t in (x, w_up, w_down, grad_y)]


def fwd_bwd(fn: Callable[..., Tensor], tensors: list[Tensor]) -> tuple[Callable[[], None], Callable[[], list[Tensor]]]:
    """A timed step (forward + backward) and a function returning [y, dx, dW_up, dW_down] of one more step."""
    x, w_up, w_down, grad_y = tensors
    leaves = [t.clone().requires_grad_() for t in (x, w_up, w_down)]

    def step() -> None:
        for t in leaves:
            t.grad = None
        fn(*leaves, SLOPE).backward(grad_y)

    def outputs() -> list[Tensor]:
        for t in leaves:
            t.grad = None
        y = fn(*leaves, SLOPE)
        y.backward(grad_y)
        return [y.detach().float()] + [t.grad.float() for t in leaves]

    return step, outputs


def max_errors(got: list[Tensor], want: list[Tensor]) -> dict[str, float]:
    names = ("y", "dx", "dW_up", "dW_down")
    return {name: float((g - w).abs().max()) for name, g, w in zip(names, got, want, strict=True)}


def mlp_alone(tokens: int, hidden: int, iters: int) -> dict[str, Any]:
    tensors = inputs(tokens, hidden)
    plain_step, plain_out = fwd_bwd(torch.compile(fm.plain_mlp, dynamic=False, fullgraph=True), tensors)
    fused_step, fused_out = fwd_bwd(torch.compile(fm.fused_mlp, dynamic=False, fullgraph=True), tensors)
    plain_ms, fused_ms = time_ms(plain_step, iters), time_ms(fused_step, iters)
    plain, fused = plain_out(), fused_out()
    _, exact_out = fwd_bwd(fm.plain_mlp, [t.float() for t in tensors])
    exact = exact_out()
    forward, backward = fm._mlp_kernels()
    return {"plain_ms": plain_ms, "fused_ms": fused_ms, "ratio": plain_ms / fused_ms,
            "max_abs_err_fused_vs_plain": max_errors(fused, plain),
            "max_abs_err_plain_vs_fp32": max_errors(plain, exact),
            "max_abs_err_fused_vs_fp32": max_errors(fused, exact),
            "forward_config": str(getattr(forward, "best_config", None)),
            "backward_config": str(getattr(backward, "best_config", None))}


def trainer_block(tokens: int, hidden: int, iters: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    torch.manual_seed(0)
    x = torch.randn(tokens, DIM, device=DEVICE).bfloat16()
    grad_out = torch.randn_like(x)
    state = None
    for knob in ("0", "1"):
        hp = Hyperparameters.from_env({"MODEL_DIM": str(DIM), "MLP_MULT": str(hidden / DIM),
                                       "NEGATIVE_SLOPE": str(SLOPE), "FUSED_MLP_ENABLED": knob})
        mlp = MLP(hp, 0).to(DEVICE)
        if state is None:
            torch.nn.init.normal_(mlp.proj.weight, std=0.02)  # zero-init would make every gradient but one trivial
            state = {k: v.clone() for k, v in mlp.state_dict().items()}
        mlp.load_state_dict(state)
        block = torch.compile(lambda z, m=mlp: z + m(F.rms_norm(z, (z.size(-1),))), dynamic=False, fullgraph=True)
        leaf = x.clone().requires_grad_()

        def step(block: Any = block, mlp: MLP = mlp, leaf: Tensor = leaf) -> None:
            mlp.zero_grad(set_to_none=True)
            leaf.grad = None
            block(leaf).backward(grad_out)

        rows[f"knob_{knob}_ms"] = time_ms(step, iters)
        step()
        rows[f"knob_{knob}_grads"] = [leaf.grad.float(), mlp.fc.weight.grad.float(), mlp.proj.weight.grad.float()]
    plain, fused = rows.pop("knob_0_grads"), rows.pop("knob_1_grads")
    rows["ratio"] = rows["knob_0_ms"] / rows["knob_1_ms"]
    rows["max_abs_err_grads"] = {name: float((f - p).abs().max())
                                 for name, f, p in zip(("dx", "dW_fc", "dW_proj"), fused, plain, strict=True)}
    return rows


def up_projection(tokens: int, hidden: int, iters: int) -> dict[str, Any]:
    x, w_up, _, _ = inputs(tokens, hidden)
    forward, _ = fm._mlp_kernels()
    h, a = x.new_empty(tokens, hidden), x.new_empty(tokens, hidden)

    def triton_up() -> None:
        forward[fm._grid(tokens, hidden)](x, w_up, h, a, tokens, hidden, DIM, x.stride(0), x.stride(1),
                                          w_up.stride(1), w_up.stride(0), h.stride(0), a.stride(0), SLOPE,
                                          BACKWARD=False, UPCAST=False)

    cublas_ms = time_ms(lambda: torch.mm(x, w_up.t()), iters)
    triton_ms = time_ms(triton_up, iters)
    flops = 2 * tokens * hidden * DIM
    return {"cublas_mm_ms": cublas_ms, "triton_with_epilogue_ms": triton_ms,
            "cublas_tflops": flops / cublas_ms / 1e9, "triton_tflops": flops / triton_ms / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=48 * 2048)
    parser.add_argument("--hidden", default="1536,2048", help="comma-separated hidden widths")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "tokens": args.tokens,
                              "dim": DIM, "slope": SLOPE, "shapes": []}
    for hidden in (int(h) for h in args.hidden.split(",")):
        row = {"hidden": hidden, "predicted_hidden_bytes": hidden_bytes(args.tokens, hidden),
               "mlp": mlp_alone(args.tokens, hidden, args.iters),
               "block": trainer_block(args.tokens, hidden, args.iters),
               "up_projection": up_projection(args.tokens, hidden, args.iters)}
        report["shapes"].append(row)
        mlp, block, up = row["mlp"], row["block"], row["up_projection"]
        print(f"hidden {hidden}: mlp fwd+bwd plain {mlp['plain_ms']:.3f} ms fused {mlp['fused_ms']:.3f} ms "
              f"(plain/fused {mlp['ratio']:.3f}); block knob 0 {block['knob_0_ms']:.3f} ms knob 1 "
              f"{block['knob_1_ms']:.3f} ms ({block['ratio']:.3f})")
        print(f"  up projection: cuBLAS mm {up['cublas_mm_ms']:.3f} ms ({up['cublas_tflops']:.0f} TFLOP/s), Triton "
              f"with epilogue {up['triton_with_epilogue_ms']:.3f} ms ({up['triton_tflops']:.0f} TFLOP/s); "
              f"configs fwd {mlp['forward_config']} bwd {mlp['backward_config']}")
        print(f"  max abs err fused vs plain {mlp['max_abs_err_fused_vs_plain']}; plain vs fp32 "
              f"{mlp['max_abs_err_plain_vs_fp32']}; fused vs fp32 {mlp['max_abs_err_fused_vs_fp32']}; "
              f"block grads {block['max_abs_err_grads']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
