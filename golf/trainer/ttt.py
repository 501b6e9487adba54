"""Test-time training on the validation stream: the legal score-first form and two non-record forms.

- score-first (TTT_MODE=score_first, records' form): the stream is cut into TTT_CHUNK_TOKENS chunks; each chunk's
  windows are scored under inference_mode with weights adapted only on earlier chunks, then the model trains on that
  chunk's tokens. The last chunk is never trained on.
- adapt-first (TTT_MODE=adapt_first, non-record): train over the whole stream, then score it.
- pre-quant (TTT_PRE_QUANT=1, non-record): AdamW over the whole stream on the full-precision model before the
  artifact is built.
Every step takes TTT_BATCH_SEQS sequences of TTT_SEQ_LEN tokens (split across ranks; gradients summed so the step
equals the one-process step), clips at TTT_GRAD_CLIP and skips the first TTT_FREEZE_BLOCKS blocks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .evaluate import EvalResult
from .hparams import Hyperparameters
from .loglines import ttt_done_line
from .model import IGNORE_TARGET
from .runtime import Runtime
from .sliding import WindowScorer, first_scored, rank_span

OUTPUT_PROJECTIONS = (".attn.proj.", ".mlp.proj.")
INPUT_PROJECTIONS = (".attn.c_q.", ".attn.c_k.", ".attn.c_v.", ".mlp.fc.")
PROGRESS_EVERY = 10  # chunks between progress lines


@dataclass(frozen=True)
class TTTSettings:
    """The TTT_* knobs the adaptation loop reads (defaults live in hparams.py only)."""

    lr: float
    epochs: int
    optimizer: str
    momentum: float
    weight_decay: float
    batch_seqs: int
    seq_len: int
    grad_clip: float
    freeze_blocks: int
    schedule: str
    lr_out_mult: float
    lr_in_mult: float
    chunk_tokens: int

    @classmethod
    def from_hp(cls, hp: Hyperparameters) -> TTTSettings:
        return cls(lr=hp.ttt_lr, epochs=hp.ttt_epochs, optimizer=hp.ttt_optimizer, momentum=hp.ttt_momentum,
                   weight_decay=hp.ttt_weight_decay, batch_seqs=hp.ttt_batch_seqs, seq_len=hp.ttt_seq_len,
                   grad_clip=hp.ttt_grad_clip, freeze_blocks=hp.ttt_freeze_blocks, schedule=hp.ttt_schedule,
                   lr_out_mult=hp.ttt_lr_out_mult, lr_in_mult=hp.ttt_lr_in_mult, chunk_tokens=hp.ttt_chunk_tokens)

    @property
    def decay(self) -> float:
        """The weight decay the optimizer gets: TTT_WEIGHT_DECAY is AdamW's, as in the records, whose SGD form takes
        none (docs/artifact.md: what pr1855's LoRA decay did to full-model SGD)."""
        return self.weight_decay if self.optimizer == "adamw" else 0.0


def lr_multiplier(name: str, cfg: TTTSettings) -> float:
    """TTT_LR_OUT_MULT for output projections, TTT_LR_IN_MULT for input projections, else 1."""
    dotted = f".{name}"
    if any(p in dotted for p in OUTPUT_PROJECTIONS):
        return cfg.lr_out_mult
    if any(p in dotted for p in INPUT_PROJECTIONS):
        return cfg.lr_in_mult
    return 1.0


def is_frozen(name: str, freeze_blocks: int) -> bool:
    if not name.startswith("blocks."):
        return False
    return int(name.split(".")[1]) < freeze_blocks


def param_groups(model: nn.Module, cfg: TTTSettings) -> list[dict[str, Any]]:
    """Trainable parameters grouped by LR multiplier (frozen blocks left out)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not is_frozen(name, cfg.freeze_blocks):
            groups.setdefault(lr_multiplier(name, cfg), []).append(param)
    return [{"params": params, "lr_mult": mult} for mult, params in groups.items()]


def cosine(step: int, total: int) -> float:
    """Cosine decay from 1 at step 0 toward 0 at step `total`."""
    return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def inputs_and_targets(tok: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, seq_len + 1) tokens → contiguous inputs and targets. Contiguous because the compiled step guards on
    strides: slices of `tok` (stride seq_len + 1) and a padded batch (stride seq_len) would be two graphs."""
    return tok[:, :-1].contiguous(), tok[:, 1:].contiguous()


class SequenceTrainer:
    """Optimizer steps on TTT_SEQ_LEN sequences of a device token stream, summed over ranks."""

    def __init__(self, model: nn.Module, tokens: Tensor, cfg: TTTSettings, rt: Runtime,
                 compile_fn: bool = False) -> None:
        self.model, self.tokens, self.cfg, self.rt = model, tokens, cfg, rt
        self.groups = param_groups(model, cfg)
        self.params = [p for g in self.groups for p in g["params"]]
        if cfg.optimizer == "adamw":
            self.opt: torch.optim.Optimizer = torch.optim.AdamW(
                self.groups, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.decay)
        else:
            self.opt = torch.optim.SGD(self.groups, lr=cfg.lr, momentum=cfg.momentum)
        self.loss_fn: Callable[[Tensor, Tensor], Tensor] = model
        if compile_fn:
            self.loss_fn = torch.compile(model, dynamic=False, fullgraph=True)
        for p in self.params:  # every rank reduces the same gradient list, even one that had no sequences
            p.grad = torch.zeros_like(p)
        self.steps = 0
        self.offsets = torch.arange(cfg.seq_len + 1, device=tokens.device)

    def steps_per_epoch(self, n_seqs: int) -> int:
        return -(-n_seqs // self.cfg.batch_seqs)

    def train_span(self, first_target: int, n_seqs: int, lr_at: Callable[[int], float], rows: int = 0) -> None:
        """TTT_EPOCHS passes over sequences k = 0..n_seqs-1 starting at first_target + k·TTT_SEQ_LEN, each step's
        batch padded to `rows` sequences (default: this span's largest step)."""
        batch = self.cfg.batch_seqs
        rows = max(rows, step_rows(n_seqs, batch, self.rt.rank, self.rt.world_size))
        for _ in range(self.cfg.epochs):
            for k0 in range(0, n_seqs, batch):
                self.step(first_target, k0, min(k0 + batch, n_seqs), lr_at(self.steps), rows)

    def step(self, first_target: int, k0: int, k1: int, lr: float, rows: int = 0) -> None:
        """One optimizer step on sequences k0..k1-1 (this rank's share), its batch padded to `rows` sequences
        whose targets are ignored: the loss and gradients are the real rows', and a compiled loss sees one shape."""
        rt, seq_len = self.rt, self.cfg.seq_len
        lo, hi = rank_span(k1 - k0, rt.rank, rt.world_size)
        for p in self.params:
            p.grad.zero_()  # type: ignore[union-attr]
        if hi > lo:
            seq_starts = first_target + seq_len * torch.arange(k0 + lo, k0 + hi, device=self.tokens.device)
            x, y = inputs_and_targets(self.tokens[seq_starts[:, None] + self.offsets].long())
            if rows > hi - lo:
                pad = rows - (hi - lo)
                x = torch.cat((x, x[:1].expand(pad, -1)))
                y = torch.cat((y, torch.full_like(y[:1], IGNORE_TARGET).expand(pad, -1)))
            loss = self.loss_fn(x, y) * ((hi - lo) / (k1 - k0))
            loss.backward(inputs=self.params)
        if rt.distributed:
            flat = torch.cat([p.grad.reshape(-1) for p in self.params])  # type: ignore[union-attr]
            rt.all_reduce(flat)
            offset = 0
            for p in self.params:
                p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))  # type: ignore[union-attr]
                offset += p.numel()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = lr * group["lr_mult"]
        self.opt.step()
        self.steps += 1

    def close(self) -> None:
        for p in self.params:
            p.grad = None


