"""What each technique of the bundled trainer computes (issue: every technique behind its knob)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import (
    BOS_ID,
    GPT,
    Attention,
    Block,
    SmearGate,
    apply_rotary,
    bigram_buckets,
    describe,
    exclusive_self_attention,
    trigram_buckets,
)
from golf.trainer.recurrence import layer_order

TINY = {"NUM_LAYERS": 4, "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "VOCAB_SIZE": 97,
        "TRAIN_SEQ_LEN": 16, "TRAIN_BATCH_TOKENS": 256}


def tiny(**knobs: object) -> Hyperparameters:
    return Hyperparameters.resolve({**TINY, **knobs})


def ids(batch: int = 2, length: int = 16, vocab: int = 97, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (batch, length), generator=g)


def test_parameter_counts_match_the_challenge_logs() -> None:
    # NaiveBaseline log: model_params:17059912; the 03-22 #549-stack log: model_params:26993756
    assert describe(GPT(Hyperparameters.resolve()))["model_params"] == 17059912
    stack = Hyperparameters.resolve({"NUM_LAYERS": 11, "MLP_MULT": 3, "XSA_LAST_N": 4, "VE_ENABLED": 1,
                                     "BIGRAM_VOCAB_SIZE": 2048, "SMEAR_GATE": 1, "ROPE_DIMS": 16, "LN_SCALE": 1})
    assert describe(GPT(stack))["model_params"] == 26993756


def reference_baseline_loss(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The naive baseline written out independently from the state dict (no golf code paths)."""
    sd = model.state_dict()
    hp = model.cfg
    d, h, hkv = hp.model_dim, hp.num_heads, hp.num_kv_heads
    hd = d // h

    def norm(t: torch.Tensor) -> torch.Tensor:
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + torch.finfo(t.dtype).eps)

    def rope(t: torch.Tensor) -> torch.Tensor:
        T = t.size(1)
        inv = 1.0 / (hp.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        ang = torch.outer(torch.arange(T, dtype=torch.float64), inv).float()
        c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
        a, b = t[..., :hd // 2], t[..., hd // 2:]
        return torch.cat((a * c + b * s, b * c - a * s), -1)

    x0 = norm(sd["tok_emb.weight"][x])
    hcur = x0
    skips = []
    n_enc = hp.num_layers // 2
    for i in range(hp.num_layers):
        p = f"blocks.{i}."
        if i >= n_enc and skips:
            hcur = hcur + sd["skip_weights"][i - n_enc] * skips.pop()
        mix = sd[p + "resid_mix"]
        hcur = mix[0] * hcur + mix[1] * x0
        a_in = norm(hcur)
        B, T, _ = a_in.shape
        q = rope(norm((a_in @ sd[p + "attn.c_q.weight"].T).view(B, T, h, hd))) * sd[p + "attn.q_gain"][:, None]
        k = rope(norm((a_in @ sd[p + "attn.c_k.weight"].T).view(B, T, hkv, hd)))
        v = (a_in @ sd[p + "attn.c_v.weight"].T).view(B, T, hkv, hd)
        k, v = k.repeat_interleave(h // hkv, 2), v.repeat_interleave(h // hkv, 2)
        att = (q.transpose(1, 2) @ k.transpose(1, 2).mT) / math.sqrt(hd)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        y_att = (att @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, d)
        hcur = hcur + sd[p + "attn_scale"] * (y_att @ sd[p + "attn.proj.weight"].T)
        m = torch.relu(norm(hcur) @ sd[p + "mlp.fc.weight"].T).square() @ sd[p + "mlp.proj.weight"].T
        hcur = hcur + sd[p + "mlp_scale"] * m
        if i < n_enc:
            skips.append(hcur)
    logits = norm(hcur) @ sd["tok_emb.weight"].T
    logits = hp.logit_softcap * torch.tanh(logits / hp.logit_softcap)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def test_every_knob_off_is_the_naive_baseline() -> None:
    torch.manual_seed(0)
    model = GPT(tiny())
    # give the zero-initialised projections and scalars non-trivial values so every path matters
    with torch.no_grad():
        for _name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.05 if p.ndim >= 2 else 0.3))
    x, y = ids(seed=1), ids(seed=2)
    torch.testing.assert_close(model(x, y), reference_baseline_loss(model, x, y), rtol=1e-4, atol=1e-5)
    assert not any(b.attn.xsa for b in model.blocks)
    assert model.bigram is None and model.smear is None and model.ve is None


def test_xsa_output_is_orthogonal_to_the_own_token_value() -> None:
    torch.manual_seed(0)
    y = torch.randn(2, 5, 8, 16)
    v = torch.randn(2, 5, 2, 16)  # GQA: 4 query heads per kv head
    out = exclusive_self_attention(y, v)
    v_rep = v.repeat_interleave(4, dim=2)
    dots = (out * F.normalize(v_rep, dim=-1)).sum(-1)
    assert dots.abs().max() < 1e-5
    # and it only removes that component: y - out is parallel to v
    diff = y - out
    cos = F.cosine_similarity(diff, v_rep, dim=-1).abs()
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-4)


