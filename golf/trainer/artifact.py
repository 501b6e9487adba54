"""The artifact: pruning, per-row quantization (rounding, clip search, SDClip, full-Hessian GPTQ), the LQER
correction, per-group compression, and the container that a submission ships as `final_model.<quant>.ptz`.

Container layout (all integers little-endian):
    b"GOLF" | version u8 | compressor id u8 | flags u8 (bit 0: byte shuffle) | level u8 | header length u32
    | header (compressed JSON: tensor table, group section lengths, pergroup stream tables) | one section per group.
Each group (embeddings, attention, mlp, scalars, other, lqer) is compressed on its own, so the byte breakdown is
exact: the groups' section lengths plus the overhead (the fixed prefix and the header) are the file size.
Version 1 (before the lqer group and pergroup) is still read.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .compressors import (
    COMPRESSORS,
    STRONGEST_LEVEL,
    compress,
    compress_level,
    decompress,
    shuffle_bytes,
    unshuffle_bytes,
)
from .hparams import Hyperparameters
from .loglines import bytes_breakdown_line
from .lqer import LQERSettings, QFactor, lqer_correction, worst_tensors
from .lqer import correction as lqer_delta
from .model import GPT, CastedLinear, is_control_tensor
from .pergroup import Piece, pergroup_decode, pergroup_encode
from .sdclip import sdclip_row_clip

PASSTHROUGH_MAX_NUMEL = 65_536  # tensors this small are stored as floats (the challenge's baseline rule)
DEFAULT_CLIP_QUANTILE = 0.9999984  # the baseline's per-row clip when no search is made
CLIP_SEARCH_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
GROUPS = ("embeddings", "attention", "mlp", "scalars", "other", "lqer")
_ART_V1_GROUPS = GROUPS[:5]  # version 1 containers had no lqer section
EMBEDDING_NAMES = frozenset({"tok_emb.weight", "lm_head.weight", "bigram.embed.weight", "ve.embed.weight"})
FLOAT_BITS = 16  # EMBED_BITS=16: keep the tables in fp16

PERGROUP = "pergroup"  # COMPRESSOR=pergroup: each stream by its own best codec (pergroup.py); id after COMPRESSORS
_ART_MAGIC = b"GOLF"
_ART_VERSION = 2
_ART_PREFIX = struct.Struct("<4sBBBBI")
_ART_DTYPES = {"int8": "<i1", "int16": "<i2", "float16": "<f2", "float32": "<f4"}
_ART_TORCH_DTYPES = {"int8": torch.int8, "int16": torch.int16, "float16": torch.float16, "float32": torch.float32}


# ---------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class ArtifactConfig:
    """Everything that decides the artifact's bytes (the quant knobs; defaults live in hparams.py only)."""

    group_bits: dict[str, int]  # embeddings, attention, mlp, other -> bits (16: kept fp16)
    clip_search: bool
    use_gptq: bool
    gptq_block_size: int
    gptq_damp: float
    prune_ratio: float
    compressor: str
    level: int  # 0: the compressor's strongest level
    byte_shuffle: bool
    clip_sigmas: dict[str, float]  # SDClip's k per group (0: the quantile clip)
    hessian_clip_lambda: float  # the Hessian-aware widening under GPTQ (0: plain SDClip)
    lqer: LQERSettings | None  # None: no LQER correction

    @classmethod
    def from_hp(cls, hp: Hyperparameters) -> ArtifactConfig:
        bits = {"embeddings": hp.embed_bits, "attention": hp.attn_bits, "mlp": hp.mlp_bits, "other": hp.matrix_bits}
        sigmas = {"embeddings": hp.embed_clip_sigmas, "attention": hp.attn_clip_sigmas, "mlp": hp.mlp_clip_sigmas,
                  "other": hp.matrix_clip_sigmas}
        lqer = LQERSettings(rank=hp.lqer_rank, top_k=hp.lqer_top_k, factor_bits=hp.lqer_factor_bits,
                            asym=hp.lqer_asym_enabled, group=hp.lqer_asym_group) if hp.lqer_enabled else None
        return cls(group_bits=bits, clip_search=hp.clip_search, use_gptq=hp.use_gptq,
                   gptq_block_size=hp.gptq_block_size, gptq_damp=hp.gptq_damp, prune_ratio=hp.prune_ratio,
                   compressor=hp.compressor, level=hp.compress_level, byte_shuffle=hp.byte_shuffle,
                   clip_sigmas=sigmas, hessian_clip_lambda=hp.hessian_clip_lambda, lqer=lqer)

    @property
    def effective_level(self) -> int:
        return 0 if self.compressor == PERGROUP else compress_level(self.compressor, self.level)

    def clip_quantiles(self, group: str) -> tuple[float, ...]:
        """The quantile clip candidates of a group: the search's, none under SDClip alone, else the baseline's."""
        if self.clip_search:
            return CLIP_SEARCH_QUANTILES
        return () if self.clip_sigmas.get(group, 0.0) > 0 else (DEFAULT_CLIP_QUANTILE,)

    def extra_clips(self, name: str, weight: Tensor, hessian: Tensor | None) -> list[Tensor]:
        """SDClip's per-row clip as a candidate where the group has a k (Hessian-aware for block matrices)."""
        group = tensor_group(name, weight)
        sigmas = self.clip_sigmas.get(group, 0.0)
        if sigmas <= 0:
            return []
        lam = self.hessian_clip_lambda if group != "embeddings" else 0.0  # embeddings: the plain form (#1412)
        return [sdclip_row_clip(weight, sigmas, hessian, lam)]


