"""GPTQ calibration on sequences the model generates itself (GPTQ_CALIB_SEQS, as #1550): no training data is read
after the clock stops, and the Hessians see the distribution the model actually produces.

Each rank samples its share of GPTQ_CALIB_SEQS sequences of TRAIN_SEQ_LEN tokens from the model (temperature 1,
starting from BOS, a seeded generator per rank: reproducible), in batches of EVAL_BATCH_SEQS; the Hessians are then
collected on them exactly as on training batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .doc_attention import BOS_ID


@torch.inference_mode()
def generate_sequences(model: torch.nn.Module, count: int, seq_len: int, batch: int, device: torch.device,
                       seed: int) -> list[Tensor]:
    """`count` sampled sequences of `seq_len` tokens (BOS first), in batches of at most `batch` rows."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for first in range(0, count, batch):
        rows = min(batch, count - first)
        ids = torch.full((rows, 1), BOS_ID, dtype=torch.long, device=device)
        for _ in range(seq_len - 1):
            logits = model.forward_logits(ids)[:, -1].float()
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
            ids = torch.cat([ids, nxt], dim=1)
        out.append(ids)
    return out


def rank_share(count: int, rank: int, world_size: int) -> int:
    """This rank's number of sequences (the shares sum to `count`)."""
    return count // world_size + (1 if rank < count % world_size else 0)