def test_xsa_last_n_selects_the_last_layers() -> None:
    model = GPT(tiny(XSA_LAST_N=2))
    assert [i for i, b in enumerate(model.blocks) if b.attn.xsa] == [2, 3]
    assert all(b.attn.xsa for b in GPT(tiny(XSA_LAST_N=4)).blocks)


def test_partial_rope_leaves_the_unrotated_dims_unchanged() -> None:
    model = GPT(tiny(ROPE_DIMS=6))
    cos, sin = model.rotary.tables(10, torch.float32)
    x = torch.randn(1, 10, 2, 16)
    out = apply_rotary(x, cos, sin)
    assert torch.equal(out[..., 6:], x[..., 6:])
    assert not torch.allclose(out[:, 1:, :, :6], x[:, 1:, :, :6])
    # rotation preserves the norm of each rotated pair (dims i and i+3)
    pair_in = x[..., :3] ** 2 + x[..., 3:6] ** 2
    pair_out = out[..., :3] ** 2 + out[..., 3:6] ** 2
    torch.testing.assert_close(pair_in, pair_out)
    # position 0 is not rotated at all
    assert torch.allclose(out[:, 0], x[:, 0])


def test_bigram_and_trigram_buckets_match_the_formula() -> None:
    t = torch.tensor([[5, 7, 11, 2000, 3]])
    V = 2048
    expect_bi = [V - 1] + [((36313 * t[0, i].item()) ^ (27191 * t[0, i - 1].item())) % (V - 1) for i in range(1, 5)]
    assert bigram_buckets(t, V).tolist() == [expect_bi]
    tri = trigram_buckets(t, V)[0].tolist()
    assert tri[:2] == [-1, -1]
    for i in range(2, 5):
        a, b, c = t[0, i].item(), t[0, i - 1].item(), t[0, i - 2].item()
        assert tri[i] == ((36313 * a) ^ (27191 * b) ^ (51497 * c)) % (V - 1)


def test_trigram_adds_into_the_same_table() -> None:
    with_tri = GPT(tiny(BIGRAM_VOCAB_SIZE=64, TRIGRAM=1))
    without = GPT(tiny(BIGRAM_VOCAB_SIZE=64))
    assert describe(with_tri)["model_params"] == describe(without)["model_params"]
    with torch.no_grad():
        with_tri.bigram.embed.weight.normal_()  # type: ignore[union-attr]
    x = ids()
    bi = with_tri.bigram.embed(bigram_buckets(x, 64))  # type: ignore[union-attr]
    tri_idx = trigram_buckets(x, 64)
    tri = with_tri.bigram.embed(tri_idx.clamp_min(0)) * (tri_idx >= 0).unsqueeze(-1)  # type: ignore[union-attr]
    expected = with_tri.bigram.proj(bi + tri) * with_tri.bigram.scale  # type: ignore[union-attr]
    torch.testing.assert_close(with_tri.bigram(x, torch.float32), expected)  # type: ignore[misc]


def test_smear_gate_blends_the_previous_position_but_never_across_bos() -> None:
    smear = SmearGate(4)
    with torch.no_grad():
        smear.gate.fill_(0.0)  # sigmoid(0) = 0.5
    x = torch.arange(24, dtype=torch.float32).view(1, 6, 4)
    tokens = torch.tensor([[BOS_ID, 9, 9, BOS_ID, 9, 9]])
    out = smear(x, tokens)
    assert torch.equal(out[0, 0], x[0, 0])  # first position: nothing before it
    assert torch.equal(out[0, 3], x[0, 3])  # BOS: the previous token belongs to another document
    torch.testing.assert_close(out[0, 1], 0.5 * x[0, 1] + 0.5 * x[0, 0])
    torch.testing.assert_close(out[0, 4], 0.5 * x[0, 4] + 0.5 * x[0, 3])


