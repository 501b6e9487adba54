"""Sliding-window evaluation: every validation target scored exactly once, each with long context.

Windows of L = EVAL_SEQ_LEN tokens start every `stride` tokens (ws = 0, stride, 2·stride, ...) and are kept while
ws + (L − stride) < N (N scored targets). The first window scores all its positions; every later one only its last
`stride` positions (at least L − stride tokens of context). Windows near the end are shorter than L: they are padded
to L (causal attention: padding after a position cannot change it) and the positions past the stream are masked,
so every forward has the same shape. Only the last `stride` positions of each window go through the output head;
the first window's earlier positions are scored once, separately ("the head").
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .bpb import ByteLUTs
from .evaluate import EvalResult, ScoreSums
from .runtime import Runtime


def window_starts(total: int, seq_len: int, stride: int) -> np.ndarray:
    """Start offsets of the windows over `total` targets (always at least the first window)."""
    context = seq_len - stride
    count = max(1, -(-(total - context) // stride)) if total > context else 1
    return np.arange(count, dtype=np.int64) * stride


def first_scored(starts: np.ndarray, seq_len: int, stride: int) -> np.ndarray:
    """Global index of the first target each window scores (0 for the first window)."""
    return np.where(starts == 0, 0, starts + (seq_len - stride))


def rank_span(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous share [lo, hi) of `count` items for a rank."""
    return count * rank // world_size, count * (rank + 1) // world_size


def device_tokens(val_tokens: Tensor, device: torch.device) -> Tensor:
    """The validation stream on the device as int32 (half the memory of int64; ids < 65536)."""
    return val_tokens.to(device=device, dtype=torch.int32)


class WindowScorer:
    """Scores sets of windows in fixed-shape batches; sums (loss nats, targets, bytes) stay on the device."""

    def __init__(self, model: Any, val_tokens: Tensor, luts: ByteLUTs, seq_len: int, stride: int, batch_seqs: int,
                 device: torch.device, compile_fn: bool = False, tokens: Tensor | None = None) -> None:
        if not 0 < stride <= seq_len:
            raise ValueError(f"stride {stride} must be in [1, {seq_len}]")
        self.model = model
        self.seq_len, self.stride, self.batch_seqs = seq_len, stride, batch_seqs
        self.context = seq_len - stride
        self.total = val_tokens.numel() - 1
        self.device = device
        self.tokens = tokens if tokens is not None else device_tokens(val_tokens, device)
        self.luts = luts
        self.starts = window_starts(self.total, seq_len, stride)
        self._batch_fn = self._batch_sums
        if compile_fn:
            self._batch_fn = torch.compile(self._batch_sums, dynamic=False, fullgraph=True)

    # -- the compiled part: one batch of full-length windows
    def _batch_sums(self, ws: Tensor) -> Tensor:
        seq_len, stride, context = self.seq_len, self.stride, self.context
        offsets = torch.arange(seq_len + 1, device=ws.device)
        tok = self.tokens[(ws[:, None] + offsets).clamp_max(self.total)].long()
        x = tok[:, :seq_len]
        logits = self.model.logits(self.model.hidden(x)[:, context:])
        prev, tgt = x[:, context:], tok[:, context + 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), reduction="none")
        valid = ((ws[:, None] + context + offsets[:stride]) < self.total).reshape(-1)
        positions = (ws[:, None] + context + 1 + offsets[:stride]).clamp_max(self.total)  # the targets' indices
        nbytes = self.luts.count_bytes(prev, tgt, positions).reshape(-1)
        zero = torch.zeros((), dtype=torch.float64, device=ws.device)
        return torch.stack((torch.where(valid, nll.double(), zero).sum(), valid.double().sum(),
                            torch.where(valid, nbytes.double(), zero).sum()))

    def _head_sums(self) -> Tensor:
        """The first window's positions before its last `stride` (scored from its own start)."""
        wlen = min(self.seq_len, self.total)
        count = min(self.context, wlen)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        if count <= 0:
            return sums
        tok = self.tokens[:wlen + 1].long()
        x, y = tok[None, :wlen], tok[None, 1:]
        logits = self.model.logits(self.model.hidden(x)[:, :count])
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y[0, :count], reduction="none")
        sums[0] = nll.double().sum()
        sums[1] = count
        positions = torch.arange(1, count + 1, device=self.device)
        sums[2] = self.luts.count_bytes(x[0, :count], y[0, :count], positions).double().sum()
        return sums

    def prime(self) -> None:
        """Compile the batch function by scoring one batch of padding windows (reads only the final token)."""
        with torch.inference_mode():
            self._batch_fn(torch.full((self.batch_seqs,), self.total, dtype=torch.int64, device=self.device))

    # -- scoring
    def padded(self, starts: np.ndarray) -> np.ndarray:
        """Window starts as (batches, batch_seqs), padded with windows past the end (fully masked)."""
        n = len(starts)
        out = np.full(-(-n // self.batch_seqs) * self.batch_seqs, self.total, dtype=np.int64)
        out[:n] = starts
        return out.reshape(-1, self.batch_seqs)

    def score(self, starts: np.ndarray) -> Tensor:
        """Float64 (loss, targets, bytes) of these windows (window 0's head included when it is one of them)."""
        include_head = len(starts) > 0 and int(starts[0]) == 0
        with torch.inference_mode():  # the compiled scorer's guards expect inference tensors (see prime)
            batches = torch.from_numpy(self.padded(starts)).to(self.device)
        return self.score_batches(batches, include_head)

    def score_batches(self, batches: Tensor, include_head: bool) -> Tensor:
        """Sums over a (batches, batch_seqs) device tensor of window starts; call under torch.inference_mode."""
        sums = self._head_sums() if include_head else torch.zeros(3, dtype=torch.float64, device=self.device)
        for row in batches:  # no host sync: each batch's sums are added on the device
            sums += self._batch_fn(row)
        return sums

    def rank_sums(self, rank: int, world_size: int) -> Tensor:
        """This rank's share of all windows (contiguous), scored."""
        lo, hi = rank_span(len(self.starts), rank, world_size)
        with torch.inference_mode():
            return self.score(self.starts[lo:hi]).clone()

    def evaluate(self, rt: Runtime) -> EvalResult:
        rt.sync()
        start = time.perf_counter()
        sums = ScoreSums(self.device)
        sums.sums = self.rank_sums(rt.rank, rt.world_size)
        return sums.result(rt, start)
