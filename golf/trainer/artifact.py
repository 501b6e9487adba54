"""The artifact: pruning, per-row quantization (rounding, clip search, full-Hessian GPTQ), per-group compression,
and the container that a submission ships as `final_model.<quant>.ptz`.

Container layout (all integers little-endian):
    b"GOLF" | version u8 | compressor id u8 | flags u8 (bit 0: byte shuffle) | level u8 | header length u32
    | header (compressed JSON: tensor table and group section lengths) | one compressed section per group.
Each group (embeddings, attention, mlp, scalars, other) is compressed on its own, so the byte breakdown is exact:
the groups' section lengths plus the overhead (the fixed prefix and the header) are the file size.
"""

from __future__ import annotations

import json
import lzma
import math
import struct
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .hparams import STRONGEST_COMPRESS_LEVEL, Hyperparameters, KnobError
from .model import GPT, CastedLinear, is_control_tensor

PASSTHROUGH_MAX_NUMEL = 65_536  # tensors this small are stored as floats (the challenge's baseline rule)
DEFAULT_CLIP_QUANTILE = 0.9999984  # the baseline's per-row clip when no search is made
CLIP_SEARCH_QUANTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
GROUPS = ("embeddings", "attention", "mlp", "scalars", "other")
EMBEDDING_NAMES = frozenset({"tok_emb.weight", "lm_head.weight", "bigram.embed.weight", "ve.embed.weight"})
FLOAT_BITS = 16  # EMBED_BITS=16: keep the tables in fp16

COMPRESSORS = ("zlib", "zstd", "lzma", "brotli")
STRONGEST_LEVEL = STRONGEST_COMPRESS_LEVEL
_ART_MAGIC = b"GOLF"
_ART_VERSION = 1
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

    @classmethod
    def from_hp(cls, hp: Hyperparameters) -> ArtifactConfig:
        bits = {"embeddings": hp.embed_bits, "attention": hp.attn_bits, "mlp": hp.mlp_bits, "other": hp.matrix_bits}
        return cls(group_bits=bits, clip_search=hp.clip_search, use_gptq=hp.use_gptq,
                   gptq_block_size=hp.gptq_block_size, gptq_damp=hp.gptq_damp, prune_ratio=hp.prune_ratio,
                   compressor=hp.compressor, level=hp.compress_level, byte_shuffle=hp.byte_shuffle)

    @property
    def effective_level(self) -> int:
        return compress_level(self.compressor, self.level)

    @property
    def clip_quantiles(self) -> tuple[float, ...]:
        return CLIP_SEARCH_QUANTILES if self.clip_search else (DEFAULT_CLIP_QUANTILE,)


def compress_level(compressor: str, level: int) -> int:
    """The level actually used: 0 means the strongest; above the strongest is a KnobError."""
    if compressor not in STRONGEST_LEVEL:
        raise KnobError(f"COMPRESSOR={compressor!r} is not valid: expected one of {', '.join(COMPRESSORS)}")
    top = STRONGEST_LEVEL[compressor]
    if level > top:
        raise KnobError(f"COMPRESS_LEVEL={level} exceeds {compressor}'s strongest level {top} (0 means {top})")
    return level or top


def quant_label(hp: Hyperparameters) -> str:
    """`int8`, `int6`, ... or `mixed_int5_int6`: the distinct bits of the block matrices (MATRIX/MLP/ATTN_BITS).

    Embeddings (EMBED_BITS) are not part of the label, as in the records (int6 blocks with int8 embeddings: int6).
    """
    bits = sorted({hp.matrix_bits, hp.mlp_bits, hp.attn_bits})
    if len(bits) == 1:
        return f"int{bits[0]}"
    return "mixed_" + "_".join(f"int{b}" for b in bits)


def compressor_label(compressor: str, level: int, shuffle: bool) -> str:
    """`zlib`, `zstd-22`, `lzma`, `lzma-6`, `brotli`, ... plus `-shuffle` with BYTE_SHUFFLE=1."""
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


