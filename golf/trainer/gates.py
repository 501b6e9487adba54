"""Learned gates of the frontier records: attention-output gates, the input-dependent SmearGate, gated skips.

Every gate starts transparent or at a known constant, so switching one on changes the step-0 forward by a known
factor (tests check those). Weights are small and 1-D or (heads, window): control tensors (AdamW, kept in float).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SparseAttnGate(nn.Module):
    """Per-head output gate read from the first `window` dims of the block input: y_h *= sigmoid(s * W_h . x[:w]).

    Zero weights (INIT_STD 0) start every head at one half; the dense gate's job at 1/40 of its parameters.
    """

    def __init__(self, heads: int, window: int, scale: float, init_std: float) -> None:
        super().__init__()
        self.window, self.scale = window, scale
        self.weight = nn.Parameter(torch.zeros(heads, window))
        if init_std > 0:
            nn.init.normal_(self.weight, std=init_std)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, H) gate for the attention output of the normed block input x (B, T, D)."""
        z = F.linear(x[..., :self.window], self.weight.to(x.dtype))
        return torch.sigmoid(z * self.scale if self.scale != 1.0 else z)


class AttnOutGate(nn.Module):
    """Per-head output gate 2 * sigmoid(W_h . src[:w]); zero weights start it at exactly 1 (transparent).

    `src` is the normed block input ("proj") or the raw query projection ("q").
    """

    def __init__(self, heads: int, window: int, src: str) -> None:
        super().__init__()
        self.window, self.src = window, src
        self.weight = nn.Parameter(torch.zeros(heads, window))

    def forward(self, source: Tensor) -> Tensor:
        return 2.0 * torch.sigmoid(F.linear(source[..., :self.window], self.weight.to(source.dtype)))


class InputSmearGate(nn.Module):
    """x_t <- x_t + lam * sigmoid(w . x_t[:width]) * x_{t-1}, except where token t is BOS (no leak across documents).

    Applied to the raw token embedding before its norm; lam = 0 at init makes it the identity at step 0
    while w still receives gradient through lam's first update.
    """

    def __init__(self, width: int, bos_id: int) -> None:
        super().__init__()
        self.width, self.bos_id = width, bos_id
        self.weight = nn.Parameter(torch.zeros(width))
        self.lam = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        cur = x[:, 1:]
        g = self.lam.to(x.dtype) * torch.sigmoid(cur[..., :self.width] @ self.weight.to(x.dtype))
        not_bos = (ids[:, 1:] != self.bos_id).to(x.dtype)
        smeared = cur + (g * not_bos).unsqueeze(-1) * x[:, :-1]
        return torch.cat((x[:, :1], smeared), dim=1)


def gated_skip(x: Tensor, skip: Tensor, weight: Tensor, gate: Tensor | None) -> Tensor:
    """U-Net skip into the decoder: x + w * skip, or with a gate lerp(w * skip, x, sigmoid(g)) per channel."""
    scaled = weight.to(x.dtype) * skip
    if gate is None:
        return x + scaled
    return torch.lerp(scaled, x, torch.sigmoid(gate.to(x.dtype)))
