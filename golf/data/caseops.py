"""CaseOps: a lossless case transform of the text, its own tokenizer, and a byte sidecar (the records since #1729).

The transform lowercases ASCII words and says how to restore them with operator characters (private-use code
points that the tokenizer keeps as single tokens):
- TITLE before a word whose first letter alone is upper case ("The" -> TITLE "the"),
- ALLCAPS before a word of two or more letters, all upper case ("FOX" -> ALLCAPS "fox"),
- CAPNEXT before each upper-case letter of any other word ("iPhone" -> "i" CAPNEXT "phone"),
- ESC + a digit for a character the tokenizer must never see as itself: the operators and U+2581, SentencePiece's
  space marker ("\u2581" -> ESC "4").
A word is a maximal run of ASCII letters; every other character passes through. decode(encode(s)) == s for every s.

The byte sidecar (fineweb_val_bytes_*.bin, uint16, one entry per validation token, same shard layout) holds each
token's share of the ORIGINAL text's UTF-8 bytes: operators 0, ESC 2 and its digit 1 (the escaped characters are all
3 bytes), byte-fallback pieces 1, any other piece its own UTF-8 length with the space marker as one byte, BOS 0. Per
document they sum to the original byte count exactly (checked while building); the trainer's val_bpb divides by
them when the sidecar is present.

Input (`golf data caseops SRC`): SRC is a shard folder; its text is either `--docs FILE.jsonl` (one JSON object with
a "text" field per line, in the shards' order: the validation documents first, then the training documents, as the
challenge's docs_selected.jsonl lists them), or, for golf's own sample build, regenerated from the Python standard
library exactly as `golf data sample` made it. The documents are counted against the shards' BOS tokens.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golf.errors import GolfError
from golf.trainer.shards import read_shard, shard_files, write_shard

ESC, TITLE, ALLCAPS, CAPNEXT = "\ue000", "\ue001", "\ue002", "\ue003"
OPERATORS = (ESC, TITLE, ALLCAPS, CAPNEXT)
ESCAPED = OPERATORS + ("\u2581",)  # written as ESC + str(index); each is 3 bytes in UTF-8
BOS_ID = 1
SHARD_TOKENS = 100_000_000  # tokens per output shard, as the challenge's
MANIFEST = "caseops_manifest.json"
_WORD = re.compile(r"[A-Za-z]+")
_ESCAPE = re.compile("[" + "".join(ESCAPED) + "]")
_DECODE = re.compile(ESC + r"(\d)|" + TITLE + r"([a-z]+)|" + ALLCAPS + r"([a-z]+)|" + CAPNEXT + r"([a-z])")

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------- the transform
def _encode_word(m: re.Match[str]) -> str:
    word = m.group(0)
    if word.islower():
        return word
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + word.lower()
    if word[0].isupper() and (len(word) == 1 or word[1:].islower()):
        return TITLE + word.lower()
    return "".join(CAPNEXT + c.lower() if c.isupper() else c for c in word)


def encode(text: str) -> str:
    """The CaseOps form of `text` (lossless: decode() restores it)."""
    escaped = _ESCAPE.sub(lambda m: ESC + str(ESCAPED.index(m.group(0))), text)
    return _WORD.sub(_encode_word, escaped)


def _decode_match(m: re.Match[str]) -> str:
    digit, title, caps, letter = m.groups()
    if digit is not None:
        return ESCAPED[int(digit)]
    if title is not None:
        return title[0].upper() + title[1:]
    if caps is not None:
        return caps.upper()
    return letter.upper()


def decode(text: str) -> str:
    """The original text of a CaseOps form."""
    return _DECODE.sub(_decode_match, text)


# ---------------------------------------------------------------------------------------------- the tokenizer
def train_caseops_tokenizer(docs: list[str], vocab_size: int) -> bytes:
    """SentencePiece with the challenge's settings on the transformed documents, the operators as user-defined
    symbols, and no normalization (NFKC or whitespace folding would change the text whose bytes are counted)."""
    from golf.data.sample import train_tokenizer

    return train_tokenizer([encode(d) for d in docs], vocab_size, normalization_rule_name="identity",
                           remove_extra_whitespaces=False, user_defined_symbols=list(OPERATORS))


def piece_bytes(sp: object) -> np.ndarray:
    """Original-text bytes each token id stands for (see the module docstring)."""
    n = int(sp.vocab_size())  # type: ignore[attr-defined]
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        piece = sp.id_to_piece(i)  # type: ignore[attr-defined]
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):  # type: ignore[attr-defined]
            continue
        if piece == ESC:
            out[i] = 2
        elif piece in OPERATORS:
            out[i] = 0
        elif sp.is_byte(i):  # type: ignore[attr-defined]
            out[i] = 1
        else:
            out[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
    return out


def encode_with_sidecar(sp: object, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """[BOS] + tokens of each transformed document, and each token's original bytes (BOS: 0)."""
    table = piece_bytes(sp)
    tokens: list[np.ndarray] = []
    for k, (doc, ids) in enumerate(zip(docs, sp.encode([encode(d) for d in docs]), strict=True)):  # type: ignore
        ids_arr = np.asarray([BOS_ID] + list(ids), dtype=np.int64)
        got, want = int(table[ids_arr].sum()), len(doc.encode("utf-8"))
        if got != want:
            raise GolfError(f"document {k}: its tokens account for {got} bytes, the text has {want}; the tokenizer "
                            "is not lossless on it (was it trained by golf data caseops?)")
        tokens.append(ids_arr)
    flat = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int64)
    return flat, table[flat]