def parameter_counts(model: nn.Module, cfg: TTTSettings) -> tuple[int, int]:
    frozen = sum(p.numel() for n, p in model.named_parameters() if is_frozen(n, cfg.freeze_blocks))
    return sum(p.numel() for p in model.parameters()) - frozen, frozen


# ---------------------------------------------------------------------------------------------- score-first
@dataclass
class TTTResult:
    result: EvalResult
    chunk_sums: Tensor  # (chunks, 3) float64: loss nats, targets, bytes of each chunk's windows (all ranks)


def chunk_windows(scorer: WindowScorer, chunk_tokens: int) -> tuple[int, np.ndarray]:
    """(chunk count, window-index bounds per chunk): a window belongs to the chunk of its first scored target."""
    chunks = max(1, -(-scorer.total // chunk_tokens))
    owner = first_scored(scorer.starts, scorer.seq_len, scorer.stride) // chunk_tokens
    bounds = np.searchsorted(owner, np.arange(chunks + 1), side="left")
    return chunks, bounds


def score_first_ttt(model: nn.Module, scorer: WindowScorer, cfg: TTTSettings, rt: Runtime,
                    compile_fn: bool = False) -> TTTResult:
    """Legal TTT: score each chunk with weights trained only on earlier chunks, then train on it."""
    rt.sync()
    start = time.perf_counter()
    chunks, bounds = chunk_windows(scorer, cfg.chunk_tokens)
    total = scorer.total
    rt.log(f"ttt_sliding:start chunks={chunks} chunk_tokens={cfg.chunk_tokens} total_windows={len(scorer.starts)} "
           f"stride={scorer.stride} ttt_lr={cfg.lr:g} ttt_epochs={cfg.epochs} freeze_blocks={cfg.freeze_blocks}")
    unfrozen, frozen = parameter_counts(model, cfg)
    rt.log(f"ttt_sliding:params unfrozen={unfrozen} frozen={frozen} optimizer={cfg.optimizer} "
           f"weight_decay={cfg.decay:g} schedule={cfg.schedule}")
    trainer = SequenceTrainer(model, scorer.tokens, cfg, rt, compile_fn)

    def chunk_span(c: int) -> tuple[int, int]:
        first = c * cfg.chunk_tokens
        return first, (min(first + cfg.chunk_tokens, total) - first) // cfg.seq_len

    total_steps = sum(trainer.steps_per_epoch(chunk_span(c)[1]) for c in range(chunks - 1)) * cfg.epochs
    # every chunk's share of windows for this rank, padded to whole batches, uploaded once (no copies in the loop)
    shares = []
    for c in range(chunks):
        lo, hi = rank_span(int(bounds[c + 1] - bounds[c]), rt.rank, rt.world_size)
        shares.append(scorer.starts[bounds[c] + lo:bounds[c] + hi])
    padded = [scorer.padded(share) for share in shares]
    cut = np.cumsum([0] + [len(p) for p in padded])
    with torch.inference_mode():  # an inference tensor, as in the sliding stage: the compiled scorer's guards match
        batches = torch.from_numpy(np.concatenate(padded)).to(scorer.device)
    rows: list[Tensor] = []
    for c in range(chunks):
        include_head = len(shares[c]) > 0 and int(shares[c][0]) == 0
        with torch.inference_mode():
            rows.append(scorer.score_batches(batches[cut[c]:cut[c + 1]], include_head).clone())
        if c < chunks - 1:
            first, n_seqs = chunk_span(c)
            trainer.train_span(first, n_seqs, _ttt_lr_fn(cfg, c, chunks, total_steps))
        if c % PROGRESS_EVERY == 0 or c == chunks - 1:
            so_far = rt.all_reduce(torch.stack(rows).sum(dim=0))
            rt.log(f"  ttt_chunk [{c + 1}/{chunks}] bpb={_ttt_bpb(so_far):.6f} time={time.perf_counter() - start:.1f}s")
    trainer.close()
    chunk_sums = rt.all_reduce(torch.stack(rows))
    loss, tokens, nbytes = (float(v) for v in chunk_sums.sum(dim=0).tolist())
    val_loss, val_bpb = loss / tokens, _ttt_bpb(chunk_sums.sum(dim=0))
    elapsed = time.perf_counter() - start
    rt.log(ttt_done_line(val_loss, val_bpb, elapsed))
    result = EvalResult(val_loss, val_bpb, int(tokens), int(nbytes), 1000.0 * elapsed)
    return TTTResult(result, chunk_sums)


def _ttt_lr_fn(cfg: TTTSettings, chunk: int, chunks: int, total_steps: int) -> Callable[[int], float]:
    """LR by optimizer step: cosine over chunks (constant within a chunk), cosine over all steps, or constant."""
    if cfg.schedule == "cosine_chunks":
        chunk_lr = cfg.lr * cosine(chunk, chunks - 1)
        return lambda _step: chunk_lr
    if cfg.schedule == "cosine_steps":
        return lambda step: cfg.lr * cosine(step, total_steps)
    return lambda _step: cfg.lr


def _ttt_bpb(sums: Tensor) -> float:
    loss, tokens, nbytes = (float(v) for v in sums.tolist())
    return loss / tokens / math.log(2.0) * tokens / nbytes if tokens and nbytes else float("nan")


# ---------------------------------------------------------------------------------------------- adapt first
def train_on_stream(model: nn.Module, tokens: Tensor, cfg: TTTSettings, rt: Runtime,
                    compile_fn: bool = False) -> int:
    """TTT_EPOCHS passes over the whole stream (non-record forms); cosine over all steps unless constant.

    Returns the number of optimizer steps taken.
    """
    n_seqs = (tokens.numel() - 1) // cfg.seq_len
    trainer = SequenceTrainer(model, tokens, cfg, rt, compile_fn)
    total_steps = trainer.steps_per_epoch(n_seqs) * cfg.epochs
    if cfg.schedule == "constant":
        trainer.train_span(0, n_seqs, lambda _step: cfg.lr)
    else:
        trainer.train_span(0, n_seqs, lambda step: cfg.lr * cosine(step, total_steps))
    trainer.close()
    return trainer.steps


def pre_quant_settings(hp: Hyperparameters) -> TTTSettings:
    """Pre-quantization TTT is AdamW (seed record pr1550's form), whatever TTT_OPTIMIZER says."""
    return replace(TTTSettings.from_hp(hp), optimizer="adamw")


def step_sizes(n_seqs: int, batch_seqs: int, rank: int, world_size: int) -> set[int]:
    """The distinct per-rank sequence counts of the steps over n_seqs sequences (the training graph's shapes)."""
    sizes = set()
    for k0 in range(0, n_seqs, batch_seqs):
        lo, hi = rank_span(min(batch_seqs, n_seqs - k0), rank, world_size)
        if hi > lo:
            sizes.add(hi - lo)
    return sizes


def step_rows(n_seqs: int, batch_seqs: int, rank: int, world_size: int) -> int:
    """Sequences per step on this rank over n_seqs sequences: its largest step; smaller ones are padded to it."""
    return max(step_sizes(n_seqs, batch_seqs, rank, world_size), default=0)


def prime_train_step(model: nn.Module, rows: int, seq_len: int, vocab_size: int, device: torch.device) -> None:
    """Compile the TTT forward+backward graph for (rows, seq_len) batches on random tokens; no weight changes."""
    gen = torch.Generator(device=device).manual_seed(0)
    x, y = inputs_and_targets(torch.randint(0, vocab_size, (rows, seq_len + 1), device=device, generator=gen))
    params = [p for p in model.parameters() if p.requires_grad]
    loss = torch.compile(model, dynamic=False, fullgraph=True)(x, y)
    torch.autograd.grad(loss, params, allow_unused=True)  # not .backward(): leaves every .grad as it was

