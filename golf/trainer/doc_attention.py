"""Document-isolated attention (DOC_ATTENTION=1): a token attends only to earlier tokens of its own document.

Documents are the spans that start at a BOS token (the challenge's shards put one before every document). The layout
is derived from the token ids inside the forward, so every stage that calls the model (training, validation, sliding
window, TTT) isolates documents with no extra plumbing. A segment is a document cut into pieces of at most `span`
tokens (the records cap one attention span at the training sequence length); RoPE positions restart at 0 in each
segment, so a document scores exactly as if it were run alone.

Kernels (DOC_ATTENTION_KERNEL; auto: sdpa). Both cut a row into blocks of `span` queries,
each attending to its own block and the one before it (a segment of at most `span` tokens never reaches further
back), so the mask costs T x 2·span, never T x T (a packed training row is TRAIN_BATCH_TOKENS / 8 tokens on one GPU):
- flex: FlexAttention with a block mask (only the 128 x 128 tiles a segment touches are computed); blocks padded to
  a multiple of 128; a row no longer than `span` is one block with no previous one. Inside torch.compile the mask
  and the kernel are part of the graph; called eagerly on CUDA (GPTQ's calibration forwards) the kernel goes
  through its own torch.compile, since uncompiled flex attention materializes every score.
- sdpa: exact SDPA with a dense mask of span x 2·span per block (span x span where a row is one block), key/value
  heads repeated to the query heads so that a fused kernel, not SDPA's math backend, takes the mask.
auto is sdpa on every device: on an H200 (torch 2.11) compiled flex disagreed with sdpa by up to 4.8 on unit-normal
inputs at evaluation shapes and crashed pr1855's evaluation graph with an illegal memory access
(bench/results/flex_eval_check_h200_2026-12-02.json), while both equal each document run alone on the CPU.
flex, asked for by name, is checked against sdpa on CUDA at the run's own shapes before training (check_flex);
where they disagree the run uses sdpa and logs why.

The packing loader serves each micro-batch as one row of TRAIN_BATCH_TOKENS / (ranks x micro-steps) tokens
(the same tokens, in the same order, as the row loader), so documents are cut only at the `span` cap, not at
arbitrary row boundaries.
"""

from __future__ import annotations

import time
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
    mask: Any = None  # the kernel's mask (a FlexMask for flex, a dense bool tensor for sdpa)


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


KERNELS = ("auto", "flex", "sdpa")
FLEX_TILE = 128  # FlexAttention's block-mask tile (its default BLOCK_SIZE)


def mask_kernel(requested: str, device: torch.device) -> str:
    """The kernel DOC_ATTENTION_KERNEL=`requested` runs on `device` (auto: sdpa, see the module's docstring)."""
    return "sdpa" if requested == "auto" else requested


KERNEL_LOG_NAMES = {"flex": "flex_block_mask", "sdpa": "blockwise_sdpa"}
FLEX_CHECK_TOLERANCE = 0.05  # bf16 outputs of the two kernels on unit-normal inputs agree to ~1e-2; broken flex: 4+


@dataclass(frozen=True)
class FlexCheck:
    """flex against sdpa at each (rows, tokens, span) shape a run attends at: the worst |difference| and where."""

    max_abs_diff: float
    worst_shape: tuple[int, int, int]
    seconds: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= FLEX_CHECK_TOLERANCE  # a NaN fails too

    def line(self) -> str:
        rows, tokens, span = self.worst_shape
        verdict = "passed" if self.passed else "failed"
        return (f"doc_attention:flex_check:{verdict} max_abs_diff:{self.max_abs_diff:.4g} "
                f"tolerance:{FLEX_CHECK_TOLERANCE:g} worst_shape:{rows}x{tokens}/span{span} time:{self.seconds:.1f}s")


def random_documents(rows: int, tokens: int, generator: torch.Generator) -> Tensor:
    """(rows, tokens) token ids with a BOS every 300-900 tokens (the first one within 300)."""
    ids = torch.randint(2, 1000, (rows, tokens), generator=generator)
    for r in range(rows):
        pos = int(torch.randint(0, 300, (1,), generator=generator))
        while pos < tokens:
            ids[r, pos] = BOS_ID
            pos += int(torch.randint(300, 900, (1,), generator=generator))
    return ids


