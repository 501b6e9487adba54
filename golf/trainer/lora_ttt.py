"""Batched per-document LoRA test-time training, score-first (TTT_MODE=lora; the records' form since #1530).

The validation stream is cut into documents at BOS tokens (a document's last target is the next document's BOS, so
every target of the stream is scored exactly once). Documents are sorted longest first and taken TTT_BATCH_SIZE at a
time; each row of a batch is one document with its own LoRA adapters (rank TTT_LORA_RANK, scale
TTT_LORA_ALPHA / rank) on the query, value and (TTT_K_LORA, TTT_O_LORA) key and output projections, (TTT_MLP_LORA)
the MLP, and the output head. A document is read in chunks of TTT_CHUNK_SIZE targets: each chunk is scored, under
the adapters trained on the document's earlier chunks only, from a window of at most TTT_SEQ_LEN tokens that ends at
the chunk's end; then TTT_GRAD_STEPS AdamW steps (TTT_LORA_LR, TTT_BETA1/2, TTT_WEIGHT_DECAY) on that chunk's mean
loss. A document's last chunk is scored and never trained on. Adapters and optimizer state are reset for every batch,
so nothing learned on one document reaches another.

Windows are padded to a few fixed widths (TTT_CHUNK_SIZE x a power of two, capped at TTT_SEQ_LEN): causal attention
makes the padding invisible to the scored positions. A row holds one document, so the model runs its plain causal
attention even under DOC_ATTENTION (the same scores; the masked kernel would only cost time), and a compiled forward
treats the width as dynamic (one or two graphs for all widths).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .bpb import ByteLUTs
from .doc_attention import BOS_ID
from .evaluate import EvalResult
from .hparams import Hyperparameters
from .model import GPT, IGNORE_TARGET
from .runtime import Runtime

CHUNK_PROGRESS_EVERY = 100  # a `ttc:` line every this many chunks of a batch: a long document's batch takes minutes


@dataclass(frozen=True)
class LoRASettings:
    """The knobs LoRA TTT reads (defaults live in hparams.py only)."""

    rank: int
    alpha: float  # 0: scale 1 (the records' adapters carry no alpha/rank factor)
    lr: float
    k_lora: bool
    o_lora: bool
    mlp_lora: bool
    batch_size: int
    chunk_size: int
    beta1: float
    beta2: float
    grad_steps: int
    weight_decay: float
    seq_len: int

    @classmethod
    def from_hp(cls, hp: Hyperparameters) -> LoRASettings:
        return cls(rank=hp.ttt_lora_rank, alpha=hp.ttt_lora_alpha, lr=hp.ttt_lora_lr, k_lora=hp.ttt_k_lora,
                   o_lora=hp.ttt_o_lora, mlp_lora=hp.ttt_mlp_lora, batch_size=hp.ttt_batch_size,
                   chunk_size=hp.ttt_chunk_size, beta1=hp.ttt_beta1, beta2=hp.ttt_beta2, grad_steps=hp.ttt_grad_steps,
                   weight_decay=hp.ttt_weight_decay, seq_len=hp.ttt_seq_len)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.alpha > 0 else 1.0


# ---------------------------------------------------------------------------------------------- adapters
class BatchedLoRA(nn.Module):
    """One rank-r adapter per batch row: x (B, T, in) -> scale · x Aᵀ Bᵀ with A (B, r, in), B (B, out, r).

    B starts at zero, so a fresh adapter adds exactly nothing; A starts at one draw, uniform in ±1/sqrt(in), shared
    by every row and every batch: a document's adapters start the same wherever it is scored."""

    def __init__(self, rows: int, in_features: int, out_features: int, rank: int, scale: float,
                 gen: torch.Generator) -> None:
        super().__init__()
        self.scale = scale
        bound = 1.0 / math.sqrt(in_features)
        self.register_buffer("A0", (torch.rand(rank, in_features, generator=gen) * 2 - 1) * bound)
        self.A = nn.Parameter(self.A0.expand(rows, -1, -1).clone())
        self.B = nn.Parameter(torch.zeros(rows, out_features, rank))

    def reset(self) -> None:
        with torch.no_grad():
            self.A.copy_(self.A0.expand_as(self.A))
            self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:
        low = torch.bmm(x, self.A.transpose(1, 2).to(x.dtype))
        out = torch.bmm(low, self.B.transpose(1, 2).to(x.dtype))
        return out * self.scale if self.scale != 1.0 else out


