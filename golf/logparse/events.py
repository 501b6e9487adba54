"""The informational lines of the challenge's logs (data, GPTQ, compression, TTT progress, schedule events).

One registry, `EVENTS`: each entry names the line family, its anchored pattern (matched after the timestamp prefix
and leading spaces are stripped) and how its numbers land in `ParsedRun.events` (seconds are stored as `*_s`,
steps as `*_step`). Families that also carry a time the run's totals need (TTT loops, GPTQ outside the training
clock) are read by the parser through the same keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_N = r"([-+]?\d+(?:\.\d+)?)"


def _seconds(value: str, unit: str | None) -> float:
    return float(value) / 1000.0 if unit == "ms" else float(value)


@dataclass(frozen=True)
class Event:
    name: str
    pattern: re.Pattern[str]
    read: Callable[[re.Match[str]], dict[str, Any]]
    example: str  # a real line of this family (tests parse every example)


def _event(name: str, pattern: str, read: Callable[[re.Match[str]], dict[str, Any]], example: str) -> Event:
    return Event(name, re.compile(pattern), read, example)


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def _phase(m: re.Match[str]) -> dict[str, Any]:
    # the last pause of a phased TTT: how many docs were scored and how many went into the global SGD so far
    out: dict[str, Any] = {"ttt_pause_s": float(m.group("t"))}
    if m.group("phase"):
        out["ttt_phase"] = int(m.group("phase"))
        out["ttt_phases"] = int(m.group("phases"))
    out["ttt_prefix_docs_scored"] = int(m.group("pd"))
    out["ttt_global_docs"] = int(m.group("gd"))
    return out


def _ttp(m: re.Match[str]) -> dict[str, Any]:
    return {"ttt_batches_logged": 1, "ttt_running_bpb": float(m.group("rb")), "ttt_last_batch": int(m.group("b"))}


def _progress(m: re.Match[str]) -> dict[str, Any]:
    return {"ttt_batches_logged": 1, "ttt_running_bpb": float(m.group("rb")), "ttt_last_batch": int(m.group("b"))}


EVENTS: tuple[Event, ...] = (
    _event("train_shards", r"^train_shards:\s*(\d+)$", lambda m: {"train_shards": int(m.group(1))},
           "train_shards: 80"),
    _event("train_loader", r"^train_loader:dataset:(\S+) train_shards:(\d+)",
           lambda m: {"dataset": m.group(1), "train_shards": int(m.group(2))},
           "train_loader:dataset:fineweb10B_sp1024 train_shards:80"),
    _event("val_tokens", r"^val_tokens:\s*([\d,]+)$", lambda m: {"val_tokens": _int(m.group(1))},
           "val_tokens: 47851520"),
    _event("gptq_reserve", r"^gptq:reserving (\d+(?:\.\d+)?)(ms|s)?(?: from training budget)?, effective=(\d+)ms",
           lambda m: {"gptq_reserve_s": _seconds(m.group(1), m.group(2) or "s"),
                      "train_budget_effective_s": int(m.group(3)) / 1000.0},
           "gptq:reserving 0s, effective=599500ms"),
    _event("gptq_hessians", r"^GPTQ:collected (\d+) Hessians in " + _N + r"s",
           lambda m: {"gptq_hessians": int(m.group(1)), "gptq_hessian_s": float(m.group(2))},
           "GPTQ:collected 67 Hessians in 4.7s"),
    _event("gptq_quantized", r"^GPTQ:quantized in " + _N + r"s", lambda m: {"gptq_quantize_s": float(m.group(1))},
           "GPTQ:quantized in 10.2s"),
    _event("gptq_calibrated", r"^gptq:calibrated (\d+) layers in " + _N + r"s",
           lambda m: {"gptq_layers": int(m.group(1)), "gptq_hessian_s": float(m.group(2))},
           "gptq:calibrated 68 layers in 1.9s"),
    _event("gptq_ar_calibration", r"^gptq:generated (\d+) sequences in " + _N + r"s",
           lambda m: {"gptq_calib_seqs": int(m.group(1)), "gptq_calib_generate_s": float(m.group(2))},
           "gptq:generated 64 sequences in 196.7s"),
    _event("gptq_self_generated", r"^gptq:self_generated seqs:(\d+) seq_len:(\d+) time:" + _N + r"s",
           lambda m: {"gptq_calib_seqs": int(m.group(1)), "gptq_calib_generate_s": float(m.group(3))},
           "gptq:self_generated seqs:64 seq_len:2048 time:41.3s"),
    # golf's trainer: the training clock with GPTQ calibration in it (what the 600 s training budget counts)
    _event("train_budget", r"^train_budget: train_time:(\d+)ms gptq_time:(\d+)ms total:(\d+)ms cap:(\d+)ms",
           lambda m: {"budget_train_s": int(m.group(1)) / 1000.0, "gptq_time_s": int(m.group(2)) / 1000.0,
                      "train_incl_gptq_s": int(m.group(3)) / 1000.0, "train_cap_s": int(m.group(4)) / 1000.0},
           "train_budget: train_time:588012ms gptq_time:11874ms total:599886ms cap:600000ms"),
    _event("compress", r"^Serialize: per-group compression done in " + _N + r"s",
           lambda m: {"compress_s": float(m.group(1))}, "Serialize: per-group compression done in 99.9s"),
    _event("decompress", r"^Deserialize: decompression done in " + _N + r"s",
           lambda m: {"decompress_s": float(m.group(1))}, "Deserialize: decompression done in 20.4s"),
    _event("gptq_compressed_saved", r"^GPTQ:compressed\+saved in " + _N + r"s",
           lambda m: {"compress_s": float(m.group(1))}, "GPTQ:compressed+saved in 67.0s"),
    _event("serialize_wallclock", r"^serialize_wallclock:\s*" + _N + r"s",
           lambda m: {"serialize_s": float(m.group(1))}, "serialize_wallclock: 81.816s"),
    _event("artifact_wallclock", r"^artifact_production_wallclock:\s*" + _N + r"s",
           lambda m: {"artifact_production_s": float(m.group(1))},
           "artifact_production_wallclock: 1121.067s (must be < 600.0)"),
    _event("post_gptq_wallclock", r"^wallclock:post_gptq total_elapsed:" + _N + r"s",
           lambda m: {"artifact_production_s": float(m.group(1))},
           "wallclock:post_gptq total_elapsed:858.2s train_budget:600.0s"),
    _event("serialize_phase", r"^phase:serialize wall_ms:(\d+)", lambda m: {"serialize_s": int(m.group(1)) / 1000.0},
           "phase:serialize wall_ms:79389 (quant+compress+save)"),
    _event("ttt_compile_warmup", r"^ttt_lora:compile warmup done \(" + _N + r"s\)",
           lambda m: {"ttt_compile_warmup_s": float(m.group(1))}, "ttt_lora:compile warmup done (137.6s)"),
    _event("compile_cache", r"^compile_cache:(\w+) fx_hit:(\d+) fx_miss:(\d+) aot_hit:(\d+) aot_miss:(\d+)",
           lambda m: {"compile_cache": m.group(1), "compile_cache_fx_hit": int(m.group(2)),
                      "compile_cache_fx_miss": int(m.group(3)), "compile_cache_aot_hit": int(m.group(4)),
                      "compile_cache_aot_miss": int(m.group(5))},
           "compile_cache:warm fx_hit:12 fx_miss:0 aot_hit:5 aot_miss:0 dir:/root/.cache/golf/compile"),
    _event("layer_loop", r"^layer_loop:(?:enabled|phase\d+) step:(\d+) frac:" + _N,
           lambda m: {"layer_loop_step": int(m.group(1)), "layer_loop_frac": float(m.group(2))},
           "layer_loop:enabled step:2178 frac:0.350 encoder:[0, 1, 2, 3, 4, 5, 3, 4] decoder:[5, 3, 4, 5, 6]"),
    _event("recurrence", r"^recurrence:activated (?:at )?step[: ](\d+)",
           lambda m: {"recurrence_step": int(m.group(1))}, "recurrence:activated at step 3000"),
    _event("swa_start", r"^swa:start step:\s*(\d+)", lambda m: {"swa_start_step": int(m.group(1))},
           "swa:start step:4500"),
    _event("late_qat", r"^late_qat:enabled step:(\d+)", lambda m: {"late_qat_step": int(m.group(1))},
           "late_qat:enabled step:6574 scale:0.1499"),
    _event("ttt_phased", r"^ttt_phased: total_docs:(\d+) prefix_docs:(\d+)(?: suffix_docs:\d+)?(?: num_phases:(\d+))?",
           lambda m: {"ttt_total_docs": int(m.group(1)), "ttt_prefix_docs": int(m.group(2)),
                      **({"ttt_phases": int(m.group(3))} if m.group(3) else {})},
           "ttt_phased: total_docs:50000 prefix_docs:2500 suffix_docs:47500 num_phases:3 boundaries:[833, 1666, 2500]"),
    _event("ttt_pause", r"^ttpp:(?: phase:(?P<phase>\d+)/(?P<phases>\d+))? pd:(?P<pd>\d+) gd:(?P<gd>\d+) t:(?P<t>"
           + _N[1:-1] + r")s", _phase, "ttpp: phase:1/3 pd:1296 gd:833 t:209.3s"),
    _event("ttt_resume", r"^ttpr:(?: phase:\d+/\d+)? t:" + _N + r"s", lambda m: {"ttt_resume_s": float(m.group(1))},
           "ttpr: phase:1/3 t:225.9s"),
    _event("ttt_batch", r"^ttp: b(?P<b>\d+)/\d+ bl:\S+ bb:\S+ rl:\S+ rb:(?P<rb>[\d.]+)", _ttp,
           "ttp: b782/782 bl:2.1403 bb:1.0135 rl:2.1403 rb:1.0135 dl:30339-97114 gd:0"),
    _event("ttt_progress", r"^ttt_progress: batch (?P<b>\d+)/\d+ .*running_bpb:(?P<rb>[\d.]+)", _progress,
           "ttt_progress: batch 782/782 batch_loss:2.7837 batch_bpb:1.1136 running_loss:2.7837 running_bpb:1.0335"),
    _event("ttt_global_chunk", r"^tttg: c(\d+)/(\d+) lr:\S+ t:" + _N + r"s",
           lambda m: {"ttt_global_chunks": int(m.group(2)), "ttt_global_s": float(m.group(3))},
           "tttg: c1/131 lr:0.001000 t:0.3s"),
    _event("ttt_lora_docs", r"^ttt_lora:docs:(\d+) rank:(\d+)",
           lambda m: {"ttt_total_docs": int(m.group(1)), "ttt_lora_rank": int(m.group(2))},
           "ttt_lora:docs:50000 rank:96 lr:0.0001 chunk:32"),
    _event("ttt_total_batches", r"^ttt_total_batches: (\d+)/(\d+)",
           lambda m: {"ttt_total_batches": int(m.group(1))}, "ttt_total_batches: 782/782 (expect 782)"),
    _event("ttt_eval_only", r"^TTT_EVAL_ONLY=1\b", lambda m: {"eval_only": True},
           "TTT_EVAL_ONLY=1 — skipping training + GPTQ, loading saved artifact for TTT eval"),
    _event("ttt_start", r"^ttt(?:_sliding)?:start chunks=(\d+)", lambda m: {"ttt_chunks": int(m.group(1))},
           "ttt_sliding:start chunks=1893 chunk_tokens=32768 total_windows=969088 stride=64 ttt_lr=0.002"),
    _event("ttt_chunk", r"^ttt_chunk \[(\d+)/(\d+)\] bpb=([\d.]+) time=" + _N + r"s",
           lambda m: {"ttt_running_bpb": float(m.group(3)), "ttt_chunks": int(m.group(2))},
           "  ttt_chunk [11/1893] bpb=1.146741 time=2.7s"),
    _event("sliding_progress", r"^sliding_eval \[\s*[\d.]+%\] \d+/(\d+) windows running_bpb=([\d.]+)",
           lambda m: {"sliding_windows": int(m.group(1)), "sliding_running_bpb": float(m.group(2))},
           "  sliding_eval [  1.3%] 1632/121136 windows running_bpb=1.142244"),
    _event("ema_applied", r"^ema:applying EMA weights", lambda m: {"ema_applied": True}, "ema:applying EMA weights"),
    _event("swa_applied", r"^swa:applying averaged (\d+) checkpoints", lambda m: {"swa_checkpoints": int(m.group(1))},
           "swa:applying averaged 24 checkpoints"),
    _event("ttt_rank_batches", r"^ttt_rank_batches: rank=(\d+) batches=(\d+)",
           lambda m: {"ttt_rank0_batches": int(m.group(2))}, "ttt_rank_batches: rank=0 batches=84"),
    _event("ttt_params", r"^ttt(?:_sliding)?:params unfrozen=(\d+) frozen=(\d+)",
           lambda m: {"ttt_params_unfrozen": int(m.group(1)), "ttt_params_frozen": int(m.group(2))},
           "ttt_sliding:params unfrozen=26928220 frozen=0"),
    _event("warmup_cu_buckets", r"^warmup_cu_buckets:(\S+) iters_each:(\d+)",
           lambda m: {"warmup_cu_buckets": m.group(1)}, "warmup_cu_buckets:64,128,192,256 iters_each:3"),
    _event("tokenizer", r"^val_bpb:enabled tokenizer_kind=(\S+)", lambda m: {"tokenizer_kind": m.group(1)},
           "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model"),
    _event("byte_sidecar", r"^val_bpb:byte_sidecar:(\w+)", lambda m: {"byte_sidecar": m.group(1)},
           "val_bpb:byte_sidecar:enabled"),
    _event("sdp_backends", r"^sdp_backends:(.*)$", lambda m: {"sdp_backends": m.group(1).strip()},
           "sdp_backends:cudnn=False flash=True mem_efficient=False math=False"),
    _event("xsa_layers", r"^XSA:(\S+) active_layers:(\[.*\])", lambda m: {"xsa": m.group(1), "xsa_layers": m.group(2)},
           "XSA:last_4 active_layers:[7, 8, 9, 10]"),
    _event("command", r"^Running: (torchrun .*)$", lambda m: {"command": m.group(1)},
           "Running: torchrun --standalone --nproc_per_node=8 train_gpt.py"),
    # a summary block some authors' scripts append to the log (03-22): kept apart from what the trainer printed
    _event("appended_summary", r"^(val_bpb|artifact_bytes|line_count|valid):\s{2,}(\S+)$",
           lambda m: {f"appended_{m.group(1)}": m.group(2)}, "val_bpb:          1.12278022"),
    _event("phase_wall", r"^phase:(?!TOTAL)(\w+) wall_ms:(\d+)",
           lambda m: {f"phase_{m.group(1)}_s": int(m.group(2)) / 1000},
           "phase:postquant_eval wall_ms:4811"),
    _event("ttt_docs", r"^ttt:(short|long)_docs time=(\d+)ms",
           lambda m: {f"ttt_{m.group(1)}_docs_s": int(m.group(2)) / 1000},
           "ttt:long_docs time=181252ms docs=3857"),
    _event("ttt_lora_batch", r"^ttt:batch (\d+)/(\d+) time=(\d+)ms",
           lambda m: {"ttt_batches_logged": 1, "ttt_last_batch": int(m.group(1))},
           "ttt:batch 5/61 time=2677ms avg_loss=1.9317"),
    _event("ttt_rank0", r"^ttt:rank0 short=(\d+) long=(\d+) epochs=(\d+)",
           lambda m: {"ttt_short_docs": int(m.group(1)), "ttt_long_docs": int(m.group(2)),
                      "ttt_epochs": int(m.group(3))}, "ttt:rank0 short=2393 long=3857 epochs=3 batch=64"),
    _event("ttt_settings", r"^TTT: epochs=(\d+) lr=(\S+)",
           lambda m: {"ttt_epochs": int(m.group(1)), "ttt_lr": m.group(2)},
           "TTT: epochs=3 lr=0.0001 freeze_first=2 chunk=131072 opt=adamw"),
    _event("ttt_temperature", r"^TTT temperature:\s*" + _N, lambda m: {"ttt_temperature": float(m.group(1))},
           "TTT temperature: 0.98"),
    _event("ppm_alpha", r"^PPM alpha:\s*" + _N, lambda m: {"ppm_alpha": float(m.group(1))},
           "PPM alpha: 0.85, Byte-weighted TTT: True"),
    _event("quant_gap", r"^quant_gap:\s*" + _N + r" BPB", lambda m: {"quant_gap_bpb": float(m.group(1))},
           "quant_gap: 0.014643 BPB (pre:1.160151 post:1.174794)"),
    _event("ttt_gain", r"^ttt_gain:\s*" + _N + r" BPB", lambda m: {"ttt_gain_bpb": float(m.group(1))},
           "ttt_gain: 0.228679 BPB gain over int8 (int8:1.174794 ttt:0.946115)"),
    _event("size_check", r"^Size check (PASSED|FAILED): (\d+) /", lambda m: {"size_check": m.group(1),
                                                                           "size_checked_bytes": int(m.group(2))},
           "Size check PASSED: 15451146 / 16,000,000 (96.6%)"),
    _event("pruning", r"^pruning:\s*" + _N + r"% magnitude pruning", lambda m: {"pruned_pct": float(m.group(1))},
           "pruning:3.0% magnitude pruning applied"),
    _event("gptq_layers", r"^gptq_quantize: (\d+) GPTQ layers, (\d+) naive",
           lambda m: {"gptq_layers": int(m.group(1)), "naive_layers": int(m.group(2))},
           "gptq_quantize: 66 GPTQ layers, 0 naive layers"),
    _event("mixed_precision", r"^mixed_precision: (\d+) int5 params, (\d+) int6 params",
           lambda m: {"int5_params": int(m.group(1)), "int6_params": int(m.group(2))},
           "mixed_precision: 33161216 int5 params, 0 int6 params"),
    _event("swa_averaging", r"^swa:averaging (\d+) checkpoints", lambda m: {"swa_checkpoints": int(m.group(1))},
           "swa:averaging 23 checkpoints"),
    _event("fp16_passthrough", r"^fp16_passthrough: (\S+)", lambda m: {"fp16_passthrough": m.group(1)},
           "fp16_passthrough: tok_emb.weight"),
    _event("eval_seq_len", r"^eval_seq_len:(\d+) \((.*?), (\d+) tokens\)",
           lambda m: {"eval_seq_len": int(m.group(1)), "eval_note": m.group(2), "eval_tokens": int(m.group(3))},
           "eval_seq_len:2048 (NTK-scaled RoPE, 62021633 tokens)"),
    _event("passthrough_tensor", r"^passthrough_tensor:(\S+) shape:\S+ dtype:\S+ bytes:(\d+)",
           lambda m: {"passthrough_tensors_logged": 1}, "passthrough_tensor:smear.gate shape:[512] dtype:torch.float16 "
                                                        "bytes:1024"),
    _event("ema_export", r"^ema_export:using_ema_weights:(\d)", lambda m: {"ema_export": m.group(1) == "1"},
           "ema_export:using_ema_weights:0"),
    _event("mtp_excluded", r"^export_excluding_mtp_params:(\d+)", lambda m: {"mtp_params_excluded": int(m.group(1))},
           "export_excluding_mtp_params:524288"),
    _event("phase_breakdown", r"^phase_breakdown: train:(\d+)ms", lambda m: {"phase_train_s": int(m.group(1)) / 1000},
           "phase_breakdown: train:600040ms postprocess:see_above serialize:see_above eval:see_above ttt:see_above"),
    _event("phase_total", r"^phase:TOTAL wall_ms:(\d+)", lambda m: {"total_wall_s": int(m.group(1)) / 1000.0},
           "phase:TOTAL wall_ms:1027905 (17.1 min)"),
)


# Lines that announce a phase and carry no figure: known, nothing to store.
MARKERS = re.compile(
    r"^(?:GPTQ:collecting Hessians|Quantized weights:$|beginning TTT eval timer|ttt_lora:warming up compile|"
    r"Serialize: per-group \w+ compression\.\.\.|Deserialize: per-group \w+ decompression\.\.\.|"
    r"Setting OMP_NUM_THREADS|NCCL version|sdttt:starting|ttt: pre-compil|Loaded EMA weights|"
    r"gptq:(?:calibrating|building|generating)|TTT eval enabled|raw_model:saved )")


def match_event(line: str) -> tuple[Event, dict[str, Any]] | None:
    """The event a (stripped) line belongs to and the values it carries, or None."""
    for event in EVENTS:
        m = event.pattern.match(line)
        if m:
            return event, event.read(m)
    return None
