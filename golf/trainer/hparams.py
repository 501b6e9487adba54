"""The bundled trainer's knobs: one registry, resolved once from the environment.

Every knob is named exactly as the challenge's env var. This module imports only the standard
library so that golf's spec validator can use the same registry without importing torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .limits import TRAIN_BUDGET_S
from .loglines import hparams_lines

# Replaced by `golf export-record` with the run's knob values, so that the shipped one-file trainer
# reproduces the run with no env vars set (the environment still overrides these).
BAKED_DEFAULTS: dict[str, str] = {}


class KnobError(ValueError):
    """A knob value or name that the trainer cannot accept (message is one line)."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected 0/1, true/false, on/off")


_INTEGER = re.compile(r"[+-]?[0-9]+(_[0-9]+)*")


def _parse_int(text: str) -> int:
    """Digits only: never through float, so 1e1 and 10.0 are errors and no digit of a large value is lost."""
    text = text.strip()
    if not _INTEGER.fullmatch(text):
        raise ValueError("expected an integer")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text.strip().replace("_", ""))
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_int_list(text: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip().strip("[]()")) if p]
    return tuple(_parse_int(p) for p in parts)


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": _parse_bool,
    "int": _parse_int,
    "float": _parse_float,
    "str": lambda s: s,
    "ints": _parse_int_list,
}

_TYPE_HINTS = {
    "bool": "0 or 1",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "ints": "a comma-separated list of integers, e.g. 9,10",
}


@dataclass(frozen=True)
class Knob:
    name: str
    kind: str  # bool | int | float | str | ints
    default: Any
    help: str
    group: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    off: Any = None  # the value that `KNOB=off` means, for knobs whose off state is not False/0
    aliases: tuple[str, ...] = ()  # other env-var names read as this knob (e.g. a community trainer's spelling)

    @property
    def attr(self) -> str:
        return self.name.lower()

    def parse(self, raw: Any) -> Any:
        """Parse a raw value (env text or a YAML scalar) into this knob's type, or raise KnobError."""
        text = _to_text(raw)
        if self.off is not None and text.strip().lower() == "off":
            return self.off
        try:
            value = _PARSERS[self.kind](text)
        except (ValueError, TypeError):
            raise KnobError(f"{self.name}={text!r} is not valid: expected {self.expects()}") from None
        if self.choices is not None and value not in self.choices:
            raise KnobError(f"{self.name}={text!r} is not valid: expected one of {', '.join(self.choices)}")
        for bound, ok in ((self.minimum, lambda v: v >= self.minimum), (self.maximum, lambda v: v <= self.maximum)):
            if bound is not None and self.kind in ("int", "float") and not ok(value):
                raise KnobError(f"{self.name}={text!r} is out of range: expected {self.expects()}")
        return value

    def expects(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        hint = _TYPE_HINTS[self.kind]
        if self.minimum is not None and self.maximum is not None:
            hint += f" in [{_fmt_num(self.minimum)}, {_fmt_num(self.maximum)}]"
        elif self.minimum is not None:
            hint += f" >= {_fmt_num(self.minimum)}"
        if self.off is not None:
            hint += " (or off)"
        return hint

    def format(self, value: Any) -> str:
        """The env-var text for a parsed value (round-trips through parse)."""
        if self.kind == "bool":
            return "1" if value else "0"
        if self.kind == "ints":
            return ",".join(str(v) for v in value)
        return str(value)


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _to_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, (list, tuple)):
        return ",".join(str(v) for v in raw)
    if raw is None:
        return ""
    return str(raw)


def knob(default: Any, help: str, group: str, *, choices: tuple[str, ...] | None = None,
         minimum: float | None = None, maximum: float | None = None, off: Any = None,
         aliases: tuple[str, ...] = ()) -> Any:
    """A Hyperparameters field that is a knob: its default and the metadata that `KNOBS` is built from.
    The knob's name is the field's in upper case; its kind comes from the field's type."""
    meta = {"help": help, "group": group, "choices": choices, "minimum": minimum, "maximum": maximum, "off": off,
            "aliases": aliases}
    return dataclasses.field(default=default, metadata=meta)


# Bounds of the integer knobs: far past any run that fits the challenge, tight enough that a typo (an extra
# digit or three) is an error before launch rather than an out-of-memory crash after it.
_MAX_STEPS = 1_000_000_000
_MAX_TOKENS = 2**31 - 1
_MAX_SEQ_LEN = 1 << 20
_MAX_LAYERS = 1024
_MAX_WIDTH = 65536
_MAX_SEED = 2**32 - 1  # numpy's seed range


