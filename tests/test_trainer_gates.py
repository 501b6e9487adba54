"""The frontier records' gates: what each computes, and its value at init."""

from __future__ import annotations

import torch

from golf.trainer.gates import AttnOutGate, InputSmearGate, SparseAttnGate, gated_skip


def test_gated_skip_at_init_is_the_ungated_skip_scaled_by_its_sigmoid() -> None:
    torch.manual_seed(0)
    x, skip, w = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.rand(8) + 0.5
    ungated = gated_skip(x, skip, w, None)
    assert torch.allclose(ungated, x + w * skip)
    gate = torch.zeros(8)  # the records' init
    assert torch.allclose(gated_skip(x, skip, w, gate), torch.sigmoid(gate) * ungated)
    g = torch.randn(8)
    s = 1 / (1 + torch.exp(-g))
    assert torch.allclose(gated_skip(x, skip, w, g), s * x + (1 - s) * w * skip, atol=1e-6)


def test_sparse_attn_gate_reads_only_its_window() -> None:
    torch.manual_seed(1)
    gate = SparseAttnGate(heads=3, window=4, scale=0.5, init_std=0.0)
    x = torch.randn(2, 6, 16)
    assert torch.equal(gate(x), torch.full((2, 6, 3), 0.5))  # zero init: every head at one half
    with torch.no_grad():
        gate.weight.copy_(torch.randn(3, 4))
    expected = 1 / (1 + torch.exp(-0.5 * torch.einsum("btw,hw->bth", x[..., :4], gate.weight)))
    assert torch.allclose(gate(x), expected, atol=1e-6)
    x2 = x.clone()
    x2[..., 4:] = 100.0  # dims past the window do not matter
    assert torch.equal(gate(x2), gate(x))
    assert SparseAttnGate(3, 4, 1.0, init_std=0.1).weight.std() > 0


def test_attn_out_gate_starts_transparent() -> None:
    gate = AttnOutGate(heads=4, window=6, src="proj")
    x = torch.randn(1, 3, 32)
    assert torch.equal(gate(x), torch.ones(1, 3, 4))
    with torch.no_grad():
        gate.weight.fill_(0.1)
    assert torch.allclose(gate(x), 2 * torch.sigmoid(0.1 * x[..., :6].sum(-1, keepdim=True)).expand(1, 3, 4))


def test_input_smear_gate_is_identity_at_init_and_never_crosses_bos() -> None:
    torch.manual_seed(2)
    smear = InputSmearGate(width=3, bos_id=1)
    ids = torch.tensor([[5, 7, 1, 9, 4]])
    x = torch.randn(1, 5, 8)
    assert torch.equal(smear(x, ids), x)
    with torch.no_grad():
        smear.weight.copy_(torch.tensor([0.3, -0.2, 0.5]))
        smear.lam.fill_(0.7)
    out = smear(x, ids)
    expected = x.clone()
    for t in range(1, 5):
        if ids[0, t] != 1:
            g = 0.7 * torch.sigmoid(x[0, t, :3] @ smear.weight)
            expected[0, t] = x[0, t] + g * x[0, t - 1]
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[0, 2], x[0, 2]) and torch.equal(out[0, 0], x[0, 0])  # BOS and position 0 untouched
