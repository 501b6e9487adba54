"""Muon, the LR schedule, EMA/SWA and late QAT under torch.compile."""

from __future__ import annotations

import shutil

import pytest
import torch

from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import GPT, CastedLinear, fake_quant
from golf.trainer.optim import LRSchedule, Muon, WeightAverager, muon_momentum, newton_schulz


def hp(**knobs: object) -> Hyperparameters:
    base = {"NUM_LAYERS": 2, "MODEL_DIM": 32, "NUM_HEADS": 2, "NUM_KV_HEADS": 1, "VOCAB_SIZE": 50,
            "TRAIN_SEQ_LEN": 8, "TRAIN_BATCH_TOKENS": 64}
    return Hyperparameters.resolve({**base, **knobs})


def test_newton_schulz_orthogonalizes() -> None:
    torch.manual_seed(0)
    g = torch.randn(3, 16, 48)
    out = newton_schulz(g, steps=10, dtype=torch.float32)
    sv = torch.linalg.svdvals(out)
    # the quintic iteration is tuned to land singular values in roughly [0.7, 1.2], not exactly 1
    assert sv.min() > 0.6 and sv.max() < 1.25
    tall = newton_schulz(g.mT, steps=10, dtype=torch.float32)
    torch.testing.assert_close(tall, out.mT, atol=1e-5, rtol=1e-5)


def test_muon_batched_step_equals_the_per_matrix_rule() -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8, 4)) for _ in range(3)] + [torch.nn.Parameter(torch.randn(4, 8))]
    grads = [torch.randn_like(p) for p in params]
    expected = []
    lr, mom, wd = 0.1, 0.9, 0.5
    for p, g in zip(params, grads, strict=False):
        buf = g.clone()  # first step: buffer = grad
        update = g + mom * buf  # nesterov
        update = update / update.norm(dim=-1, keepdim=True)  # MuonEq-R
        o = newton_schulz(update, 5, torch.float32) * max(1.0, p.size(0) / p.size(1)) ** 0.5
        expected.append(p.detach() * (1 - lr * wd) - lr * o)
    opt = Muon(params, lr=lr, momentum=mom, backend_steps=5, weight_decay=wd, row_normalize=True,
               ns_dtype=torch.float32)
    for p, g in zip(params, grads, strict=False):
        p.grad = g
    opt.step()
    for p, e in zip(params, expected, strict=False):
        torch.testing.assert_close(p.detach(), e)


def test_muon_momentum_warms_up_linearly() -> None:
    h = hp(MUON_MOMENTUM=0.99, MUON_MOMENTUM_WARMUP_START=0.92, MUON_MOMENTUM_WARMUP_STEPS=100)
    assert muon_momentum(h, 0) == pytest.approx(0.92)
    assert muon_momentum(h, 50) == pytest.approx(0.955)
    assert muon_momentum(h, 500) == pytest.approx(0.99)


def test_warmdown_by_iterations_reaches_zero_at_the_last_step() -> None:
    s = LRSchedule(hp(ITERATIONS=100, WARMDOWN_ITERS=20), cap_ms=None)
    assert s(0, 0) == 1.0 and s(80, 0) == 1.0
    assert s(90, 0) == pytest.approx(0.5)
    assert s(100, 0) == 0.0


def test_warmdown_reaches_its_floor_at_the_wallclock_cap_when_that_comes_first() -> None:
    s = LRSchedule(hp(ITERATIONS=10_000, WARMDOWN_ITERS=100, MIN_LR=0.1), cap_ms=60_000.0)
    # 10 ms/step: the last 100 steps are the last 1000 ms before the cap
    assert s(5000, 50_000.0) == 1.0
    assert s(5950, 59_500.0) == pytest.approx(0.5)
    assert s(6000, 60_000.0) == pytest.approx(0.1)  # floored at MIN_LR


def test_warmdown_fraction() -> None:
    s = LRSchedule(hp(ITERATIONS=1000, WARMDOWN_FRAC=0.25), cap_ms=None)
    assert s(700, 0) == 1.0
    assert s(875, 0) == pytest.approx(0.5)
    t = LRSchedule(hp(ITERATIONS=10**6, WARMDOWN_FRAC=0.5), cap_ms=1000.0)
    assert t(10, 750.0) == pytest.approx(0.5)  # time-based progress dominates


def test_ema_equals_the_hand_computed_average() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    avg = WeightAverager(model, hp(EMA_ENABLED=1, EMA_DECAY=0.9))
    values = [2.0, 4.0, -1.0]
    expected = 1.0
    for i, v in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(v)
        avg.update(i, 1.0)
        expected = 0.9 * expected + 0.1 * v
    assert avg.apply() == "ema:applying EMA weights"
    torch.testing.assert_close(model.weight, torch.full((1, 2), expected))


def test_swa_averages_snapshots_taken_below_the_lr_threshold() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    avg = WeightAverager(model, hp(SWA_ENABLED=1, SWA_EVERY=2, SWA_START_FRAC=0.5))
    lines = []
    for step, (value, lr) in enumerate([(1.0, 0.9), (2.0, 0.9), (3.0, 0.4), (4.0, 0.3), (5.0, 0.2), (6.0, 0.1)], 1):
        with torch.no_grad():
            model.weight.fill_(value)
        lines.append(avg.update(step, lr))
    # snapshots at even steps with lr < 0.5: steps 4 and 6 -> values 4 and 6
    assert lines[3] == "swa:start step:4"
    assert avg.apply() == "swa:applying averaged 2 checkpoints"
    assert model.weight.item() == pytest.approx(5.0)


def test_fake_quant_is_identity_when_off_and_quantizes_when_on() -> None:
    w = torch.randn(4, 16, requires_grad=True)
    off = fake_quant(w, 6, torch.zeros(()))
    assert torch.equal(off, w)
    on = fake_quant(w, 6, torch.ones(()))
    scale = w.detach().abs().amax(1, keepdim=True) / 31
    levels = on.detach() / scale
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    on.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through


def _compile_backend() -> str:
    return "inductor" if shutil.which("gcc") or shutil.which("cc") else "aot_eager"


def test_late_qat_changes_the_compiled_forward_after_the_switch() -> None:
    torch.manual_seed(0)
    model = GPT(hp(LATE_QAT_THRESHOLD=0.15, MATRIX_BITS=4))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    compiled = torch.compile(model, backend=_compile_backend(), dynamic=False, fullgraph=True)
    x = torch.randint(0, 50, (2, 8))
    before = compiled(x, x).detach()
    eager_before = model(x, x).detach()
    model.set_qat(True)
    after = compiled(x, x).detach()
    eager_after = model(x, x).detach()
    torch.testing.assert_close(before, eager_before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after, eager_after, rtol=1e-4, atol=1e-4)
    assert (after - before).abs().item() > 1e-3
    assert all(m.qat_on.item() == 1.0 for m in model.modules() if isinstance(m, CastedLinear) and m.qat_bits)
