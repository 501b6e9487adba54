"""Sliding-window evaluation (golf/trainer/sliding.py): coverage, sums, ranks, equality with plain evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import perturbed_tiny_gpt
from torch import nn

from golf.trainer.bpb import build_luts_from_pieces
from golf.trainer.evaluate import evaluate_plain
from golf.trainer.model import GPT
from golf.trainer.runtime import Runtime
from golf.trainer.sliding import WindowScorer, first_scored, window_starts

CPU = torch.device("cpu")
VOCAB = 64


def synthetic_luts(vocab: int = VOCAB):  # type: ignore[no-untyped-def]
    """Control ids 0-2, a byte token, and pieces of 1-4 chars, every other one with a leading space."""
    pieces = [("control", "<pad>"), ("control", "<s>"), ("control", "</s>"), ("byte", "<0x41>")]
    for i in range(4, vocab):
        pieces.append(("normal", ("\u2581" if i % 2 else "") + "é" * (i % 3) + "x" * (1 + i % 4)))
    return build_luts_from_pieces(pieces, vocab)


def stream(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    toks = torch.randint(3, VOCAB, (n + 1,), generator=gen)
    toks[:: 37] = 1  # BOS now and then: the leading-space byte depends on the previous token
    return toks


class Bigram(nn.Module):
    """Context-free model: the loss of a target depends only on (previous token, target)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.table = nn.Parameter(torch.randn(VOCAB, VOCAB, generator=gen))

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot(ids, VOCAB).float()

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.table


def tiny_gpt(seq: int = 32, seed: int = 0) -> GPT:
    return perturbed_tiny_gpt(VOCAB, seq, seed)


@pytest.mark.parametrize("total,seq,stride", [(1000, 64, 16), (1001, 64, 16), (1003, 64, 24), (50, 64, 16),
                                              (64, 64, 16), (65, 64, 16), (256, 64, 64), (100, 8, 1),
                                              (77, 32, 32), (1, 16, 4)])
def test_every_target_scored_exactly_once_with_enough_context(total: int, seq: int, stride: int) -> None:
    starts = window_starts(total, seq, stride)
    counts = np.zeros(total, dtype=np.int64)
    first = first_scored(starts, seq, stride)
    for ws, f in zip(starts, first, strict=True):
        end = min(ws + seq, total)
        assert end > f, "every window scores something"
        counts[f:end] += 1
        if ws > 0:
            assert f - ws >= seq - stride  # context of each scored target: at least L - stride tokens
    assert np.all(counts == 1)
    assert np.all(np.diff(starts) == stride) and starts[0] == 0


@pytest.mark.parametrize("total,seq,stride,batch", [(301, 32, 8, 4), (300, 32, 8, 7), (29, 32, 8, 2),
                                                    (257, 16, 16, 3), (500, 32, 5, 1)])
def test_sums_equal_the_context_free_reference_over_ranks(total: int, seq: int, stride: int, batch: int) -> None:
    toks = stream(total)
    luts = synthetic_luts()
    model = Bigram()
    with torch.no_grad():
        ref_loss = F.cross_entropy(model.table[toks[:-1]], toks[1:], reduction="none").double().sum()
    ref_bytes = luts.count_bytes(toks[:-1], toks[1:]).double().sum()
    scorer = WindowScorer(model, toks, luts, seq, stride, batch, CPU)
    for world in (1, 2, 3):
        sums = sum(scorer.rank_sums(rank, world) for rank in range(world))
        assert int(sums[1]) == total
        assert torch.isclose(sums[0], ref_loss, rtol=1e-7)  # one token more or less: ~1/total
        assert float(sums[2]) == float(ref_bytes)


def naive_sliding(model: GPT, toks: torch.Tensor, seq: int, stride: int) -> tuple[float, int]:
    """The rule as the challenge's newer records write it: one window at a time, full logits."""
    total = toks.numel() - 1
    loss, count = 0.0, 0
    ws = 0
    while ws == 0 or ws + seq - stride < total:
        wlen = min(seq, total - ws)
        x, y = toks[ws:ws + wlen], toks[ws + 1:ws + wlen + 1]
        with torch.no_grad():
            nll = F.cross_entropy(model.forward_logits(x[None])[0], y, reduction="none")
        s = 0 if ws == 0 else seq - stride
        loss += float(nll[s:wlen].double().sum())
        count += wlen - s
        ws += stride
    return loss, count


@pytest.mark.parametrize("total,stride,batch", [(200, 8, 3), (203, 12, 4), (40, 8, 2), (321, 32, 5)])
def test_gpt_sliding_matches_the_naive_rule(total: int, stride: int, batch: int) -> None:
    model = tiny_gpt()
    toks = stream(total, seed=2)
    ref_loss, ref_count = naive_sliding(model, toks, 32, stride)
    scorer = WindowScorer(model, toks, synthetic_luts(), 32, stride, batch, CPU)
    for world in (1, 3):
        sums = sum(scorer.rank_sums(rank, world) for rank in range(world))
        assert int(sums[1]) == ref_count == total
        assert float(sums[0]) == pytest.approx(ref_loss, rel=1e-5)


def test_stride_equal_to_window_is_plain_evaluation() -> None:
    model = tiny_gpt()
    toks = stream(32 * 9, seed=3)
    luts = synthetic_luts()
    rt = Runtime(CPU)
    plain = evaluate_plain(model.token_losses, toks, luts, 32, 4, rt)
    slide = WindowScorer(model, toks, luts, 32, 32, 4, CPU).evaluate(rt)
    assert slide.tokens == plain.tokens and slide.bytes == plain.bytes
    assert slide.val_loss == pytest.approx(plain.val_loss, rel=1e-6)
    assert slide.val_bpb == pytest.approx(plain.val_bpb, rel=1e-6)


def test_padding_windows_score_nothing() -> None:
    toks = stream(100)
    scorer = WindowScorer(Bigram(), toks, synthetic_luts(), 16, 4, 5, CPU)
    with torch.inference_mode():
        sums = scorer.score(np.full(3, scorer.total, dtype=np.int64))
    assert torch.equal(sums, torch.zeros(3, dtype=torch.float64))


def test_plain_evaluation_runs_one_batch_shape_and_scores_each_sequence_once() -> None:
    model = tiny_gpt()
    toks = stream(32 * 11, seed=4)  # 11 sequences in batches of 4: 4 + 4 + 3 (padded to 4)
    luts = synthetic_luts()
    layouts: list[tuple[tuple[int, ...], ...]] = []

    def spy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        layouts.append((tuple(x.shape), x.stride(), y.stride()))  # a compiled graph guards on shapes and strides
        return model.token_losses(x, y)

    padded = evaluate_plain(spy, toks, luts, 32, 4, Runtime(CPU))
    assert layouts == [((4, 32), (32, 1), (32, 1))] * 3
    one_by_one = evaluate_plain(model.token_losses, toks, luts, 32, 1, Runtime(CPU))
    assert padded.tokens == one_by_one.tokens == 11 * 32 and padded.bytes == one_by_one.bytes
    assert padded.val_loss == pytest.approx(one_by_one.val_loss, rel=1e-6)