@dataclass(frozen=True)
class Hyperparameters:
    """Every knob of the trainer, resolved once: one typed field per knob, named as the knob in lower case.

    Defaults are the challenge's naive baseline (root train_gpt.py); techniques default to off.
    """

    # -- run and data
    data_path: str = knob("./data/datasets/fineweb10B_sp1024", "folder of fineweb_{train,val}_*.bin shards", "data")
    tokenizer_path: str = knob("./data/tokenizers/fineweb_1024_bpe.model", "SentencePiece .model file", "data")
    vocab_size: int = knob(1024, "vocabulary size (must match the tokenizer)", "data", minimum=2, maximum=65536)
    seed: int = knob(1337, "random seed", "run", minimum=0, maximum=_MAX_SEED)
    run_id: str = knob("", "run identifier (default: a fresh uuid)", "run")
    eval_only_path: str = knob("", "score this artifact (a recorded run's final_model.*.ptz) with the evaluation "
                               "knobs instead of training (`golf eval` sets it)", "run")
    iterations: int = knob(20000, "training steps (a ceiling when the wallclock cap is on)", "schedule",
                           minimum=0, maximum=_MAX_STEPS)
    warmup_steps: int = knob(20, "compile warm-up steps, rolled back before training", "schedule",
                             minimum=0, maximum=_MAX_STEPS)
    warmdown_iters: int = knob(1200, "linear LR warmdown length in steps", "schedule", minimum=0, maximum=_MAX_STEPS)
    warmdown_frac: float = knob(0.0, "warmdown as a fraction of training (overrides WARMDOWN_ITERS when > 0)",
                                "schedule", minimum=0.0, maximum=1.0)
    min_lr: float = knob(0.0, "floor of the LR multiplier at the end of warmdown", "schedule", minimum=0.0, maximum=1.0)
    train_batch_tokens: int = knob(524288, "global tokens per optimizer step", "schedule",
                                   minimum=1, maximum=_MAX_TOKENS)
    train_seq_len: int = knob(1024, "training sequence length", "schedule", minimum=2, maximum=_MAX_SEQ_LEN)
    grad_accum_steps: int = knob(0, "micro-steps per step (0: 8 // world size, as the challenge)", "schedule",
                                 minimum=0, maximum=1024)
    val_loss_every: int = knob(1000, "validate every N steps (0: only at the end)", "schedule",
                               minimum=0, maximum=_MAX_STEPS)
    train_log_every: int = knob(200, "log the train loss every N steps", "schedule", minimum=0, maximum=_MAX_STEPS)
    val_batch_size: int = knob(524288, "validation tokens per batch (global)", "eval", minimum=1, maximum=_MAX_TOKENS)
    max_wallclock_seconds: float = knob(TRAIN_BUDGET_S, "training time cap in seconds (0: none)", "schedule",
                                        minimum=0.0)
    compile: bool = knob(True, "torch.compile the model on CUDA", "run")
    attn_backend: str = knob("auto", "attention kernels: sdpa, fa4 (flash-attn-4), or auto: fa4 on Hopper/Blackwell "
                             "with flash-attn-4 installed and >= 65,536 tokens per micro-step, else sdpa", "run",
                             choices=("auto", "sdpa", "fa4"))
    # -- model shape
    num_layers: int = knob(9, "transformer layers", "model", minimum=1, maximum=_MAX_LAYERS)
    model_dim: int = knob(512, "model width", "model", minimum=8, maximum=_MAX_WIDTH)
    num_heads: int = knob(8, "query heads", "model", minimum=1, maximum=_MAX_WIDTH)
    num_kv_heads: int = knob(4, "key/value heads (GQA)", "model", minimum=1, maximum=_MAX_WIDTH)
    mlp_mult: float = knob(2.0, "MLP hidden width as a multiple of MODEL_DIM", "model", minimum=0.25)
    tie_embeddings: bool = knob(True, "share the input embedding and the output head", "model")
    tied_embed_init_std: float = knob(0.005, "init std of the tied embedding", "model", minimum=0.0)
    rope_base: float = knob(10000.0, "RoPE base", "model", minimum=1.0)
    logit_softcap: float = knob(30.0, "tanh softcap of the logits", "model", minimum=1e-3)
    qk_gain_init: float = knob(1.5, "initial per-head query gain", "model")
    # -- architecture techniques
    xsa_last_n: int = knob(0, "exclusive self-attention on the last N layers", "technique",
                           minimum=0, maximum=_MAX_LAYERS, off=0)
    value_residual: bool = knob(False, "mix every layer's values with the first layer's (learned lambdas)", "technique")
    ve_enabled: bool = knob(False, "shared value embedding added to V on VE_LAYERS", "technique")
    ve_dim: int = knob(128, "value-embedding width", "technique", minimum=1, maximum=_MAX_WIDTH)
    ve_layers: tuple[int, ...] = knob((9, 10), "layers that receive the value embedding", "technique")
    bigram_vocab_size: int = knob(0, "hashed bigram embedding buckets (0: off)", "technique",
                                  minimum=0, maximum=_MAX_TOKENS, off=0)
    bigram_dim: int = knob(128, "hashed bigram embedding width", "technique", minimum=1, maximum=_MAX_WIDTH)
    trigram: bool = knob(False, "also add the trigram hash into the bigram table", "technique")
    smear_gate: bool = knob(False, "blend each position with the previous one (not across BOS)", "technique")
    rope_dims: int = knob(0, "rotate only the first N dims of each head (0: all)", "technique",
                          minimum=0, maximum=_MAX_WIDTH, off=0)
    ln_scale: bool = knob(False, "scale each block's pre-norm output by 1/sqrt(layer+1)", "technique")
    negative_slope: float = knob(0.0, "MLP activation LeakyReLU(slope)^2 (0: ReLU^2)", "technique", minimum=0.0,
                                 off=0.0)
    gated_attention: bool = knob(False, "per-head sigmoid gate on the attention output", "technique")
    recur_layers: tuple[int, ...] = knob((), "layers repeated once more, e.g. 3,4,5: golf's older spelling of "
                                         "NUM_LOOPS=1 LOOP_START=3 LOOP_END=5", "technique", off=())
    recur_start_step: int = knob(0, "switch recurrence on at this step", "technique", minimum=0, maximum=_MAX_STEPS)
    parallel_residual: bool = knob(False, "attention and MLP read the same input from PARALLEL_START_LAYER",
                                   "technique")
    parallel_start_layer: int = knob(0, "first layer with parallel residuals", "technique",
                                     minimum=0, maximum=_MAX_LAYERS)
    ortho_init: bool = knob(False, "orthogonal init of block matrices", "technique")
    doc_attention: bool = knob(False, "document-isolated attention (never across a BOS) and the packing loader: "
                               "one row of packed documents per micro-step", "technique")
    doc_attention_kernel: str = knob("auto", "DOC_ATTENTION's kernels: sdpa (blockwise SDPA, dense masks of "
                                      "TRAIN_SEQ_LEN x 2·TRAIN_SEQ_LEN), flex (FlexAttention block masks; on CUDA "
                                      "checked against sdpa at the run's shapes first, sdpa where they disagree), or "
                                      "auto: sdpa", "technique", choices=("auto", "flex", "sdpa"))
    # -- the frontier records' techniques (2026-04), under their own env-var names
    num_loops: int = knob(0, "extra passes over layers LOOP_START..LOOP_END (depth recurrence; 2: three passes)",
                          "technique", minimum=0, maximum=_MAX_LAYERS)
    loop_start: int = knob(0, "first layer of the repeated segment", "technique", minimum=0, maximum=_MAX_LAYERS)
    loop_end: int = knob(0, "last layer of the repeated segment (inclusive)", "technique", minimum=0,
                         maximum=_MAX_LAYERS)
    enable_looping_at: float = knob(0.0, "switch the extra passes on at this fraction of training (0: from the "
                                    "start)", "technique", minimum=0.0, maximum=1.0, aliases=("RECUR_START_FRAC",))
    loop_phase2_at: float = knob(0.0, "progressive recurrence: one extra pass from ENABLE_LOOPING_AT, all NUM_LOOPS "
                                 "from this fraction (0: all at once)", "technique", minimum=0.0, maximum=1.0)
    parallel_residual_start: int = knob(-1, "parallel residuals from this layer on (-1: off): the records' spelling "
                                        "of PARALLEL_RESIDUAL=1 PARALLEL_START_LAYER=N", "technique", minimum=-1,
                                        maximum=_MAX_LAYERS, off=-1)
    parallel_final_lane: str = knob("single", "parallel layers: single (one residual), or two lanes with learned "
                                    "mixing in the decoder ending in their mean, the attention lane or the MLP lane",
                                    "technique", choices=("single", "mean", "attn", "mlp"))
    skip_gates_enabled: bool = knob(False, "sigmoid-gated U-Net skips: lerp(w * skip, x, sigmoid(g))", "technique")
    sparse_attn_gate_enabled: bool = knob(False, "per-head attention-output gate read from the first GATE_WINDOW "
                                          "dims of the block input", "technique")
    sparse_attn_gate_scale: float = knob(1.0, "scale inside the sparse gate's sigmoid", "technique")
    sparse_attn_gate_init_std: float = knob(0.0, "init std of the sparse gate's weights (0: zeros)", "technique",
                                            minimum=0.0)
    gate_window: int = knob(12, "input dims the sparse and output gates read", "technique", minimum=1,
                            maximum=_MAX_WIDTH)
    attn_out_gate_enabled: bool = knob(False, "per-head attention-output gate 2*sigmoid(W x[:GATE_WINDOW]), "
                                       "transparent at init", "technique")
    attn_out_gate_src: str = knob("proj", "what the output gate reads: proj (the block input) or q (the query "
                                  "projection)", "technique", choices=("proj", "q"))
    smear_gate_enabled: bool = knob(False, "input-dependent SmearGate x_t += lam*sigmoid(w.x_t[:W])*x_{t-1} on the "
                                    "embedding, masked at BOS (SMEAR_GATE is the older static one)", "technique")
    smear_gate_width: int = knob(12, "embedding dims the input-dependent SmearGate reads", "technique", minimum=1,
                                 maximum=_MAX_WIDTH)
    fused_ce_enabled: bool = knob(False, "fused softcapped cross-entropy in training (Triton on CUDA; H200: "
                                  "pr1493's step 0.985x at vocab 8192, no gain at 1024)", "technique")
    fused_mlp_enabled: bool = knob(False, "MLP with LeakyReLU^2 and its derivative in the epilogues of Triton GEMMs, "
                                   "in training (Triton on CUDA; elsewhere the plain path; off by default: "
                                   "0.99x pr549's step on an H200)", "technique")
    fused_qk_norm_rope_enabled: bool = knob(True, "q/k RMSNorm + RoPE + query gain in one Triton kernel each way "
                                            "(Triton on CUDA; elsewhere, and with DOC_ATTENTION, the plain path; "
                                            "H200: pr549's step 0.967x, pr1493's 0.975x)", "technique")
    train_loader: str = knob("stream", "training batches: stream (the shards in order, as the challenge's loader) "
                             "or shuffled (random sequences across all shards, seeded, disjoint per rank)", "data",
                             choices=("stream", "shuffled"))
    # -- optimizer
    embed_lr: float = knob(0.6, "Adam LR of the untied input embedding", "optim", minimum=0.0)
    head_lr: float = knob(0.008, "Adam LR of the untied output head", "optim", minimum=0.0)
    tied_embed_lr: float = knob(0.05, "Adam LR of the tied embedding", "optim", minimum=0.0)
    matrix_lr: float = knob(0.04, "Muon LR of block matrices", "optim", minimum=0.0)
    scalar_lr: float = knob(0.04, "Adam LR of vectors and scalars", "optim", minimum=0.0)
    muon_momentum: float = knob(0.95, "Muon Nesterov momentum", "optim", minimum=0.0, maximum=1.0)
    muon_momentum_warmup_start: float = knob(0.85, "Muon momentum at step 0", "optim", minimum=0.0, maximum=1.0)
    muon_momentum_warmup_steps: int = knob(500, "steps to warm the Muon momentum up", "optim",
                                           minimum=0, maximum=_MAX_STEPS)
    muon_backend_steps: int = knob(5, "Newton-Schulz iterations", "optim", minimum=1, maximum=100)
    muon_wd: float = knob(0.0, "decoupled weight decay of Muon matrices", "optim", minimum=0.0)
    muon_row_normalize: bool = knob(False, "MuonEq-R: row-normalise the update before Newton-Schulz", "optim")
    use_polar_express: bool = knob(False, "Polar Express Newton-Schulz coefficients (tuned for 5 steps)", "optim",
                                   aliases=("POLAR_EXPRESS",))
    wd_taper_start_frac: float = knob(0.0, "Muon weight decay tapers linearly from this fraction of training "
                                      "(0: no taper)", "optim", minimum=0.0, maximum=1.0)
    wd_taper_final_mult: float = knob(1.0, "Muon weight-decay multiplier at the end of the taper", "optim",
                                      minimum=0.0)
    beta1: float = knob(0.9, "Adam beta1", "optim", minimum=0.0, maximum=1.0)
    beta2: float = knob(0.95, "Adam beta2", "optim", minimum=0.0, maximum=1.0)
    adam_eps: float = knob(1e-8, "Adam epsilon", "optim", minimum=0.0)
    adam_wd: float = knob(0.0, "AdamW weight decay of scalars (and embeddings unless EMBED_WD)", "optim", minimum=0.0)
    embed_wd: float = knob(-1.0, "AdamW weight decay of embeddings (-1: ADAM_WD)", "optim", minimum=-1.0)
    grad_clip_norm: float = knob(0.0, "global gradient-norm clip (0: off)", "optim", minimum=0.0)
    # -- weight averaging and QAT
    ema_enabled: bool = knob(False, "export an exponential moving average of the weights", "averaging")
    ema_decay: float = knob(0.997, "EMA decay per step", "averaging", minimum=0.0, maximum=1.0)
    swa_enabled: bool = knob(False, "export the average of snapshots taken late in training", "averaging")
    swa_every: int = knob(50, "steps between SWA snapshots", "averaging", minimum=1, maximum=_MAX_STEPS)
    swa_start_frac: float = knob(0.2, "take SWA snapshots once the LR multiplier is below this", "averaging",
                                 minimum=0.0, maximum=1.0)
    qat_enabled: bool = knob(False, "straight-through fake quantization in every linear, whole run", "quant")
    late_qat_threshold: float = knob(0.0, "switch QAT on once the LR multiplier falls below this (0: off)", "quant",
                                     minimum=0.0, maximum=1.0, off=0.0)
    # -- artifact
    matrix_bits: int = knob(8, "bits of block matrices", "quant", minimum=2, maximum=8)
    mlp_bits: int = knob(0, "bits of MLP matrices (0: MATRIX_BITS)", "quant", minimum=0, maximum=8)
    attn_bits: int = knob(0, "bits of attention matrices (0: MATRIX_BITS)", "quant", minimum=0, maximum=8)
    embed_bits: int = knob(8, "bits of embedding tables (16: keep fp16)", "quant", minimum=2, maximum=16)
    clip_search: bool = knob(False, "GPTQ-lite: per-row clip percentile search", "quant")
    use_gptq: bool = knob(False, "full-Hessian GPTQ with training-data calibration", "quant")
    gptq_calibration_batches: int = knob(64, "calibration sequences batches for GPTQ", "quant",
                                         minimum=1, maximum=1_000_000)
    gptq_calib_seqs: int = knob(0, "GPTQ calibration on this many sequences the model samples itself, TRAIN_SEQ_LEN "
                                "tokens each (0: GPTQ_CALIBRATION_BATCHES of training data)", "quant", minimum=0,
                                maximum=1_000_000)
    gptq_reserve_seconds: float = knob(0.0, "seconds of the wallclock cap reserved for GPTQ calibration", "quant",
                                       minimum=0.0)
    gptq_block_size: int = knob(128, "GPTQ column block size", "quant", minimum=1, maximum=_MAX_WIDTH)
    gptq_damp: float = knob(0.01, "GPTQ damping as a fraction of mean(diag H)", "quant", minimum=0.0)
    prune_ratio: float = knob(0.0, "zero this fraction of smallest-magnitude weights before quantizing", "quant",
                              minimum=0.0, maximum=0.99)
    matrix_clip_sigmas: float = knob(0.0, "SDClip: clip each row of block matrices at k std(row) (0: quantile clip; "
                                     "the records: 12.85)", "quant", minimum=0.0, maximum=1000.0)
    mlp_clip_sigmas: float = knob(0.0, "SDClip k of MLP matrices (0: MATRIX_CLIP_SIGMAS; the records: 10-12)", "quant",
                                  minimum=0.0, maximum=1000.0)
    attn_clip_sigmas: float = knob(0.0, "SDClip k of attention matrices (0: MATRIX_CLIP_SIGMAS; the records: 13)",
                                   "quant", minimum=0.0, maximum=1000.0)
    embed_clip_sigmas: float = knob(0.0, "SDClip k of embedding tables (0: quantile clip; the records: 20 at int8, "
                                    "14-15 at int7)", "quant", minimum=0.0, maximum=1000.0)
    hessian_clip_lambda: float = knob(0.0, "Hessian-aware SDClip under GPTQ: widen a row's clip by 1 + lambda "
                                      "(importance - 1) (0: plain; #1412: 0.175)", "quant", minimum=0.0, maximum=10.0)
    lqer_enabled: bool = knob(False, "LQER: low-rank correction of the quantization error of the worst matrices",
                              "quant")
    lqer_rank: int = knob(4, "rank of each LQER correction", "quant", minimum=1, maximum=256)
    lqer_top_k: int = knob(3, "matrices with the largest squared quantization error that get a correction", "quant",
                           minimum=1, maximum=10_000)
    lqer_factor_bits: int = knob(4, "bits of the LQER factors", "quant", minimum=2, maximum=8)
    lqer_asym_enabled: bool = knob(False, "asymmetric LQER factors (fp16 scale and offset per LQER_ASYM_GROUP values; "
                                   "off: one scale per rank component)", "quant")
    lqer_asym_group: int = knob(64, "values per group of the asymmetric LQER factors", "quant", minimum=1,
                                maximum=_MAX_WIDTH)
    compressor: str = knob("zlib", "artifact compressor (pergroup: each stream of each group by its own best codec "
                           "and layout)", "quant", choices=("zlib", "zstd", "lzma", "brotli", "pergroup"))
    compress_level: int = knob(0, "compressor level (0: the strongest: zlib 9, zstd 22, lzma 9, brotli 11)", "quant",
                               minimum=0, maximum=22)
    byte_shuffle: bool = knob(False, "byte-shuffle tensors before compressing", "quant")
    save_raw_model: bool = knob(False, "also write the weights the artifact quantizes, unquantized, to "
                                "final_model_raw.pt (the run folder; read by bench/artifact_compare.py)", "quant")
    code_pack: str = knob("none", "how the shipped train_gpt.py is packed (counts toward code bytes)", "quant",
                          choices=("none", "lzma", "brotli"))
    # -- evaluation
    eval_seq_len: int = knob(0, "evaluation window length (0: TRAIN_SEQ_LEN)", "eval", minimum=0, maximum=_MAX_SEQ_LEN)
    eval_stride: int = knob(0, "sliding-window stride (0: no sliding-window stage)", "eval",
                            minimum=0, maximum=_MAX_SEQ_LEN, off=0)
    eval_batch_seqs: int = knob(32, "windows per forward in sliding/TTT evaluation", "eval",
                                minimum=1, maximum=1_000_000)
    # -- test-time training
    ttt_enabled: bool = knob(False, "test-time training stage", "ttt")
    ttt_mode: str = knob("score_first", "score_first (legal, chunked full-model SGD), lora (legal, per-document "
                         "LoRA adapters) or adapt_first (non-record)", "ttt",
                         choices=("score_first", "lora", "adapt_first"))
    ttt_pre_quant: bool = knob(False, "AdamW on validation tokens before quantization (non-record)", "ttt")
    ttt_chunk_tokens: int = knob(32768, "validation tokens per TTT chunk", "ttt", minimum=1, maximum=_MAX_TOKENS)
    ttt_epochs: int = knob(3, "passes over each chunk", "ttt", minimum=0, maximum=1000)
    ttt_lr: float = knob(0.002, "TTT learning rate", "ttt", minimum=0.0)
    ttt_optimizer: str = knob("sgd", "TTT optimizer", "ttt", choices=("sgd", "adamw"))
    ttt_momentum: float = knob(0.9, "SGD momentum (AdamW beta1)", "ttt", minimum=0.0, maximum=1.0)
    ttt_weight_decay: float = knob(0.0, "AdamW weight decay of TTT (LoRA, or TTT_OPTIMIZER=adamw); the SGD form takes "
                                   "none, as the records'", "ttt", minimum=0.0)
    ttt_batch_seqs: int = knob(32, "sequences per TTT step (global)", "ttt", minimum=1, maximum=1_000_000)
    ttt_seq_len: int = knob(0, "TTT training sequence length (0: EVAL_SEQ_LEN)", "ttt", minimum=0, maximum=_MAX_SEQ_LEN)
    ttt_grad_clip: float = knob(1.0, "TTT gradient-norm clip (0: off)", "ttt", minimum=0.0)
    ttt_freeze_blocks: int = knob(0, "freeze the first N blocks during TTT", "ttt", minimum=0, maximum=_MAX_LAYERS)
    ttt_schedule: str = knob("cosine_chunks", "TTT LR schedule", "ttt",
                             choices=("cosine_chunks", "cosine_steps", "constant"))
    ttt_lr_out_mult: float = knob(1.0, "TTT LR multiplier of output projections", "ttt", minimum=0.0)
    ttt_lr_in_mult: float = knob(1.0, "TTT LR multiplier of input projections", "ttt", minimum=0.0)
    # -- per-document LoRA TTT (TTT_MODE=lora; golf.trainer.lora_ttt), defaults of the records (#1736)
    ttt_lora_rank: int = knob(96, "LoRA TTT: adapter rank", "ttt", minimum=1, maximum=_MAX_WIDTH)
    ttt_lora_alpha: float = knob(0.0, "LoRA TTT: adapters scaled by alpha/rank (0: scale 1)", "ttt", minimum=0.0)
    ttt_lora_lr: float = knob(1e-4, "LoRA TTT: AdamW learning rate", "ttt", minimum=0.0)
    ttt_k_lora: bool = knob(True, "LoRA TTT: adapters on the key projections too", "ttt")
    ttt_o_lora: bool = knob(True, "LoRA TTT: adapters on the attention output projections", "ttt")
    ttt_mlp_lora: bool = knob(True, "LoRA TTT: an adapter from each MLP's input to its output", "ttt")
    ttt_batch_size: int = knob(64, "LoRA TTT: documents per batch (one adapter set each)", "ttt",
                               minimum=1, maximum=1_000_000)
    ttt_chunk_size: int = knob(48, "LoRA TTT: targets scored, then trained on, per step of a document", "ttt",
                               minimum=1, maximum=_MAX_SEQ_LEN)
    ttt_beta1: float = knob(0.0, "LoRA TTT: AdamW beta1", "ttt", minimum=0.0, maximum=1.0)
    ttt_beta2: float = knob(0.999, "LoRA TTT: AdamW beta2", "ttt", minimum=0.0, maximum=1.0)
    ttt_grad_steps: int = knob(1, "LoRA TTT: optimizer steps per chunk", "ttt", minimum=1, maximum=1000)
    # -- phased TTT (golf.trainer.phased_ttt): LoRA TTT plus global SGD on the scored prefix between phases
    phased_ttt_enabled: bool = knob(False, "phased TTT: global SGD over the already-scored documents between "
                                    "phases of LoRA TTT (needs TTT_MODE=lora)", "ttt")
    phased_ttt_num_phases: int = knob(1, "phased TTT: global SGD phases within the prefix", "ttt",
                                      minimum=1, maximum=1000)
    phased_ttt_prefix_docs: int = knob(2000, "phased TTT: documents (in scoring order) the phases span", "ttt",
                                       minimum=0, maximum=_MAX_TOKENS)
    global_ttt_lr: float = knob(0.001, "phased TTT: global SGD learning rate (cosine over chunks)", "ttt",
                                minimum=0.0)
    global_ttt_momentum: float = knob(0.9, "phased TTT: global SGD momentum", "ttt", minimum=0.0, maximum=1.0)
    global_ttt_epochs: int = knob(1, "phased TTT: passes over each chunk of the scored prefix", "ttt",
                                  minimum=0, maximum=1000)
    global_ttt_chunk_tokens: int = knob(32768, "phased TTT: prefix tokens per LR step of the cosine", "ttt",
                                        minimum=1, maximum=_MAX_TOKENS)
    global_ttt_batch_seqs: int = knob(32, "phased TTT: sequences per global SGD step (all ranks)", "ttt",
                                      minimum=1, maximum=1_000_000)
    global_ttt_grad_clip: float = knob(1.0, "phased TTT: gradient-norm clip (0: off)", "ttt", minimum=0.0)
    global_ttt_warmup_start_lr: float = knob(0.0, "phased TTT: LR of the first warm-up chunk", "ttt", minimum=0.0)
    global_ttt_warmup_chunks: int = knob(0, "phased TTT: chunks of linear LR warm-up", "ttt",
                                         minimum=0, maximum=_MAX_STEPS)

    @classmethod
    def resolve(cls, values: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                strict: bool = True) -> Hyperparameters:
        """Resolve knobs: built-in defaults < BAKED_DEFAULTS < `values` < `env`.

        With strict, an env var that looks like a knob but is not one raises KnobError.
        """
        env = {} if env is None else env
        raw: dict[str, Any] = {}
        for source in (BAKED_DEFAULTS, values or {}):
            for name, value in source.items():
                canonical = canonical_knob(name)
                if canonical is None:
                    raise KnobError(unknown_knob_message(name))
                raw[canonical] = value
        for name, value in env.items():
            canonical = canonical_knob(name)
            if canonical is not None:
                raw[canonical] = value
            elif strict and looks_like_knob(name):
                raise KnobError(unknown_knob_message(name, "environment: "))
        kwargs = {}
        for knob in KNOBS:
            kwargs[knob.attr] = knob.parse(raw[knob.name]) if knob.name in raw else knob.default
        _normalize(kwargs)
        hp = cls(**kwargs)
        hp.check()
        return hp

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Hyperparameters:
        return cls.resolve(env=os.environ if environ is None else environ)

    def check(self) -> None:
        """Cross-knob consistency; raises KnobError with one line."""
        if self.model_dim % self.num_heads:
            raise KnobError(f"MODEL_DIM={self.model_dim} must be divisible by NUM_HEADS={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise KnobError(f"NUM_HEADS={self.num_heads} must be divisible by NUM_KV_HEADS={self.num_kv_heads}")
        head_dim = self.model_dim // self.num_heads
        if head_dim % 2:
            raise KnobError(f"head dim MODEL_DIM/NUM_HEADS={head_dim} must be even for RoPE")
        if self.rope_dims and (self.rope_dims > head_dim or self.rope_dims % 2):
            raise KnobError(f"ROPE_DIMS={self.rope_dims} must be even and at most the head dim {head_dim}")
        if self.xsa_last_n > self.num_layers:
            raise KnobError(f"XSA_LAST_N={self.xsa_last_n} exceeds NUM_LAYERS={self.num_layers}")
        layers = self.ve_layers if self.ve_enabled else ()
        if [i for i in layers if not 0 <= i < self.num_layers]:
            raise KnobError(f"VE_LAYERS={','.join(map(str, layers))} has layers outside 0..{self.num_layers - 1}")
        self._check_frontier()
        if self.train_batch_tokens % self.train_seq_len:
            raise KnobError(f"TRAIN_BATCH_TOKENS={self.train_batch_tokens} must be a multiple of "
                            f"TRAIN_SEQ_LEN={self.train_seq_len}")
        if self.eval_stride and self.eval_stride > self.eval_seq_len:
            raise KnobError(f"EVAL_STRIDE={self.eval_stride} exceeds the evaluation window {self.eval_seq_len}")
        if self.phased_ttt_enabled and not (self.ttt_enabled and self.ttt_mode == "lora"):
            raise KnobError("PHASED_TTT_ENABLED=1 phases the LoRA TTT: set TTT_ENABLED=1 and TTT_MODE=lora")
        if self.ttt_enabled and self.ttt_mode == "lora" and self.ttt_chunk_size > self.ttt_seq_len:
            raise KnobError(f"TTT_CHUNK_SIZE={self.ttt_chunk_size} exceeds the TTT window TTT_SEQ_LEN="
                            f"{self.ttt_seq_len}")
        if self.ttt_enabled and self.ttt_pre_quant and self.ttt_mode == "adapt_first":
            raise KnobError("TTT_PRE_QUANT=1 and TTT_MODE=adapt_first are two different TTT forms: pick one")
        if self.compressor == "pergroup" and self.compress_level:
            raise KnobError(f"COMPRESS_LEVEL={self.compress_level}: COMPRESSOR=pergroup picks every stream's codec at "
                            "its strongest level; leave COMPRESS_LEVEL at 0")
        top = STRONGEST_COMPRESS_LEVEL[self.compressor]
        if self.compress_level > top:
            raise KnobError(f"COMPRESS_LEVEL={self.compress_level} exceeds {self.compressor}'s strongest level {top} "
                            f"(0 means {top})")
        if self.bigram_vocab_size == 1:
            raise KnobError("BIGRAM_VOCAB_SIZE=1 leaves no hash buckets: use 0 (off) or at least 2")

    def _check_frontier(self) -> None:
        if self.num_loops and not 0 <= self.loop_start <= self.loop_end < self.num_layers:
            raise KnobError(f"LOOP_START={self.loop_start} LOOP_END={self.loop_end} must satisfy "
                            f"0 <= LOOP_START <= LOOP_END < NUM_LAYERS={self.num_layers} (RECUR_LAYERS likewise)")
        if self.loop_phase2_at and self.loop_phase2_at < self.enable_looping_at:
            raise KnobError(f"LOOP_PHASE2_AT={self.loop_phase2_at} comes before ENABLE_LOOPING_AT="
                            f"{self.enable_looping_at}")
        gates = [n for n, on in (("GATED_ATTENTION", self.gated_attention),
                                 ("SPARSE_ATTN_GATE_ENABLED", self.sparse_attn_gate_enabled),
                                 ("ATTN_OUT_GATE_ENABLED", self.attn_out_gate_enabled)) if on]
        if len(gates) > 1:
            raise KnobError(f"{' and '.join(gates)} are alternative attention-output gates: pick one")
        window = max(self.gate_window if self.sparse_attn_gate_enabled or self.attn_out_gate_enabled else 0,
                     self.smear_gate_width if self.smear_gate_enabled else 0)
        if window > self.model_dim:
            raise KnobError(f"a gate window of {window} exceeds MODEL_DIM={self.model_dim}")
        if self.parallel_final_lane != "single" and not self.parallel_residual:
            raise KnobError(f"PARALLEL_FINAL_LANE={self.parallel_final_lane} needs parallel residuals: set "
                            "PARALLEL_RESIDUAL=1 (or PARALLEL_RESIDUAL_START)")

    @property
    def non_record_reason(self) -> str | None:
        """Why a run with these knobs cannot be a record (None: it may be one)."""
        if self.ttt_pre_quant:
            return "TTT_PRE_QUANT=1 trains on validation tokens before scoring them"
        if self.ttt_enabled and self.ttt_mode == "adapt_first":
            return "TTT_MODE=adapt_first trains on validation tokens before scoring them"
        return None

    def raw(self, name: str) -> Any:
        return self.__dict__[KNOBS_BY_NAME[name].attr]

    def format(self, name: str) -> str:
        return KNOBS_BY_NAME[name].format(self.raw(name))

    def as_env(self) -> dict[str, str]:
        """Every knob as env-var text, in registry order."""
        return {k.name: k.format(self.raw(k.name)) for k in KNOBS}

    def log_lines(self) -> list[str]:
        """The `Hyperparameters:` block in the challenge's format (sorted, 2-space indent)."""
        rows = sorted((k.attr, k.format(self.raw(k.name))) for k in KNOBS)
        return hparams_lines(rows)


# The Knob kind of each field type (the annotation text: this module uses postponed annotations).
_KIND_OF_TYPE = {"bool": "bool", "int": "int", "float": "float", "str": "str", "tuple[int, ...]": "ints"}


def _knob_of(f: dataclasses.Field[Any]) -> Knob:
    kind = _KIND_OF_TYPE.get(str(f.type))
    if kind is None:
        raise TypeError(f"Hyperparameters.{f.name}: type {f.type} is not one of {', '.join(_KIND_OF_TYPE)}")
    meta = f.metadata
    return Knob(name=f.name.upper(), kind=kind, default=f.default, help=meta["help"], group=meta["group"],
                choices=meta["choices"], minimum=meta["minimum"], maximum=meta["maximum"], off=meta["off"],
                aliases=meta["aliases"])


# The registry, in field order: derived from Hyperparameters, never written twice.
KNOBS: tuple[Knob, ...] = tuple(_knob_of(f) for f in dataclasses.fields(Hyperparameters))
KNOBS_BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}
KNOB_ALIASES: dict[str, str] = {alias: k.name for k in KNOBS for alias in k.aliases}