def test_recurrence_runs_the_layers_in_the_intended_order() -> None:
    assert layer_order(11, 3, 5, 1) == [0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert layer_order(11, 3, 5, 0) == list(range(11))
    model = GPT(tiny(NUM_LAYERS=6, RECUR_LAYERS="2,3", RECUR_START_STEP=10))
    seen: list[int] = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_, i=i: seen.append(i))
    model(ids(), ids())
    assert seen == [0, 1, 2, 3, 4, 5]  # not active before its start step
    seen.clear()
    model.set_recurrence(True)
    model(ids(), ids())
    assert seen == [0, 1, 2, 3, 2, 3, 4, 5]
    assert describe(model)["virtual_layers"] == 8


def test_ln_scale_multiplies_each_blocks_prenorm_output() -> None:
    hp = tiny(LN_SCALE=1)
    assert [GPT(hp).blocks[i].ln_scale for i in range(4)] == pytest.approx([1 / math.sqrt(i + 1) for i in range(4)])
    block = Block(hp, 3, qat=False)
    captured: list[torch.Tensor] = []
    block.attn.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    x = torch.randn(1, 5, 64)
    cos, sin = GPT(hp).rotary.tables(5, torch.float32)
    block(x, x, cos, sin, None, None)
    torch.testing.assert_close(captured[0], F.rms_norm(x, (64,)) * 0.5)


def test_value_residual_mixes_with_the_first_layers_values() -> None:
    hp = tiny(VALUE_RESIDUAL=1)
    attn = Attention(hp, layer=2, qat_bits=0)
    assert attn.vr_lambda is not None and attn.vr_lambda.tolist() == [0.5, 0.5]
    assert Attention(hp, layer=0, qat_bits=0).vr_lambda is None
    with torch.no_grad():
        attn.vr_lambda.copy_(torch.tensor([0.3, 0.9]))
    captured: dict[str, torch.Tensor] = {}
    original = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):  # type: ignore[no-untyped-def]
        captured["v"] = v
        return original(q, k, v, **kw)

    x = torch.randn(1, 5, 64)
    v_first = torch.randn(1, 5, 2, 16)
    cos, sin = GPT(hp).rotary.tables(5, torch.float32)
    F.scaled_dot_product_attention = spy  # type: ignore[assignment]
    try:
        attn(x, cos, sin, None, v_first)
    finally:
        F.scaled_dot_product_attention = original  # type: ignore[assignment]
    v_own = attn.c_v(x).view(1, 5, 2, 16)
    torch.testing.assert_close(captured["v"].transpose(1, 2), 0.3 * v_first + 0.9 * v_own)


def test_value_residual_model_feeds_layer_zero_values_forward() -> None:
    model = GPT(tiny(VALUE_RESIDUAL=1))
    first_in: list[torch.Tensor] = []
    model.blocks[0].attn.register_forward_pre_hook(lambda _m, args: first_in.append(args[0]))
    received: list[torch.Tensor | None] = []
    model.blocks[2].attn.register_forward_pre_hook(lambda _m, args: received.append(args[4]))
    model(ids(), ids())
    first_v = model.blocks[0].attn.c_v(first_in[0])  # layer 0's raw values, before any mixing
    torch.testing.assert_close(received[0], first_v.view_as(received[0]))


