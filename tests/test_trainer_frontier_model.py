"""The frontier techniques inside the GPT: each against an independent construction of what it should compute."""

from __future__ import annotations

import pytest
import torch

from golf.trainer.hparams import Hyperparameters, KnobError
from golf.trainer.model import GPT, is_control_tensor, parameter_groups

BASE = {"NUM_LAYERS": 6, "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "VOCAB_SIZE": 97, "TRAIN_SEQ_LEN": 16,
        "TRAIN_BATCH_TOKENS": 64}


def model(**knobs: object) -> GPT:
    torch.manual_seed(0)
    return GPT(Hyperparameters.resolve({**BASE, **knobs}))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 97, (2, 16), generator=gen)
    ids[:, 0] = 1
    ids[0, 7] = 1  # a document boundary inside the row
    return ids, torch.roll(ids, -1, 1)


def test_golfs_older_recurrence_knobs_are_the_records_knobs() -> None:
    old = Hyperparameters.resolve({**BASE, "RECUR_LAYERS": "2,3", "RECUR_START_FRAC": 0.4})
    new = Hyperparameters.resolve({**BASE, "NUM_LOOPS": 1, "LOOP_START": 2, "LOOP_END": 3, "ENABLE_LOOPING_AT": 0.4})
    assert old == new
    par = Hyperparameters.resolve({**BASE, "PARALLEL_RESIDUAL_START": 4})
    assert par == Hyperparameters.resolve({**BASE, "PARALLEL_RESIDUAL": 1, "PARALLEL_START_LAYER": 4})
    with pytest.raises(KnobError, match="RECUR_LAYERS and NUM_LOOPS both"):
        Hyperparameters.resolve({**BASE, "RECUR_LAYERS": "2,3", "NUM_LOOPS": 2})
    with pytest.raises(KnobError, match="LOOP_END=6 must satisfy"):
        Hyperparameters.resolve({**BASE, "NUM_LOOPS": 1, "LOOP_START": 2, "LOOP_END": 6})
    with pytest.raises(KnobError, match="pick one"):
        Hyperparameters.resolve({**BASE, "SPARSE_ATTN_GATE_ENABLED": 1, "ATTN_OUT_GATE_ENABLED": 1})


def test_two_extra_passes_and_their_skip_weights() -> None:
    m = model(NUM_LAYERS=11, NUM_LOOPS=2, LOOP_START=3, LOOP_END=5, ENABLE_LOOPING_AT=0.35)
    assert m.order == list(range(11)) and m.loop_passes == 0
    m.set_recurrence(True)
    assert m.order == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert m.skip_weights.shape[0] == 8  # min(encoder 8, decoder 9), as the records


def test_skip_gates_shut_make_the_skips_vanish() -> None:
    ids, targets = batch()
    gated = model(SKIP_GATES_ENABLED=1)
    plain = model()
    with torch.no_grad():
        gated.skip_gates.fill_(40.0)  # sigmoid = 1: lerp(w * skip, x, 1) = x
        plain.skip_weights.zero_()
    assert torch.allclose(gated(ids, targets), plain(ids, targets), atol=1e-6)
    assert is_control_tensor("skip_gates", gated.skip_gates)


def test_sparse_gate_at_init_halves_every_attention_output() -> None:
    ids, targets = batch()
    gated, plain = model(SPARSE_ATTN_GATE_ENABLED=1, GATE_WINDOW=8), model()
    with torch.no_grad():
        for block in plain.blocks:
            block.attn.proj.weight.normal_()  # a nonzero output projection, halved in one model by its gate
        for g_block, p_block in zip(gated.blocks, plain.blocks, strict=True):
            g_block.attn.proj.weight.copy_(p_block.attn.proj.weight)
            p_block.attn.proj.weight.mul_(0.5)
    assert torch.allclose(gated(ids, targets), plain(ids, targets), atol=1e-5)
    names = [n for n, _ in parameter_groups(gated)["scalar"]]
    assert "blocks.0.attn.gate.weight" in names  # a control tensor (AdamW), not a Muon matrix


@pytest.mark.parametrize("knobs", [{"ATTN_OUT_GATE_ENABLED": 1}, {"ATTN_OUT_GATE_ENABLED": 1, "ATTN_OUT_GATE_SRC": "q"},
                                   {"SMEAR_GATE_ENABLED": 1}])
