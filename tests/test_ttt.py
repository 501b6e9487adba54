"""Test-time training (golf/trainer/ttt.py): score-first legality, LR 0 = sliding, freezing, schedules, ranks."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import perturbed_tiny_gpt

from golf.trainer import ttt as T
from golf.trainer.bpb import build_luts_from_pieces
from golf.trainer.hparams import Hyperparameters
from golf.trainer.model import GPT
from golf.trainer.runtime import Runtime
from golf.trainer.sliding import WindowScorer, first_scored

CPU = torch.device("cpu")
VOCAB = 64
SEQ = 32


def synthetic_luts():  # type: ignore[no-untyped-def]
    pieces = [("control", "<pad>"), ("control", "<s>"), ("control", "</s>")]
    pieces += [("normal", ("\u2581" if i % 2 else "") + "x" * (1 + i % 4)) for i in range(3, VOCAB)]
    return build_luts_from_pieces(pieces, VOCAB)


def tiny_gpt(seed: int = 0) -> GPT:
    return perturbed_tiny_gpt(VOCAB, SEQ, seed)


def stream(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (n + 1,), generator=gen)


def settings(**kw: object) -> T.TTTSettings:
    base = dict(lr=0.05, epochs=2, optimizer="sgd", momentum=0.9, batch_seqs=2, seq_len=SEQ, grad_clip=1.0,
                chunk_tokens=64, schedule="cosine_chunks")
    base.update(kw)
    return dataclasses.replace(T.TTTSettings.from_hp(Hyperparameters.resolve()), **base)  # type: ignore[arg-type]


def run_ttt(model: GPT, toks: torch.Tensor, cfg: T.TTTSettings, stride: int = 8, batch: int = 3,
            rt: Runtime | None = None) -> T.TTTResult:
    scorer = WindowScorer(model, toks, synthetic_luts(), SEQ, stride, batch, CPU)
    return T.score_first_ttt(model, scorer, cfg, rt or Runtime(CPU))


# ---------------------------------------------------------------------------------------------- legality
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_zero_lr_gives_the_sliding_window_score(optimizer: str) -> None:
    model = tiny_gpt()
    before = copy.deepcopy(model.state_dict())
    toks = stream(330)
    out = run_ttt(model, toks, settings(lr=0.0, optimizer=optimizer, weight_decay=0.1))
    slide = WindowScorer(model, toks, synthetic_luts(), SEQ, 8, 3, CPU).evaluate(Runtime(CPU))
    assert out.result.tokens == slide.tokens == 330
    assert out.result.val_loss == pytest.approx(slide.val_loss, rel=1e-9)
    assert out.result.val_bpb == pytest.approx(slide.val_bpb, rel=1e-9)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("chunk", [0, 2])
def test_future_tokens_change_no_earlier_chunk_score(chunk: int) -> None:
    base = tiny_gpt()
    toks = stream(64 * 5)
    cfg = settings(lr=0.2)
    changed = toks.clone()
    cut = (chunk + 1) * cfg.chunk_tokens + 1  # tokens from here on are targets of later chunks only
    changed[cut:] = stream(toks.numel() - cut - 1, seed=9)
    a = run_ttt(copy.deepcopy(base), toks, cfg).chunk_sums
    b = run_ttt(copy.deepcopy(base), changed, cfg).chunk_sums
    assert a.shape == (5, 3)
    assert torch.equal(a[:chunk + 1], b[:chunk + 1])
    assert not torch.equal(a[chunk + 1:, 0], b[chunk + 1:, 0])
    # and the model did adapt: later chunks score differently from the unadapted model
    frozen = run_ttt(copy.deepcopy(base), toks, settings(lr=0.0)).chunk_sums
    assert torch.equal(a[0], frozen[0])
    assert torch.all(a[1:, 0] != frozen[1:, 0])


def test_weight_decay_is_adamws_only_as_in_the_records() -> None:
    """TTT_WEIGHT_DECAY decays AdamW's TTT; the SGD form scores as with no decay."""
    toks = stream(330)

    def chunk_sums(optimizer: str, decay: float) -> torch.Tensor:
        return run_ttt(tiny_gpt(), toks, settings(optimizer=optimizer, weight_decay=decay, lr=0.02)).chunk_sums

    assert torch.equal(chunk_sums("sgd", 0.5), chunk_sums("sgd", 0.0))
    assert not torch.allclose(chunk_sums("adamw", 0.5), chunk_sums("adamw", 0.0))
    assert T.TTTSettings.from_hp(Hyperparameters.from_env({"TTT_WEIGHT_DECAY": "0.5"})).decay == 0.0  # sgd default