def quant_label(hp: Hyperparameters) -> str:
    """`int8`, `int6`, ... or `mixed_int5_int6`: the distinct bits of the block matrices (MATRIX/MLP/ATTN_BITS).

    Embeddings (EMBED_BITS) are not part of the label, as in the records (int6 blocks with int8 embeddings: int6).
    """
    bits = sorted({hp.matrix_bits, hp.mlp_bits, hp.attn_bits})
    if len(bits) == 1:
        return f"int{bits[0]}"
    return "mixed_" + "_".join(f"int{b}" for b in bits)


def compressor_label(compressor: str, level: int, shuffle: bool) -> str:
    """`zlib`, `zstd-22`, `lzma`, `lzma-6`, `brotli`, `pergroup`, ... plus `-shuffle` with BYTE_SHUFFLE=1."""
    if compressor == PERGROUP:
        return compressor + ("-shuffle" if shuffle else "")
    used = compress_level(compressor, level)
    if compressor == "zstd" or used != STRONGEST_LEVEL[compressor]:
        label = f"{compressor}-{used}"
    else:
        label = compressor
    return label + ("-shuffle" if shuffle else "")


def gptq_reserve_line(hp: Hyperparameters) -> str | None:
    """`gptq:reserving Ns, effective=Mms` when part of the wallclock cap is set aside for GPTQ calibration."""
    if hp.gptq_reserve_seconds <= 0 or hp.max_wallclock_seconds <= 0:
        return None
    effective_ms = 1000.0 * (hp.max_wallclock_seconds - hp.gptq_reserve_seconds)
    return f"gptq:reserving {hp.gptq_reserve_seconds:g}s, effective={effective_ms:.0f}ms"


# ---------------------------------------------------------------------------------------------- tensor roles
def tensor_group(name: str, tensor: Tensor) -> str:
    """embeddings | attention | mlp | scalars (control tensors) | other (bigram.proj, ve.proj, ...)."""
    if name in EMBEDDING_NAMES:
        return "embeddings"
    if is_control_tensor(name, tensor):
        return "scalars"
    if ".attn." in name:
        return "attention"
    if ".mlp." in name:
        return "mlp"
    return "other"


def tensor_bits(name: str, tensor: Tensor, cfg: ArtifactConfig) -> int:
    """Bits of a quantized tensor, or 0 for one stored as floats (small, control, or 16 bits)."""
    group = tensor_group(name, tensor)
    if group == "scalars" or tensor.ndim != 2 or tensor.numel() <= PASSTHROUGH_MAX_NUMEL:
        return 0
    bits = cfg.group_bits[group]
    return 0 if bits >= FLOAT_BITS else bits


# ---------------------------------------------------------------------------------------------- pruning
def prune_mask(weight: Tensor, ratio: float) -> Tensor | None:
    """Keep-mask that zeroes the `ratio` smallest-|w| entries of a matrix (exactly that many; None: keep all)."""
    count = int(ratio * weight.numel())
    if count <= 0:
        return None
    order = torch.argsort(weight.detach().abs().flatten())
    keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    keep[order[:count]] = False
    return keep.view_as(weight)


def prunable(name: str, tensor: Tensor) -> bool:
    return tensor.ndim == 2 and tensor.numel() > PASSTHROUGH_MAX_NUMEL and not is_control_tensor(name, tensor)


# ---------------------------------------------------------------------------------------------- quantization
def row_quantile(sorted_abs: Tensor, q: float) -> Tensor:
    """Per-row quantile of rows sorted ascending, interpolated linearly (torch.quantile's default)."""
    n = sorted_abs.size(1)
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return sorted_abs[:, lo] * (1.0 - frac) + sorted_abs[:, hi] * frac


def row_scales(clip: Tensor, qmax: int) -> Tensor:
    """fp16 per-row scales with qmax·scale >= clip (rounded up where fp16 rounding fell short)."""
    want = (clip.float() / qmax).clamp(2.0 ** -24, 65504.0)
    scale = want.half()
    up = torch.nextafter(scale, torch.full_like(scale, 65504.0))
    return torch.where(scale.float() < want, up, scale)


def _art_round(w: Tensor, scale: Tensor, qmax: int) -> Tensor:
    return torch.clamp(torch.round(w / scale), -qmax, qmax)


