"""Per-document LoRA TTT and phased TTT: plain scores at lr 0, nothing from the future, adapters reset."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import perturbed_tiny_gpt

from golf.trainer.bpb import build_luts_from_pieces
from golf.trainer.doc_attention import BOS_ID
from golf.trainer.lora_ttt import LoRASettings, find_documents, lora_ttt, processing_order
from golf.trainer.phased_ttt import GlobalSettings, chunk_lr, phase_boundaries, phased_ttt
from golf.trainer.runtime import Runtime

VOCAB, SEQ = 64, 32
RT = Runtime(torch.device("cpu"))
CFG = LoRASettings(rank=4, alpha=0.0, lr=0.05, k_lora=True, o_lora=True, mlp_lora=True, batch_size=3, chunk_size=8,
                   beta1=0.0, beta2=0.99, grad_steps=1, weight_decay=0.0, seq_len=SEQ)
GLOBAL = GlobalSettings(num_phases=2, prefix_docs=4, lr=0.05, momentum=0.9, epochs=1, chunk_tokens=64, batch_seqs=2,
                        grad_clip=1.0, warmup_start_lr=0.0, warmup_chunks=0, seq_len=SEQ)


def luts():  # type: ignore[no-untyped-def]
    """Every id a 1- to 3-byte piece, some with a leading space; id 1 (BOS) a control token."""
    pieces = [("control", "<s>") if i == BOS_ID else ("normal", ("\u2581" if i % 3 == 0 else "") + "x" * (1 + i % 3))
              for i in range(VOCAB)]
    return build_luts_from_pieces(pieces, VOCAB)


def stream(lengths: list[int], seed: int = 0) -> torch.Tensor:
    """Documents of these lengths (each starting with BOS), then a closing BOS."""
    gen = torch.Generator().manual_seed(seed)
    parts = [torch.cat((torch.tensor([BOS_ID]), torch.randint(2, VOCAB, (n - 1,), generator=gen))) for n in lengths]
    return torch.cat(parts + [torch.tensor([BOS_ID])])


LENGTHS = [20, 9, 31, 5, 14, 26, 3, 17]  # all shorter than the window: each document is scored whole


def plain_per_document(model, tokens: torch.Tensor) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Each document alone through the base model: (val_loss, val_bpb), independent of the TTT code."""
    lut = luts()
    loss = count = nbytes = 0.0
    for start, length in find_documents(tokens):
        doc = tokens[start:start + length]
        with torch.no_grad():
            losses = model.token_losses(doc[None, :-1], doc[None, 1:])
        loss += float(losses.double().sum())
        count += losses.numel()
        nbytes += float(lut.count_bytes(doc[:-1], doc[1:]).sum())
    return loss / count, loss / count / np.log(2.0) * count / nbytes


def test_documents_cover_every_target_once() -> None:
    tokens = torch.tensor([5, 6, BOS_ID, 7, 8, BOS_ID, 9, BOS_ID, BOS_ID, 4])
    docs = find_documents(tokens)
    assert docs.tolist() == [[0, 3], [2, 4], [5, 3], [7, 2], [8, 2]]
    targets = np.concatenate([np.arange(s + 1, s + n) for s, n in docs])
    assert sorted(targets.tolist()) == list(range(1, tokens.numel()))
    assert processing_order(docs).tolist() == [1, 0, 2, 3, 4]  # longest first, ties in stream order


# the document-isolated model with every position-dependent input: its windows run the plain causal path
DOC_MODEL = {"DOC_ATTENTION": 1, "BIGRAM_VOCAB_SIZE": 32, "TRIGRAM": 1, "SMEAR_GATE_ENABLED": 1, "SMEAR_GATE_WIDTH": 4}


@pytest.mark.parametrize("phased,knobs", [(False, {}), (True, {}), (False, DOC_MODEL), (True, DOC_MODEL)])
def test_lr_zero_equals_the_plain_score(phased: bool, knobs: dict[str, object]) -> None:
    """Each document alone through the model's own forward (document-isolated attention where DOC_ATTENTION)."""
    model = perturbed_tiny_gpt(VOCAB, SEQ, **knobs)
    tokens = stream(LENGTHS)
    want_loss, want_bpb = plain_per_document(model, tokens)
    cfg = replace(CFG, lr=0.0)
    if phased:
        result, _ = phased_ttt(model, tokens, luts(), cfg, replace(GLOBAL, lr=0.0), RT)
    else:
        result, _ = lora_ttt(model, tokens, luts(), cfg, RT)
    assert result.tokens == tokens.numel() - 1
    assert result.val_loss == pytest.approx(want_loss, rel=1e-6)
    assert result.val_bpb == pytest.approx(want_bpb, rel=1e-6)