def canonical_knob(name: str) -> str | None:
    """The knob that the env-var name `name` sets (itself, or the knob it is an alias of), else None."""
    return name if name in KNOBS_BY_NAME else KNOB_ALIASES.get(name)

# The strongest level of each COMPRESSOR: what COMPRESS_LEVEL=0 means, and the highest level it accepts.
STRONGEST_COMPRESS_LEVEL = {"zlib": 9, "zstd": 22, "lzma": 9, "brotli": 11, "pergroup": 0}

# Families of env-var names the trainer owns: an unknown name in one of them is almost surely a typo
# of a knob (XSA_LAST, TTT_EPOCH, ...) and is rejected rather than silently ignored.
_KNOB_PREFIXES = frozenset(name.split("_")[0] + "_" for name in KNOBS_BY_NAME if "_" in name) - {
    # too generic to claim: shells and other tools use these for their own variables
    "RUN_", "MAX_", "MIN_", "NUM_", "USE_", "CODE_", "BYTE_", "HEAD_", "ENABLE_", "SKIP_",
}
# Env vars that launchers, runtimes and the challenge's tooling set: never knobs.
_FOREIGN = re.compile(
    r"^(CUDA|NCCL|TORCH|TORCHELASTIC|TORCHINDUCTOR|TRITON|PYTORCH|OMP|MKL|KMP|PYTHON|LOCAL|GROUP|ROLE|MASTER|"
    r"WORLD|RANK|GOLF|HF|HUGGINGFACE|MATCHED|NVIDIA|LD|XDG|LC|SSH|TERM|CONDA|VIRTUAL|PIP|UV|GIT|DISPLAY|"
    r"NVSHMEM|CUBLAS|CUDNN|TF|OPENBLAS|NUMEXPR|WANDB|TMP|TEMP|HOME|PATH|USER|SHELL|PWD|LANG|HOSTNAME|CI|GITHUB)"
    r"(_|$)"
)


