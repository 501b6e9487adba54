"""Validation: the challenge's plain evaluation over non-overlapping sequences.

Sums are float64 and all-reduced, so the score does not depend on how sequences are split over ranks or batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .bpb import ByteLUTs, bpb
from .runtime import Runtime

TokenLossFn = Callable[[Tensor, Tensor], Tensor]  # (ids, targets) -> per-token nats (B, T)


@dataclass
class EvalResult:
    val_loss: float
    val_bpb: float
    tokens: int
    bytes: int
    elapsed_ms: float


class ScoreSums:
    """Float64 loss/token/byte sums of scored targets."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, losses: Tensor, prev_ids: Tensor, target_ids: Tensor, luts: ByteLUTs,
            positions: Tensor | None = None) -> None:
        """Score every element of `losses` (targets `target_ids` following `prev_ids`, same shapes; `positions`:
        the targets' indices in the validation stream, for a byte sidecar)."""
        self.sums[0] += losses.double().sum()
        self.sums[1] += losses.numel()
        self.sums[2] += luts.count_bytes(prev_ids, target_ids, positions).double().sum()

    def result(self, rt: Runtime, start: float) -> EvalResult:
        sums = rt.all_reduce(self.sums.clone())
        loss_sum, tokens, nbytes = (float(v) for v in sums.tolist())
        val_loss, val_bpb = bpb(loss_sum, tokens, nbytes)
        return EvalResult(val_loss, val_bpb, int(tokens), int(nbytes), 1000.0 * (time.perf_counter() - start))


def evaluate_plain(loss_fn: TokenLossFn, val_tokens: Tensor, luts: ByteLUTs, seq_len: int, batch_seqs: int,
                   rt: Runtime) -> EvalResult:
    """Score the validation stream cut into non-overlapping `seq_len` sequences (each token once).

    Every forward has `batch_seqs` rows (when the rank has that many): a shorter last batch is padded with
    copies of its first row whose losses are dropped, so a compiled `loss_fn` needs one graph, not two.
    """
    rt.sync()
    start = time.perf_counter()
    total_seqs = (val_tokens.numel() - 1) // seq_len
    first, last = total_seqs * rt.rank // rt.world_size, total_seqs * (rt.rank + 1) // rt.world_size
    rows = min(batch_seqs, last - first)
    sums = ScoreSums(rt.device)
    with torch.inference_mode():
        for s in range(first, last, batch_seqs):
            e = min(s + batch_seqs, last)
            chunk = val_tokens[s * seq_len:e * seq_len + 1].to(rt.device, non_blocking=True)
            x, y = chunk[:-1].view(-1, seq_len), chunk[1:].view(-1, seq_len)
            real = x.size(0)
            if real < rows:
                pad = rows - real
                x, y = torch.cat((x, x[:1].expand(pad, -1))), torch.cat((y, y[:1].expand(pad, -1)))
            positions = None
            if luts.sidecar is not None:  # the targets' stream indices: s·seq_len + 1 onward
                positions = torch.arange(s * seq_len + 1, e * seq_len + 1, device=rt.device).view(-1, seq_len)
            sums.add(loss_fn(x, y)[:real], x[:real], y[:real], luts, positions)
    return sums.result(rt, start)


def val_batch_seqs(val_batch_tokens: int, seq_len: int, world_size: int) -> int:
    """Sequences per forward on each rank for VAL_BATCH_SIZE global tokens."""
    return max(1, val_batch_tokens // (world_size * seq_len))
