"""Fused softcapped cross-entropy: the Triton kernels (under TRITON_INTERPRET=1 on CPU) against the plain path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from golf.trainer.fused_ce import plain_softcapped_ce, softcapped_ce_mean

CAP = 30.0


def _case(rows: int = 7, vocab: int = 1100, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen) * 40  # many logits deep in the softcap's saturation
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    targets[3] = -100
    return logits, targets


def test_plain_path_is_cross_entropy_of_softcapped_logits() -> None:
    logits, targets = _case()
    z = CAP * torch.tanh(logits / CAP)
    by_hand = torch.logsumexp(z, dim=-1) - z.gather(1, targets.clamp_min(0)[:, None])[:, 0]
    by_hand[3] = 0.0
    assert torch.allclose(plain_softcapped_ce(logits, targets, CAP), by_hand, atol=1e-4)
    valid = targets >= 0
    assert torch.allclose(softcapped_ce_mean(logits, targets, CAP, fused=True), by_hand[valid].mean(), atol=1e-5)
    assert torch.equal(softcapped_ce_mean(logits, targets, CAP, fused=False),
                       F.cross_entropy(z, targets, ignore_index=-100))


@pytest.fixture
def interpreted_triton(triton_interpreter: None):  # type: ignore[no-untyped-def]
    from golf.trainer import fused_ce

    return fused_ce


def test_triton_kernels_match_the_plain_path_in_loss_and_gradient(interpreted_triton) -> None:  # type: ignore
    logits, targets = _case()
    a = logits.clone().requires_grad_()
    loss = interpreted_triton.fused_softcapped_ce(a, targets, CAP)
    (loss * torch.arange(1.0, 8.0)).sum().backward()  # unequal row weights exercise the incoming gradient
    b = logits.clone().requires_grad_()
    ref = plain_softcapped_ce(b, targets, CAP)
    (ref * torch.arange(1.0, 8.0)).sum().backward()
    assert torch.allclose(loss, ref, atol=2e-5, rtol=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)
    assert loss[3] == 0 and not a.grad[3].any()  # ignored target: no loss, no gradient


def test_triton_kernels_span_several_column_blocks(interpreted_triton) -> None:  # type: ignore[no-untyped-def]
    logits, targets = _case(rows=4, vocab=2 * interpreted_triton.BLOCK_COLS + 37, seed=3)
    targets[1] = logits.size(1) - 1  # the target in the last, partial block
    assert torch.allclose(interpreted_triton.fused_softcapped_ce(logits, targets, CAP),
                          plain_softcapped_ce(logits, targets, CAP), atol=2e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernels_in_a_compiled_graph_match_the_plain_path() -> None:
    pytest.importorskip("triton")
    from golf.trainer.fused_ce import softcapped_ce_mean

    gen = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(4096, 8192, device="cuda", generator=gen) * 20).to(torch.bfloat16)
    targets = torch.randint(0, 8192, (4096,), device="cuda", generator=gen)
    targets[::97] = -100

    def loss_and_grad(fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = logits.clone().requires_grad_()
        fn = torch.compile(lambda z: softcapped_ce_mean(z, targets, CAP, fused=fused), fullgraph=True)
        loss = fn(x)
        loss.backward()
        return loss.detach(), x.grad.float()

    fused_loss, fused_grad = loss_and_grad(True)
    plain_loss, plain_grad = loss_and_grad(False)
    assert torch.allclose(fused_loss, plain_loss, atol=1e-4)
    assert (fused_grad - plain_grad).abs().max() < 1e-6 + 0.01 * plain_grad.abs().max()
