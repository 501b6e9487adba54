"""Fused q/k RMSNorm + RoPE + gain: the Triton kernels (under TRITON_INTERPRET=1 on CPU) against the plain path."""

from __future__ import annotations

import pytest
import torch

from golf.trainer import fused_rope as fr
from golf.trainer.model import Rotary, apply_rotary, rms_norm


def _tables(seq: int, head_dim: int, rope_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    return Rotary(head_dim, rope_dims, 10000.0, seq).tables(seq, torch.float32)


def test_plain_reference_is_the_models_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 16, generator=gen) * 3
    gain = torch.rand(3, generator=gen) + 0.5
    cos, sin = _tables(5, 16, 8)
    model = apply_rotary(rms_norm(x), cos, sin) * gain[:, None]
    assert torch.allclose(fr.plain_norm_rope(x, cos, sin, gain), model, atol=1e-6)
    assert torch.allclose(fr.plain_norm_rope(x, cos, sin, None), apply_rotary(rms_norm(x), cos, sin), atol=1e-6)


def test_runs_only_where_the_kernels_apply() -> None:
    cos, sin = _tables(4, 16, 8)
    cpu = torch.zeros(1, 4, 2, 16)
    assert fr.fused_rope_runs_on(cpu, cos) == fr.ROPE_INTERPRETED
    if fr.ROPE_INTERPRETED:
        assert not fr.fused_rope_runs_on(cpu, cos[None])  # per-row positions (DOC_ATTENTION): plain path
        assert not fr.fused_rope_runs_on(torch.zeros(1, 4, 2, 24), cos)  # head size not a power of two


@pytest.fixture
def interpreted(triton_interpreter: None):  # type: ignore[no-untyped-def]
    return fr


def _qkv_view(b: int, t: int, h: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q as the model gets it: a strided (B, T, H, D) view into a fused projection output wider than q."""
    gen = torch.Generator().manual_seed(seed)
    fused = torch.randn(b, t, 2 * h * d, generator=gen) * 2
    return fused, fused[..., :h * d].unflatten(-1, (h, d))


@pytest.mark.parametrize(("rope_dims", "with_gain"), [(8, True), (16, False), (4, True)])
def test_kernels_match_the_plain_path_in_value_and_gradient(interpreted, rope_dims: int,  # type: ignore
                                                            with_gain: bool) -> None:
    b, t, h, d = 2, 7, 5, 16  # 70 rows: not a multiple of any ROPE_CONFIGS row count
    cos, sin = _tables(t, d, rope_dims)
    gen = torch.Generator().manual_seed(1)
    grad_out = torch.randn(b, t, h, d, generator=gen)
    results = []
    for fused_path in (True, False):
        fused, x = _qkv_view(b, t, h, d, seed=2)
        fused.requires_grad_()
        x = fused[..., :h * d].unflatten(-1, (h, d))
        gain = (torch.rand(h, generator=torch.Generator().manual_seed(3)) + 0.5).requires_grad_() \
            if with_gain else None
        fn = interpreted.fused_norm_rope if fused_path else interpreted.plain_norm_rope
        out = fn(x, cos, sin, gain)
        (out * grad_out).sum().backward()
        results.append((out.detach(), fused.grad, None if gain is None else gain.grad))
    (out_f, dx_f, dg_f), (out_p, dx_p, dg_p) = results
    assert torch.allclose(out_f, out_p, atol=1e-5)
    assert torch.allclose(dx_f, dx_p, atol=1e-5)
    assert not dx_f[..., h * d:].any()  # the part of the projection that is not q gets no gradient
    if with_gain:
        assert torch.allclose(dg_f, dg_p, atol=1e-4)


def test_bf16_inputs_round_once(interpreted) -> None:  # type: ignore[no-untyped-def]
    _, x = _qkv_view(1, 6, 4, 16, seed=5)
    x = x.to(torch.bfloat16)
    cos, sin = _tables(6, 16, 8)
    gain = torch.full((4,), 5.25)
    out = interpreted.fused_norm_rope(x, cos.to(torch.bfloat16), sin.to(torch.bfloat16), gain)
    ref = interpreted.plain_norm_rope(x, cos.to(torch.bfloat16), sin.to(torch.bfloat16), gain)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, rtol=8e-3, atol=1e-2)


def test_attention_with_the_knob_equals_the_plain_attention(interpreted) -> None:  # type: ignore
    from golf.trainer.hparams import Hyperparameters
    from golf.trainer.model import GPT

    env = {"VOCAB_SIZE": "64", "NUM_LAYERS": "2", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1",
           "TRAIN_SEQ_LEN": "8", "EVAL_SEQ_LEN": "8", "ROPE_DIMS": "8", "QK_GAIN_INIT": "1.5"}
    grads = []
    for on in ("1", "0"):
        torch.manual_seed(0)
        model = GPT(Hyperparameters.from_env({**env, "FUSED_QK_NORM_ROPE_ENABLED": on}))
        assert all(block.attn.fused_rope == (on == "1") for block in model.blocks)
        with torch.no_grad():  # the zero-initialised projections would hide attention from the loss
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
        ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(4))
        model(ids, ids.roll(-1, 1)).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    fused, plain = grads
    assert fused.keys() == plain.keys()
    for name in plain:
        assert torch.allclose(fused[name], plain[name], atol=1e-5, rtol=1e-4), name
    assert plain["blocks.0.attn.q_gain"].abs().sum() > 0


def test_traceable_in_a_full_graph(interpreted) -> None:  # type: ignore[no-untyped-def]
    _, x = _qkv_view(1, 4, 2, 16, seed=6)
    cos, sin = _tables(4, 16, 8)
    compiled = torch.compile(interpreted.fused_norm_rope, backend="aot_eager", fullgraph=True)
    assert torch.allclose(compiled(x, cos, sin, None), interpreted.plain_norm_rope(x, cos, sin, None), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_kernels_in_a_compiled_graph_match_the_plain_path() -> None:
    pytest.importorskip("triton")
    b, t, h, d = 8, 2048, 8, 64  # a challenge micro-batch's shape per layer, partial RoPE 16/64
    gen = torch.Generator(device="cuda").manual_seed(0)
    fused = torch.randn(b, t, 2 * h * d, device="cuda", generator=gen).to(torch.bfloat16)
    grad_out = torch.randn(b, t, h, d, device="cuda", generator=gen).to(torch.bfloat16)
    cos, sin = (tab.cuda() for tab in _tables(t, d, 16))
    cos, sin = cos.to(torch.bfloat16), sin.to(torch.bfloat16)
    gain = torch.full((h,), 5.25, device="cuda") + torch.rand(h, device="cuda", generator=gen)

    def run(fn) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
        qkv, g = fused.clone().requires_grad_(), gain.clone().requires_grad_()
        out = torch.compile(fn, fullgraph=True)(qkv[..., :h * d].unflatten(-1, (h, d)), cos, sin, g)
        (out.float() * grad_out.float()).sum().backward()
        return out.float(), qkv.grad.float(), g.grad

    def plain(x, c, s, g):  # type: ignore[no-untyped-def]
        return (apply_rotary(rms_norm(x), c, s) * g.to(x.dtype)[:, None])

    for got, want in zip(run(fr.fused_norm_rope), run(plain), strict=True):
        assert (got - want).abs().max() <= 0.02 * want.abs().max(), (got - want).abs().max()