def clip_candidates(w: Tensor, quantiles: Iterable[float], clips: Iterable[Tensor] = ()) -> list[Tensor]:
    """Per-row clips to try: each quantile of the row's |w|, then the given clips (SDClip's)."""
    quantiles = tuple(quantiles)
    out = []
    if quantiles:
        sorted_abs = w.abs().sort(dim=1).values
        out = [row_quantile(sorted_abs, q) for q in quantiles]
    return out + [c.to(w.device).float() for c in clips]


def quantize_rows(weight: Tensor, bits: int, quantiles: Iterable[float] = (DEFAULT_CLIP_QUANTILE,),
                  keep: Tensor | None = None, clips: Iterable[Tensor] = ()) -> tuple[Tensor, Tensor]:
    """Per-row symmetric rounding; with several clip candidates (quantiles, then `clips`) each row keeps the one of
    lowest squared error.

    Returns (q as float integers in [-qmax, qmax], fp16 scales (rows,)). Pruned entries (keep False) are 0.
    """
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    best_q = best_s = best_err = None
    for clip in clip_candidates(w, quantiles, clips):
        scale = row_scales(clip, qmax)
        s = scale.float()[:, None]
        q = _art_round(w, s, qmax)
        if keep is not None:
            q = q * keep
        err = (q * s - w).square().sum(dim=1)
        if best_err is None:
            best_q, best_s, best_err = q, scale, err
            continue
        better = err < best_err
        best_q = torch.where(better[:, None], q, best_q)
        best_s = torch.where(better, scale, best_s)
        best_err = torch.minimum(err, best_err)
    assert best_q is not None and best_s is not None
    return best_q, best_s


GPTQ_BATCH_ELEMENTS = 1 << 28  # float32 elements of one batched GPTQ sweep (1 GiB): bounds its memory


@dataclass
class GPTQJob:
    """One matrix for GPTQ: weight (rows x cols), H = XᵀX of its inputs (cols x cols), optional keep-mask."""

    weight: Tensor
    hessian: Tensor
    keep: Tensor | None = None
    clips: tuple[Tensor, ...] = ()  # per-row clip candidates after the quantiles (SDClip)


def gptq_quantize(weight: Tensor, hessian: Tensor, bits: int, quantiles: Iterable[float] = (DEFAULT_CLIP_QUANTILE,),
                  block_size: int = 128, damp: float = 0.01, keep: Tensor | None = None,
                  clips: Iterable[Tensor] = ()) -> tuple[Tensor, Tensor]:
    """Full-Hessian GPTQ of one matrix; see gptq_quantize_many."""
    return gptq_quantize_many([GPTQJob(weight, hessian, keep, tuple(clips))], bits, quantiles, block_size, damp)[0]


def gptq_quantize_many(jobs: list[GPTQJob], bits: int, quantiles: Iterable[float] = (DEFAULT_CLIP_QUANTILE,),
                       block_size: int = 128, damp: float = 0.01) -> list[tuple[Tensor, Tensor]]:
    """Full-Hessian GPTQ of several matrices with the same column count, swept together.

    Per matrix: damping GPTQ_DAMP·mean(diag H), columns visited by descending diag(H) in blocks, each column's
    rounding error spread over the later columns through the upper Cholesky factor of H⁻¹. Rows are independent
    given H, so every clip candidate runs as its own copy of the rows, and each row keeps the candidate of lowest
    output error ΔwᵀHΔw (undamped H). Pruned entries (keep False) are forced to 0, their error compensated too.
    The matrices form a batch (rows padded to the longest): the column sweep is a chain of small launches, and
    one sweep for many matrices costs about what one sweep for one matrix does.
    Returns (codes as float integers in [-qmax, qmax], fp16 row scales) per job.
    """
    quantiles = tuple(quantiles)
    if len({len(j.clips) for j in jobs}) > 1:
        raise ValueError("gptq_quantize_many: every job of a batch needs the same number of clip candidates")
    cols = jobs[0].weight.size(1)
    per_job = (len(quantiles) + len(jobs[0].clips)) * max(j.weight.size(0) for j in jobs) * cols
    step = max(1, GPTQ_BATCH_ELEMENTS // max(per_job, 1))
    out: list[tuple[Tensor, Tensor]] = []
    for first in range(0, len(jobs), step):
        out.extend(_art_gptq_batch(jobs[first:first + step], bits, quantiles, block_size, damp))
    return out


def _art_gptq_prepare(hessian: Tensor, damp: float) -> tuple[Tensor, Tensor, Tensor]:
    """(column order, upper Cholesky factor of the damped H⁻¹ in that order, undamped H in that order)."""
    h = hessian.detach().float().clone()
    dead = h.diagonal() <= 0
    h[dead, dead] = 1.0  # inputs that never fire: any value is as good; plain rounding via an identity row
    h_eval = h.clone()
    perm = torch.argsort(h.diagonal(), descending=True)
    h = h[perm][:, perm]
    mean_diag = float(h.diagonal().mean())
    eye = torch.eye(h.size(0), device=h.device)
    for attempt in range(8):  # a (numerically) singular H gets more damping until both factorizations succeed
        lam = damp if attempt == 0 else max(damp, 1e-6) * 10 ** attempt
        chol, info = torch.linalg.cholesky_ex(h + eye * (lam * mean_diag))
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(chol), upper=True)
            if int(info) == 0:
                break
    else:
        raise RuntimeError("GPTQ: the Hessian does not factor even with heavy damping")
    return perm, upper, h_eval[perm][:, perm]