def kernel_disagreement(rows: int, tokens: int, span: int, heads: int, kv_heads: int, head_dim: int,
                        device: torch.device, dtype: torch.dtype, compiled: bool, seed: int = 0,
                        flex_attend: Any = None) -> float:
    """max |flex - sdpa| of document-isolated attention over one random batch of documents, flex compiled as the
    trainer's graphs compile it (or eager). `flex_attend` replaces the flex side (tests)."""
    gen = torch.Generator().manual_seed(seed)
    ids = random_documents(rows, tokens, gen).to(device)
    q = torch.randn(rows, tokens, heads, head_dim, generator=gen).to(device, dtype)
    k = torch.randn(rows, tokens, kv_heads, head_dim, generator=gen).to(device, dtype)
    v = torch.randn(rows, tokens, kv_heads, head_dim, generator=gen).to(device, dtype)

    def attend(ids: Tensor, q: Tensor, k: Tensor, v: Tensor, kernel: str) -> Tensor:
        return isolated_attention(q, k, v, with_mask(layout(ids, span), ids.device, kernel))

    flex = flex_attend or (torch.compile(attend, dynamic=False) if compiled else attend)
    with torch.no_grad():
        got = flex(ids, q, k, v, "flex").float()
        want = attend(ids, q, k, v, "sdpa").float()
        diff = (got - want).abs().max()
    return float(diff) if bool(torch.isfinite(diff)) else float("inf")


def check_flex(shapes: list[tuple[int, int, int]], heads: int, kv_heads: int, head_dim: int, device: torch.device,
               dtype: torch.dtype, compiled: bool, flex_attend: Any = None) -> FlexCheck:
    """kernel_disagreement at every (rows, tokens, span) shape; an error inside flex counts as a disagreement."""
    start = time.perf_counter()
    worst, where = -1.0, shapes[0]
    for shape in dict.fromkeys(shapes):
        try:
            diff = kernel_disagreement(*shape, heads, kv_heads, head_dim, device, dtype, compiled,
                                       flex_attend=flex_attend)
        except Exception:  # noqa: BLE001 -- a flex kernel that does not compile or run here is a failed check
            diff = float("inf")
        if diff > worst:
            worst, where = diff, shape
        if diff > FLEX_CHECK_TOLERANCE:
            break
    return FlexCheck(worst, where, time.perf_counter() - start)


def with_mask(lay: DocLayout, device: torch.device, kernel: str = "auto") -> DocLayout:
    """Attach the attention mask of the layout for the kernel (DOC_ATTENTION_KERNEL) that runs on `device`."""
    if mask_kernel(kernel, device) == "flex":
        lay.mask = _flex_block_mask(lay.segment, lay.span)
    else:
        lay.mask = _blockwise_mask(lay.segment, lay.span)
    return lay


def _pad_to(x: Tensor, length: int, dim: int, value: float = 0) -> Tensor:
    extra = length - x.size(dim)
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - dim) + [0, extra]
    return F.pad(x, pad, value=value)


