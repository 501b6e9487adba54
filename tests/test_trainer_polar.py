"""Polar Express Newton-Schulz coefficients and the Muon weight-decay taper."""

from __future__ import annotations

import torch

from golf.trainer.optim import NS_COEFFS, POLAR_EXPRESS_COEFFS, Muon, newton_schulz, ns_schedule, wd_taper


def _singular_value_error(x: torch.Tensor) -> float:
    """How far the singular values of x are from 1 (0 for an exactly orthogonal x)."""
    return float((torch.linalg.svdvals(x.double()) - 1).abs().max())


def test_polar_express_orthogonalises_at_least_as_well_as_the_fixed_quintic() -> None:
    torch.manual_seed(0)
    # at the 5 steps the schedule is designed for (and the records run)
    for shape in ((64, 128), (96, 96), (256, 64)):
        g = torch.randn(*shape)
        fixed = _singular_value_error(newton_schulz(g, 5, torch.float32))
        polar = _singular_value_error(newton_schulz(g, 5, torch.float32, polar_express=True))
        assert polar <= fixed, (shape, polar, fixed)
    # rectangular: the fixed quintic leaves singular values in about [0.68, 1.13], Polar Express in [0.85, 1.15]
    g = torch.randn(64, 128)
    assert _singular_value_error(newton_schulz(g, 5, torch.float32, polar_express=True)) < 0.16
    assert _singular_value_error(newton_schulz(g, 5, torch.float32)) > 0.3


def test_schedules() -> None:
    assert ns_schedule(3, False) == (NS_COEFFS,) * 3
    assert ns_schedule(5, True) == POLAR_EXPRESS_COEFFS
    assert ns_schedule(7, True) == POLAR_EXPRESS_COEFFS + (POLAR_EXPRESS_COEFFS[-1],) * 2
    assert ns_schedule(2, True) == POLAR_EXPRESS_COEFFS[:2]


def test_muon_uses_the_polar_express_schedule_when_asked() -> None:
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(32, 48))
    p.grad = torch.randn(32, 48)
    start = p.detach().clone()
    Muon([p], lr=0.1, momentum=0.0, backend_steps=5, ns_dtype=torch.float32, nesterov=False,
         polar_express=True).step()
    expected = start - 0.1 * newton_schulz(p.grad, 5, torch.float32, polar_express=True)
    assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_wd_taper_is_flat_then_linear_to_its_final_multiplier() -> None:
    assert [wd_taper(f, 0.7, 0.5) for f in (0.0, 0.7, 0.85, 1.0)] == [1.0, 1.0, 0.75, 0.5]
    assert wd_taper(0.9, 0.0, 0.5) == 1.0  # start 0: no taper
