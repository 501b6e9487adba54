"""Fused LeakyReLU² MLP: the Triton GEMMs (under TRITON_INTERPRET=1 on CPU) against the plain path, and the knob."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from golf.trainer import fused_mlp as fm
from golf.trainer import model as model_module
from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import GPT, MLP

BASE = {"NUM_LAYERS": 3, "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "VOCAB_SIZE": 97, "TRAIN_SEQ_LEN": 16,
        "TRAIN_BATCH_TOKENS": 64, "NEGATIVE_SLOPE": 0.5}


def gpt(**knobs: object) -> GPT:
    torch.manual_seed(0)
    m = GPT(Hyperparameters.resolve({**BASE, **knobs}))
    m.set_qat(True)  # with QAT_ENABLED=1: the MLP's weights are the fake-quantized ones
    for block in m.blocks:  # the zero-initialised down projections would make the MLP's gradients trivial
        torch.nn.init.normal_(block.mlp.proj.weight, std=0.05)
    return m


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 97, (2, 16), generator=gen)
    return ids, torch.roll(ids, -1, 1)


def loss_and_grads(m: GPT) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = m(*batch())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def todays_mlp_forward(self: MLP, x: torch.Tensor) -> torch.Tensor:
    """The MLP's forward before FUSED_MLP_ENABLED existed, verbatim."""
    h = self.fc(x)
    h = F.leaky_relu(h, self.negative_slope) if self.negative_slope else torch.relu(h)
    out = self.proj(h.square())
    return out if self.adapter is None else out + self.adapter(x)


def case(m: int, k: int, n: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=gen)
    w_up = torch.randn(n, k, generator=gen) / k**0.5
    w_down = torch.randn(k, n, generator=gen) / n**0.5
    grad_y = torch.randn(m, k, generator=gen)
    return [t.to(dtype) for t in (x, w_up, w_down, grad_y)]


def run(fn: Callable[..., torch.Tensor], x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
        grad_y: torch.Tensor, slope: float) -> list[torch.Tensor]:
    """fn's output and its gradients with respect to x, W_up and W_down for the incoming gradient grad_y."""
    leaves = [t.clone().requires_grad_() for t in (x, w_up, w_down)]
    y = fn(*leaves, slope)
    y.backward(grad_y)
    return [y.detach()] + [t.grad for t in leaves]


def test_plain_path_is_leaky_relu_squared_between_two_products() -> None:
    x, w_up, w_down, _ = case(5, 8, 12)
    h = x @ w_up.T
    by_hand = torch.where(h > 0, h, 0.25 * h).square() @ w_down.T
    assert torch.allclose(fm.plain_mlp(x, w_up, w_down, 0.25), by_hand, atol=1e-6)
    assert torch.allclose(fm.plain_mlp(x, w_up, w_down, 0.0), h.clamp_min(0).square() @ w_down.T, atol=1e-6)


@pytest.mark.parametrize("knobs", [{"FUSED_MLP_ENABLED": 0}, {"FUSED_MLP_ENABLED": 1}])
def test_without_the_kernels_the_model_is_bit_identical_to_the_unfused_mlp(monkeypatch: pytest.MonkeyPatch,
                                                                             knobs: dict[str, int]) -> None:
    monkeypatch.setattr(fm, "MLP_INTERPRETED", False)  # a CPU without the interpreter: knob on falls back
    loss, grads = loss_and_grads(gpt(**knobs))
    monkeypatch.setattr(MLP, "forward", todays_mlp_forward)
    ref_loss, ref_grads = loss_and_grads(gpt())
    assert torch.equal(loss, ref_loss)
    assert grads.keys() == ref_grads.keys() and all(torch.equal(grads[k], ref_grads[k]) for k in grads)


def test_the_log_line_names_the_path() -> None:
    assert fm.fused_mlp_line(False, torch.device("cuda")) is None
    if not fm.MLP_INTERPRETED:
        assert fm.fused_mlp_line(True, torch.device("cpu")).startswith("fused_mlp:fallback path:plain reason:")
    expected = "fused_mlp:enabled kernel:triton" if fm.fused_mlp_available() else \
        "fused_mlp:fallback path:plain reason:no triton"
    assert fm.fused_mlp_line(True, torch.device("cuda")) == expected


