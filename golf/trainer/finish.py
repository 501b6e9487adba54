"""After training: the evaluation stages and the artifact, in the challenge's order.

pre_quant (plain eval of the exported weights) → [TTT_PRE_QUANT: AdamW on the val stream, non-record]
→ [USE_GPTQ: Hessians from training batches, time reserved inside the training cap] → artifact (rank 0 writes
final_model.<quant>.ptz) → post_quant roundtrip (every rank reads the file back) → [EVAL_STRIDE: sliding window]
→ [TTT_ENABLED: legal score-first TTT, or adapt-first (non-record)] → total_eval_time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import loglines
from .artifact import (
    Artifact,
    ArtifactConfig,
    artifact_layout,
    breakdown_line,
    build_artifact,
    calibration_batches,
    collect_hessians,
    compressor_label,
    dequantize_state,
    load_artifact,
    quant_label,
    unpack,
    write_atomic,
)
from .codebytes import shipped_code
from .evaluate import EvalResult, TokenLossFn, evaluate_plain, val_batch_seqs
from .hparams import Hyperparameters
from .lora_ttt import LoRASettings, lora_ttt
from .model import GPT
from .phased_ttt import GlobalSettings, phased_ttt
from .runtime import Runtime
from .selfcalib import generate_sequences, rank_share
from .sliding import WindowScorer, device_tokens, rank_span
from .stages import trainer_labels
from .ttt import TTTSettings, pre_quant_settings, prime_train_step, score_first_ttt, step_rows, train_on_stream

# Scorers built by prime_eval_graphs during the compile warm-up, reused by final_stages (same compiled graph).
RAW_MODEL_FILE = "final_model_raw.pt"  # SAVE_RAW_MODEL=1
_FIN_SCORERS: dict[tuple[int, int, int, int, int], WindowScorer] = {}


def eval_scorer(model: GPT, hp: Hyperparameters, rt: Runtime, val_tokens: torch.Tensor, luts: Any,
                stride: int) -> WindowScorer:
    """The window scorer for this model and stride (one per process: its compiled graph is primed once)."""
    key = (id(model), stride, hp.eval_seq_len, hp.eval_batch_seqs, val_tokens.numel())
    scorer = _FIN_SCORERS.get(key)
    if scorer is None or scorer.model is not model or scorer.luts is not luts:
        for stale in [k for k, s in _FIN_SCORERS.items() if s.model is not model]:
            del _FIN_SCORERS[stale]  # only the current model's scorers are kept
        scorer = WindowScorer(model, val_tokens, luts, hp.eval_seq_len, stride, hp.eval_batch_seqs, rt.device,
                              rt.compiles(hp.compile))
        _FIN_SCORERS[key] = scorer
    return scorer


def prime_eval_graphs(model: GPT, eval_fn: TokenLossFn, hp: Hyperparameters, rt: Runtime,
                      val_tokens: torch.Tensor, luts: Any) -> None:
    """Compile the evaluation graphs that this run's stages use, and no other, during the trainer's compile warm-up
    (before the training clock, like the training graphs): the plain evaluation on the first validation batch, the
    sliding-window scorer on padding windows (sliding window or score-first TTT), the TTT step on random tokens (TTT
    that trains on sequences). Each is logged as `eval_warmup:<graph>` with its seconds. Weights, gradients and the
    RNG are left as they were. With compiling on (rt.compiles) and WARMUP_STEPS > 0 only."""
    if not (rt.compiles(hp.compile) and hp.warmup_steps > 0):
        return
    was_training, was_passes = model.training, model.loop_passes
    model.eval()  # the stages run in eval mode with recurrence on (its final state): prime those graphs
    model.set_recurrence(True)
    lo, hi = rank_span((val_tokens.numel() - 1) // hp.eval_seq_len, rt.rank, rt.world_size)  # as evaluate_plain
    rows = min(val_batch_seqs(hp.val_batch_size, hp.eval_seq_len, rt.world_size), hi - lo)
    if rows:
        with rt.eval_compile("plain"), torch.inference_mode():  # the shapes and dtypes of evaluate_plain's batches
            chunk = val_tokens[:rows * hp.eval_seq_len + 1].to(rt.device, non_blocking=True)
            eval_fn(chunk[:-1].view(-1, hp.eval_seq_len), chunk[1:].view(-1, hp.eval_seq_len))
    if hp.eval_stride or (hp.ttt_enabled and hp.ttt_mode == "score_first"):
        with rt.eval_compile("windows"):
            eval_scorer(model, hp, rt, val_tokens, luts, hp.eval_stride or hp.eval_seq_len).prime()
    total = val_tokens.numel() - 1
    sizes: set[int] = set()  # one padded step shape per span length (ttt.step_rows)
    if hp.ttt_enabled and hp.ttt_mode == "score_first":
        sizes.add(step_rows(min(hp.ttt_chunk_tokens, total) // hp.ttt_seq_len, hp.ttt_batch_seqs, rt.rank,
                            rt.world_size))
    if hp.ttt_pre_quant or (hp.ttt_enabled and hp.ttt_mode == "adapt_first"):
        sizes.add(step_rows(total // hp.ttt_seq_len, hp.ttt_batch_seqs, rt.rank, rt.world_size))
    sizes.discard(0)
    for step_rows_ in sorted(sizes):
        with rt.eval_compile(f"ttt_step{step_rows_}x{hp.ttt_seq_len}"):
            prime_train_step(model, step_rows_, hp.ttt_seq_len, hp.vocab_size, rt.device)
    model.set_loop_passes(was_passes)
    model.train(was_training)


def document_ttt(model: GPT, hp: Hyperparameters, rt: Runtime, val_tokens: torch.Tensor, luts: Any,
                 compile_fn: bool) -> EvalResult:
    """Per-document LoRA TTT, phased when PHASED_TTT_ENABLED; its time is the TTT loop's (the records' count)."""
    cfg = LoRASettings.from_hp(hp)
    if hp.phased_ttt_enabled:
        result, _ = phased_ttt(model, val_tokens, luts, cfg, GlobalSettings.from_hp(hp), rt, compile_fn, hp.seed)
    else:
        result, _ = lora_ttt(model, val_tokens, luts, cfg, rt, compile_fn, hp.seed)
    rt.log(f"ttt:done time={result.elapsed_ms / 1000.0:.1f}s")
    return result


def log_result(rt: Runtime, label: str, result: EvalResult) -> None:
    for line in loglines.result_lines(label, result.val_loss, result.val_bpb, result.elapsed_ms):
        rt.log(line)


def stage_labels(hp: Hyperparameters) -> dict[str, str]:
    """The result-line label of each stage for these knobs."""
    quant = quant_label(hp)
    comp = compressor_label(hp.compressor, hp.compress_level, hp.byte_shuffle).replace("-", "_")
    return trainer_labels(quant, comp, ttt_label(hp, quant))


def ttt_label(hp: Hyperparameters, quant: str) -> str:
    """The TTT result label: golf's for its chunked forms, the records' for LoRA and phased TTT."""
    if hp.ttt_mode == "lora":
        return "quantized_ttt_phased" if hp.phased_ttt_enabled else "quantized_ttt_lora"
    return "legal_ttt" if hp.ttt_mode == "score_first" else f"final_{quant}_ttt"


def write_artifact(model: GPT, hp: Hyperparameters, rt: Runtime, hessians: dict[str, torch.Tensor] | None,
                   path: Path) -> None:
    """Rank 0: quantize, compress, write the file and log its sizes (the challenge's lines + the breakdown)."""
    artifact, stats = build_artifact(model, ArtifactConfig.from_hp(hp), hessians)
    write_atomic(path, artifact.blob)
    rt.log(stats.line())
    log_sizes(hp, rt, artifact)


def log_sizes(hp: Hyperparameters, rt: Runtime, artifact: Artifact) -> None:
    """The challenge's size lines and golf's byte breakdown of an artifact."""
    label = f"{quant_label(hp)}+{compressor_label(hp.compressor, hp.compress_level, hp.byte_shuffle)}"
    code_bytes, how = shipped_code(hp.code_pack, hp.as_env())
    rt.log(loglines.serialized_line(label, artifact.size))
    rt.log(loglines.code_size_line(code_bytes, how))
    rt.log(loglines.total_size_line(label, artifact.size + code_bytes))
    rt.log(breakdown_line(artifact, code_bytes))


def save_raw_weights(model: GPT, path: Path) -> None:
    """The model's state dict before quantization, written atomically (torch.save; tensors on the CPU)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({name: t.detach().cpu().clone() for name, t in model.state_dict().items()}, tmp)
    tmp.replace(path)


def load_weights(model: GPT, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        model.load_state_dict(state, strict=True)  # copies in place: compiled graphs keep seeing these tensors


def final_stages(model: GPT, eval_fn: TokenLossFn, hp: Hyperparameters, rt: Runtime, val_tokens: torch.Tensor,
                 luts: Any, loader: Any, train_ms: float | None = None) -> dict[str, EvalResult]:
    """Run every configured stage; returns each stage's result by stage name.

    With EVAL_ONLY_PATH (a recorded run's artifact), the stages before the artifact are skipped: its size lines
    are logged from the file, every rank loads it, and the post-quant stages score it with these knobs."""
    model.set_qat(False)  # the stages score real weights, not fake-quantized ones
    model.eval()
    rt.sync()
    start = time.perf_counter()
    reserved_s = 0.0  # GPTQ calibration: inside the training cap, not eval time
    compile_fn = rt.compiles(hp.compile)
    labels = stage_labels(hp)
    batch = val_batch_seqs(hp.val_batch_size, hp.eval_seq_len, rt.world_size)
    results: dict[str, EvalResult] = {}

    def plain() -> EvalResult:
        return evaluate_plain(eval_fn, val_tokens, luts, hp.eval_seq_len, batch, rt)

    def record(stage: str, result: EvalResult) -> None:
        results[stage] = result
        log_result(rt, labels[stage], result)

    primed = [s for s in _FIN_SCORERS.values() if s.model is model and s.total == val_tokens.numel() - 1]
    tokens = primed[0].tokens if primed else device_tokens(val_tokens, rt.device)
    non_record_logged = False
    if hp.eval_only_path:
        path = Path(hp.eval_only_path)
        blob = path.read_bytes()
        rt.log(f"eval_only: artifact={path} bytes:{len(blob)} sha256:{hashlib.sha256(blob).hexdigest()[:16]}")
        if rt.is_main:
            log_sizes(hp, rt, artifact_layout(blob))
        load_weights(model, dequantize_state(unpack(blob)))
        del blob
        return _quantized_stages(model, hp, rt, val_tokens, luts, tokens, plain, record, results, start, 0.0,
                                 non_record_logged)
    record("pre_quant", plain())
    if hp.ttt_pre_quant:
        rt.log(loglines.non_record_line(hp.non_record_reason))
        non_record_logged = True
        t0 = time.perf_counter()
        steps = train_on_stream(model, tokens, pre_quant_settings(hp), rt, compile_fn)
        rt.sync()
        rt.log(f"ttt_pre_quant:done optimizer=adamw epochs={hp.ttt_epochs} steps={steps} "
               f"time={time.perf_counter() - t0:.1f}s")

    if hp.save_raw_model and rt.is_main:  # the exact weights the artifact below quantizes (fp32, as held)
        save_raw_weights(model, Path(RAW_MODEL_FILE))
        rt.log(f"raw_model:saved {RAW_MODEL_FILE}")
    hessians = None
    if hp.use_gptq:
        rt.sync()
        t0 = time.perf_counter()
        cfg = ArtifactConfig.from_hp(hp)
        if hp.gptq_calib_seqs:
            share = rank_share(hp.gptq_calib_seqs, rt.rank, rt.world_size)
            batches = generate_sequences(model, share, hp.train_seq_len, hp.eval_batch_seqs, rt.device,
                                         hp.seed + 1000 * rt.rank)
            rt.sync()
            rt.log(loglines.self_calibration_line(hp.gptq_calib_seqs, hp.train_seq_len, time.perf_counter() - t0))
        else:
            batches = calibration_batches(loader, hp, rt.world_size)
        hessians = collect_hessians(model, batches, cfg, rt)
        rt.sync()
        reserved_s = time.perf_counter() - t0
        rt.log(f"gptq:calibrated {len(hessians)} layers in {reserved_s:.1f}s")
    if train_ms is not None:  # the records' rule: calibration counts against the training clock (0 without GPTQ)
        rt.log(loglines.train_budget_line(train_ms, 1000 * reserved_s, hp.max_wallclock_seconds))

    path = Path(f"final_model.{quant_label(hp)}.ptz")
    if rt.is_main:
        write_artifact(model, hp, rt, hessians, path)
    del hessians
    rt.barrier()
    load_weights(model, load_artifact(path))  # every rank evaluates what the file holds
    return _quantized_stages(model, hp, rt, val_tokens, luts, tokens, plain, record, results, start, reserved_s,
                             non_record_logged)


def _quantized_stages(model: GPT, hp: Hyperparameters, rt: Runtime, val_tokens: torch.Tensor, luts: Any,
                      tokens: torch.Tensor, plain: Callable[[], EvalResult], record: Callable[[str, EvalResult], None],
                      results: dict[str, EvalResult], start: float, reserved_s: float,
                      non_record_logged: bool) -> dict[str, EvalResult]:
    """The stages that score the artifact's weights (already in `model`): roundtrip, sliding window, TTT."""
    compile_fn = rt.compiles(hp.compile)
    record("post_quant", plain())

    scorer = None
    if hp.eval_stride:
        scorer = eval_scorer(model, hp, rt, val_tokens, luts, hp.eval_stride)
        record("sliding", scorer.evaluate(rt))

    if hp.ttt_enabled:
        cfg_ttt = TTTSettings.from_hp(hp)
        if hp.ttt_mode == "lora":
            record("post_ttt", document_ttt(model, hp, rt, val_tokens, luts, compile_fn))
        elif hp.ttt_mode == "score_first":
            # without a sliding stage, the plain sequences are the windows (stride = window)
            ttt_scorer = scorer or eval_scorer(model, hp, rt, val_tokens, luts, hp.eval_seq_len)
            out = score_first_ttt(model, ttt_scorer, cfg_ttt, rt, compile_fn)
            record("post_ttt", out.result)
        else:
            if not non_record_logged:
                rt.log(loglines.non_record_line(hp.non_record_reason))
            rt.sync()
            t0 = time.perf_counter()
            steps = train_on_stream(model, tokens, cfg_ttt, rt, compile_fn)
            rt.log(f"ttt_adapt:done optimizer={cfg_ttt.optimizer} epochs={cfg_ttt.epochs} steps={steps} "
                   f"time={time.perf_counter() - t0:.1f}s")
            scored = scorer.evaluate(rt) if scorer is not None else plain()
            record("post_ttt", dataclasses.replace(scored, elapsed_ms=1000.0 * (time.perf_counter() - t0)))
        rt.log(loglines.ttt_time_line(results["post_ttt"].elapsed_ms))

    rt.sync()
    rt.log(loglines.total_eval_time_line(time.perf_counter() - start - reserved_s))
    return results