def _art_gptq_batch(jobs: list[GPTQJob], bits: int, quantiles: tuple[float, ...], block_size: int,
                    damp: float) -> list[tuple[Tensor, Tensor]]:
    qmax = 2 ** (bits - 1) - 1
    k = len(quantiles) + len(jobs[0].clips)
    device = jobs[0].weight.device
    cols = jobs[0].weight.size(1)
    rows = max(j.weight.size(0) for j in jobs)
    work = torch.zeros(len(jobs), k * rows, cols, device=device)
    scale = torch.ones(len(jobs), k * rows, device=device)
    keep = torch.ones_like(work) if any(j.keep is not None for j in jobs) else None
    uppers, prepared = [], []
    for m, job in enumerate(jobs):
        w = job.weight.detach().float()
        n = w.size(0)
        perm, upper, h_eval = _art_gptq_prepare(job.hessian.to(device), damp)
        scales = torch.stack([row_scales(c, qmax) for c in clip_candidates(w, quantiles, job.clips)])  # (K, n)
        for c in range(k):
            work[m, c * rows:c * rows + n] = w[:, perm]
            scale[m, c * rows:c * rows + n] = scales[c].float()
            if keep is not None and job.keep is not None:
                keep[m, c * rows:c * rows + n] = job.keep[:, perm].float()
        uppers.append(upper)
        prepared.append((w, perm, h_eval, scales))
    q = _art_gptq_columns(work, torch.stack(uppers), scale, qmax, block_size, keep)
    results = []
    for m, (w, perm, h_eval, scales) in enumerate(prepared):
        n = w.size(0)
        q_m = q[m].view(k, rows, cols)[:, :n]  # (K, n, cols), permuted columns
        delta = q_m * scales.float()[:, :, None] - w[:, perm]
        err = ((delta @ h_eval) * delta).sum(dim=2)  # (K, n)
        best = err.argmin(dim=0)
        pick = torch.arange(n, device=device)
        results.append((q_m[best, pick][:, torch.argsort(perm)], scales[best, pick]))
    return results


def _art_gptq_columns(work: Tensor, upper: Tensor, scale: Tensor, qmax: int, block_size: int,
                      keep: Tensor | None) -> Tensor:
    """The GPTQ sweep over (permuted) columns of a batch (M, rows, cols); `work` is updated in place."""
    cols = work.size(2)
    q = torch.zeros_like(work)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        block = work[:, :, start:end].clone()
        errors = torch.zeros_like(block)
        u = upper[:, start:end, start:end]
        for i in range(end - start):
            col = block[:, :, i]
            qc = _art_round(col, scale, qmax)
            if keep is not None:
                qc = qc * keep[:, :, start + i]
            q[:, :, start + i] = qc
            err = (col - qc * scale) / u[:, i, i, None]
            block[:, :, i:] -= err[:, :, None] * u[:, None, i, i:]
            errors[:, :, i] = err
        if end < cols:
            work[:, :, end:] -= torch.bmm(errors, upper[:, start:end, end:])
    return q


LQER_SUFFIXES = (".lqer_a", ".lqer_b")  # the two factors of a corrected weight, stored in the lqer group


@dataclass
class QTensor:
    """One stored tensor: integer codes + fp16 row scales, or a float passthrough; or an LQER factor (group lqer:
    codes with fp16 scales, and fp16 offsets when asymmetric)."""

    name: str
    group: str
    shape: tuple[int, ...]
    data: Tensor  # int8/int16 codes, or float16/float32 values (CPU)
    scale: Tensor | None = None  # fp16 (rows,) for codes; (rank, groups) for an asymmetric factor
    bits: int = 0
    zero: Tensor | None = None  # fp16 (rank, groups): an asymmetric LQER factor's offsets
    qgroup: int = 0  # an asymmetric LQER factor's group size (0: symmetric)

    def dequantize(self) -> Tensor:
        if self.scale is None:
            return self.data.float().reshape(self.shape)
        if self.group == "lqer":
            return QFactor(self.data, self.scale, self.zero, self.bits, self.qgroup).dequantize()
        return (self.data.float() * self.scale.float()[:, None]).reshape(self.shape)