@pytest.fixture
def interpreted(triton_interpreter: None, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(fm, "MLP_TEST_BLOCKS", (32, 32, 16))  # tiles that fit the tiny shapes (autotune needs a GPU)
    return fm


@pytest.mark.parametrize("slope", [0.5, 0.0])
def test_kernels_match_the_plain_path_with_partial_tiles(interpreted, slope: float) -> None:  # type: ignore
    # 50 x 40 x 72 against 32 x 16 x 32 tiles: a partial tile in every dimension, and K not a multiple of BLOCK_K
    inputs = case(50, 40, 72, seed=2)
    fused = run(interpreted.fused_mlp, *inputs, slope)
    plain = run(interpreted.plain_mlp, *inputs, slope)
    for name, got, want in zip(("y", "dx", "dW_up", "dW_down"), fused, plain, strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), name


def test_kernels_in_bf16_inside_torch_compile_are_as_close_to_fp32_as_the_plain_path(interpreted) -> None:  # type: ignore
    inputs = case(64, 32, 64, torch.bfloat16, seed=3)
    compiled = torch.compile(interpreted.fused_mlp, backend="aot_eager", fullgraph=True)  # dynamo-traceable
    fused = run(compiled, *inputs, 0.5)
    plain = run(interpreted.plain_mlp, *inputs, 0.5)
    exact = run(interpreted.plain_mlp, *[t.float() for t in inputs], 0.5)
    for name, got, bf16, want in zip(("y", "dx", "dW_up", "dW_down"), fused, plain, exact, strict=True):
        assert got.dtype == torch.bfloat16, name
        fused_err = (got.float() - want).abs().max()
        plain_err = (bf16.float() - want).abs().max()
        assert fused_err <= 1.5 * plain_err + 4e-3 * want.abs().max(), (name, fused_err, plain_err)


def test_the_model_runs_the_kernels_in_training_only(interpreted, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore
    calls = []

    def counted(*args: torch.Tensor) -> torch.Tensor:
        calls.append(args[0].shape)
        return fm.fused_mlp(*args)

    monkeypatch.setattr(model_module, "fused_mlp", counted)
    loss, grads = loss_and_grads(gpt(FUSED_MLP_ENABLED=1, QAT_ENABLED=1))  # QAT: the fake-quantized weights too
    assert calls == [torch.Size([2, 16, 64])] * BASE["NUM_LAYERS"]
    ref_loss, ref_grads = loss_and_grads(gpt(QAT_ENABLED=1))
    assert torch.allclose(loss, ref_loss, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for k in grads:
        assert torch.allclose(grads[k], ref_grads[k], atol=1e-5, rtol=1e-4), k
    with torch.no_grad():
        gpt(FUSED_MLP_ENABLED=1)(*batch())
    assert len(calls) == BASE["NUM_LAYERS"]  # evaluation keeps the plain path


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernels_in_a_compiled_graph_match_the_plain_path() -> None:
    pytest.importorskip("triton")
    gen = torch.Generator(device="cuda").manual_seed(0)
    m, k, n = 4096, 512, 2048
    x = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
    w_up = (torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16()
    w_down = (torch.randn(k, n, device="cuda", generator=gen) / n**0.5).bfloat16()
    grad_y = torch.randn(m, k, device="cuda", generator=gen).bfloat16()
    fused = run(torch.compile(fm.fused_mlp, fullgraph=True), x, w_up, w_down, grad_y, 0.5)
    plain = run(torch.compile(fm.plain_mlp, fullgraph=True), x, w_up, w_down, grad_y, 0.5)
    for name, got, want in zip(("y", "dx", "dW_up", "dW_down"), fused, plain, strict=True):
        assert (got.float() - want.float()).abs().max() <= 0.02 * want.float().abs().max(), name