def test_output_gate_and_input_smear_gate_are_transparent_at_init(knobs: dict[str, object]) -> None:
    ids, targets = batch()
    with_gate, without = model(**knobs), model()
    with torch.no_grad():
        for a, b in zip(with_gate.blocks, without.blocks, strict=True):
            b.attn.proj.weight.normal_()
            a.attn.proj.weight.copy_(b.attn.proj.weight)
    assert torch.equal(with_gate(ids, targets), without(ids, targets))
    with_gate(ids, targets).backward()
    gate = with_gate.smear_in if "SMEAR_GATE_ENABLED" in knobs else with_gate.blocks[0].attn.gate
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gate.parameters())  # it learns from step 1


def test_two_lanes_with_unit_decay_are_the_single_lane_parallel_block() -> None:
    ids, _ = batch()
    knobs = {"PARALLEL_RESIDUAL": 1, "PARALLEL_START_LAYER": 4}
    two, one = model(**knobs, PARALLEL_FINAL_LANE="mean"), model(**knobs)
    with torch.no_grad():
        for a, b in zip(two.blocks, one.blocks, strict=True):
            b.attn.proj.weight.normal_()
            b.mlp.proj.weight.normal_()
            a.load_state_dict(b.state_dict())
        # resid_mix at init reads lane 0 alone, so with unit decays and unit writes both lanes stay equal and
        # each equals the one-lane residual x + attn(x) + mlp(x); skips enter lane 0 only, so none here
        two.parallel_resid_lambdas.fill_(1.0)
        two.skip_weights.zero_()
        one.skip_weights.zero_()
    assert torch.allclose(two.hidden(ids), one.hidden(ids), atol=1e-5)
    with torch.no_grad():
        two.parallel_resid_lambdas.fill_(1.1)  # the records' init: a different function
    assert (two.hidden(ids) - one.hidden(ids)).abs().max() > 1e-2


def test_two_lanes_need_the_decoders_tail() -> None:
    with pytest.raises(KnobError, match="must come last"):
        model(NUM_LAYERS=6, NUM_LOOPS=1, LOOP_START=3, LOOP_END=4, PARALLEL_RESIDUAL=1, PARALLEL_START_LAYER=4,
              PARALLEL_FINAL_LANE="attn")
    with pytest.raises(KnobError, match="needs parallel residuals"):
        model(PARALLEL_FINAL_LANE="mlp")


def test_fused_ce_flag_keeps_the_loss_on_cpu() -> None:
    ids, targets = batch()
    targets[1, 3] = -100
    assert torch.allclose(model(FUSED_CE_ENABLED=1)(ids, targets), model()(ids, targets), atol=1e-6)


def test_two_lane_block_writes_each_output_into_both_lanes_with_its_weights() -> None:
    from golf.trainer.model import rms_norm

    m = model(PARALLEL_RESIDUAL=1, PARALLEL_START_LAYER=4, PARALLEL_FINAL_LANE="mean")
    block = m.blocks[4]
    gen = torch.Generator().manual_seed(3)
    lane0, lane1, x0 = (torch.randn(2, 16, 64, generator=gen) for _ in range(3))
    with torch.no_grad():
        block.resid_mix.copy_(torch.rand(2, 64, generator=gen))
        block.mlp.proj.weight.normal_(generator=gen)
        block.attn.proj.weight.normal_(generator=gen)
    resid, post = torch.tensor([0.9, 1.2]), torch.tensor([[0.3, 0.7], [1.5, -0.4]])
    cos, sin = m.rotary.tables(16, torch.float32)
    out0, out1, _ = block.forward_lanes(lane0, lane1, x0, cos, sin, None, None, resid, post)
    a = block.attn_scale * block.attn(rms_norm(block.resid_mix[0] * lane0 + block.resid_mix[1] * x0), cos, sin,
                                      None, None)[0]
    mlp = block.mlp_scale * block.mlp(rms_norm(lane1))
    assert torch.allclose(out0, 0.9 * lane0 + 0.3 * a + 1.5 * mlp, atol=1e-5)
    assert torch.allclose(out1, 1.2 * lane1 + 0.7 * a - 0.4 * mlp, atol=1e-5)