def test_training_on_earlier_chunks_changes_later_scores() -> None:
    """lr > 0 really adapts (so the tests above and below can fail): a long document's later chunks move."""
    model = perturbed_tiny_gpt(VOCAB, SEQ)
    tokens = stream(LENGTHS)
    _, frozen = lora_ttt(model, tokens, luts(), replace(CFG, lr=0.0), RT, keep_losses=True)
    _, adapted = lora_ttt(model, tokens, luts(), CFG, RT, keep_losses=True)
    first_chunk = slice(1, 1 + CFG.chunk_size)  # the first document's first chunk: scored before any step
    assert np.allclose(frozen.per_target[first_chunk], adapted.per_target[first_chunk], atol=1e-6)
    assert not np.allclose(frozen.per_target[1:21], adapted.per_target[1:21], atol=1e-4)


def _mutate_after(tokens: torch.Tensor, i: int, seed: int = 9) -> torch.Tensor:
    """Every non-BOS token after position i replaced (document boundaries kept)."""
    out = tokens.clone()
    gen = torch.Generator().manual_seed(seed)
    later = torch.arange(tokens.numel()) > i
    fresh = torch.randint(2, VOCAB, tokens.shape, generator=gen)
    out[later & (tokens != BOS_ID)] = fresh[later & (tokens != BOS_ID)]
    return out


@pytest.mark.parametrize("i", [12, 40, 75])
def test_lora_ttt_takes_nothing_from_the_future(i: int) -> None:
    model = perturbed_tiny_gpt(VOCAB, SEQ)
    tokens = stream(LENGTHS)
    _, base = lora_ttt(model, tokens, luts(), CFG, RT, keep_losses=True)
    _, changed = lora_ttt(model, _mutate_after(tokens, i), luts(), CFG, RT, keep_losses=True)
    # target t is predicted from tokens < t: scores of targets <= i may not move
    assert np.allclose(base.per_target[1:i + 1], changed.per_target[1:i + 1], atol=1e-6)
    assert not np.allclose(base.per_target[i + 2:], changed.per_target[i + 2:], atol=1e-3)


def test_adapters_reset_between_documents() -> None:
    """Scored in batches of three, a document scores exactly as it does scored alone in a stream of its own."""
    model = perturbed_tiny_gpt(VOCAB, SEQ)
    tokens = stream(LENGTHS)
    _, together = lora_ttt(model, tokens, luts(), CFG, RT, keep_losses=True)
    for start, length in find_documents(tokens):
        alone_stream = torch.cat((tokens[start:start + length], torch.tensor([BOS_ID])))
        _, alone = lora_ttt(model, alone_stream, luts(), replace(CFG, batch_size=1), RT, keep_losses=True)
        assert np.allclose(together.per_target[start + 1:start + length], alone.per_target[1:length], atol=1e-5)


def test_phase_schedule() -> None:
    assert phase_boundaries(2500, 3) == [833, 1666, 2500]
    g = replace(GLOBAL, lr=0.001, warmup_chunks=2, warmup_start_lr=0.0001)
    assert [chunk_lr(c, 6, g) for c in (0, 1)] == pytest.approx([0.0001, 0.001])
    assert chunk_lr(2, 6, g) == pytest.approx(0.001) and chunk_lr(5, 6, g) == pytest.approx(0.0, abs=1e-12)


def _processing_rank(tokens: torch.Tensor) -> np.ndarray:
    """For each stream position, the index in scoring order of the document whose target it is."""
    docs = find_documents(tokens)
    rank = np.empty(tokens.numel(), dtype=np.int64)
    for k, d in enumerate(processing_order(docs)):
        s, n = docs[d]
        rank[s + 1:s + n] = k
    return rank


def test_phased_ttt_takes_nothing_from_later_documents() -> None:
    """Global SGD after each phase only sees scored documents: changing the documents scored later (after the
    first phase's SGD) changes no score of the documents scored before them; and the SGD does change later ones."""
    model_state = perturbed_tiny_gpt(VOCAB, SEQ).state_dict()

    def run(tokens: torch.Tensor, g: GlobalSettings) -> np.ndarray:
        model = perturbed_tiny_gpt(VOCAB, SEQ)
        model.load_state_dict(model_state)
        _, log = phased_ttt(model, tokens, luts(), CFG, g, RT, keep_losses=True)
        return log.per_target

    tokens = stream(LENGTHS)
    rank = _processing_rank(tokens)
    later_docs = torch.from_numpy(np.concatenate(([False], rank[1:] >= 6)))  # scored in the third batch
    changed = tokens.clone()
    changed[later_docs & (tokens != BOS_ID)] = 2 + (tokens[later_docs & (tokens != BOS_ID)] * 7) % (VOCAB - 2)
    base, moved = run(tokens, GLOBAL), run(changed, GLOBAL)
    early = np.flatnonzero(rank < 6)
    early = early[early > 0]
    assert np.allclose(base[early], moved[early], atol=1e-6)
    no_sgd = run(tokens, replace(GLOBAL, lr=0.0))
    after_first_phase = np.flatnonzero(rank >= 3)
    after_first_phase = after_first_phase[after_first_phase > 0]
    assert not np.allclose(base[after_first_phase], no_sgd[after_first_phase], atol=1e-4)
    assert np.allclose(base[np.flatnonzero((rank < 3) & (np.arange(rank.size) > 0))],
                       no_sgd[np.flatnonzero((rank < 3) & (np.arange(rank.size) > 0))], atol=1e-6)


