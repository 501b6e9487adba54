"""Shards, the byte-count LUTs behind val_bpb, the train loader's rank split, and the knob registry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from golf.trainer import hparams
from golf.trainer.bpb import ByteLUTs, bpb, build_luts_from_pieces, load_luts
from golf.trainer.data import TrainLoader, load_val_tokens
from golf.trainer.hparams import Hyperparameters, KnobError, looks_like_knob, parse_overrides
from golf.trainer.shards import HEADER_BYTES, ShardError, read_shard, write_shard

SHARED = Path(__file__).resolve().parents[2] / "shared"


# -- shards
def test_shard_roundtrip_and_header(tmp_path: Path) -> None:
    tokens = np.array([1, 5, 65535, 0, 42], dtype=np.uint16)
    path = tmp_path / "fineweb_train_000000.bin"
    write_shard(path, tokens)
    raw = path.read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[:3].tolist() == [20240520, 1, 5] and not header[3:].any()
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u2").tolist() == tokens.tolist()
    assert read_shard(path).tolist() == tokens.tolist()


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[:4] + (7).to_bytes(4, "little") + b[8:], "unsupported shard version 7"),
    (lambda b: (1234).to_bytes(4, "little") + b[4:], "bad magic 1234"),
    (lambda b: b[:-2], "does not match its header"),
    (lambda b: b[:100], "shorter than"),
])
def test_shard_reader_rejects_bad_files(tmp_path: Path, corrupt, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.bin"
    write_shard(path, np.arange(10))
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(ShardError, match=message):
        read_shard(path)


def test_shard_writer_rejects_ids_beyond_uint16(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="uint16"):
        write_shard(tmp_path / "x.bin", np.array([70000]))


# -- bits per byte
PIECES = [("control", "<pad>"), ("control", "<s>"), ("control", "</s>"), ("unknown", "<unk>"),
          ("byte", "<0xC3>"), ("normal", "\u2581the"), ("normal", "cat"), ("normal", "\u00e9t\u00e9"),
          ("normal", "\u2581"), ("unused", "x")]


def test_byte_luts_on_a_hand_computed_case() -> None:
    luts = build_luts_from_pieces(PIECES, vocab_size=12)
    assert luts.base_bytes.tolist() == [0, 0, 0, 0, 1, 3, 3, 5, 0, 0, 0, 0]
    assert luts.has_leading_space.tolist()[:10] == [False] * 5 + [True, False, False, True, False]
    # control, unknown, unused and ids beyond the tokenizer are boundaries
    assert luts.is_boundary.tolist() == [True] * 4 + [False] * 5 + [True] * 3
    prev = torch.tensor([1, 5, 6, 5, 3, 7])
    tgt = torch.tensor([5, 6, 5, 8, 5, 4])
    # "▁the" after BOS: 3 (space not charged) | "cat": 3 | "▁the" after "cat": 4 | "▁" after "▁the": 1 |
    # "▁the" after <unk>: 3 | byte token: 1
    assert luts.count_bytes(prev, tgt).tolist() == [3, 3, 4, 1, 3, 1]


def test_bpb_conversion() -> None:
    loss, value = bpb(loss_sum=2 * math.log(2) * 10, token_count=10, byte_count=5)
    assert loss == pytest.approx(2 * math.log(2))
    assert value == pytest.approx(4.0)  # 2 bits/token, 2 tokens/byte


@pytest.mark.skipif(not (SHARED / "data").exists(), reason="../shared not present")
def test_luts_count_the_utf8_bytes_of_real_text() -> None:
    import sentencepiece as spm

    model = SHARED / "data/tokenizers/docs_1024_bpe.model"
    sp = spm.SentencePieceProcessor(model_file=str(model))
    luts: ByteLUTs = load_luts(str(model), 1024)
    for text in ["Hello world, naïve café — 123 tokens!", "def f(x):\n    return x ** 2\n", "  two  spaces"]:
        ids = [1] + sp.encode(text)
        counted = luts.count_bytes(torch.tensor(ids[:-1]), torch.tensor(ids[1:])).sum().item()
        assert counted == len(sp.decode(ids[1:]).encode("utf-8"))


def test_luts_reject_a_vocab_mismatch(tmp_path: Path) -> None:
    if not (SHARED / "data").exists():
        pytest.skip("../shared not present")
    with pytest.raises(ValueError, match="does not match"):
        load_luts(str(SHARED / "data/tokenizers/docs_1024_bpe.model"), 2048)


# -- loader
def test_ranks_and_micro_steps_see_the_same_global_batch(tmp_path: Path) -> None:
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(5000) % 60000)
    write_shard(tmp_path / "fineweb_train_000001.bin", (np.arange(3000) + 7) % 60000)
    cpu = torch.device("cpu")
    single = TrainLoader(str(tmp_path), 0, 1, cpu)
    one = [single.next_batch(256, 16, 8) for _ in range(8 * 3)]
    loaders = [TrainLoader(str(tmp_path), r, 2, cpu) for r in range(2)]
    two = [[ld.next_batch(256, 16, 4) for ld in loaders] for _ in range(4 * 3)]
    # micro-step k of one process == rank (k % 2) at micro-step k // 2 of two processes
    for k, (x, y) in enumerate(one):
        x2, y2 = two[k // 2][k % 2]
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next tokens


def test_val_tokens_truncate_to_whole_sequences(tmp_path: Path) -> None:
    write_shard(tmp_path / "fineweb_val_000000.bin", np.arange(1000))
    write_shard(tmp_path / "fineweb_val_bytes_000000.bin", np.arange(1000))  # CaseOps sidecar: not tokens
    val = load_val_tokens(str(tmp_path), 128)
    assert val.numel() == 7 * 128 + 1 and val[-1].item() == 7 * 128


# -- knobs
def test_knob_parsing_errors_name_the_knob_and_what_is_valid() -> None:
    with pytest.raises(KnobError, match=r"NUM_LAYERS='x' is not valid: expected an integer in \[1, 1024\]"):
        parse_overrides({"NUM_LAYERS": "x"})
    with pytest.raises(KnobError, match="COMPRESSOR='gzip' is not valid: expected one of zlib, zstd, lzma, brotli"):
        parse_overrides({"COMPRESSOR": "gzip"})
    with pytest.raises(KnobError, match="unknown knob XSA_LAST; did you mean XSA_LAST_N"):
        parse_overrides({"XSA_LAST": 3})
    with pytest.raises(KnobError, match="MODEL_DIM=100 must be divisible by NUM_HEADS=8"):
        Hyperparameters.resolve({"MODEL_DIM": 100})


def test_off_values_and_normalisation() -> None:
    h = Hyperparameters.resolve({"XSA_LAST_N": "off", "RECUR_LAYERS": "3, 4,5", "MATRIX_BITS": 6, "MLP_BITS": 5,
                                 "ADAM_WD": 0.04, "TRAIN_SEQ_LEN": 2048, "TRAIN_BATCH_TOKENS": 786432})
    assert h.xsa_last_n == 0 and (h.num_loops, h.loop_start, h.loop_end, h.recur_layers) == (1, 3, 5, ())
    assert (h.mlp_bits, h.attn_bits, h.embed_wd, h.eval_seq_len, h.ttt_seq_len) == (5, 6, 0.04, 2048, 2048)
    assert Hyperparameters.resolve({"QAT_ENABLED": "on", "TIE_EMBEDDINGS": "false"}).qat_enabled is True


def test_env_vars_that_look_like_knobs_are_errors_but_foreign_ones_are_not() -> None:
    with pytest.raises(KnobError, match="environment: unknown knob TTT_EPOCH; did you mean TTT_EPOCHS"):
        Hyperparameters.resolve(env={"TTT_EPOCH": "3"})
    ok = Hyperparameters.resolve(env={"CUDA_VISIBLE_DEVICES": "0", "LOCAL_RANK": "0", "OMP_NUM_THREADS": "1",
                                      "HOME": "/root", "NUM_WORKERS": "4", "SEED": "7"})
    assert ok.seed == 7
    assert looks_like_knob("DATA_DIR") and not looks_like_knob("NCCL_NVLS_ENABLE")


def test_baked_defaults_sit_between_builtin_defaults_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hparams, "BAKED_DEFAULTS", {"NUM_LAYERS": "11", "SEED": "42"})
    h = Hyperparameters.resolve(env={"SEED": "7"})
    assert (h.num_layers, h.seed) == (11, 7)


def test_hyperparameter_block_is_sorted_and_complete() -> None:
    lines = Hyperparameters.resolve().log_lines()
    assert lines[0] == "Hyperparameters:"
    rows = [line.strip().split(": ", 1)[0] for line in lines[1:]]
    assert rows == sorted(rows) and len(rows) == len(hparams.KNOBS)
    assert "  num_layers: 9" in lines and "  tie_embeddings: 1" in lines