@dataclass
class QuantStats:
    gptq: int = 0
    rounded: int = 0
    floats: int = 0
    pruned: int = 0
    bits: dict[str, list[int]] = field(default_factory=dict)
    quantize_s: float = 0.0
    compress_s: float = 0.0
    lqer: list[str] = field(default_factory=list)  # the weights that carry an LQER correction

    def line(self) -> str:
        bits = ",".join(f"{g}={'/'.join(map(str, sorted(set(b))))}" for g, b in sorted(self.bits.items()))
        lqer = f" lqer:{','.join(self.lqer)}" if self.lqer else ""
        return (f"quantized: gptq:{self.gptq} rounded:{self.rounded} float:{self.floats} pruned:{self.pruned} "
                f"bits:{bits or 'none'}{lqer} quantize_time:{self.quantize_s:.1f}s "
                f"compress_time:{self.compress_s:.1f}s")


def quantize_state(state: dict[str, Tensor], cfg: ArtifactConfig,
                   hessians: dict[str, Tensor] | None = None) -> tuple[list[QTensor], QuantStats]:
    """Quantize a state dict: prune, then GPTQ (where a Hessian exists) or rounding, floats for the rest."""
    out: dict[str, QTensor] = {}
    stats = QuantStats()
    # GPTQ batches: matrices with the same columns, bits and clip candidates sweep together
    gptq_groups: dict[tuple[int, int, tuple[float, ...], int], list[tuple[str, GPTQJob]]] = {}
    for name in sorted(state):
        t = state[name].detach()
        group = tensor_group(name, t)
        bits = tensor_bits(name, t, cfg)
        keep = prune_mask(t, cfg.prune_ratio) if cfg.prune_ratio > 0 and prunable(name, t) else None
        if keep is not None:
            stats.pruned += 1
        if bits == 0:
            values = t.float() * keep if keep is not None else t.float()
            dtype = torch.float32 if group == "scalars" else torch.float16
            out[name] = QTensor(name, group, tuple(t.shape), values.to(dtype).cpu().contiguous())
            stats.floats += 1
            continue
        stats.bits.setdefault(group, []).append(bits)
        hessian = hessians.get(name) if hessians else None
        quantiles = cfg.clip_quantiles(group)
        if cfg.use_gptq and hessian is not None:
            clips = tuple(cfg.extra_clips(name, t, hessian))
            key = (t.size(1), bits, quantiles, len(clips))
            gptq_groups.setdefault(key, []).append((name, GPTQJob(t, hessian, keep, clips)))
            continue
        q, scale = quantize_rows(t, bits, quantiles, keep, cfg.extra_clips(name, t, None))
        out[name] = _art_codes(name, group, t, q, scale, bits)
        stats.rounded += 1
    for (_, bits, quantiles, _), named_jobs in gptq_groups.items():
        coded = gptq_quantize_many([job for _, job in named_jobs], bits, quantiles, cfg.gptq_block_size,
                                   cfg.gptq_damp)
        for (name, job), (q, scale) in zip(named_jobs, coded, strict=True):
            out[name] = _art_codes(name, tensor_group(name, job.weight), job.weight, q, scale, bits)
            stats.gptq += 1
    if cfg.lqer is not None:
        for factor in lqer_entries(state, out, cfg.lqer):
            out[factor.name] = factor
        stats.lqer = sorted({n[:-len(LQER_SUFFIXES[0])] for n in out if n.endswith(LQER_SUFFIXES[0])})
    return [out[name] for name in sorted(out)], stats


def lqer_entries(state: dict[str, Tensor], coded: dict[str, QTensor], settings: LQERSettings) -> list[QTensor]:
    """The LQER factors of the top_k quantized matrices by squared error (none where a correction does not help)."""
    errors = {}
    for name, e in coded.items():
        if e.scale is not None and e.group != "lqer":
            w = state[name].detach().float().cpu()
            errors[name] = float((w - e.dequantize()).square().sum())
    entries = []
    for name in worst_tensors(errors, settings.top_k):
        factors = lqer_correction(state[name].detach().float().cpu(), coded[name].dequantize(), settings)
        if factors is None:
            continue
        for suffix, f in zip(LQER_SUFFIXES, factors, strict=True):
            entries.append(QTensor(name + suffix, "lqer", tuple(f.codes.shape), f.codes.cpu().contiguous(),
                                   f.scale.cpu().contiguous(), f.bits, None if f.zero is None else f.zero.cpu(),
                                   f.group))
    return entries


def _art_codes(name: str, group: str, t: Tensor, q: Tensor, scale: Tensor, bits: int) -> QTensor:
    codes = q.to(torch.int8 if bits <= 8 else torch.int16).cpu().contiguous()
    return QTensor(name, group, tuple(t.shape), codes, scale.cpu().contiguous(), bits)