class DocumentAdapters(nn.Module):
    """Every adapter of the model for a batch of `rows` documents; attach() hooks them into the model's layers."""

    def __init__(self, model: GPT, rows: int, cfg: LoRASettings, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.model = [model]  # a list: not a submodule (its parameters are not the adapters')
        self.sites: list[tuple[nn.Module, str, BatchedLoRA]] = []
        self.loras = nn.ModuleList()

        def add(owner: nn.Module, attr: str, in_f: int, out_f: int) -> None:
            lora = BatchedLoRA(rows, in_f, out_f, cfg.rank, cfg.scale, gen)
            self.loras.append(lora)
            self.sites.append((owner, attr, lora))

        dim = model.cfg.model_dim
        for block in model.blocks:
            attn = block.attn
            add(attn.c_q, "adapter", dim, attn.c_q.out_features)
            add(attn.c_v, "adapter", dim, attn.c_v.out_features)
            if cfg.k_lora:
                add(attn.c_k, "adapter", dim, attn.c_k.out_features)
            if cfg.o_lora:
                add(attn.proj, "adapter", dim, dim)
            if cfg.mlp_lora:
                add(block.mlp, "adapter", dim, dim)
        add(model, "head_adapter", dim, model.cfg.vocab_size)

    def attach(self) -> None:
        # into the instance dict: nn.Module.__setattr__ would register the adapter as the layer's submodule
        for owner, attr, lora in self.sites:
            owner.__dict__[attr] = lora

    def detach(self) -> None:
        for owner, attr, _ in self.sites:
            owner.__dict__.pop(attr, None)

    def reset(self) -> None:
        for lora in self.loras:
            lora.reset()


# ---------------------------------------------------------------------------------------------- documents
def find_documents(tokens: Tensor) -> np.ndarray:
    """(start, length) of each document of the stream: from its BOS through the next BOS (its last target).

    A stream that does not start with BOS has a first partial document from position 0. Targets 1..N-1 are
    covered once in all."""
    toks = tokens.cpu().numpy() if isinstance(tokens, Tensor) else np.asarray(tokens)
    starts = np.flatnonzero(toks == BOS_ID)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate(([0], starts))
    ends = np.concatenate((starts[1:] + 1, [toks.size]))
    docs = np.stack((starts, ends - starts), axis=1).astype(np.int64)
    return docs[docs[:, 1] >= 2]


def processing_order(docs: np.ndarray) -> np.ndarray:
    """Document indices longest first (ties: stream order), as the records batch them."""
    return np.lexsort((np.arange(len(docs)), -docs[:, 1]))


def window_widths(cfg: LoRASettings) -> list[int]:
    """The padded window widths: chunk x 1, 2, 4, ... capped at TTT_SEQ_LEN."""
    widths, w = [], cfg.chunk_size
    while w < cfg.seq_len:
        widths.append(w)
        w *= 2
    return widths + [cfg.seq_len]


def padded_width(width: int, widths: list[int]) -> int:
    return next(w for w in widths if w >= width)


def allow_graphs(widths: int) -> None:
    """Let dynamo keep a graph per window width beside the evaluation's own graphs of token_losses: past its
    recompile limit (8 per function by default) a width would silently run eagerly."""
    import torch._dynamo.config as dynamo_config

    need = 2 * widths + 8
    # torch >= 2.6 calls it recompile_limit (cache_size_limit is its alias there); older torch has only the old name
    name = "recompile_limit" if "recompile_limit" in dynamo_config._config else "cache_size_limit"
    if getattr(dynamo_config, name) < need:
        setattr(dynamo_config, name, need)


@dataclass
class ScoreLog:
    """Float64 (loss, targets, bytes) so far; optionally every target's loss by stream position (tests)."""

    sums: Tensor
    per_target: np.ndarray | None = None
    batches_done: int = 0
    docs_done: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- one batch
class DocumentTTT:
    """Scores batches of documents with per-document adapters (score first, then train on the chunk)."""

    def __init__(self, model: GPT, tokens: Tensor, luts: ByteLUTs, cfg: LoRASettings, rt: Runtime,
                 compile_fn: bool = False, seed: int = 0) -> None:
        self.model, self.luts, self.cfg, self.rt, self.seed = model, luts, cfg, rt, seed
        self.tokens = tokens.to(rt.device)  # the stream on the device
        self.adapters = DocumentAdapters(model, cfg.batch_size, cfg, seed).to(rt.device)
        self.params = list(self.adapters.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-10,
                                     weight_decay=cfg.weight_decay)
        self.widths = window_widths(cfg)

        def losses(x: Tensor, y: Tensor) -> Tensor:  # a row is one document's window: plain causal attention
            return model.token_losses(x, y, one_document=True)

        self.loss_fn: Callable[[Tensor, Tensor], Tensor] = losses
        self.compiled = compile_fn
        if compile_fn:
            allow_graphs(len(self.widths))
            self.loss_fn = torch.compile(losses, dynamic=False, fullgraph=True)

    def _losses(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-token losses of a (rows, width) window batch. Compiled, the width is a symbolic dimension, so the
        widths share one or two graphs (where the compiler guards a size range) instead of one each: a full-size
        model's graph costs about a minute to compile."""
        if self.compiled:
            torch._dynamo.maybe_mark_dynamic(x, 1)
            torch._dynamo.maybe_mark_dynamic(y, 1)
        return self.loss_fn(x, y)

    def _fresh(self) -> None:
        """Adapters back to their initial state and an empty optimizer state: a new batch learns from nothing."""
        self.adapters.reset()
        self.opt.state.clear()

    def score_batch(self, batch_docs: np.ndarray, log: ScoreLog) -> None:
        """Score (and adapt on) up to TTT_BATCH_SIZE documents given as (start, length) rows."""
        cfg = self.cfg
        self._fresh()
        rows = cfg.batch_size
        n = len(batch_docs)
        starts = torch.zeros(rows, dtype=torch.long)
        pred = torch.zeros(rows, dtype=torch.long)  # targets per document
        starts[:n] = torch.from_numpy(batch_docs[:, 0])
        pred[:n] = torch.from_numpy(batch_docs[:, 1] - 1)
        n_chunks = -(-pred // cfg.chunk_size)
        total, t0 = int(n_chunks.max()), time.perf_counter()
        with self._adapting():
            for ci in range(total):
                self._chunk(ci, starts, pred, n_chunks, log)
                if (ci + 1) % CHUNK_PROGRESS_EVERY == 0:
                    self.rt.sync()
                    self.rt.log(f"ttc: b{log.batches_done + 1} c{ci + 1}/{total} "
                                f"t:{time.perf_counter() - t0:.1f}s")
        log.batches_done += 1
        log.docs_done += n

    @contextmanager
    def _adapting(self) -> Iterator[None]:
        """The adapters hooked in and the base model frozen (the same state for priming and scoring, so a compiled
        forward primed before the timer is not compiled again inside it)."""
        frozen = [p for p in self.model.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        self.adapters.attach()
        try:
            yield
        finally:
            self.adapters.detach()
            for p in frozen:
                p.requires_grad_(True)

    def _chunk(self, ci: int, starts: Tensor, pred: Tensor, n_chunks: Tensor, log: ScoreLog) -> None:
        cfg, dev = self.cfg, self.rt.device
        active = ci < n_chunks
        c0 = torch.full_like(pred, ci * cfg.chunk_size)
        end = torch.minimum(c0 + cfg.chunk_size, pred)  # exclusive: last target of the chunk is end - 1
        win0 = (end - cfg.seq_len).clamp_min(0)  # first input of the window
        width = int(torch.where(active, end - win0, 0).max())
        width = padded_width(width, self.widths)
        col = torch.arange(width)
        idx = (starts + win0)[:, None] + col[None, :]  # stream position of each input
        in_window = active[:, None] & (col[None, :] < (end - win0)[:, None])
        safe = torch.where(in_window, idx, 0).to(dev)
        in_window = in_window.to(dev)
        x = torch.where(in_window, self.tokens[safe], 0).long()
        y = torch.where(in_window, self.tokens[(safe + 1).clamp_max(self.tokens.numel() - 1)].long(),
                        IGNORE_TARGET)
        offset = (c0 - win0).clamp_min(0)
        scored = in_window & (col[None, :] >= offset[:, None]).to(dev)
        learns = active & (ci < n_chunks - 1)  # on the host: no device sync per chunk to find out
        trained = scored & learns[:, None].to(dev)
        with torch.enable_grad():
            losses = self._losses(x, y)
        with torch.no_grad():
            self._add_scores(losses.detach(), x, y, safe + 1, scored, log)
        if not bool(learns.any()):  # every active document's chunk is its last: scored, never trained on
            return
        for step in range(cfg.grad_steps):
            if step:
                with torch.enable_grad():
                    losses = self._losses(x, y)
            counts = trained.sum(dim=1).clamp_min(1)
            per_doc = (losses * trained).sum(dim=1) / counts  # each document's mean loss over its chunk
            self.opt.zero_grad(set_to_none=True)
            per_doc.sum().backward(inputs=self.params)
            self.opt.step()

    def _add_scores(self, losses: Tensor, x: Tensor, y: Tensor, positions: Tensor, scored: Tensor,
                    log: ScoreLog) -> None:
        tgt = torch.where(scored, y, 0)
        nbytes = self.luts.count_bytes(x, tgt, positions).double()
        log.sums += torch.stack((torch.where(scored, losses.double(), 0.0).sum(), scored.double().sum(),
                                 torch.where(scored, nbytes, 0.0).sum()))
        if log.per_target is not None:
            pos = positions[scored].cpu().numpy()
            log.per_target[pos] = losses[scored].double().cpu().numpy()

    def prime(self) -> None:
        """Compile every window width's forward and backward on random tokens; adapters and optimizer untouched."""
        gen = torch.Generator(device=self.rt.device).manual_seed(0)
        vocab = self.model.cfg.vocab_size
        with self._adapting():
            for w in self.widths:
                # two tensors of their own, as the loop's are: a graph for (x, x) guards `x is y`, one for views of
                # one tensor guards their storage offsets
                x, y = (torch.randint(2, vocab, (self.cfg.batch_size, w), device=self.rt.device, generator=gen)
                        for _ in range(2))
                with torch.enable_grad():
                    loss = self._losses(x, y).mean()
                torch.autograd.grad(loss, self.params)


# ---------------------------------------------------------------------------------------------- the stage
RoundHook = Callable[[int, ScoreLog], None]  # (documents scored so far in processing order, log) after each round


def lora_ttt(model: GPT, val_tokens: Tensor, luts: ByteLUTs, cfg: LoRASettings, rt: Runtime,
             compile_fn: bool = False, seed: int = 0, keep_losses: bool = False,
             after_round: RoundHook | None = None, label: str = "ttt_lora") -> tuple[EvalResult, ScoreLog]:
    """Score the whole stream with per-document LoRA TTT. Batches go round-robin over ranks in processing order;
    `after_round` runs on every rank after each round of world_size batches (phased TTT's global steps)."""
    model.eval()
    docs = find_documents(val_tokens)
    order = processing_order(docs)
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    runner = DocumentTTT(model, val_tokens, luts, cfg, rt, compile_fn, seed)
    if compile_fn:
        with rt.eval_compile("ttt_lora"):
            runner.prime()
    log = ScoreLog(torch.zeros(3, dtype=torch.float64, device=rt.device),
                   np.full(val_tokens.numel(), np.nan) if keep_losses else None)
    rt.sync()
    rt.log("beginning TTT eval timer")
    start = time.perf_counter()
    rounds = -(-len(batches) // rt.world_size)
    done = log.sums.clone()
    for r in range(rounds):
        before = log.sums.clone()
        b = r * rt.world_size + rt.rank
        if b < len(batches):
            runner.score_batch(docs[batches[b]], log)
        round_sums = rt.all_reduce(log.sums - before)
        done += round_sums
        lo, hi = r * rt.world_size, min((r + 1) * rt.world_size, len(batches))
        lengths = docs[np.concatenate(batches[lo:hi]), 1]
        rt.log(f"ttp: b{hi}/{len(batches)} bl:{_nats(round_sums):.4f} bb:{_bpb(round_sums):.4f} "
               f"rl:{_nats(done):.4f} rb:{_bpb(done):.4f} dl:{int(lengths.min())}-{int(lengths.max())} "
               f"gd:{int(log.extra.get('global_done', 0))}")
        if after_round is not None:
            after_round(sum(len(batches[i]) for i in range(hi)), log)
    total = rt.all_reduce(log.sums.clone())
    loss, tokens, nbytes = (float(v) for v in total.tolist())
    elapsed = time.perf_counter() - start
    rt.log(f"{label}:done docs={len(docs)} batches={len(batches)} time={elapsed:.1f}s")
    return EvalResult(loss / tokens, _bpb(total), int(tokens), int(nbytes), 1000.0 * elapsed), log


def _nats(sums: Tensor) -> float:
    loss, tokens, _ = (float(v) for v in sums.tolist())
    return loss / tokens if tokens else float("nan")


def _bpb(sums: Tensor) -> float:
    loss, tokens, nbytes = (float(v) for v in sums.tolist())
    return loss / math.log(2.0) / nbytes if nbytes else float("nan")