# ---------------------------------------------------------------------------------------------- the source text
def count_documents(files: list[Path]) -> int:
    return int(sum(int(np.count_nonzero(np.asarray(read_shard(f)) == BOS_ID)) for f in files))


def sample_documents(src: Path) -> tuple[list[str], list[str]] | None:
    """(val, train) documents of a golf sample build at `src` (its shard folder), regenerated; None if it is not
    one. The regeneration must run on the Python that built it (the manifest names it)."""
    from golf.data import sample

    root = src.resolve().parent.parent
    try:
        manifest = json.loads((root / sample.MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    import platform

    if manifest.get("python_version") != platform.python_version():
        built_by = manifest.get("python_version")
        raise GolfError(f"{root / sample.MANIFEST_FILE}: the sample was built by Python {built_by}, this is "
                        f"{platform.python_version()}: its text cannot be regenerated here (pass --docs)")
    docs = sample.collect_documents(manifest.get("max_files"))
    return ([d for i, d in enumerate(docs) if i % sample.VAL_EVERY == 0],
            [d for i, d in enumerate(docs) if i % sample.VAL_EVERY != 0])


def jsonl_documents(path: Path, n_val: int, n_train: int) -> tuple[list[str], list[str]]:
    """The first n_val + n_train documents of a JSONL file: val first, then train."""
    docs: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if len(docs) == n_val + n_train:
                    break
                try:
                    docs.append(str(json.loads(line)["text"]))
                except (ValueError, KeyError, TypeError):
                    raise GolfError(f"{path}:{number}: not a JSON object with a \"text\" field") from None
    except OSError as exc:
        raise GolfError(f"{path}: cannot read the documents ({exc.strerror})") from None
    if len(docs) < n_val + n_train:
        raise GolfError(f"{path}: {len(docs)} documents, but the shards hold {n_val} validation + {n_train} "
                        "training documents")
    return docs[:n_val], docs[n_val:]


# ---------------------------------------------------------------------------------------------- the build
@dataclass(frozen=True)
class CaseOpsData:
    data_path: Path
    tokenizer_path: Path
    train_tokens: int
    val_tokens: int
    val_bytes: int  # the original validation text's UTF-8 bytes (the sidecar's sum)


def dataset_name(src: Path) -> str:
    return f"{src.resolve().name}_caseops"


def _vocab_from_name(src: Path) -> int:
    m = re.search(r"_sp(\d+)", src.resolve().name)
    return int(m.group(1)) if m else 1024


def _write_shards(folder: Path, stem: str, values: np.ndarray) -> list[Path]:
    paths = []
    for k, start in enumerate(range(0, max(values.size, 1), SHARD_TOKENS)):
        path = folder / f"{stem}_{k:06d}.bin"
        write_shard(path, values[start:start + SHARD_TOKENS])
        paths.append(path)
    return paths


def build_caseops(src: str | os.PathLike[str], out: str | os.PathLike[str], *, docs: Path | None = None,
                  vocab_size: int | None = None, tokenizer_docs: int = 200_000,
                  progress: Progress | None = None) -> CaseOpsData:
    """Build the CaseOps form of the shard set at `src` under `out` (datasets/<name>_caseops/ and tokenizers/)."""
    say = progress or (lambda _msg: None)
    src_path = Path(src)
    val_files, train_files = shard_files(src_path, "val"), shard_files(src_path, "train")
    if not val_files or not train_files:
        raise GolfError(f"{src_path}: no fineweb_val_*.bin and fineweb_train_*.bin shards (expected a shard folder)")
    n_val, n_train = count_documents(val_files), count_documents(train_files)
    if docs is not None:
        val_docs, train_docs = jsonl_documents(docs, n_val, n_train)
    else:
        found = sample_documents(src_path)
        if found is None:
            raise GolfError(f"{src_path}: not a golf sample build, so its text is needed: pass --docs FILE.jsonl "
                            "(the documents in shard order, validation first)")
        val_docs, train_docs = found
    if (len(val_docs), len(train_docs)) != (n_val, n_train):
        raise GolfError(f"{src_path}: the shards hold {n_val} validation and {n_train} training documents, the text "
                        f"{len(val_docs)} and {len(train_docs)}")
    vocab = vocab_size or _vocab_from_name(src_path)
    import sentencepiece as spm

    say(f"training a {vocab}-token CaseOps SentencePiece tokenizer on {min(tokenizer_docs, n_train)} documents")
    model = train_caseops_tokenizer(train_docs[:tokenizer_docs], vocab)
    sp = spm.SentencePieceProcessor(model_proto=model)
    say("tokenizing")
    val_tokens, val_bytes = encode_with_sidecar(sp, val_docs)
    train_tokens, _ = encode_with_sidecar(sp, train_docs)
    name = dataset_name(src_path)
    root = Path(out)
    data_path, tokenizer_path = root / "datasets" / name, root / "tokenizers" / f"{name}.model"
    staging = root / f".caseops-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "data").mkdir(parents=True)
    try:  # everything is written aside, then moved into place: nothing half-built is left on failure
        (staging / "tok.model").write_bytes(model)
        _write_shards(staging / "data", "fineweb_val", val_tokens)
        _write_shards(staging / "data", "fineweb_val_bytes", val_bytes)
        _write_shards(staging / "data", "fineweb_train", train_tokens)
        manifest = {"source": str(src_path.resolve()), "docs": str(docs) if docs else "golf sample",
                    "vocab_size": vocab, "val_documents": n_val, "train_documents": n_train,
                    "val_tokens": int(val_tokens.size), "train_tokens": int(train_tokens.size),
                    "val_bytes": int(val_bytes.sum()), "operators": {"ESC": "U+E000", "TITLE": "U+E001",
                                                                      "ALLCAPS": "U+E002", "CAPNEXT": "U+E003"}}
        (staging / "data" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tokenizer_path.parent.mkdir(parents=True, exist_ok=True)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(data_path, ignore_errors=True)
        os.replace(staging / "data", data_path)
        os.replace(staging / "tok.model", tokenizer_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"CaseOps dataset: {train_tokens.size:,} train tokens, {val_tokens.size:,} val tokens in {data_path}")
    return CaseOpsData(data_path, tokenizer_path, int(train_tokens.size), int(val_tokens.size), int(val_bytes.sum()))
