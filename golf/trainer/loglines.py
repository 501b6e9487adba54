"""The trainer's log lines that golf's parser reads, in the challenge's formats: the one place they are written
(tests/test_loglines.py reads each back, and every line of a CPU run). Stdlib only; precision is part of the format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def hparams_lines(rows: Iterable[tuple[str, str]]) -> list[str]:
    """The `Hyperparameters:` block: one `  name: value` row per knob (the parser reads them as the config)."""
    return ["Hyperparameters:"] + [f"  {name}: {value}" for name, value in rows]


def trainer_id_line(version: str, code_sha: str, run_id: str) -> str:
    return f"golf_trainer: version:{version} code_sha256:{code_sha} run_id:{run_id}"


def model_params_line(count: int) -> str:
    return f"model_params:{count}"


def attention_line(ran: str, requested: str, fa4_version: str | None) -> str:
    return f"attention:{ran} requested:{requested} flash_attn_4:{fa4_version or 'none'}"


def settings_line(pairs: Mapping[str, object]) -> str:
    """`key:value key:value` (the parser keeps the run's real train_batch_tokens, world_size, ... from these)."""
    return " ".join(f"{key}:{value}" for key, value in pairs.items())


def val_tokens_line(pattern: str, tokens: int) -> str:
    return f"val_loader:shards pattern={pattern} tokens:{tokens}"


def train_step_line(step: int, iterations: int, train_loss: float, train_ms: float) -> str:
    return (f"step:{step}/{iterations} train_loss:{train_loss:.4f} train_time:{train_ms:.0f}ms "
            f"step_avg:{train_ms / max(step, 1):.2f}ms")


def val_step_line(step: int, iterations: int, val_loss: float, val_bpb: float, train_ms: float) -> str:
    return (f"step:{step}/{iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} train_time:{train_ms:.0f}ms "
            f"step_avg:{train_ms / max(step, 1):.2f}ms")


def stopping_early_line(train_ms: float, step: int, iterations: int) -> str:
    return f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{iterations}"


def diverged_line(step: int, iterations: int) -> str:
    return f"diverged: non-finite train_loss by step:{step}/{iterations}"


def peak_memory_line(allocated_mib: int, reserved_mib: int) -> str:
    return f"peak memory allocated: {allocated_mib} MiB reserved: {reserved_mib} MiB"


def serialized_line(label: str, size: int) -> str:
    return f"Serialized model {label}: {size} bytes"


def code_size_line(size: int, how: str) -> str:
    return f"Code size: {size} bytes ({how})"


def total_size_line(label: str, size: int) -> str:
    return f"Total submission size {label}: {size} bytes"


def bytes_breakdown_line(parts: Mapping[str, int]) -> str:
    """`bytes_breakdown embeddings:N attention:N ... code:N` (the parts sum to the total submission size)."""
    return "bytes_breakdown " + " ".join(f"{group}:{size}" for group, size in parts.items())


def result_lines(label: str, val_loss: float, val_bpb: float, eval_ms: float) -> list[str]:
    """A stage's score: the short line (with its evaluation time) and the `_exact` one."""
    return [f"{label} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{eval_ms:.0f}ms",
            f"{label}_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f}"]


def ttt_done_line(val_loss: float, val_bpb: float, elapsed_s: float) -> str:
    """Score-first TTT's own summary (the community's `ttt_sliding:done` line: a post-TTT score and the loop's time)."""
    return f"ttt_sliding:done val_loss={val_loss:.6f} val_bpb={val_bpb:.6f} elapsed={elapsed_s:.1f}s"


def self_calibration_line(seqs: int, seq_len: int, seconds: float) -> str:
    """GPTQ_CALIB_SEQS: the sequences the model sampled for its own GPTQ calibration, and how long that took."""
    return f"gptq:self_generated seqs:{seqs} seq_len:{seq_len} time:{seconds:.1f}s"


def train_budget_line(train_ms: float, gptq_ms: float, cap_s: float) -> str:
    """The training clock as the records count it: the steps plus GPTQ calibration (Hessians, self-generation),
    against the run's cap (0: none)."""
    return (f"train_budget: train_time:{train_ms:.0f}ms gptq_time:{gptq_ms:.0f}ms total:{train_ms + gptq_ms:.0f}ms "
            f"cap:{1000 * cap_s:.0f}ms")


def ttt_time_line(ttt_ms: float) -> str:
    return f"ttt_time:{ttt_ms:.0f}ms"


def total_eval_time_line(seconds: float) -> str:
    return f"total_eval_time:{seconds:.1f}s"


def non_record_line(reason: str) -> str:
    return f"non_record: {reason}"


def time_to_first_step_line(seconds: float) -> str:
    """Seconds from the trainer process's start to the end of the first optimizer step (imports, data, compile,
    warm-up and evaluation priming included)."""
    return f"time_to_first_step:{seconds:.1f}s"


def eval_warmup_line(graph: str, seconds: float, total_s: float) -> str:
    """One evaluation graph compiled (primed) in `seconds`; `total_s`: every evaluation graph's so far."""
    return f"eval_warmup:{graph} time:{seconds:.1f}s total:{total_s:.1f}s"


def compile_cache_line(state: str, counts: Mapping[str, int], folder: str) -> str:
    """Whether inductor's compile cache was warm (compile_cache.cache_state), its lookups so far and its folder."""
    return (f"compile_cache:{state} fx_hit:{counts['fx_hit']} fx_miss:{counts['fx_miss']} "
            f"aot_hit:{counts['aot_hit']} aot_miss:{counts['aot_miss']} dir:{folder}")


def layer_loop_line(label: str, step: int, frac: float, encoder: list[int], decoder: list[int]) -> str:
    """The records' recurrence switch: `layer_loop:enabled`, or `phase1`/`phase2` when progressive, with the U-Net
    encoder and decoder layer order from then on."""
    return f"layer_loop:{label} step:{step} frac:{frac:.3f} encoder:{encoder} decoder:{decoder}"
