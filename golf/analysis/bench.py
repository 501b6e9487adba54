"""Throughput of a recorded run: ms/step, tokens/s, model FLOPs and MFU, memory, sliding-window speed.

`golf bench` launches a spec with `bench_overrides` (a short run, no TTT, every 10th step logged) and turns the
run's log into `bench_report`. Step times come from the `train_time` of the logged steps: the trainer logs it
after the step's loss reached the host, so the difference between two logged steps is GPU time, and the median
over 10-step windows after the first `skip` steps leaves compilation, warm-up and stragglers out. What a run costs
before its steps is reported on its own: the time to the first step (from the trainer process's start) and the
evaluation graphs' warm-up, with each graph's seconds and whether inductor's compile cache was warm.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Mapping
from typing import Any

from golf.errors import GolfError
from golf.logparse import ParsedRun

PEAK_TFLOPS = 778.0  # the bf16 dense-matmul rate measured on the challenge's H100 (reference-measurements.md)
LOG_EVERY = 10
FLOPS_FORMULA = ("6 * (matmul weights applied per token: every CastedLinear and attention gate, recurrent layers "
                 "once per visit, plus the (tied) output head) + 6 * virtual_layers * train_seq_len * model_dim "
                 "(causal attention scores and mixing)")


def bench_overrides(steps: int, warmup_steps: int) -> dict[str, str]:
    """Knobs that turn a spec into a benchmark run of `steps` optimizer steps (the spec's model and batch)."""
    return {
        "ITERATIONS": str(steps),
        "WARMUP_STEPS": str(warmup_steps),
        "TRAIN_LOG_EVERY": str(LOG_EVERY),
        "VAL_LOSS_EVERY": "0",
        "MAX_WALLCLOCK_SECONDS": "0",
        "TTT_ENABLED": "0",
        "TTT_PRE_QUANT": "0",
    }


def window_step_ms(curve: Mapping[int, Mapping[str, float]], skip: int) -> list[float]:
    """ms/step of each window between consecutive logged steps, from step `skip` on."""
    timed = sorted((step, row["train_time_ms"]) for step, row in curve.items()
                   if "train_time_ms" in row and "train_loss" in row and step >= skip)
    return [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(timed, timed[1:], strict=False) if s1 > s0]


def model_flops_per_token(config: Mapping[str, str]) -> dict[str, float]:
    """Model FLOPs per trained token for the knobs in `config` (see FLOPS_FORMULA), with its two terms."""
    import torch

    from golf.trainer.gates import AttnOutGate, SparseAttnGate
    from golf.trainer.hparams import Hyperparameters
    from golf.trainer.model import GPT, AttentionGate, CastedLinear

    hp = dataclasses.replace(Hyperparameters.resolve(dict(config)), ortho_init=False)
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = GPT(hp)

    def matmul_weights(module: torch.nn.Module) -> int:
        gates = (CastedLinear, AttentionGate, SparseAttnGate, AttnOutGate)
        return sum(m.weight.numel() for m in module.modules() if isinstance(m, gates))

    visits = Counter(model.loop.order(model.loop.num_loops))
    matmul = sum(visits[i] * matmul_weights(block) for i, block in enumerate(model.blocks))
    matmul += matmul_weights(model) - matmul_weights(model.blocks)  # bigram and value-embedding projections, head
    if model.lm_head is None:
        matmul += model.tok_emb.weight.numel()  # the tied head is a matmul with the embedding
    virtual = sum(visits.values())
    attention = virtual * hp.train_seq_len * hp.model_dim
    return {"flops_per_token": 6.0 * (matmul + attention), "matmul_weights_per_token": float(matmul),
            "attention_term": float(attention), "virtual_layers": float(virtual)}


def bench_report(run: Any, parsed: ParsedRun, skip: int = LOG_EVERY,
                 peak_tflops: float | None = None) -> dict[str, Any]:
    """The benchmark figures of one recorded run (a `Run` row and its parsed log). MFU is taken against
    `peak_tflops`, by default the H100's rate for a GPU run; a CPU run has no such peak: MFU is None unless
    a peak is given."""
    if peak_tflops is None and run.gpu_name:
        peak_tflops = PEAK_TFLOPS
    windows = window_step_ms(parsed.curve, skip)
    if not windows:
        raise GolfError(f"run {run.name}: no timed steps after step {skip} (the run logged "
                        f"{len(parsed.curve)} steps); bench needs --steps of at least {skip + 2 * LOG_EVERY}")
    config = dict(run.config or {})
    tokens_per_step = int(config["TRAIN_BATCH_TOKENS"])
    ms = statistics.median(windows)
    tokens_per_s = tokens_per_step / (ms / 1000.0)
    flops = model_flops_per_token(config)
    tflops = flops["flops_per_token"] * tokens_per_s / 1e12
    sliding = parsed.stages.get("sliding")
    sliding_ms = sliding.eval_time_ms if sliding else None
    return {
        "run_id": run.id,
        "run_name": run.name,
        "spec": run.spec_name,
        "command": run.command,
        "gpu": run.gpu_name,
        "gpu_count": run.gpu_count,
        "torch": run.torch_version,
        "attention": parsed.header.get("attention"),  # the kernels that ran (ATTN_BACKEND=auto resolves per GPU)
        "code_hash": run.code_hash,
        "git_commit": run.git_commit,
        "status": run.status,
        "steps": run.steps,
        "timed_windows": len(windows),
        "skip_steps": skip,
        "ms_per_step_median": ms,
        "ms_per_step_min": min(windows),
        "ms_per_step_max": max(windows),
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_s,
        "model_flops_per_token": flops["flops_per_token"],
        "flops_formula": FLOPS_FORMULA,
        "flops_terms": flops,
        "tflops": tflops,
        "peak_tflops": peak_tflops,
        "mfu": tflops / peak_tflops if peak_tflops else None,  # None: a CPU run, no peak to compare with
        "time_to_first_step_s": run.time_to_first_step_s,
        "eval_warmup_s": run.eval_warmup_s,
        "eval_warmup_graphs": parsed.events.get("eval_warmup_graphs"),  # graph -> seconds
        "compile_cache": parsed.events.get("compile_cache"),  # warm, cold, partial, none or off
        "compile_cache_hits": _hits(parsed.events),
        "peak_mem_mib": run.peak_mem_mib,
        "peak_mem_reserved_mib": run.peak_mem_reserved_mib,
        "grad_accum_steps": _int(parsed.config.get("grad_accum_steps")),
        "sliding_stride": _int(config.get("EVAL_STRIDE")),
        "sliding_seq_len": _int(config.get("EVAL_SEQ_LEN")),
        "sliding_eval_s": sliding_ms / 1000.0 if sliding_ms is not None else None,
        "val_tokens": parsed.val_tokens,
        "sliding_tokens_per_s": parsed.val_tokens / (sliding_ms / 1000.0) if sliding_ms and parsed.val_tokens else None,
        "pre_quant_bpb": run.pre_quant_bpb,
        "post_quant_bpb": run.post_quant_bpb,
        "sliding_bpb": run.sliding_bpb,
    }


def _hits(events: Mapping[str, Any]) -> dict[str, int] | None:
    """The compile cache's lookups (FX graph and AOTAutograd hits and misses), as the trainer last logged them."""
    keys = ("fx_hit", "fx_miss", "aot_hit", "aot_miss")
    if f"compile_cache_{keys[0]}" not in events:
        return None
    return {key: events[f"compile_cache_{key}"] for key in keys}


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
