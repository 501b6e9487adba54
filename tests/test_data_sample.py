"""The embedded sample dataset: size, format, tokenizer settings, determinism, caching."""

from __future__ import annotations

import ast
import json
import unicodedata
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from golf.data.sample import MANIFEST_FILE, VAL_EVERY, build_sample, collect_documents, stdlib_files, stdlib_root
from golf.trainer.shards import read_header, read_shard
from golf_cli.main import app

runner = CliRunner()


def spm_processor(path: Path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(path))


def documents_of(tokens: np.ndarray) -> list[np.ndarray]:
    starts = np.flatnonzero(tokens == 1)
    ends = list(starts[1:]) + [tokens.size]
    return [tokens[s + 1:e] for s, e in zip(starts, ends, strict=True)]


def test_sample_is_big_enough_for_a_smoke_run_and_in_the_challenge_format(sample_data) -> None:
    root = sample_data.root
    assert sample_data.data_path == root / "datasets" / "sample_sp1024"
    assert sample_data.tokenizer_path == root / "tokenizers" / "sample_1024_bpe.model"
    train_file = sample_data.data_path / "fineweb_train_000000.bin"
    val_file = sample_data.data_path / "fineweb_val_000000.bin"
    # header (magic, version, count) and size, read independently of the shard reader
    for path, count in ((train_file, sample_data.train_tokens), (val_file, sample_data.val_tokens)):
        header = np.fromfile(path, dtype="<i4", count=3)
        assert header.tolist() == [20240520, 1, count]
        assert path.stat().st_size == 1024 + 2 * count
        assert read_header(path) == count
    assert sample_data.train_tokens >= 2_000_000
    assert sample_data.val_tokens >= 150_000
    train, val = np.asarray(read_shard(train_file)), np.asarray(read_shard(val_file))
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    for tokens, docs in ((train, manifest["train_documents"]), (val, manifest["val_documents"])):
        assert tokens[0] == 1  # BOS opens the first document
        assert int((tokens == 1).sum()) == docs  # one BOS per document
        assert int((tokens == 2).sum()) == 0  # no EOS
        assert int(tokens.max()) < 1024


def test_tokenizer_has_the_challenge_settings(sample_data) -> None:
    sp = spm_processor(sample_data.tokenizer_path)
    assert sp.vocab_size() == 1024
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sum(sp.is_byte(i) for i in range(sp.vocab_size())) == 256  # byte_fallback
    assert sp.encode("2026", out_type=str) == ["2", "0", "2", "6"]  # split_digits
    assert not sp.encode("hello", out_type=str)[0].startswith("\u2581")  # add_dummy_prefix=False
    assert sp.decode(sp.encode("ﬁle  \t x")) == "file x"  # nmt_nfkc: NFKC and whitespace folding


def test_sample_text_is_the_stdlib_prose(sample_data) -> None:
    sp = spm_processor(sample_data.tokenizer_path)
    val = np.asarray(read_shard(sample_data.data_path / "fineweb_val_000000.bin"))
    first_doc = sp.decode(documents_of(val)[0].tolist())
    # documents are in sorted-file order and document 0 is validation: it opens with the first module's docstring
    first_file = stdlib_files()[0]
    docstring = ast.get_docstring(ast.parse(first_file.read_text(encoding="utf-8")))
    assert docstring, first_file
    assert first_doc.startswith(" ".join(unicodedata.normalize("NFKC", docstring).split()))


def test_small_builds_are_deterministic_and_decode_to_their_documents(tmp_path: Path) -> None:
    a = build_sample(tmp_path / "a", max_files=30)
    b = build_sample(tmp_path / "b", max_files=30)
    assert a.built and b.built
    for rel in ("tokenizers/sample_1024_bpe.model", "datasets/sample_sp1024/fineweb_train_000000.bin",
                "datasets/sample_sp1024/fineweb_val_000000.bin"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    docs = collect_documents(max_files=30)
    sp = spm_processor(a.tokenizer_path)
    val = np.asarray(read_shard(a.data_path / "fineweb_val_000000.bin"))
    decoded = [sp.decode(d.tolist()) for d in documents_of(val)]
    expected = [" ".join(unicodedata.normalize("NFKC", d).split()) for d in docs[::VAL_EVERY]]
    assert decoded == expected
    train = np.asarray(read_shard(a.data_path / "fineweb_train_000000.bin"))
    assert len(documents_of(train)) == len(docs) - len(expected)


def test_cache_is_reused_and_rebuilt_when_stale(tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = build_sample(out, max_files=8)
    model_mtime = first.tokenizer_path.stat().st_mtime_ns
    again = build_sample(out, max_files=8)
    assert not again.built and again.train_tokens == first.train_tokens
    assert first.tokenizer_path.stat().st_mtime_ns == model_mtime
    manifest_path = out / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    manifest["python_version"] = "2.7.18"
    manifest_path.write_text(json.dumps(manifest))
    assert build_sample(out, max_files=8).built
    (first.data_path / "fineweb_val_000000.bin").write_bytes(b"truncated")
    rebuilt = build_sample(out, max_files=8)
    assert rebuilt.built and read_header(rebuilt.data_path / "fineweb_val_000000.bin") == first.val_tokens


def test_cli_data_sample_reports_the_paths(sample_data) -> None:
    result = runner.invoke(app, ["data", "sample", "--out", str(sample_data.root)])
    assert result.exit_code == 0, result.output
    assert "already built" in result.stdout
    assert f"DATA_PATH={sample_data.data_path}" in result.stdout
    assert f"TOKENIZER_PATH={sample_data.tokenizer_path}" in result.stdout
    assert f"{sample_data.train_tokens:,} train tokens" in result.stdout


def test_unwritable_out_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["data", "sample", "--out", str(blocker / "sub")])
    assert result.exit_code == 2
    assert "cannot create the sample folder" in result.stderr and result.stderr.count("\n") == 1


def test_stdlib_files_are_sorted_and_exclude_site_packages() -> None:
    root = stdlib_root()
    rels = [f.relative_to(root).as_posix() for f in stdlib_files()]
    assert rels == sorted(rels)
    assert not any(part in ("site-packages", "dist-packages") for rel in rels for part in rel.split("/"))
    assert "os.py" in rels