def test_a_phase_after_the_last_document_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefix of every document: the last phase's global SGD would come after all scoring, so it never runs."""
    from golf.trainer import phased_ttt as phased

    calls: list[int] = []
    monkeypatch.setattr(phased, "global_sgd", lambda _m, tokens, *_a, **_k: calls.append(tokens.numel()) or 0)
    tokens = stream(LENGTHS)
    phased_ttt(perturbed_tiny_gpt(VOCAB, SEQ), tokens, luts(), CFG,
               replace(GLOBAL, prefix_docs=len(LENGTHS), num_phases=2), RT)
    first_half = sorted(LENGTHS, reverse=True)[:len(LENGTHS) // 2]
    assert calls == [sum(first_half) + len(first_half)]  # phase 1 only: its documents, each through the next BOS


def test_allow_graphs_raises_the_recompile_limit() -> None:
    import torch._dynamo.config as dynamo_config

    from golf.trainer.lora_ttt import allow_graphs

    # the config's own patch restores it: monkeypatch's undo leaves torch's config entry hidden for later tests
    with dynamo_config.patch(recompile_limit=8):
        allow_graphs(7)
        assert dynamo_config.recompile_limit == 22
        allow_graphs(1)  # never lowered
        assert dynamo_config.recompile_limit == 22


def test_compiled_windows_share_graphs_and_score_as_eager() -> None:
    """Compiled (inductor's CPU backend), the window widths 8, 16, 32 share graphs: fewer compiles than widths,
    and the same scores as the eager path."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from golf.trainer.lora_ttt import window_widths

    model = perturbed_tiny_gpt(VOCAB, SEQ, **DOC_MODEL)
    tokens = stream(LENGTHS)
    cfg = replace(CFG, batch_size=4)
    assert window_widths(cfg) == [8, 16, 32]
    eager, _ = lora_ttt(model, tokens, luts(), cfg, RT)
    dynamo.reset()
    counters.clear()
    compiled, _ = lora_ttt(model, tokens, luts(), cfg, RT, compile_fn=True)
    graphs = counters["stats"]["unique_graphs"]
    dynamo.reset()
    assert 1 <= graphs < len(window_widths(cfg))
    assert compiled.val_loss == pytest.approx(eager.val_loss, rel=1e-5)
    assert compiled.val_bpb == pytest.approx(eager.val_bpb, rel=1e-5)


@pytest.mark.parametrize("phased", [False, True])
def test_priming_compiles_every_graph_the_timed_loop_runs(monkeypatch: pytest.MonkeyPatch, phased: bool) -> None:
    """Nothing is compiled after the TTT timer starts: the graphs primed on random tokens are the loop's (a primed
    graph that guards on something the loop differs in, e.g. targets being the inputs, compiles again inside it);
    phased, the global SGD step too, its last chunk padded to the primed shape."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from golf.trainer import lora_ttt as lora

    at_timer: list[int] = []  # graphs compiled when the timer starts
    print_line = RT.log
    monkeypatch.setattr(RT, "log", lambda line: (at_timer.append(counters["stats"]["unique_graphs"])
                                                 if line == "beginning TTT eval timer" else None) or print_line(line))
    dynamo.reset()
    counters.clear()
    model, cfg = perturbed_tiny_gpt(VOCAB, SEQ, **DOC_MODEL), replace(CFG, batch_size=4)
    if phased:  # a pass after the first batch over its 98 tokens: 3 sequences, padded to a full chunk's 4
        g = replace(GLOBAL, prefix_docs=8, num_phases=2, chunk_tokens=4 * SEQ, batch_seqs=4)
        _, scores = phased_ttt(model, stream(LENGTHS), luts(), cfg, g, RT, compile_fn=True)
        assert scores.extra["global_done"]
    else:
        lora.lora_ttt(model, stream(LENGTHS), luts(), cfg, RT, compile_fn=True)
    graphs = counters["stats"]["unique_graphs"]
    dynamo.reset()
    assert at_timer and at_timer[0] >= 1
    assert graphs == at_timer[0]


def test_a_long_batch_logs_its_chunk_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ttc:` lines every CHUNK_PROGRESS_EVERY chunks inside a batch: batch, chunks done / the batch's chunks."""
    from golf.trainer import lora_ttt as lora

    lines: list[str] = []
    monkeypatch.setattr(lora, "CHUNK_PROGRESS_EVERY", 2)
    monkeypatch.setattr(RT, "log", lines.append)
    lora.lora_ttt(perturbed_tiny_gpt(VOCAB, SEQ), stream(LENGTHS), luts(), CFG, RT)
    ttc = [line.split(" t:")[0] for line in lines if line.startswith("ttc: ")]
    # longest first in threes: 31, 26, 20 targets -> 4 chunks of 8; 17, 14, 9 -> 3; 5, 3 -> 1 (no line)
    assert ttc == ["ttc: b1 c2/4", "ttc: b1 c4/4", "ttc: b2 c2/3"]
