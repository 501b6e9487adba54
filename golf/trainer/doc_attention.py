"""Document-isolated attention (DOC_ATTENTION=1): a token attends only to earlier tokens of its own document.

Documents are the spans that start at a BOS token (the challenge's shards put one before every document). The layout
is derived from the token ids inside the forward, so every stage that calls the model (training, validation, sliding
window, TTT) isolates documents with no extra plumbing. A segment is a document cut into pieces of at most `span`
tokens (the records cap one attention span at the training sequence length); RoPE positions restart at 0 in each
segment, so a document scores exactly as if it were run alone.

Kernels: FlexAttention with a block mask on CUDA (compiled with the model: only the blocks a segment touches are
computed); elsewhere an exact blockwise SDPA: queries in blocks of `span`, each attending to its own block and the one
before it (a segment of at most `span` tokens never reaches further back), with a dense mask of span x 2·span.

The packing loader serves each micro-batch as one row of TRAIN_BATCH_TOKENS / (ranks x micro-steps) tokens
(the same tokens, in the same order, as the row loader), so documents are cut only at the `span` cap, not at
arbitrary row boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import ShuffledSequences, TrainLoader
from .shards import shard_files

BOS_ID = 1  # SentencePiece bos_id in the challenge's tokenizers; every document starts with it


@dataclass
class DocLayout:
    """Where each token of a (B, T) batch sits: its segment, its position in it, whether a document starts there."""

    segment: Tensor  # (B, T) int64, increasing along each row
    position: Tensor  # (B, T) int64, 0 at each segment start
    doc_start: Tensor  # (B, T) bool: a BOS or the first token of the row (no earlier token of its document)
    span: int  # longest segment
    mask: Any = None  # the kernel's mask (a FlexAttention BlockMask on CUDA, a dense bool tensor elsewhere)


def segment_span(seq_len: int, hp: Any) -> int:
    """The longest segment for rows of `seq_len` tokens: the row itself when it is no longer than any configured
    sequence length (evaluation rows and windows), else TRAIN_SEQ_LEN (the packed training row)."""
    if seq_len <= max(hp.train_seq_len, hp.eval_seq_len, hp.ttt_seq_len):
        return seq_len
    return hp.train_seq_len


def layout(ids: Tensor, span: int) -> DocLayout:
    """The document layout of a (B, T) batch of token ids."""
    b, t = ids.shape
    idx = torch.arange(t, device=ids.device).expand(b, t)
    is_bos = ids == BOS_ID
    doc_start = is_bos.clone()
    doc_start[:, 0] = True
    # the most recent document start at or before each position
    last_start = torch.where(doc_start, idx, torch.zeros_like(idx)).cummax(dim=1).values
    in_doc = idx - last_start
    seg_start = doc_start | (in_doc % span == 0)
    return DocLayout(seg_start.long().cumsum(dim=1), in_doc % span, doc_start, span)


def with_mask(lay: DocLayout, heads: int, device: torch.device) -> DocLayout:
    """Attach the attention mask of the layout for the kernel that runs on `device`."""
    if device.type == "cuda":
        lay.mask = _block_mask(lay.segment, heads)
    else:
        lay.mask = _blockwise_mask(lay.segment, lay.span)
    return lay


def _block_mask(segment: Tensor, heads: int) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    b, t = segment.shape

    def same_doc_causal(bi: Tensor, _h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        return (segment[bi, qi] == segment[bi, ki]) & (ki <= qi)

    return create_block_mask(same_doc_causal, b, None, t, t, device=segment.device)


def _pad_to(x: Tensor, length: int, dim: int, value: float = 0) -> Tensor:
    extra = length - x.size(dim)
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
    return F.pad(x, pad, value=value)


def _blockwise_mask(segment: Tensor, span: int) -> Tensor:
    """(B·nb, 1, span, 2·span) bool: query block i against key blocks i-1 and i (same segment, not in the future)."""
    b, t = segment.shape
    nb = -(-t // span)
    seg = _pad_to(segment, nb * span, 1, value=-1).view(b, nb, span)
    prev = F.pad(seg, (0, 0, 1, 0), value=-2)[:, :-1]  # block i-1 (none before the first: matches nothing)
    keys = torch.cat((prev, seg), dim=2)  # (b, nb, 2·span)
    q_pos = torch.arange(span, device=segment.device)[:, None] + span
    k_pos = torch.arange(2 * span, device=segment.device)[None, :]
    allowed = (seg[..., :, None] == keys[..., None, :]) & (k_pos <= q_pos)
    return allowed.view(b * nb, 1, span, 2 * span)


def isolated_attention(q: Tensor, k: Tensor, v: Tensor, lay: DocLayout) -> Tensor:
    """Attention of q (B, T, H, D) over k, v (B, T, Hkv, D) within segments; returns (B, T, H, D)."""
    if not isinstance(lay.mask, Tensor):
        from torch.nn.attention.flex_attention import flex_attention

        y = flex_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=lay.mask,
                           enable_gqa=k.size(2) != q.size(2))
        return y.transpose(1, 2)  # type: ignore[union-attr]
    b, t, h, d = q.shape
    span = lay.span
    nb = -(-t // span)

    def blocks(x: Tensor) -> Tensor:  # (B, T, h, D) -> (B·nb, h, span, D)
        x = _pad_to(x, nb * span, 1).view(b, nb, span, x.size(2), d)
        return x.reshape(b * nb, span, x.size(3), d).transpose(1, 2)

    def with_previous(x: Tensor) -> Tensor:  # (B, T, h, D) -> (B·nb, h, 2·span, D): block i-1 then block i
        x = _pad_to(x, nb * span, 1).view(b, nb, span, x.size(2), d)
        prev = F.pad(x, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
        both = torch.cat((prev, x), dim=2)
        return both.reshape(b * nb, 2 * span, x.size(3), d).transpose(1, 2)

    y = F.scaled_dot_product_attention(blocks(q), with_previous(k), with_previous(v), attn_mask=lay.mask,
                                       enable_gqa=k.size(2) != q.size(2))
    return y.transpose(1, 2).reshape(b, nb * span, h, d)[:, :t]


# ---------------------------------------------------------------------------------------------- the packing loader
class DocumentPackingLoader(TrainLoader):
    """The row loader's tokens, each micro-batch served as ONE packed row (1, tokens per micro-step).

    Attention inside the row is isolated per document by the model (DOC_ATTENTION=1), so packing documents back to
    back wastes no token on padding and cuts a document only where it exceeds TRAIN_SEQ_LEN.
    """

    def _host_batch(self, global_tokens: int, seq_len: int, grad_accum: int) -> tuple[Tensor, Tensor]:
        x, y = super()._host_batch(global_tokens, seq_len, grad_accum)
        if self.shuffled is not None:  # rows of unrelated text (TRAIN_LOADER=shuffled): packing would join them
            return x, y
        return x.reshape(1, -1), y.reshape(1, -1)


def make_train_loader(hp: Any, rank: int, world_size: int, device: torch.device) -> TrainLoader:
    """The training loader for these knobs: packed rows with DOC_ATTENTION, else the challenge's rows; their
    tokens streamed in order, or shuffled sequences (TRAIN_LOADER=shuffled)."""
    cls = DocumentPackingLoader if hp.doc_attention else TrainLoader
    shuffled = None
    if hp.train_loader == "shuffled":
        shuffled = ShuffledSequences(shard_files(hp.data_path, "train"), hp.train_seq_len, rank, world_size, hp.seed)
    return cls(hp.data_path, rank, world_size, device, shuffled=shuffled)
