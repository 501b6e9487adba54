"""One layer's causal GQA attention on each backend: forward and forward+backward ms, and agreement with cuDNN.

    python bench/attention_backends.py [--batch 48 --seq 2048 --heads 8 --kv-heads 4 --head-dim 64] [--json OUT]

Defaults are the #549 stack's micro-step on one GPU. The issue's H100 figures (forward + backward): SDPA cuDNN
2.56 ms, flash 3.85 ms, memory-efficient 7.88 ms. FlashAttention-4 (package flash-attn-4, CuTe DSL kernels for
Hopper and Blackwell) is measured when importable: called directly, and through the trainer's own ops
(golf.trainer.attention: ATTN_BACKEND=fa4), eagerly and inside torch.compile. Each backend's
output and gradients are compared with cuDNN's (bf16, same inputs).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (B, T, H, D) in and out


def sdpa(backend: SDPBackend) -> Attention:
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel([backend]):
            y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, enable_gqa=k.size(2) != q.size(2))
        return y.transpose(1, 2)
    return attend


def fa4_direct() -> Attention:
    from flash_attn.cute import flash_attn_func

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return flash_attn_func(q, k, v, causal=True)[0]
    return attend


def golf_backend(backend: str) -> Attention:
    """The trainer's own attention function (golf.trainer.attention), as the model calls it."""
    from golf.trainer.attention import causal_attention

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return causal_attention(q, k, v, backend)
    return attend


def fa4_forward_tiles(inputs: tuple[torch.Tensor, ...], iters: int) -> list[dict[str, Any]]:
    """FA4's Hopper forward at other tile shapes than its default for head dim 64 (192 x 128, RS, overlap)."""
    from flash_attn.cute.interface import _flash_attn_fwd

    q, k, v, _ = inputs
    rows = []
    for tile_m, tile_n, rs, overlap in ((192, 128, True, True), (128, 128, True, True), (128, 128, False, True),
                                        (192, 128, False, True), (128, 176, True, True), (192, 128, True, False)):
        forward = functools.partial(_flash_attn_fwd, q, k, v, causal=True, tile_mn=(tile_m, tile_n),
                                    mma_pv_is_rs=rs, intra_wg_overlap=overlap)
        row: dict[str, Any] = {"tile_m": tile_m, "tile_n": tile_n, "mma_pv_is_rs": rs, "intra_wg_overlap": overlap}
        try:
            row["forward_ms"] = round(time_ms(forward, iters), 4)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        print(" ".join(f"{key}:{value}" for key, value in row.items()), flush=True)
        rows.append(row)
    return rows


def time_ms(step: Callable[[], Any], iters: int) -> float:
    """Median CUDA-event time of `step` over `iters` calls, after three untimed ones (JIT, autotuning)."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(name: str, attend: Attention, inputs: tuple[torch.Tensor, ...], iters: int,
            baseline: dict[str, torch.Tensor] | None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    q, k, v, dout = inputs
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return attend(q, k, v)

    def forward_backward() -> None:
        torch.autograd.grad(attend(q, k, v), (q, k, v), dout)

    began = time.perf_counter()
    out = attend(q, k, v)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    torch.cuda.synchronize()
    result: dict[str, Any] = {"backend": name, "first_call_s": round(time.perf_counter() - began, 2)}
    result["forward_ms"] = round(time_ms(forward, iters), 4)
    result["forward_backward_ms"] = round(time_ms(forward_backward, iters), 4)
    tensors = {"out": out.detach(), "dq": dq, "dk": dk, "dv": dv}
    if baseline is not None:
        result["max_abs_diff_vs_cudnn"] = {key: float((tensors[key].float() - baseline[key].float()).abs().max())
                                           for key in tensors}
    return result, tensors


def compiled(attend: Attention) -> Attention:
    """The backend inside a fullgraph torch.compile region, with pointwise work around it as in the model."""
    def layer(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return attend(q * 1.0, k * 1.0, v) * 1.0
    return torch.compile(layer, fullgraph=True)


def flops_per_call(batch: int, seq: int, heads: int, head_dim: int) -> tuple[float, float]:
    """Causal attention matmul FLOPs: forward 2 products, backward 5 (incl. the recomputed scores), half masked."""
    per_product = 2.0 * batch * heads * seq * seq * head_dim / 2
    return 2 * per_product, 7 * per_product


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--fa4-tiles", action="store_true", help="also time FA4's forward at other tile shapes")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("attention_backends.py: needs a CUDA GPU")

    gen = torch.Generator(device="cuda").manual_seed(0)
    shape_q = (args.batch, args.seq, args.heads, args.head_dim)
    shape_kv = (args.batch, args.seq, args.kv_heads, args.head_dim)
    inputs = tuple(torch.randn(s, device="cuda", dtype=torch.bfloat16, generator=gen)
                   for s in (shape_q, shape_kv, shape_kv, shape_q))
    fwd_flops, fwd_bwd_flops = flops_per_call(args.batch, args.seq, args.heads, args.head_dim)

    candidates: list[tuple[str, Callable[[], Attention]]] = [
        ("sdpa_cudnn", lambda: sdpa(SDPBackend.CUDNN_ATTENTION)),
        ("sdpa_flash", lambda: sdpa(SDPBackend.FLASH_ATTENTION)),
        ("sdpa_efficient", lambda: sdpa(SDPBackend.EFFICIENT_ATTENTION)),
        ("sdpa_cudnn_compiled", lambda: compiled(sdpa(SDPBackend.CUDNN_ATTENTION))),
        ("fa4_direct", fa4_direct),
        ("golf_fa4", lambda: golf_backend("fa4")),
        ("golf_sdpa_compiled", lambda: compiled(golf_backend("sdpa"))),
        ("golf_fa4_compiled", lambda: compiled(golf_backend("fa4"))),
    ]
    results: list[dict[str, Any]] = []
    baseline: dict[str, torch.Tensor] | None = None

    def run(name: str, make: Callable[[], Attention]) -> None:
        nonlocal baseline
        try:
            result, tensors = measure(name, make(), inputs, args.iters, baseline)
        except Exception as exc:  # a missing package or an unsupported GPU is a result, not a crash
            results.append({"backend": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]})
            traceback.print_exc()
            print(f"backend:{name} error:{results[-1]['error']}", flush=True)
            return
        if baseline is None:
            baseline = tensors
        result["forward_tflops"] = round(fwd_flops / result["forward_ms"] / 1e9, 1)
        result["forward_backward_tflops"] = round(fwd_bwd_flops / result["forward_backward_ms"] / 1e9, 1)
        results.append(result)
        print(" ".join(f"{k}:{v}" for k, v in result.items()), flush=True)

    for name, make in candidates:
        run(name, make)
    tiles = []
    if args.fa4_tiles:
        try:
            tiles = fa4_forward_tiles(inputs, args.iters)
        except ImportError as exc:
            print(f"fa4_tiles error:{exc}", flush=True)

    report = {"shape": vars(args) | {"json": None}, "torch": torch.__version__, "cuda": torch.version.cuda,
              "gpu": torch.cuda.get_device_name(), "results": results, "fa4_forward_tiles": tiles}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
