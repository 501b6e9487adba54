"""The attention backends (ATTN_BACKEND): FA4's custom ops, checked on CPU through their reference kernels."""

from __future__ import annotations

import pytest
import torch

from golf.trainer.attention import (
    FA4_MIN_MICRO_TOKENS,
    attention_forward,
    auto_backend,
    causal_attention,
    resolve_backend,
)
from golf.trainer.hparams import Hyperparameters, KnobError
from golf.trainer.model import GPT


def qkv_and_grad(heads: int, kv_heads: int, batch: int = 2, length: int = 24, dim: int = 16,
                 seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    shapes = ((batch, length, heads, dim), (batch, length, kv_heads, dim), (batch, length, kv_heads, dim))
    q, k, v = (torch.randn(s, generator=gen).requires_grad_() for s in shapes)
    return q, k, v, torch.randn(batch, length, heads, dim, generator=gen)


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 2), (4, 4), (6, 2)])
def test_the_custom_ops_give_sdpas_output_and_gradients(heads: int, kv_heads: int) -> None:
    # the ops' autograd wiring (saved out and lse, GQA gradients summed per kv head) against SDPA's own autograd
    q, k, v, dout = qkv_and_grad(heads, kv_heads)
    want = causal_attention(q, k, v, "sdpa")
    want_grads = torch.autograd.grad(want, (q, k, v), dout)
    # the model's path (K/V expanded to the query heads) and the op on grouped K/V directly
    for got in (causal_attention(q, k, v, "math"), attention_forward(q, k, v, "math")[0]):
        got_grads = torch.autograd.grad(got, (q, k, v), dout)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        for name, g, w in zip("qkv", got_grads, want_grads, strict=True):
            assert g.shape == w.shape, name
            torch.testing.assert_close(g, w, atol=2e-5, rtol=1e-4, msg=f"d{name}")


def test_the_kernels_get_kv_expanded_to_the_query_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    # FA4's backward accumulates grouped dK/dV in fp32 buffers; expanded heads skip that (session 7: -4.5 ms)
    seen: list[tuple[int, ...]] = []
    real = torch.ops.golf.attention_forward

    def spy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
        seen.extend([tuple(k.shape), tuple(v.shape)])
        return real(q, k, v, kernel)

    monkeypatch.setattr(torch.ops.golf, "attention_forward", spy)
    q, k, v, _ = qkv_and_grad(heads=6, kv_heads=2, length=8)
    causal_attention(q, k, v, "math")
    assert seen == [(2, 8, 6, 16), (2, 8, 6, 16)]


def test_the_forward_op_returns_the_log_sum_exp_of_the_scaled_causal_scores() -> None:
    q, k, v, _ = qkv_and_grad(heads=2, kv_heads=1, batch=1, length=5, dim=4)
    out, lse = attention_forward(q.detach(), k.detach(), v.detach(), "math")
    assert lse.shape == (1, 2, 5) and lse.dtype == torch.float32
    q, k = q.detach(), k.detach()
    for head in range(2):
        for i in range(5):
            scores = [float(q[0, i, head] @ k[0, j, 0]) / 2.0 for j in range(i + 1)]  # 1/sqrt(head dim 4)
            assert lse[0, head, i].item() == pytest.approx(torch.tensor(scores).logsumexp(0).item(), abs=1e-5)
    # the first position attends only to itself: its output is its own value row, for every query head
    torch.testing.assert_close(out[0, 0], v.detach()[0, 0].expand(2, 4))


def test_a_model_on_the_ops_matches_the_model_on_sdpa() -> None:
    hp = Hyperparameters.resolve({"NUM_LAYERS": 3, "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2,
                                  "VOCAB_SIZE": 97, "TRAIN_SEQ_LEN": 16, "TRAIN_BATCH_TOKENS": 256,
                                  "XSA_LAST_N": 1, "VE_ENABLED": 1, "VE_LAYERS": "1,2", "VALUE_RESIDUAL": 1})
    torch.manual_seed(0)
    on_sdpa = GPT(hp)
    on_ops = GPT(hp, attention_backend="math")
    on_ops.load_state_dict(on_sdpa.state_dict())
    for p in on_sdpa.parameters():  # zero-initialised projections would hide the attention path
        torch.nn.init.normal_(p, std=0.05)
    on_ops.load_state_dict(on_sdpa.state_dict())
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(2, 97, (2, 16), generator=gen), torch.randint(2, 97, (2, 16), generator=gen)
    loss_sdpa, loss_ops = on_sdpa(x, y), on_ops(x, y)
    loss_sdpa.backward()
    loss_ops.backward()
    assert loss_ops.item() == pytest.approx(loss_sdpa.item(), abs=1e-5)
    for (name, a), b in zip(on_sdpa.named_parameters(), on_ops.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_auto_takes_fa4_only_where_it_is_usable_and_each_call_is_big() -> None:
    assert auto_backend(True, 48 * 2048) == "fa4"  # the challenge's micro-step on each of 8 GPUs
    assert auto_backend(True, FA4_MIN_MICRO_TOKENS) == "fa4"
    assert auto_backend(True, 8 * 2048) == "sdpa"  # host-bound: FA4 measured 38% slower per step
    assert auto_backend(False, 48 * 2048) == "sdpa"


def test_without_a_gpu_auto_runs_sdpa_and_fa4_says_what_it_needs() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, 48 * 2048) == "sdpa"
    assert resolve_backend("sdpa", cpu, 48 * 2048) == "sdpa"
    with pytest.raises(KnobError, match=r"^ATTN_BACKEND=fa4 needs a Hopper or Blackwell GPU and the flash-attn-4 "
                                        r"package .*; valid without them: auto, sdpa$"):
        resolve_backend("fa4", cpu, 48 * 2048)


def test_the_knob_names_its_choices() -> None:
    assert Hyperparameters.resolve().attn_backend == "auto"
    with pytest.raises(KnobError, match=r"ATTN_BACKEND='fa3' is not valid: expected one of auto, sdpa, fa4"):
        Hyperparameters.resolve({"ATTN_BACKEND": "fa3"})