def quantize_rows(weight: Tensor, bits: int, quantiles: Iterable[float] = (DEFAULT_CLIP_QUANTILE,),
                  keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-row symmetric rounding; with several clip quantiles each row keeps the one of lowest squared error.

    Returns (q as float integers in [-qmax, qmax], fp16 scales (rows,)). Pruned entries (keep False) are 0.
    """
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    sorted_abs = w.abs().sort(dim=1).values
    best_q = best_s = best_err = None
    for quantile in quantiles:
        scale = row_scales(row_quantile(sorted_abs, quantile), qmax)
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


def gptq_quantize(weight: Tensor, hessian: Tensor, bits: int, quantiles: Iterable[float] = (DEFAULT_CLIP_QUANTILE,),
                  block_size: int = 128, damp: float = 0.01, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Full-Hessian GPTQ of one matrix; see gptq_quantize_many."""
    return gptq_quantize_many([GPTQJob(weight, hessian, keep)], bits, quantiles, block_size, damp)[0]


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
    cols = jobs[0].weight.size(1)
    per_job = len(quantiles) * max(j.weight.size(0) for j in jobs) * cols
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
    k = len(quantiles)
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
        sorted_abs = w.abs().sort(dim=1).values
        scales = torch.stack([row_scales(row_quantile(sorted_abs, qt), qmax) for qt in quantiles])  # (K, n)
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


@dataclass
class QTensor:
    """One stored tensor: integer codes + fp16 row scales, or a float passthrough."""

    name: str
    group: str
    shape: tuple[int, ...]
    data: Tensor  # int8/int16 codes, or float16/float32 values (CPU)
    scale: Tensor | None = None  # fp16 (rows,) for codes
    bits: int = 0

    def dequantize(self) -> Tensor:
        if self.scale is None:
            return self.data.float().reshape(self.shape)
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

    def line(self) -> str:
        bits = ",".join(f"{g}={'/'.join(map(str, sorted(set(b))))}" for g, b in sorted(self.bits.items()))
        return (f"quantized: gptq:{self.gptq} rounded:{self.rounded} float:{self.floats} pruned:{self.pruned} "
                f"bits:{bits or 'none'} quantize_time:{self.quantize_s:.1f}s compress_time:{self.compress_s:.1f}s")


def quantize_state(state: dict[str, Tensor], cfg: ArtifactConfig,
                   hessians: dict[str, Tensor] | None = None) -> tuple[list[QTensor], QuantStats]:
    """Quantize a state dict: prune, then GPTQ (where a Hessian exists) or rounding, floats for the rest."""
    out: dict[str, QTensor] = {}
    stats = QuantStats()
    gptq_groups: dict[tuple[int, int], list[tuple[str, GPTQJob]]] = {}
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
        if cfg.use_gptq and hessian is not None:
            gptq_groups.setdefault((t.size(1), bits), []).append((name, GPTQJob(t, hessian, keep)))
            continue
        q, scale = quantize_rows(t, bits, cfg.clip_quantiles, keep)
        out[name] = _art_codes(name, group, t, q, scale, bits)
        stats.rounded += 1
    for (_, bits), named_jobs in gptq_groups.items():
        coded = gptq_quantize_many([job for _, job in named_jobs], bits, cfg.clip_quantiles, cfg.gptq_block_size,
                                   cfg.gptq_damp)
        for (name, job), (q, scale) in zip(named_jobs, coded, strict=True):
            out[name] = _art_codes(name, tensor_group(name, job.weight), job.weight, q, scale, bits)
            stats.gptq += 1
    return [out[name] for name in sorted(out)], stats


def _art_codes(name: str, group: str, t: Tensor, q: Tensor, scale: Tensor, bits: int) -> QTensor:
    codes = q.to(torch.int8 if bits <= 8 else torch.int16).cpu().contiguous()
    return QTensor(name, group, tuple(t.shape), codes, scale.cpu().contiguous(), bits)


def dequantize_state(entries: Iterable[QTensor]) -> dict[str, Tensor]:
    return {e.name: e.dequantize() for e in entries}


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


# ---------------------------------------------------------------------------------------------- compression
def compress(data: bytes, compressor: str, level: int = 0) -> bytes:
    level = compress_level(compressor, level)
    if compressor == "zlib":
        return zlib.compress(data, level)
    if compressor == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=level).compress(data)
    if compressor == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_art_lzma_filters(level))
    import brotli

    return brotli.compress(data, quality=level, lgwin=24)


def decompress(blob: bytes, compressor: str, level: int = 0) -> bytes:
    if compressor == "zlib":
        return zlib.decompress(blob)
    if compressor == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(blob)
    if compressor == "lzma":
        return lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=_art_lzma_filters(compress_level("lzma", level)))
    import brotli

    return brotli.decompress(blob)


def _art_lzma_filters(preset: int) -> list[dict[str, int]]:
    # raw LZMA2 (no .xz container): the preset is kept in the artifact's prefix
    return [{"id": lzma.FILTER_LZMA2, "preset": preset}]


