"""LQER: a low-rank correction of the quantization error of the worst-quantized matrices (#1797, #1855).

For each of the LQER_TOP_K matrices with the largest squared quantization error ‖W − Ŵ‖², the error E = W − Ŵ is
approximated by a rank-LQER_RANK product Aᵀ·B (A: rank × rows, B: rank × cols, from the SVD of E). Both factors are
stored as LQER_FACTOR_BITS-bit integers: symmetric with one fp16 scale per rank component, or (LQER_ASYM_ENABLED)
asymmetric in groups of LQER_ASYM_GROUP consecutive values, each group with an fp16 scale and an fp16 offset. B is
refit by least squares against the quantized A, so B absorbs A's rounding. A correction that does not lower the
tensor's error is dropped (its bytes would buy nothing). The artifact's reader adds Âᵀ·B̂ to the dequantized
weight, so the model itself knows nothing of LQER.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LQERSettings:
    """LQER_RANK, LQER_TOP_K, LQER_FACTOR_BITS, LQER_ASYM_ENABLED, LQER_ASYM_GROUP (defaults in hparams.py)."""

    rank: int
    top_k: int
    factor_bits: int
    asym: bool
    group: int


@dataclass
class QFactor:
    """One quantized factor (rank x n): int8 codes, fp16 scales, fp16 offsets for the asymmetric form."""

    codes: Tensor  # int8 (rank, n); asymmetric codes are stored centred (level - 2^(bits-1))
    scale: Tensor  # fp16: (rank,) symmetric, (rank, groups) asymmetric
    zero: Tensor | None  # fp16 (rank, groups) for the asymmetric form
    bits: int
    group: int  # 0: symmetric, one scale per row

    def dequantize(self) -> Tensor:
        q = self.codes.float()
        if self.zero is None:
            return q * self.scale.float()[:, None]
        rank, n = q.shape
        groups = self.scale.size(1)
        padded = torch.zeros(rank, groups * self.group, device=q.device)
        padded[:, :n] = q + 2 ** (self.bits - 1)
        levels = padded.view(rank, groups, self.group)
        values = levels * self.scale.float()[:, :, None] + self.zero.float()[:, :, None]
        return values.reshape(rank, -1)[:, :n]


def _lqer_fp16_up(want: Tensor) -> Tensor:
    """fp16 of a positive step, rounded up where fp16 rounding fell below it (the codes never overflow)."""
    want = want.float().clamp(2.0 ** -24, 65504.0)
    half = want.half()
    up = torch.nextafter(half, torch.full_like(half, 65504.0))
    return torch.where(half.float() < want, up, half)


def quantize_factor(x: Tensor, bits: int, asym: bool, group: int) -> QFactor:
    """Quantize a (rank, n) factor: symmetric per row, or asymmetric per group of `group` values."""
    x = x.detach().float()
    if not asym:
        qmax = 2 ** (bits - 1) - 1
        scale = _lqer_fp16_up(x.abs().amax(dim=1) / qmax)
        codes = torch.clamp(torch.round(x / scale.float()[:, None]), -qmax, qmax)
        return QFactor(codes.to(torch.int8), scale, None, bits, 0)
    rank, n = x.shape
    groups = -(-n // group)
    padded = torch.zeros(rank, groups * group, device=x.device)
    padded[:, :n] = x
    if groups * group > n:  # padding repeats the last value: it must not widen the last group's range
        padded[:, n:] = x[:, -1:]
    view = padded.view(rank, groups, group)
    top = 2 ** bits - 1
    zero = view.amin(dim=2).half()
    scale = _lqer_fp16_up((view.amax(dim=2) - zero.float()) / top)
    levels = torch.clamp(torch.round((view - zero.float()[:, :, None]) / scale.float()[:, :, None]), 0, top)
    codes = (levels - 2 ** (bits - 1)).reshape(rank, -1)[:, :n]
    return QFactor(codes.to(torch.int8), scale, zero, bits, group)


def error_factors(error: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """(A (r, rows), B (r, cols)) with AᵀB the best rank-r approximation of `error` (√σ on each side)."""
    u, s, vh = torch.linalg.svd(error.float(), full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    return (u[:, :r] * root[None, :]).T.contiguous(), (root[:, None] * vh[:r]).contiguous()


def lqer_correction(weight: Tensor, dequantized: Tensor, settings: LQERSettings
                    ) -> tuple[QFactor, QFactor] | None:
    """Quantized factors of the low-rank correction of `weight - dequantized`, or None where it would not help."""
    error = weight.detach().float() - dequantized.float()
    before = float(error.square().sum())
    if before == 0.0:
        return None
    a, _ = error_factors(error, settings.rank)
    qa = quantize_factor(a, settings.factor_bits, settings.asym, settings.group)
    a_hat = qa.dequantize()
    # refit B on the rounded A: min ‖E − Âᵀ B‖ (B = 0 is a candidate, so this never does worse than nothing)
    b = torch.linalg.lstsq(a_hat.T.cpu().double(), error.cpu().double()).solution.float().to(error.device)
    qb = quantize_factor(b, settings.factor_bits, settings.asym, settings.group)
    after = float((error - correction(qa, qb)).square().sum())
    return (qa, qb) if after < before else None


def correction(qa: QFactor, qb: QFactor) -> Tensor:
    """Âᵀ·B̂: what the reader adds to the dequantized weight."""
    return qa.dequantize().T @ qb.dequantize()


def worst_tensors(errors: dict[str, float], top_k: int) -> list[str]:
    """The top_k names by squared quantization error (ties: by name, so the choice is reproducible)."""
    return [name for name, _ in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
