"""Phased TTT (PHASED_TTT_ENABLED=1; the records' form since #1610): per-document LoRA TTT whose base model also
learns, between phases, from the documents already scored.

The first PHASED_TTT_PREFIX_DOCS documents in scoring order (longest first) are split into PHASED_TTT_NUM_PHASES
equal phases. Once the documents of phase p are all scored, the base model takes a pass of global SGD
(GLOBAL_TTT_LR with a cosine over chunks of GLOBAL_TTT_CHUNK_TOKENS and an optional linear warm-up, momentum
GLOBAL_TTT_MOMENTUM, GLOBAL_TTT_EPOCHS passes per chunk, GLOBAL_TTT_BATCH_SEQS sequences of TTT_SEQ_LEN per step,
clipped at GLOBAL_TTT_GRAD_CLIP) over the tokens of every document scored through that phase; LoRA TTT then goes on
with the updated model. Every token the global steps see was scored before them: score first, as the rules demand.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .bpb import ByteLUTs
from .evaluate import EvalResult
from .hparams import Hyperparameters
from .lora_ttt import LoRASettings, ScoreLog, find_documents, lora_ttt, processing_order
from .model import GPT
from .runtime import Runtime
from .ttt import SequenceTrainer, TTTSettings, prime_train_step, step_rows


@dataclass(frozen=True)
class GlobalSettings:
    """The PHASED_TTT_* and GLOBAL_TTT_* knobs (defaults live in hparams.py only)."""

    num_phases: int
    prefix_docs: int
    lr: float
    momentum: float
    epochs: int
    chunk_tokens: int
    batch_seqs: int
    grad_clip: float
    warmup_start_lr: float
    warmup_chunks: int
    seq_len: int

    @classmethod
    def from_hp(cls, hp: Hyperparameters) -> GlobalSettings:
        return cls(num_phases=hp.phased_ttt_num_phases, prefix_docs=hp.phased_ttt_prefix_docs, lr=hp.global_ttt_lr,
                   momentum=hp.global_ttt_momentum, epochs=hp.global_ttt_epochs,
                   chunk_tokens=hp.global_ttt_chunk_tokens, batch_seqs=hp.global_ttt_batch_seqs,
                   grad_clip=hp.global_ttt_grad_clip, warmup_start_lr=hp.global_ttt_warmup_start_lr,
                   warmup_chunks=hp.global_ttt_warmup_chunks, seq_len=hp.ttt_seq_len)


def phase_boundaries(prefix_docs: int, num_phases: int) -> list[int]:
    """Documents scored (in scoring order) by the end of each phase."""
    return [prefix_docs * (p + 1) // num_phases for p in range(num_phases)]


def chunk_lr(chunk: int, chunks: int, g: GlobalSettings) -> float:
    """Linear warm-up over the first GLOBAL_TTT_WARMUP_CHUNKS chunks, then a cosine from GLOBAL_TTT_LR toward 0."""
    warm = min(g.warmup_chunks, max(chunks - 1, 0))
    if chunk < warm:
        return g.warmup_start_lr + (g.lr - g.warmup_start_lr) * chunk / max(warm - 1, 1)
    return g.lr * 0.5 * (1.0 + math.cos(math.pi * (chunk - warm) / max(chunks - 1 - warm, 1)))


def global_step_rows(g: GlobalSettings, rt: Runtime) -> int:
    """Sequences per global step on this rank: a full chunk's, the shorter last chunk padded to it, so every phase
    runs the one graph primed before the TTT timer."""
    return step_rows(max(g.chunk_tokens // g.seq_len, 1), g.batch_seqs, rt.rank, rt.world_size)


def prime_global_step(model: GPT, g: GlobalSettings, rt: Runtime) -> None:
    """Compile the global SGD step's forward+backward (training mode, full recurrence) on random tokens."""
    was_training = model.training
    model.train()
    prime_train_step(model, global_step_rows(g, rt), g.seq_len, model.cfg.vocab_size, rt.device)
    model.train(was_training)


