"""CaseOps: the lossless transform, its tokenizer's byte sidecar, the build, and val_bpb on the original bytes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from golf.data import caseops as C
from golf.errors import GolfError
from golf.trainer.bpb import build_luts_from_pieces, load_byte_sidecar
from golf.trainer.shards import read_shard, write_shard
from golf_cli.main import app

HAND = ["The QUICK brown fox jumped over the lazy dog's iPhone in NYC.", "A", "I am OK", "\u2581literal marker",
        "escape \ue000 and \ue001 inside", "ÉLAN Élan élan", "McDonald's HTTPServer x86_64", "", "a  \n\n  b\t",
        "digits 2026 and 3.14", "Ünïcödé 漢字 🙂"]


def test_hand_made_encodings() -> None:
    assert C.encode("The FOX") == C.TITLE + "the " + C.ALLCAPS + "fox"
    assert C.encode("iPhone") == "i" + C.CAPNEXT + "phone"
    assert C.encode("A b") == C.TITLE + "a b"
    assert C.encode("\u2581" + C.ESC) == C.ESC + "4" + C.ESC + "0"
    assert C.encode("plain text, no capitals") == "plain text, no capitals"


def test_round_trip_hand_and_random() -> None:
    for text in HAND:
        assert C.decode(C.encode(text)) == text
    rng = random.Random(0)
    alphabet = "aAbBzZ  \n.-'0\u2581é" + "".join(C.OPERATORS) + "0123456789"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert C.decode(C.encode(text)) == text, repr(text)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    import sentencepiece as spm

    from golf.data.sample import collect_documents

    model = C.train_caseops_tokenizer(collect_documents(max_files=40) + HAND, 600)
    return spm.SentencePieceProcessor(model_proto=model)


def test_sidecar_counts_the_original_bytes_of_a_case_with_capitals(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = "The QUICK Brown FOX said: \u201cHello, World\u201d to McDonald\u2581s iPhone."
    tokens, sidecar = C.encode_with_sidecar(tokenizer, [text])
    assert tokens[0] == C.BOS_ID and sidecar[0] == 0
    # by hand: 26 ASCII bytes, \u201c 3, "Hello, World" 12, \u201d 3, " to McDonald" 12, \u2581 3, "s iPhone." 9
    assert int(sidecar.sum()) == len(text.encode("utf-8")) == 68
    pieces = [tokenizer.id_to_piece(int(t)) for t in tokens[1:]]
    assert C.TITLE in pieces and C.ALLCAPS in pieces and C.CAPNEXT in pieces and C.ESC in pieces
    # the transformed text is what the tokens spell, and it decodes back to the original
    assert C.decode(tokenizer.decode([int(t) for t in tokens[1:]])) == text
    # per document too, over every hand-made case
    toks, side = C.encode_with_sidecar(tokenizer, HAND)
    starts = np.flatnonzero(toks == C.BOS_ID).tolist() + [toks.size]
    assert [int(side[a:b].sum()) for a, b in zip(starts, starts[1:], strict=False)] == \
        [len(t.encode("utf-8")) for t in HAND]


def test_piece_bytes_by_kind(tokenizer) -> None:  # type: ignore[no-untyped-def]
    table = C.piece_bytes(tokenizer)
    assert table[tokenizer.piece_to_id(C.TITLE)] == 0 and table[tokenizer.piece_to_id(C.ESC)] == 2
    assert table[C.BOS_ID] == 0 and table[tokenizer.piece_to_id("<0xE6>")] == 1
    assert table[tokenizer.piece_to_id("\u2581")] == 1


def _fake_shards(folder: Path, n_val: int, n_train: int) -> None:
    folder.mkdir(parents=True)
    write_shard(folder / "fineweb_val_000000.bin", np.tile([1, 5, 6], n_val))
    write_shard(folder / "fineweb_train_000000.bin", np.tile([1, 7], n_train))


def test_build_from_jsonl_and_the_trainer_reads_the_sidecar(tmp_path: Path) -> None:
    from golf.data.sample import collect_documents

    texts = collect_documents(max_files=30)[:60] + ["The END of IT"]
    val, train = texts[:6], texts[6:]
    src = tmp_path / "src" / "fineweb10B_sp700"
    _fake_shards(src, len(val), len(train))
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in val + train), encoding="utf-8")
    result = CliRunner().invoke(app, ["data", "caseops", str(src), "--out", str(tmp_path / "out"), "--docs", str(docs)])
    assert result.exit_code == 0, result.output
    data = tmp_path / "out" / "datasets" / "fineweb10B_sp700_caseops"
    tok = tmp_path / "out" / "tokenizers" / "fineweb10B_sp700_caseops.model"
    assert f"DATA_PATH={data}" in result.stdout and tok.is_file()
    val_tokens = np.asarray(read_shard(data / "fineweb_val_000000.bin"))
    side = np.asarray(read_shard(data / "fineweb_val_bytes_000000.bin"))
    assert side.shape == val_tokens.shape and int(side.sum()) == sum(len(t.encode()) for t in val)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tok))
    assert sp.vocab_size() == 700
    starts = np.flatnonzero(val_tokens == C.BOS_ID).tolist() + [val_tokens.size]
    decoded = [C.decode(sp.decode(val_tokens[a + 1:b].tolist())) for a, b in zip(starts, starts[1:], strict=False)]
    assert decoded == val
    # the trainer's side: the sidecar replaces the piece lengths, by stream position
    loaded = load_byte_sidecar(str(data), val_tokens.size)
    assert loaded is not None and torch.equal(loaded, torch.from_numpy(side.astype(np.int32)))
    luts = build_luts_from_pieces([("normal", "x")] * 700, 700)
    import dataclasses

    with_side = dataclasses.replace(luts, sidecar=loaded)
    t = torch.from_numpy(val_tokens.astype(np.int64))
    positions = torch.arange(1, t.numel())
    assert int(with_side.count_bytes(t[:-1], t[1:], positions).sum()) == int(side[1:].sum())
    with pytest.raises(ValueError, match="stream position"):
        with_side.count_bytes(t[:-1], t[1:])


def test_evaluation_divides_by_the_sidecar_bytes(tmp_path: Path) -> None:
    """Plain and sliding evaluation count exactly the sidecar's bytes of the targets they score."""
    import dataclasses

    from conftest import perturbed_tiny_gpt

    from golf.trainer.evaluate import evaluate_plain
    from golf.trainer.runtime import Runtime
    from golf.trainer.sliding import WindowScorer

    vocab, seq = 64, 16
    model = perturbed_tiny_gpt(vocab, seq)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(2, vocab, (16 * 6 + 1,), generator=gen)
    sidecar = torch.randint(0, 9, tokens.shape, generator=gen).to(torch.int32)
    luts = dataclasses.replace(build_luts_from_pieces([("normal", "x")] * vocab, vocab), sidecar=sidecar)
    rt = Runtime(torch.device("cpu"))
    plain = evaluate_plain(model.token_losses, tokens, luts, seq, 4, rt)
    assert plain.bytes == int(sidecar[1:].sum())
    sliding = WindowScorer(model, tokens, luts, seq, 4, 3, rt.device).evaluate(rt)
    assert sliding.bytes == int(sidecar[1:].sum())
    assert sliding.val_bpb == pytest.approx(sliding.val_loss / np.log(2) * sliding.tokens / sliding.bytes)


def test_counts_must_match_the_shards(tmp_path: Path) -> None:
    src = tmp_path / "sp64"
    _fake_shards(src, 2, 3)
    docs = tmp_path / "d.jsonl"
    docs.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n', encoding="utf-8")
    with pytest.raises(GolfError, match="2 validation \\+ 3 training"):
        C.build_caseops(src, tmp_path / "out", docs=docs)
    with pytest.raises(GolfError, match="pass --docs"):
        C.build_caseops(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
