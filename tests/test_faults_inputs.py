"""Bad data found before launch: exit 2, one line naming the file and what would be valid, and nothing written
(no runs.db, no run folder). What the trainer would otherwise find after launch, in a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from faultkit import write_spec
from spm_model import tokenizer_bytes
from typer.testing import CliRunner

from golf.trainer.shards import HEADER_BYTES, write_shard
from golf_cli.main import app

runner = CliRunner()


def bundled_spec(workdir: Path, data: Path, env: str = "NUM_LAYERS: 1, MODEL_DIM: 32, NUM_HEADS: 2, "
                 "NUM_KV_HEADS: 1") -> Path:
    spec = workdir / "tiny.yaml"
    spec.write_text(f"name: tiny\nseeds: [1]\ndata: {{path: {data}}}\nenv: {{{env}}}\n")
    return spec


def refused(workdir: Path, db: Path, spec: Path, *args: str) -> str:
    result = runner.invoke(app, ["run", str(spec), "--db", str(db), *args])
    assert result.exit_code == 2, result.output[-2000:]
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("golf: error: "), lines
    assert not db.exists() and not (workdir / "runs").exists()  # nothing written
    return lines[0]


def test_an_empty_data_folder_says_so(workdir: Path, db: Path) -> None:
    empty = workdir / "datasets" / "fineweb10B_sp1024"
    empty.mkdir(parents=True)
    (workdir / "tokenizers").mkdir()  # and no tokenizer either: the shards are the first thing to fix
    line = refused(workdir, db, bundled_spec(workdir, empty))
    assert "holds no token shards (it is empty); expected fineweb_train_*.bin and fineweb_val_*.bin" in line
    (empty / "README.md").write_text("x")
    assert "holds no token shards (it holds README.md)" in refused(workdir, db, bundled_spec(workdir, empty))


def test_a_missing_split_is_named(workdir: Path, tiny_data: Path, db: Path) -> None:
    (tiny_data / "fineweb_val_000000.bin").unlink()
    assert "no fineweb_val_*.bin shards in" in refused(workdir, db, bundled_spec(workdir, tiny_data))


@pytest.mark.parametrize("damage, message", [
    ("magic", "bad magic 20240521 (expected 20240520); not a token shard"),
    ("version", "unsupported shard version 2 (expected 1)"),
    ("truncated", "does not match its header (99 tokens -> 1222 bytes)"),
    ("short", "is shorter than the 1024-byte shard header"),
])
def test_a_damaged_shard_is_refused_before_launch(workdir: Path, tiny_data: Path, db: Path, damage: str,
                                                  message: str) -> None:
    shard = tiny_data / "fineweb_val_000000.bin"
    data = bytearray(shard.read_bytes())
    if damage == "magic":
        data[0:4] = np.array([20240521], dtype="<i4").tobytes()
    elif damage == "version":
        data[4:8] = np.array([2], dtype="<i4").tobytes()
    elif damage == "truncated":
        data = data[:-10]
    else:
        data = data[:HEADER_BYTES - 1]
    shard.write_bytes(bytes(data))
    line = refused(workdir, db, bundled_spec(workdir, tiny_data))
    assert "fineweb_val_000000.bin" in line and message in line
    # the same for a community trainer: the shard format is the challenge's
    community = write_spec(workdir, tiny_data, "print('never runs')\n")
    assert message in refused(workdir, db, community)


def test_a_tokenizer_that_contradicts_vocab_size(workdir: Path, tiny_data: Path, db: Path) -> None:
    line = refused(workdir, db, bundled_spec(workdir, tiny_data), "--set", "VOCAB_SIZE=2048")
    assert "VOCAB_SIZE is 2048 but the tokenizer" in line and "fineweb_1024_bpe.model has 1024 pieces" in line
    tokenizer = tiny_data.parent.parent / "tokenizers" / "fineweb_1024_bpe.model"
    tokenizer.write_bytes(tokenizer_bytes(512))  # a file misnamed: its content decides
    assert "VOCAB_SIZE is 1024 but the tokenizer" in refused(workdir, db, bundled_spec(workdir, tiny_data))
    community = write_spec(workdir, tiny_data, "print('never runs')\n")
    community.write_text(community.read_text().replace("env: {", "env: {VOCAB_SIZE: 1024, "))
    assert "has 512 pieces" in refused(workdir, db, community)
    tokenizer.write_bytes(b"not a sentencepiece model")
    assert "is not a SentencePiece model" in refused(workdir, db, bundled_spec(workdir, tiny_data))


def test_good_shards_pass_and_count(tiny_data: Path) -> None:
    from golf.launch.preflight import check_data

    write_shard(tiny_data / "fineweb_train_000001.bin", np.arange(7))
    tokenizer = tiny_data.parent.parent / "tokenizers" / "fineweb_1024_bpe.model"
    check_data("spec", tiny_data, tokenizer, 1024)
    from golf.launch.preflight import check_shards

    assert check_shards("spec", tiny_data) == {"train": 199 + 7, "val": 99}
