"""Process-wide settings the trainer applies before compiling."""

from __future__ import annotations

import pytest
import torch._inductor.config as inductor

from golf.trainer.runtime import tune_inductor


def test_mix_order_reductions_are_switched_off_unless_the_env_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_MIX_ORDER_REDUCTION", raising=False)
    monkeypatch.setattr(inductor.triton, "mix_order_reduction", True)
    tune_inductor()
    assert inductor.triton.mix_order_reduction is False
    monkeypatch.setenv("TORCHINDUCTOR_MIX_ORDER_REDUCTION", "1")  # a user's explicit choice wins
    monkeypatch.setattr(inductor.triton, "mix_order_reduction", True)
    tune_inductor()
    assert inductor.triton.mix_order_reduction is True