def dequantize_state(entries: Iterable[QTensor]) -> dict[str, Tensor]:
    """The fp32 state dict: every stored tensor dequantized, LQER corrections added to their weights."""
    entries = list(entries)
    state = {e.name: e.dequantize() for e in entries if e.group != "lqer"}
    factors = {e.name: e for e in entries if e.group == "lqer"}
    for name in sorted(factors):
        if name.endswith(LQER_SUFFIXES[0]):
            target = name[:-len(LQER_SUFFIXES[0])]
            a, b = factors[name], factors[target + LQER_SUFFIXES[1]]
            delta = lqer_delta(QFactor(a.data, a.scale, a.zero, a.bits, a.qgroup),
                               QFactor(b.data, b.scale, b.zero, b.bits, b.qgroup))
            state[target] = state[target] + delta.reshape(state[target].shape)
    return state


# ---------------------------------------------------------------------------------------------- GPTQ calibration
def gptq_targets(model: GPT, cfg: ArtifactConfig) -> dict[str, CastedLinear]:
    """CastedLinear modules whose weight will be quantized, by weight name."""
    return {f"{name}.weight": m for name, m in model.named_modules()
            if isinstance(m, CastedLinear) and tensor_bits(f"{name}.weight", m.weight, cfg)}


def head_weight_name(model: GPT) -> str:
    return "tok_emb.weight" if model.lm_head is None else "lm_head.weight"


FUSED_QKV = (".attn.c_q.weight", ".attn.c_k.weight", ".attn.c_v.weight")