# ---------------------------------------------------------------------------------------------- row blocks
@dataclass(frozen=True)
class RowBlocks:
    """How a (B, T) row set is cut for both kernels: nb blocks of `span` queries per row, each padded to `rows`
    (a multiple of the kernel's tile: 128 for flex, 1 for sdpa); keys are the previous block and this one (2·rows),
    or this one alone (nb = 1: a row no longer than the span, as evaluation rows are)."""

    t: int
    span: int
    nb: int
    rows: int

    @classmethod
    def of(cls, t: int, span: int, tile: int = 1) -> RowBlocks:
        span = min(span, t)
        nb = -(-t // span)
        return cls(t, span, nb, -(-span // tile) * tile)

    @property
    def with_previous(self) -> bool:
        return self.nb > 1

    def queries(self, x: Tensor, value: float = 0) -> Tensor:
        """(B, T, ...) -> (B·nb, rows, ...): each block's tokens, then padding. The padding comes last, on the
        4-D blocks (inductor's flex lowering reads its inputs' buffer as (B, H, T, D))."""
        x = _pad_to(x, self.nb * self.span, 1, value)
        return _pad_to(x.reshape(x.size(0) * self.nb, self.span, *x.shape[2:]), self.rows, 1, value)

    def keys(self, x: Tensor, value: float = 0) -> Tensor:
        """(B, T, ...) -> (B·nb, rows or 2·rows, ...): block i-1 (padding before a row's first), then block i."""
        blocks = self.queries(x, value)
        if not self.with_previous:
            return blocks
        shifted = torch.cat((torch.full_like(blocks[:1], value), blocks[:-1]))  # block j-1 of the flat order
        first = (torch.arange(blocks.size(0), device=x.device) % self.nb == 0).view(-1, *[1] * (blocks.dim() - 1))
        prev = torch.where(first, torch.full_like(shifted, value), shifted)  # a row's first block has none
        return torch.cat((prev, blocks), dim=1)

    def unblock(self, y: Tensor, b: int) -> Tensor:
        """(B·nb, rows, ...) -> (B, T, ...)."""
        y = y.unflatten(0, (b, self.nb))[:, :, :self.span]
        return y.flatten(1, 2)[:, :self.t]


@dataclass
class FlexMask:
    block_mask: Any  # torch.nn.attention.flex_attention.BlockMask over (B·nb, rows, key length)
    blocks: RowBlocks


_PAD_SEGMENT = -1  # padding rows and keys: a segment of their own (every padding query sees itself, never a token)


def _blockwise_mask(segment: Tensor, span: int) -> Tensor:
    """(B·nb, 1, span, 2·span) bool for sdpa: query block i against key blocks i-1 and i (same segment, not in the
    future); (B, 1, span, span) where a row is one block."""
    blocks = RowBlocks.of(segment.size(1), span)
    q_seg = blocks.queries(segment, _PAD_SEGMENT)  # (B·nb, span)
    k_seg = blocks.keys(segment, _PAD_SEGMENT)  # (B·nb, span or 2·span)
    offset = blocks.rows if blocks.with_previous else 0  # key index of query 0's own position
    q_pos = torch.arange(blocks.rows, device=segment.device)[:, None] + offset
    k_pos = torch.arange(k_seg.size(1), device=segment.device)[None, :]
    return ((q_seg[:, :, None] == k_seg[:, None, :]) & (k_pos <= q_pos))[:, None]


def _flex_block_mask(segment: Tensor, span: int) -> FlexMask:
    from torch.nn.attention.flex_attention import create_block_mask

    blocks = RowBlocks.of(segment.size(1), span, FLEX_TILE)
    q_seg = blocks.queries(segment, _PAD_SEGMENT)  # (B·nb, rows)
    if blocks.with_previous:
        k_seg = blocks.keys(segment, _PAD_SEGMENT)  # (B·nb, 2·rows): block i-1, then block i
        offset = blocks.rows  # key index of query 0's own position

        def same_segment_causal(bi: Tensor, _h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return (q_seg[bi, qi] == k_seg[bi, ki]) & (ki <= qi + offset)
    else:  # one block: keys are the queries' own tokens (one captured tensor, not two equal ones)
        k_seg = q_seg

        def same_segment_causal(bi: Tensor, _h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
            return (q_seg[bi, qi] == q_seg[bi, ki]) & (ki <= qi)

    mask = create_block_mask(same_segment_causal, q_seg.size(0), None, q_seg.size(1), k_seg.size(1),
                             device=segment.device, BLOCK_SIZE=FLEX_TILE)
    return FlexMask(mask, blocks)


_COMPILED_FLEX: list[Any] = []


def _flex_kernel(device: torch.device) -> Any:
    """flex_attention itself inside torch.compile (the graph compiles it); else, on CUDA, a compiled copy (eager
    flex attention materializes the full score matrix); on the CPU eagerly (tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    if not _COMPILED_FLEX:
        _COMPILED_FLEX.append(torch.compile(flex_attention, dynamic=False))
    return _COMPILED_FLEX[0]


def _flex_attention(q: Tensor, k: Tensor, v: Tensor, mask: FlexMask) -> Tensor:
    blocks, b = mask.blocks, q.size(0)
    qb = blocks.queries(q).transpose(1, 2)  # (B·nb, H, rows, D)
    kb, vb = blocks.keys(k).transpose(1, 2), blocks.keys(v).transpose(1, 2)
    y = _flex_kernel(q.device)(qb, kb, vb, block_mask=mask.block_mask, enable_gqa=k.size(2) != q.size(2))
    return blocks.unblock(y.transpose(1, 2), b)  # type: ignore[union-attr]


def isolated_attention(q: Tensor, k: Tensor, v: Tensor, lay: DocLayout) -> Tensor:
    """Attention of q (B, T, H, D) over k, v (B, T, Hkv, D) within segments; returns (B, T, H, D)."""
    if isinstance(lay.mask, FlexMask):
        return _flex_attention(q, k, v, lay.mask)
    h = q.size(2)
    if k.size(2) != h:
        # SDPA with a mask and enable_gqa runs its math backend (every score materialized in fp32): each query
        # head gets its key/value head here instead (enable_gqa's order), so the memory-efficient kernel takes it
        k, v = k.repeat_interleave(h // k.size(2), dim=2), v.repeat_interleave(h // v.size(2), dim=2)
    blocks = RowBlocks.of(q.size(1), lay.span)
    qb = blocks.queries(q).transpose(1, 2)  # (B·nb, H, span, D)
    kb, vb = blocks.keys(k).transpose(1, 2), blocks.keys(v).transpose(1, 2)  # (B·nb, H, span or 2·span, D)
    y = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=lay.mask)
    return blocks.unblock(y.transpose(1, 2), q.size(0))


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