def closest_knob(name: str) -> str | None:
    """The registered knob closest to `name`, if any is close enough to be a likely typo."""
    upper = name.upper()
    match = difflib.get_close_matches(upper, KNOBS_BY_NAME.keys(), n=1, cutoff=0.75)
    if match:
        return match[0]
    prefixed = [k for k in KNOBS_BY_NAME if k.startswith(upper) or upper.startswith(k)]
    if prefixed:
        return min(prefixed, key=lambda k: abs(len(k) - len(upper)))
    family = [k for k in KNOBS_BY_NAME if k.split("_")[0] == upper.split("_")[0]]
    match = difflib.get_close_matches(upper, family, n=1, cutoff=0.0)
    return match[0] if match else None


def unknown_knob_message(name: str, where: str = "") -> str:
    guess = closest_knob(name)
    hint = f"; did you mean {guess}?" if guess else "; run `golf run SPEC --dry-run` to list every knob"
    return f"{where}unknown knob {name}{hint}"


def looks_like_knob(name: str) -> bool:
    """True for an env var that is not a knob but resembles one (a likely typo)."""
    if canonical_knob(name) or not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or _FOREIGN.match(name):
        return False
    if any(name.startswith(p) for p in _KNOB_PREFIXES):
        return True
    return difflib.get_close_matches(name, KNOBS_BY_NAME.keys(), n=1, cutoff=0.85) != []