class HessianCollector:
    """H = XᵀX (fp32) of the inputs of each quantized CastedLinear, and of the final hidden state for the head.

    c_q, c_k and c_v read the same input, the attention module's (the model fuses them into one matmul and
    never calls them): they are observed there, and the product is computed once and shared.
    """

    def __init__(self, model: GPT, cfg: ArtifactConfig) -> None:
        self.model = model
        self.targets = gptq_targets(model, cfg)
        self.head = head_weight_name(model)
        self.head_used = bool(tensor_bits(self.head, model.state_dict()[self.head], cfg))
        self.hessians: dict[str, Tensor] = {}
        self._last: tuple[Tensor, Tensor] | None = None
        self._handles: list[Any] = []

    def _product(self, x: Tensor) -> Tensor:
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        flat = x.reshape(-1, x.size(-1)).float()
        prod = flat.T @ flat
        self._last = (x, prod)
        return prod

    def _add(self, name: str, prod: Tensor) -> None:
        if name in self.hessians:
            self.hessians[name] += prod
        else:
            self.hessians[name] = prod.clone()

    def __enter__(self) -> HessianCollector:
        for name, module in self.targets.items():
            def hook(mod: Any, args: tuple[Tensor, ...], name: str = name) -> None:
                self._add(name, self._product(args[0]))
            observed = self.model.get_submodule(name.rsplit(".", 2)[0]) if name.endswith(FUSED_QKV) else module
            self._handles.append(observed.register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._last = None

    @torch.inference_mode()
    def observe(self, ids: Tensor) -> None:
        h = self.model.hidden(ids)
        if self.head_used:
            self._add(self.head, self._product(h))
        self._last = None


def collect_hessians(model: GPT, batches: Iterable[Tensor], cfg: ArtifactConfig, rt: Any) -> dict[str, Tensor]:
    """Hessians over calibration batches (each rank its own), summed over ranks."""
    with HessianCollector(model, cfg) as collector:
        for ids in batches:
            collector.observe(ids)
    hessians = collector.hessians
    for name in sorted(hessians):
        rt.all_reduce(hessians[name])
    return hessians


def calibration_batches(loader: Any, hp: Hyperparameters, world_size: int) -> Iterable[Tensor]:
    """GPTQ_CALIBRATION_BATCHES training batches (TRAIN_BATCH_TOKENS over all ranks each) from the loader,
    as the micro-batches training used (same shapes: the loader's prefetch keeps running)."""
    accum = hp.grad_accum_steps or max(1, 8 // world_size)
    for _ in range(hp.gptq_calibration_batches * accum):
        x, _ = loader.next_batch(hp.train_batch_tokens, hp.train_seq_len, accum)
        yield x


# ---------------------------------------------------------------------------------------------- container
def _art_dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _art_arrays(entries: list[QTensor]) -> list[tuple[QTensor, str, Tensor]]:
    """A group's arrays in payload order: codes, then scales, then LQER offsets, then floats (like next to like)."""
    ordered = sorted(entries, key=lambda e: e.name)
    codes = [(e, "q", e.data) for e in ordered if e.scale is not None]
    scales = [(e, "s", e.scale) for e in ordered if e.scale is not None]
    zeros = [(e, "z", e.zero) for e in ordered if e.zero is not None]
    floats = [(e, "f", e.data) for e in ordered if e.scale is None]
    return codes + scales + zeros + floats  # type: ignore[return-value]


def _art_to_bytes(t: Tensor, shuffle: bool) -> bytes:
    arr = t.detach().cpu().contiguous().numpy().astype(_ART_DTYPES[_art_dtype_name(t)], copy=False)
    raw = arr.tobytes()
    return shuffle_bytes(raw, arr.itemsize) if shuffle else raw


def _art_role(name: str) -> str:
    """The parameter a code matrix is, whatever its block: `blocks.3.mlp.fc.weight` -> `blocks.mlp.fc.weight`."""
    return re.sub(r"\.\d+(?=\.)", "", name)


def _art_pieces(entries: list[QTensor]) -> list[Piece]:
    """pergroup's view of a group payload: 2-D int8 block codes by role, everything else for the rest stream."""
    pieces = []
    for e, kind, t in _art_arrays(entries):
        nbytes = t.numel() * t.element_size()
        if kind == "q" and e.group != "lqer" and t.dtype == torch.int8 and t.ndim == 2:
            pieces.append(Piece(nbytes, _art_role(e.name), t.size(0), t.size(1)))
        else:
            pieces.append(Piece(nbytes))
    return pieces


def _art_by_group(entries: list[QTensor]) -> dict[str, list[QTensor]]:
    by_group: dict[str, list[QTensor]] = {g: [] for g in GROUPS}
    for e in entries:
        by_group[e.group].append(e)
    return by_group


def group_payloads(entries: list[QTensor], shuffle: bool) -> dict[str, bytes]:
    """Each group's uncompressed payload (the bytes its section compresses)."""
    by_group = _art_by_group(entries)
    return {g: b"".join(_art_to_bytes(t, shuffle) for _, _, t in _art_arrays(by_group[g])) for g in GROUPS}


@dataclass
class Artifact:
    blob: bytes
    sections: dict[str, int]  # group -> compressed bytes
    overhead: int  # prefix + header

    @property
    def size(self) -> int:
        return len(self.blob)


def _art_table_row(e: QTensor) -> list[Any]:
    row = [e.name, e.group, _art_dtype_name(e.data), list(e.shape), e.bits]
    return row + [e.qgroup] if e.group == "lqer" else row


def pack(entries: list[QTensor], cfg: ArtifactConfig) -> Artifact:
    """Serialize quantized tensors into the container (see the module docstring)."""
    level = cfg.effective_level
    by_group = _art_by_group(entries)
    streams: dict[str, list[list[object]]] = {}
    if cfg.compressor == PERGROUP:
        # each group's streams pick their own layout and codec; the header goes through lzma (always at hand)
        def encode(g: str) -> bytes:
            arrays = _art_arrays(by_group[g])
            blob, streams[g] = pergroup_encode([_art_to_bytes(t, cfg.byte_shuffle) for _, _, t in arrays],
                                               _art_pieces(by_group[g]))
            return blob

        with ThreadPoolExecutor(max_workers=len(GROUPS)) as pool:
            futures = {g: pool.submit(encode, g) for g in GROUPS if by_group[g]}
            sections = {g: futures[g].result() if g in futures else b"" for g in GROUPS}
        header_codec, header_level = "lzma", 9
    else:
        payloads = group_payloads(entries, cfg.byte_shuffle)
        # groups compress independently: threads (the codecs release the GIL) cut lzma/brotli/zstd time to the largest
        with ThreadPoolExecutor(max_workers=len(GROUPS)) as pool:
            futures = {g: pool.submit(compress, payloads[g], cfg.compressor, level) for g in GROUPS if payloads[g]}
            sections = {g: futures[g].result() if g in futures else b"" for g in GROUPS}
        header_codec, header_level = cfg.compressor, level
    table = [_art_table_row(e) for e in sorted(entries, key=lambda e: e.name)]
    meta: dict[str, Any] = {"t": table, "g": [len(sections[g]) for g in GROUPS]}
    if streams:
        meta["s"] = {g: streams[g] for g in GROUPS if g in streams}
    header = compress(json.dumps(meta, separators=(",", ":")).encode(), header_codec, header_level)
    comp_id = len(COMPRESSORS) if cfg.compressor == PERGROUP else COMPRESSORS.index(cfg.compressor)
    prefix = _ART_PREFIX.pack(_ART_MAGIC, _ART_VERSION, comp_id, int(cfg.byte_shuffle), level, len(header))
    blob = prefix + header + b"".join(sections[g] for g in GROUPS)
    return Artifact(blob, {g: len(sections[g]) for g in GROUPS}, len(prefix) + len(header))


def artifact_header(blob: bytes) -> dict[str, Any]:
    """The decoded header of an artifact: {"t": tensor table, "g": section lengths[, "s": stream tables]}."""
    _, compressor = artifact_format(blob)
    _, _, _, _, level, header_len = _ART_PREFIX.unpack_from(blob, 0)
    header_codec = ("lzma", 9) if compressor == PERGROUP else (compressor, level)
    return json.loads(decompress(blob[_ART_PREFIX.size:_ART_PREFIX.size + header_len], *header_codec))


def artifact_layout(blob: bytes) -> Artifact:
    """The section lengths and overhead of a written artifact (its byte breakdown), read from its header."""
    version, _ = artifact_format(blob)
    header_len = _ART_PREFIX.unpack_from(blob, 0)[5]
    groups = GROUPS if version >= 2 else _ART_V1_GROUPS
    sections = {g: 0 for g in GROUPS} | dict(zip(groups, artifact_header(blob)["g"], strict=True))
    return Artifact(blob, sections, _ART_PREFIX.size + header_len)


def artifact_shapes(blob: bytes) -> dict[str, tuple[int, ...]]:
    """The model tensors an artifact holds and their shapes (LQER factors left out)."""
    return {row[0]: tuple(row[3]) for row in artifact_header(blob)["t"] if row[1] != "lqer"}


def artifact_format(blob: bytes) -> tuple[int, str]:
    """(container version, compressor) of an artifact, or ValueError for a file that is not one golf can read."""
    magic, version, comp_id, _, _, _ = _ART_PREFIX.unpack_from(blob, 0)
    if magic != _ART_MAGIC or version not in (1, _ART_VERSION) or comp_id > len(COMPRESSORS):
        raise ValueError(f"not a golf artifact golf {_ART_VERSION} reads (magic {magic!r}, version {version})")
    return version, PERGROUP if comp_id == len(COMPRESSORS) else COMPRESSORS[comp_id]


def unpack(blob: bytes) -> list[QTensor]:
    """Parse a container back into its tensors (bit-exact codes, scales and floats)."""
    version, compressor = artifact_format(blob)
    _, _, _, flags, level, header_len = _ART_PREFIX.unpack_from(blob, 0)
    shuffle = bool(flags & 1)
    groups = GROUPS if version >= 2 else _ART_V1_GROUPS
    pos = _ART_PREFIX.size
    header_codec = ("lzma", 9) if compressor == PERGROUP else (compressor, level)
    meta = json.loads(decompress(blob[pos:pos + header_len], *header_codec))
    pos += header_len
    by_group: dict[str, list[QTensor]] = {g: [] for g in groups}
    for name, group, dtype, shape, bits, *extra in meta["t"]:
        # empty templates with the stored shapes and dtypes; filled from the payloads below
        qgroup = int(extra[0]) if extra else 0
        zero = None
        if group == "lqer":
            scale_shape = (shape[0], -(-shape[1] // qgroup)) if qgroup else (shape[0],)
            scale = torch.empty(scale_shape, dtype=torch.float16)
            zero = torch.empty(scale_shape, dtype=torch.float16) if qgroup else None
        else:
            scale = torch.empty(shape[0], dtype=torch.float16) if bits else None
        data = torch.empty(tuple(shape), dtype=_ART_TORCH_DTYPES[dtype])
        by_group[group].append(QTensor(name, group, tuple(shape), data, scale, bits, zero, qgroup))
    for group, length in zip(groups, meta["g"], strict=True):
        section = blob[pos:pos + length]
        pos += length
        if not length:
            payload = b""
        elif compressor == PERGROUP:
            payload = pergroup_decode(section, meta["s"][group], _art_pieces(by_group[group]))
        else:
            payload = decompress(section, compressor, level)
        offset = 0
        for entry, kind, template in _art_arrays(by_group[group]):
            np_dtype = np.dtype(_ART_DTYPES[_art_dtype_name(template)])
            nbytes = template.numel() * np_dtype.itemsize
            raw = payload[offset:offset + nbytes]
            offset += nbytes
            if shuffle:
                raw = unshuffle_bytes(raw, np_dtype.itemsize)
            values = torch.from_numpy(np.frombuffer(raw, dtype=np_dtype).copy()).reshape(template.shape)
            setattr(entry, {"s": "scale", "z": "zero"}.get(kind, "data"), values)
        if offset != len(payload):
            raise ValueError(f"artifact group {group}: {len(payload) - offset} unexpected trailing bytes")
    return [e for g in groups for e in by_group[g]]


def load_artifact(path: str | Path) -> dict[str, Tensor]:
    """The dequantized fp32 state dict stored in an artifact file."""
    return dequantize_state(unpack(Path(path).read_bytes()))


def write_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)


def breakdown_line(artifact: Artifact, code_bytes: int) -> str:
    """`bytes_breakdown embeddings:N attention:N mlp:N scalars:N other:N overhead:N code:N` (sums to the total)."""
    return bytes_breakdown_line({**{g: artifact.sections[g] for g in GROUPS}, "overhead": artifact.overhead,
                                 "code": code_bytes})


def build_artifact(model: GPT, cfg: ArtifactConfig, hessians: dict[str, Tensor] | None = None
                   ) -> tuple[Artifact, QuantStats]:
    """Quantize the model's weights and pack them (the stats carry both times)."""
    start = time.perf_counter()
    with torch.no_grad():
        entries, stats = quantize_state(model.state_dict(), cfg, hessians)
    packed = time.perf_counter()
    artifact = pack(entries, cfg)
    stats.quantize_s, stats.compress_s = packed - start, time.perf_counter() - packed
    return artifact, stats