@pytest.mark.parametrize("qat", [False, True])
def test_fused_qkv_projection_equals_the_three_separate_projections(qat: bool) -> None:
    hp = tiny(ORTHO_INIT=1, QAT_ENABLED=int(qat))
    attn = GPT(hp).blocks[1].attn
    for m in (attn.c_q, attn.c_k, attn.c_v):
        m.qat_on.fill_(1.0 if qat else 0.0)
    x = torch.randn(2, 7, 64, requires_grad=True)
    q, k, v = attn.qkv(x)
    assert q.shape == (2, 7, 4, 16) and k.shape == v.shape == (2, 7, 2, 16)
    for got, lin, heads in ((q, attn.c_q, 4), (k, attn.c_k, 2), (v, attn.c_v, 2)):
        torch.testing.assert_close(got, lin(x).view(2, 7, heads, 16))
    if qat:  # the fake quantization really reaches the fused matmul
        plain = F.linear(x, attn.c_q.weight).view(2, 7, 4, 16)
        assert (q - plain).abs().max() > 1e-4
    # gradients reach each projection's own weight exactly as through the separate modules
    (q.square().sum() + k.sum() + (v * 3).sum()).backward()
    fused = [m.weight.grad.clone() for m in (attn.c_q, attn.c_k, attn.c_v)]
    for m in (attn.c_q, attn.c_k, attn.c_v):
        m.weight.grad = None
    (attn.c_q(x).square().sum() + attn.c_k(x).sum() + (attn.c_v(x) * 3).sum()).backward()
    for got, m in zip(fused, (attn.c_q, attn.c_k, attn.c_v), strict=True):
        torch.testing.assert_close(got, m.weight.grad)


def test_value_embedding_is_added_only_on_its_layers() -> None:
    model = GPT(tiny(VE_ENABLED=1, VE_DIM=8, VE_LAYERS="1,3"))
    got: dict[int, object] = {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_pre_hook(lambda _m, args, i=i: got.__setitem__(i, args[3]))
    model(ids(), ids())
    assert got[0] is None and got[2] is None
    assert got[1] is not None and got[3] is not None


def test_negative_slope_gives_leaky_relu_squared() -> None:
    model = GPT(tiny(NEGATIVE_SLOPE=0.5))
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        mlp.proj.weight.copy_(torch.eye(64, mlp.proj.weight.size(1)))
    x = torch.randn(3, 64)
    h = mlp.fc(x)
    expected = torch.where(h > 0, h, 0.5 * h).square() @ mlp.proj.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_gated_attention_starts_nearly_open_and_scales_each_head() -> None:
    model = GPT(tiny(GATED_ATTENTION=1))
    gate = model.blocks[0].attn.gate
    assert gate is not None
    open_gate = torch.sigmoid(torch.tensor(4.0)).item()
    torch.testing.assert_close(gate(torch.randn(2, 3, 64)), torch.full((2, 3, 4), open_gate))


def test_parallel_residual_reads_the_same_input() -> None:
    hp = tiny(PARALLEL_RESIDUAL=1, PARALLEL_START_LAYER=2)
    model = GPT(hp)
    assert [b.parallel for b in model.blocks] == [False, False, True, True]
    block = model.blocks[2]
    inputs: list[torch.Tensor] = []
    block.attn.register_forward_pre_hook(lambda _m, a: inputs.append(a[0]))
    block.mlp.register_forward_pre_hook(lambda _m, a: inputs.append(a[0]))
    with torch.no_grad():
        block.attn.proj.weight.normal_()
    x = torch.randn(1, 5, 64)
    cos, sin = model.rotary.tables(5, torch.float32)
    block(x, x, cos, sin, None, None)
    torch.testing.assert_close(inputs[0], inputs[1])


def test_ortho_init_makes_input_matrices_orthogonal_and_keeps_output_projections_zero() -> None:
    model = GPT(tiny(ORTHO_INIT=1))
    w = model.blocks[0].attn.c_q.weight
    torch.testing.assert_close(w @ w.T, torch.eye(64), atol=1e-5, rtol=0)
    assert torch.count_nonzero(model.blocks[0].attn.proj.weight) == 0
    assert torch.count_nonzero(model.blocks[0].mlp.proj.weight) == 0


def test_skip_connections_reuse_encoder_outputs_in_reverse() -> None:
    model = GPT(tiny(NUM_LAYERS=4))
    outs: list[torch.Tensor] = []
    ins: list[torch.Tensor] = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _a, out: outs.append(out[0]))
        block.register_forward_pre_hook(lambda _m, a: ins.append(a[0]))
    with torch.no_grad():
        model.skip_weights.copy_(torch.tensor([[2.0], [3.0]]).expand(2, 64))
    model(ids(), ids())
    torch.testing.assert_close(ins[2], outs[1] + 2.0 * outs[1])  # decoder 0 pops the last encoder output
    torch.testing.assert_close(ins[3], outs[2] + 3.0 * outs[0])