def test_training_uses_only_already_scored_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int, int]] = []
    original = T.SequenceTrainer.step

    def spy(self, first: int, k0: int, k1: int, lr: float, rows: int = 0) -> None:  # type: ignore[no-untyped-def]
        calls.append((first, k0, k1))
        original(self, first, k0, k1, lr, rows)

    monkeypatch.setattr(T.SequenceTrainer, "step", spy)
    cfg = settings(epochs=2, batch_seqs=1)
    total = 64 * 4 + 40  # 5 chunks, the last one partial
    run_ttt(tiny_gpt(), stream(total), cfg)
    chunks = {first // cfg.chunk_tokens for first, _, _ in calls}
    assert chunks == {0, 1, 2, 3}  # never the last chunk
    for first, k0, k1 in calls:
        _lo, hi = first + k0 * SEQ, first + k1 * SEQ  # targets trained on: [lo, hi)
        assert first % cfg.chunk_tokens == 0 and hi <= first + cfg.chunk_tokens
    assert len(calls) == 4 * cfg.epochs * (cfg.chunk_tokens // SEQ)


def test_windows_go_to_the_chunk_of_their_first_scored_target() -> None:
    toks = stream(500)
    for stride in (8, 12, 32):
        scorer = WindowScorer(tiny_gpt(), toks, synthetic_luts(), SEQ, stride, 4, CPU)
        chunks, bounds = T.chunk_windows(scorer, 64)
        assert chunks == math.ceil(500 / 64) and bounds[0] == 0 and bounds[-1] == len(scorer.starts)
        first = first_scored(scorer.starts, SEQ, stride)
        for c in range(chunks):
            assert np.all(first[bounds[c]:bounds[c + 1]] // 64 == c)


def test_plain_sequences_as_windows_when_there_is_no_stride() -> None:
    model = tiny_gpt()
    toks = stream(SEQ * 10)
    out = run_ttt(model, toks, settings(lr=0.0), stride=SEQ)
    from golf.trainer.evaluate import evaluate_plain

    plain = evaluate_plain(model.token_losses, toks, synthetic_luts(), SEQ, 4, Runtime(CPU))
    assert out.result.val_loss == pytest.approx(plain.val_loss, rel=1e-6)


# ---------------------------------------------------------------------------------------------- what trains
def test_frozen_blocks_and_lr_multipliers() -> None:
    model = tiny_gpt()
    before = copy.deepcopy(model.state_dict())
    run_ttt(model, stream(64 * 3), settings(freeze_blocks=1, lr_out_mult=0.0))
    after = model.state_dict()
    for name in before:
        same = torch.equal(before[name], after[name])
        if name.startswith("blocks.0.") or name.endswith((".attn.proj.weight", ".mlp.proj.weight")):
            assert same, f"{name} should not move"
        elif name in ("tok_emb.weight", "blocks.1.mlp.fc.weight", "blocks.1.attn.c_q.weight"):
            assert not same, f"{name} should train"


def test_lr_multiplier_names() -> None:
    cfg = settings(lr_out_mult=0.5, lr_in_mult=2.0)
    assert T.lr_multiplier("blocks.3.attn.proj.weight", cfg) == 0.5
    assert T.lr_multiplier("blocks.3.mlp.proj.weight", cfg) == 0.5
    for n in ("c_q", "c_k", "c_v"):
        assert T.lr_multiplier(f"blocks.0.attn.{n}.weight", cfg) == 2.0
    assert T.lr_multiplier("blocks.0.mlp.fc.weight", cfg) == 2.0
    assert T.lr_multiplier("bigram.proj.weight", cfg) == 1.0
    assert T.lr_multiplier("tok_emb.weight", cfg) == 1.0


def test_schedules() -> None:
    chunks = 5
    f = T._ttt_lr_fn(settings(lr=1.0), 0, chunks, 100)
    assert f(0) == f(7) == 1.0
    assert T._ttt_lr_fn(settings(lr=1.0), 2, chunks, 100)(0) == pytest.approx(0.5)
    assert T._ttt_lr_fn(settings(lr=1.0), 4, chunks, 100)(0) == pytest.approx(0.0, abs=1e-12)
    steps = T._ttt_lr_fn(settings(lr=1.0, schedule="cosine_steps"), 3, chunks, 100)
    assert steps(0) == 1.0 and steps(50) == pytest.approx(0.5) and steps(100) == pytest.approx(0.0, abs=1e-12)
    assert T._ttt_lr_fn(settings(lr=0.3, schedule="constant"), 4, chunks, 100)(99) == 0.3


def test_adapt_first_trains_over_the_whole_stream() -> None:
    model = tiny_gpt()
    toks = stream(SEQ * 7 + 5)
    before = copy.deepcopy(model.state_dict())
    steps = T.train_on_stream(model, toks, settings(epochs=2, batch_seqs=3), Runtime(CPU))
    assert steps == 2 * math.ceil(7 / 3)
    assert not torch.equal(before["tok_emb.weight"], model.state_dict()["tok_emb.weight"])
    assert all(p.grad is None for p in model.parameters())


def test_step_sizes() -> None:
    assert T.step_sizes(16, 32, 0, 1) == {16}
    assert T.step_sizes(16, 32, 0, 8) == {2}
    assert T.step_sizes(10, 4, 0, 1) == {4, 2}
    assert T.step_sizes(3, 4, 2, 4) == {1} and T.step_sizes(3, 4, 0, 4) == set()
    assert T.step_rows(10, 4, 0, 1) == 4 and T.step_rows(16, 32, 0, 8) == 2 and T.step_rows(3, 4, 0, 4) == 0


def test_a_short_last_step_is_padded_to_one_shape_with_the_real_rows_gradients() -> None:
    model = tiny_gpt()
    toks = stream(SEQ * 7 + 5)
    trainer = T.SequenceTrainer(model, toks, settings(lr=0.0, momentum=0.0, grad_clip=0.0, batch_seqs=3),
                                Runtime(CPU))
    shapes: list[tuple[int, ...]] = []

    def spy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return model(x, y)

    trainer.loss_fn = spy
    trainer.train_span(0, 7, lambda _step: 0.0)  # steps of 3, 3 and 1 (padded) sequences, twice
    assert shapes == [(3, SEQ)] * 6
    padded = [p.grad.clone() for p in trainer.params]  # the last step's: sequence 6 alone, lr 0 left weights as-is
    last = toks[6 * SEQ:7 * SEQ + 1].long()[None]
    model.zero_grad(set_to_none=True)
    model(last[:, :-1], last[:, 1:]).backward()
    for got, param in zip(padded, trainer.params, strict=True):
        torch.testing.assert_close(got, param.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["adapt_first", "score_first"])
def test_a_padded_last_step_runs_the_primed_graph(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The compile warm-up primes one TTT step; a padded last step must not compile a second graph (on the H100 a
    recompile costs ~35 s of evaluation time). A backend that counts the graphs dynamo hands it shows it on CPU:
    dynamo's guards (shapes and strides) are the same whatever the backend."""
    graphs: list[torch.fx.GraphModule] = []

    def counting_backend(gm: torch.fx.GraphModule, _inputs: list[torch.Tensor]):  # type: ignore[no-untyped-def]
        graphs.append(gm)
        return gm.forward

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend=counting_backend, **kw))
    torch._dynamo.reset()
    model = tiny_gpt()
    toks = stream(SEQ * 11 + 5)
    # adapt-first: 11 sequences in steps of 4 (the last, 3, padded); score-first: chunks of 6 sequences, steps 4 + 2
    cfg = settings(batch_seqs=4, epochs=1, chunk_tokens=6 * SEQ)
    T.prime_train_step(model, T.step_rows(11 if mode == "adapt_first" else 6, 4, 0, 1), SEQ, VOCAB, CPU)
    assert len(graphs) == 1
    if mode == "adapt_first":
        assert T.train_on_stream(model, toks, cfg, Runtime(CPU), compile_fn=True) == 3
    else:
        scorer = WindowScorer(model, toks, synthetic_luts(), SEQ, 8, 3, CPU)
        assert math.isfinite(T.score_first_ttt(model, scorer, cfg, Runtime(CPU), compile_fn=True).result.val_bpb)
    assert len(graphs) == 1
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------- ranks
def _worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.set_num_threads(1)
    rt = Runtime(CPU, rank=rank, world_size=world, distributed=True)
    result = run_ttt(tiny_gpt(), stream(64 * 3 + 17), settings(batch_seqs=3), rt=rt)
    slide = WindowScorer(tiny_gpt(), stream(64 * 3 + 17), synthetic_luts(), SEQ, 8, 3, CPU).evaluate(rt)
    if rank == 0:
        torch.save({"ttt": result.chunk_sums, "sliding": (slide.val_loss, slide.tokens)}, out)
    # both ranks tear gloo down together: a rank that destroyed its group while the other was still saving was seen
    # to abort ("terminate called without an active exception") on a clean-clone CI run
    rt.barrier()
    rt.close()


def test_two_ranks_give_the_one_rank_scores(tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    mp.spawn(_worker, args=(2, f"file://{tmp_path / 'init'}", str(out)), nprocs=2, join=True)
    got = torch.load(out)
    one = run_ttt(tiny_gpt(), stream(64 * 3 + 17), settings(batch_seqs=3))
    slide = WindowScorer(tiny_gpt(), stream(64 * 3 + 17), synthetic_luts(), SEQ, 8, 3, CPU).evaluate(Runtime(CPU))
    assert got["sliding"][1] == slide.tokens
    assert got["sliding"][0] == pytest.approx(slide.val_loss, rel=1e-9)
    assert torch.allclose(got["ttt"], one.chunk_sums, rtol=1e-5)


def test_settings_take_every_field_from_its_ttt_knob() -> None:
    env = {"TTT_LR": "0.03", "TTT_EPOCHS": "5", "TTT_OPTIMIZER": "adamw", "TTT_MOMENTUM": "0.8",
           "TTT_WEIGHT_DECAY": "0.01", "TTT_BATCH_SEQS": "16", "TTT_SEQ_LEN": "512", "TTT_GRAD_CLIP": "0.5",
           "TTT_FREEZE_BLOCKS": "2", "TTT_SCHEDULE": "constant", "TTT_LR_OUT_MULT": "3", "TTT_LR_IN_MULT": "0.5",
           "TTT_CHUNK_TOKENS": "16384"}
    assert T.TTTSettings.from_hp(Hyperparameters.from_env(env)) == T.TTTSettings(
        lr=0.03, epochs=5, optimizer="adamw", momentum=0.8, weight_decay=0.01, batch_seqs=16, seq_len=512,
        grad_clip=0.5, freeze_blocks=2, schedule="constant", lr_out_mult=3.0, lr_in_mult=0.5, chunk_tokens=16384)
