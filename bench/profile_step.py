"""Time and profile the bundled trainer's optimizer step on one GPU, at the knobs in the environment.

    eval "$(python bench/spec_env.py specs/pr549.yaml)"; DATA_PATH=... TOKENIZER_PATH=... \
        python bench/profile_step.py --steps 30 --profile 3 --out prof.json

Excludes compilation and warm-up; reports the median ms/step (CUDA events), tokens/s, model FLOPs per token
(golf.analysis.bench's formula, the one `golf bench` reports), MFU against 778 TFLOP/s (this H100's measured
bf16 matmul peak), peak memory, and the top CUDA kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from golf.analysis.bench import model_flops_per_token
from golf.trainer.data import TrainLoader
from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import describe
from golf.trainer.runtime import setup_runtime
from golf.trainer.train import Trainer, seed_everything

PEAK_TFLOPS = 778.0


def kernel_kind(name: str) -> str:
    low = name.lower()
    if "sdpa" in low or "cudnn" in low or "flash" in low or "fmha" in low:
        return "attention"
    if low.startswith(("nvjet", "sm90_xmma", "cutlass")) or "gemm" in low:
        return "gemm"
    if low.startswith("triton_"):
        return "triton_" + low.split("_")[1]  # per (reductions), red, poi (pointwise)
    return "other"


def dump_kernel_sources(names: list[str], out: Path | None) -> dict[str, str]:
    """Copy the generated source of the named Triton kernels out of inductor's cache (to see what they fuse)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    found: dict[str, str] = {}
    files = list(Path(cache_dir()).rglob("*.py"))
    for name in dict.fromkeys(names):
        for path in files:
            text = path.read_text(errors="replace")
            at = text.find(f"def {name}(")
            if at < 0:
                continue
            head = text.rfind("# kernel path", 0, at)
            found[name] = text[max(head, at - 6000, 0):at + 8000]
            break
    if out is not None:
        dump = out.with_suffix(".kernels.txt")
        dump.write_text("\n\n".join(f"##### {k}\n{v}" for k, v in found.items()))
    return {name: f"{len(src)} chars" for name, src in found.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile", type=int, default=0, help="profile this many steps after timing")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--dump-kernels", type=int, default=0, help="write the sources of the top N Triton kernels")
    args = ap.parse_args()
    hp = Hyperparameters.from_env()
    rt = setup_runtime()
    seed_everything(hp.seed)
    t0 = time.perf_counter()
    trainer = Trainer(hp, rt)
    loader = TrainLoader(hp.data_path, rt.rank, rt.world_size, rt.device)
    for _ in range(args.warmup):
        trainer.train_step(loader, 0, 1.0)
    rt.sync()
    compile_s = time.perf_counter() - t0
    cuda = rt.is_cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            trainer.train_step(loader, step, 1.0)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            trainer.train_step(loader, step, 1.0)
            times.append(1000 * (time.perf_counter() - t))
    med = statistics.median(times)
    flops = model_flops_per_token(hp.as_env())["flops_per_token"]
    tokens_per_s = hp.train_batch_tokens / (med / 1000)
    result = {
        "ms_per_step_median": med,
        "ms_per_step_min": min(times),
        "ms_per_step_max": max(times),
        "tokens_per_step": hp.train_batch_tokens,
        "tokens_per_s": tokens_per_s,
        "model_flops_per_token": flops,
        "tflops": flops * tokens_per_s / 1e12,
        "mfu_vs_778": flops * tokens_per_s / 1e12 / PEAK_TFLOPS,
        "peak_mem_allocated_mib": torch.cuda.max_memory_allocated() // 2**20 if cuda else None,
        "peak_mem_reserved_mib": torch.cuda.max_memory_reserved() // 2**20 if cuda else None,
        "compile_and_warmup_s": compile_s,
        "model_params": describe(trainer.model)["model_params"],
        "grad_accum_steps": trainer.accum,
        "gpu": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for step in range(args.profile):
                trainer.train_step(loader, step, 1.0)
            rt.sync()
        from torch.autograd import DeviceType

        # kernels only: CPU ops also carry their kernels' device time and would count it twice
        events = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0]
        events.sort(key=lambda e: e.self_device_time_total, reverse=True)
        total = sum(e.self_device_time_total for e in events) or 1.0
        result["kernel_ms_per_step"] = total / 1000 / args.profile  # vs ms_per_step: the rest is GPU idle
        by_kind: dict[str, float] = {}
        for e in events:
            kind = kernel_kind(e.key)
            by_kind[kind] = by_kind.get(kind, 0.0) + e.self_device_time_total / 1000 / args.profile
        result["kernel_ms_by_kind"] = dict(sorted(by_kind.items(), key=lambda kv: -kv[1]))
        if args.dump_kernels:
            try:
                result["kernel_sources"] = dump_kernel_sources(
                    [e.key for e in events if e.key.startswith("triton_")][:args.dump_kernels], args.out)
            except Exception as exc:  # a diagnostic: never lose the timing over it
                result["kernel_sources"] = {"error": repr(exc)}
        result["profile_top"] = [
            {"name": e.key[:120], "ms_per_step": e.self_device_time_total / 1000 / args.profile,
             "share": e.self_device_time_total / total, "calls_per_step": e.count / args.profile}
            for e in events[:25]
        ]
    loader.close()
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