def shuffle_bytes(raw: bytes, itemsize: int) -> bytes:
    """Byte planes: all first bytes of the elements, then all second bytes, ... (high and low bytes apart)."""
    if itemsize == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def unshuffle_bytes(raw: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()


# ---------------------------------------------------------------------------------------------- container
def _art_dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _art_arrays(entries: list[QTensor]) -> list[tuple[QTensor, str, Tensor]]:
    """A group's arrays in payload order: codes, then scales, then floats (like data next to like data)."""
    ordered = sorted(entries, key=lambda e: e.name)
    codes = [(e, "q", e.data) for e in ordered if e.scale is not None]
    scales = [(e, "s", e.scale) for e in ordered if e.scale is not None]
    floats = [(e, "f", e.data) for e in ordered if e.scale is None]
    return codes + scales + floats  # type: ignore[return-value]


def _art_to_bytes(t: Tensor, shuffle: bool) -> bytes:
    arr = t.detach().cpu().contiguous().numpy().astype(_ART_DTYPES[_art_dtype_name(t)], copy=False)
    raw = arr.tobytes()
    return shuffle_bytes(raw, arr.itemsize) if shuffle else raw


def group_payloads(entries: list[QTensor], shuffle: bool) -> dict[str, bytes]:
    """Each group's uncompressed payload (the bytes its section compresses)."""
    by_group: dict[str, list[QTensor]] = {g: [] for g in GROUPS}
    for e in entries:
        by_group[e.group].append(e)
    return {g: b"".join(_art_to_bytes(t, shuffle) for _, _, t in _art_arrays(by_group[g])) for g in GROUPS}


@dataclass
class Artifact:
    blob: bytes
    sections: dict[str, int]  # group -> compressed bytes
    overhead: int  # prefix + header

    @property
    def size(self) -> int:
        return len(self.blob)


def pack(entries: list[QTensor], cfg: ArtifactConfig) -> Artifact:
    """Serialize quantized tensors into the container (see the module docstring)."""
    level = cfg.effective_level
    payloads = group_payloads(entries, cfg.byte_shuffle)
    # groups compress independently: threads (the codecs release the GIL) cut lzma/brotli/zstd time to the largest
    with ThreadPoolExecutor(max_workers=len(GROUPS)) as pool:
        futures = {g: pool.submit(compress, payloads[g], cfg.compressor, level) for g in GROUPS if payloads[g]}
        sections = {g: futures[g].result() if g in futures else b"" for g in GROUPS}
    table = [[e.name, e.group, _art_dtype_name(e.data), list(e.shape), e.bits] for e in sorted(entries,
                                                                                          key=lambda e: e.name)]
    header = compress(json.dumps({"t": table, "g": [len(sections[g]) for g in GROUPS]},
                                 separators=(",", ":")).encode(), cfg.compressor, level)
    prefix = _ART_PREFIX.pack(_ART_MAGIC, _ART_VERSION, COMPRESSORS.index(cfg.compressor), int(cfg.byte_shuffle), level,
                          len(header))
    blob = prefix + header + b"".join(sections[g] for g in GROUPS)
    return Artifact(blob, {g: len(sections[g]) for g in GROUPS}, len(prefix) + len(header))


def unpack(blob: bytes) -> list[QTensor]:
    """Parse a container back into its tensors (bit-exact codes, scales and floats)."""
    magic, version, comp_id, flags, level, header_len = _ART_PREFIX.unpack_from(blob, 0)
    if magic != _ART_MAGIC or version != _ART_VERSION:
        raise ValueError(f"not a golf artifact (magic {magic!r}, version {version})")
    compressor = COMPRESSORS[comp_id]
    shuffle = bool(flags & 1)
    pos = _ART_PREFIX.size
    meta = json.loads(decompress(blob[pos:pos + header_len], compressor, level))
    pos += header_len
    by_group: dict[str, list[QTensor]] = {g: [] for g in GROUPS}
    for name, group, dtype, shape, bits in meta["t"]:
        # empty templates with the stored shapes and dtypes; filled from the payloads below
        scale = torch.empty(shape[0], dtype=torch.float16) if bits else None
        data = torch.empty(tuple(shape), dtype=_ART_TORCH_DTYPES[dtype])
        by_group[group].append(QTensor(name, group, tuple(shape), data, scale, bits))
    for group, length in zip(GROUPS, meta["g"], strict=True):
        payload = decompress(blob[pos:pos + length], compressor, level) if length else b""
        pos += length
        offset = 0
        for entry, kind, template in _art_arrays(by_group[group]):
            np_dtype = np.dtype(_ART_DTYPES[_art_dtype_name(template)])
            nbytes = template.numel() * np_dtype.itemsize
            raw = payload[offset:offset + nbytes]
            offset += nbytes
            if shuffle:
                raw = unshuffle_bytes(raw, np_dtype.itemsize)
            values = torch.from_numpy(np.frombuffer(raw, dtype=np_dtype).copy()).reshape(template.shape)
            if kind == "s":
                entry.scale = values
            else:
                entry.data = values
        if offset != len(payload):
            raise ValueError(f"artifact group {group}: {len(payload) - offset} unexpected trailing bytes")
    return [e for g in GROUPS for e in by_group[g]]


def load_artifact(path: str | Path) -> dict[str, Tensor]:
    """The dequantized fp32 state dict stored in an artifact file."""
    return dequantize_state(unpack(Path(path).read_bytes()))


def write_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)


def breakdown_line(artifact: Artifact, code_bytes: int) -> str:
    """`bytes_breakdown embeddings:N attention:N mlp:N scalars:N other:N overhead:N code:N` (sums to the total)."""
    parts = [f"{g}:{artifact.sections[g]}" for g in GROUPS]
    return "bytes_breakdown " + " ".join(parts + [f"overhead:{artifact.overhead}", f"code:{code_bytes}"])


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
