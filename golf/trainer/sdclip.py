"""SDClip: the per-row clip of the challenge's records, k standard deviations of the row.

A quantile clip follows the row's largest entries; a clip at k·std(row) follows the bulk, so a few outliers no
longer stretch every row's step (they are clipped instead). k is chosen per group (MATRIX/MLP/ATTN/EMBED_CLIP_SIGMAS).

The Hessian-aware form (HESSIAN_CLIP_LAMBDA, from #1412) widens the clip of rows that matter more to the layer's
output and narrows the others: a row's importance is the mean of |w| weighted by each input's share of diag(H)
(normalised to mean 1 over the columns), itself normalised to mean 1 over the rows; the clip is multiplied by
1 + λ·(importance − 1). λ = 0 is the plain form.
"""

from __future__ import annotations

from torch import Tensor

SDCLIP_MIN_CLIP = 1e-10  # an all-zero row still gets a positive clip (its codes are 0 whatever the step)


def sdclip_row_clip(weight: Tensor, sigmas: float, hessian: Tensor | None = None, hessian_lambda: float = 0.0
                    ) -> Tensor:
    """Per-row clip (rows,) = sigmas · std(row) [· (1 + λ·(row importance − 1)) with a Hessian and λ > 0]."""
    w = weight.detach().float()
    clip = sigmas * w.std(dim=1)  # unbiased std, as the records compute it
    if hessian is not None and hessian_lambda > 0:
        clip = clip * sdclip_importance_factor(w, hessian, hessian_lambda)
    return clip.clamp_min(SDCLIP_MIN_CLIP)


def sdclip_importance_factor(weight: Tensor, hessian: Tensor, hessian_lambda: float) -> Tensor:
    """1 + λ·(importance − 1) per row, importance = mean_j |w_ij|·d_j / mean(...), d = diag(H) / mean(diag(H))."""
    diag = hessian.detach().float().diagonal().clamp_min(1e-8).to(weight.device)
    column_share = diag / diag.mean()
    importance = (weight.abs() * column_share[None, :]).mean(dim=1)
    importance = importance / importance.mean().clamp_min(1e-30)
    # a large λ would turn the factor of the least important rows negative: keep a tenth of the plain clip at least
    return (1.0 + hessian_lambda * (importance - 1.0)).clamp_min(0.1)