def global_sgd(model: GPT, tokens: torch.Tensor, g: GlobalSettings, rt: Runtime, compile_fn: bool = False) -> int:
    """SGD over `tokens` (the scored documents back to back) chunk by chunk; returns the optimizer steps taken."""
    cfg = TTTSettings(lr=g.lr, epochs=g.epochs, optimizer="sgd", momentum=g.momentum, weight_decay=0.0,
                      batch_seqs=g.batch_seqs, seq_len=g.seq_len, grad_clip=g.grad_clip, freeze_blocks=0,
                      schedule="constant", lr_out_mult=1.0, lr_in_mult=1.0, chunk_tokens=g.chunk_tokens)
    total = tokens.numel() - 1
    chunks = max(1, -(-total // g.chunk_tokens))
    model.train()
    trainer = SequenceTrainer(model, tokens, cfg, rt, compile_fn)
    rows = global_step_rows(g, rt)
    start = time.perf_counter()
    for c in range(chunks):
        first = c * g.chunk_tokens
        n_seqs = (min(first + g.chunk_tokens, total) - first) // g.seq_len
        lr = chunk_lr(c, chunks, g)
        if n_seqs > 0 and g.epochs > 0:
            trainer.train_span(first, n_seqs, lambda _step, lr=lr: lr, rows)
        rt.log(f"tttg: c{c + 1}/{chunks} lr:{lr:.6f} t:{time.perf_counter() - start:.1f}s")
    trainer.close()
    model.eval()
    return trainer.steps


def phased_ttt(model: GPT, val_tokens: torch.Tensor, luts: ByteLUTs, cfg: LoRASettings, g: GlobalSettings,
               rt: Runtime, compile_fn: bool = False, seed: int = 0,
               keep_losses: bool = False) -> tuple[EvalResult, ScoreLog]:
    """LoRA TTT over the stream with global SGD on the scored prefix at each phase boundary."""
    docs = find_documents(val_tokens)
    order = processing_order(docs)
    prefix = min(g.prefix_docs, len(docs))
    bounds = phase_boundaries(prefix, g.num_phases) if prefix else []
    rt.log(f"ttt_phased: total_docs:{len(docs)} prefix_docs:{prefix} suffix_docs:{len(docs) - prefix} "
           f"num_phases:{g.num_phases} boundaries:{bounds}")
    state = {"phase": 0, "start": time.perf_counter()}

    def after_round(scored_docs: int, log: ScoreLog) -> None:
        while state["phase"] < len(bounds) and scored_docs >= bounds[state["phase"]]:
            phase = state["phase"]
            if scored_docs >= len(docs):  # every document is scored: a global pass could change no score
                rt.log(f"ttpp: phase:{phase + 1}/{len(bounds)} skipped: no document left to score")
                state["phase"] = len(bounds)
                log.extra["global_done"] = True
                break
            chosen = order[:bounds[phase]]
            rt.log(f"ttpp: phase:{phase + 1}/{len(bounds)} pd:{scored_docs} gd:{len(chosen)} "
                   f"t:{time.perf_counter() - state['start']:.1f}s")
            pieces = [val_tokens[int(s):int(s) + int(n)] for s, n in docs[np.sort(chosen)]]
            tokens = torch.cat(pieces).to(rt.device) if pieces else val_tokens[:1].to(rt.device)
            global_sgd(model, tokens, g, rt, compile_fn)
            state["phase"] = phase + 1
            log.extra["global_done"] = state["phase"] == len(bounds)
            rt.log(f"ttpr: phase:{phase + 1}/{len(bounds)} t:{time.perf_counter() - state['start']:.1f}s")

    if compile_fn and any(b < len(docs) for b in bounds):  # a global pass will run: its graph before the timer
        with rt.eval_compile("ttt_global_step"):
            prime_global_step(model, g, rt)
    return lora_ttt(model, val_tokens, luts, cfg, rt, compile_fn, seed, keep_losses, after_round,
                    label="ttt_phased")