def _normalize(kw: dict[str, Any]) -> None:
    """Replace "0 means inherit" knob values by what they inherit, and golf's older spellings of a technique by
    the records' knobs, so equal configs compare equal."""
    _map_older_knobs(kw)
    kw["mlp_bits"] = kw["mlp_bits"] or kw["matrix_bits"]
    kw["attn_bits"] = kw["attn_bits"] or kw["matrix_bits"]
    kw["mlp_clip_sigmas"] = kw["mlp_clip_sigmas"] or kw["matrix_clip_sigmas"]
    kw["attn_clip_sigmas"] = kw["attn_clip_sigmas"] or kw["matrix_clip_sigmas"]
    if kw["embed_wd"] < 0:
        kw["embed_wd"] = kw["adam_wd"]
    kw["eval_seq_len"] = kw["eval_seq_len"] or kw["train_seq_len"]
    kw["ttt_seq_len"] = kw["ttt_seq_len"] or kw["eval_seq_len"]


def _map_older_knobs(kw: dict[str, Any]) -> None:
    """RECUR_LAYERS=3,4,5 is NUM_LOOPS=1 LOOP_START=3 LOOP_END=5; PARALLEL_RESIDUAL_START=N is PARALLEL_RESIDUAL=1
    PARALLEL_START_LAYER=N (RECUR_START_FRAC is an alias of ENABLE_LOOPING_AT). The mapped knob is reset to its
    off value, so both spellings resolve to one configuration."""
    layers = tuple(kw["recur_layers"])
    if layers:
        if list(layers) != list(range(layers[0], layers[-1] + 1)):
            raise KnobError(f"RECUR_LAYERS={','.join(map(str, layers))} must be consecutive layers, e.g. 3,4,5")
        if kw["num_loops"]:
            raise KnobError("RECUR_LAYERS and NUM_LOOPS both set depth recurrence: use NUM_LOOPS, LOOP_START, LOOP_END")
        kw.update(num_loops=1, loop_start=layers[0], loop_end=layers[-1], recur_layers=())
    if kw["parallel_residual_start"] >= 0:
        kw.update(parallel_residual=True, parallel_start_layer=kw["parallel_residual_start"],
                  parallel_residual_start=-1)


def parse_overrides(pairs: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Validate a mapping of knob name → raw value; returns parsed values (KnobError on the first bad one)."""
    parsed = {}
    for name, raw in pairs.items():
        canonical = canonical_knob(name)
        if canonical is None:
            raise KnobError(unknown_knob_message(name, where))
        try:
            parsed[canonical] = KNOBS_BY_NAME[canonical].parse(raw)
        except KnobError as exc:
            raise KnobError(f"{where}{exc}") from None
    return parsed
