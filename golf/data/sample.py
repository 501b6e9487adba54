"""The embedded sample dataset: built offline on any machine from the Python standard library's own sources.

Text: the docstrings, other prose string literals and full-line comments of the stdlib's *.py files (sorted by
path, duplicates dropped), cut into documents of a few KB. Tokenizer: SentencePiece BPE, vocab 1024, trained with
the challenge's settings on the train documents, single-threaded and unshuffled so that the build is deterministic
for a given Python installation. Shards: the challenge's format, BOS (id 1) before each document, no EOS.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import os
import platform
import re
import shutil
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golf.errors import GolfError
from golf.trainer.shards import write_shard

BUILDER_VERSION = 1
DEFAULT_OUT = Path("data/sample")
DATASET_DIR = "sample_sp1024"
TOKENIZER_FILE = "sample_1024_bpe.model"
MANIFEST_FILE = "sample_manifest.json"
VOCAB_SIZE = 1024
BOS_ID = 1
VAL_EVERY = 12  # every 12th document is validation (~8%)
DOC_CHARS = 4000  # documents are cut at part boundaries once they reach this size
# Below this much prose (stdlib installed without its tests), module sources are added to reach it.
MIN_TEXT_CHARS = 6_500_000
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_BAD_CHARS = re.compile(r"[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f]")
_LETTER = re.compile(r"[A-Za-z]")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SampleData:
    root: Path
    data_path: Path
    tokenizer_path: Path
    train_tokens: int
    val_tokens: int
    documents: int
    built: bool  # False when an existing build was reused


def sample_paths(out: str | os.PathLike[str] = DEFAULT_OUT) -> tuple[Path, Path]:
    """(shard folder, tokenizer file) of a sample built under `out`."""
    root = Path(out)
    return root / "datasets" / DATASET_DIR, root / "tokenizers" / TOKENIZER_FILE


def build_sample(out: str | os.PathLike[str] = DEFAULT_OUT, *, force: bool = False, max_files: int | None = None,
                 progress: Progress | None = None) -> SampleData:
    """Build the sample dataset under `out` (or reuse a valid earlier build); `max_files` limits the source files
    read (tests use a small, fast subset)."""
    root = Path(out)
    say = progress or (lambda _msg: None)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GolfError(f"{root}: cannot create the sample folder ({exc.strerror})") from None
    with _lock(root / ".lock"):
        if not force:
            cached = _cached(root, max_files)
            if cached is not None:
                return cached
        return _build(root, max_files, say)


def _expected_identity(max_files: int | None) -> dict[str, object]:
    return {"builder_version": BUILDER_VERSION, "python_version": platform.python_version(),
            "python_implementation": platform.python_implementation(), "max_files": max_files}


def _cached(root: Path, max_files: int | None) -> SampleData | None:
    manifest_path = root / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if any(manifest.get(k) != v for k, v in _expected_identity(max_files).items()):
        return None
    for rel, meta in (manifest.get("files") or {}).items():
        path = root / rel
        if not path.is_file() or path.stat().st_size != meta.get("bytes"):
            return None
    data_path, tokenizer_path = sample_paths(root)
    return SampleData(root, data_path, tokenizer_path, int(manifest["train_tokens"]), int(manifest["val_tokens"]),
                      int(manifest["documents"]), built=False)


def _build(root: Path, max_files: int | None, say: Progress) -> SampleData:
    say("collecting docstrings and comments from the Python standard library")
    docs = collect_documents(max_files)
    if len(docs) < 2:
        raise GolfError(f"{stdlib_root()}: found too little Python source to build the sample dataset")
    val_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY == 0]
    train_docs = [d for i, d in enumerate(docs) if i % VAL_EVERY != 0]
    say(f"training a {VOCAB_SIZE}-token SentencePiece BPE tokenizer on {len(train_docs)} documents")
    model = train_tokenizer(train_docs)
    say("tokenizing")
    train = encode_documents(model, train_docs)
    val = encode_documents(model, val_docs)
    data_path, tokenizer_path = sample_paths(root)
    staging = root / f".build-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        staged = {
            tokenizer_path.relative_to(root).as_posix(): staging / TOKENIZER_FILE,
            (data_path / "fineweb_train_000000.bin").relative_to(root).as_posix(): staging / "train.bin",
            (data_path / "fineweb_val_000000.bin").relative_to(root).as_posix(): staging / "val.bin",
        }
        (staging / TOKENIZER_FILE).write_bytes(model)
        write_shard(staging / "train.bin", train)
        write_shard(staging / "val.bin", val)
        files = {}
        for rel, src in staged.items():
            files[rel] = {"bytes": src.stat().st_size, "sha256": _sha256(src)}
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = {**_expected_identity(max_files), "documents": len(docs), "train_documents": len(train_docs),
                "val_documents": len(val_docs), "train_tokens": int(train.size), "val_tokens": int(val.size),
                "source": str(stdlib_root()), "files": files}
    tmp = root / (MANIFEST_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST_FILE)  # last: a build is valid only once its manifest exists
    say(f"sample dataset: {train.size:,} train tokens, {val.size:,} val tokens in {data_path}")
    return SampleData(root, data_path, tokenizer_path, int(train.size), int(val.size), len(docs), built=True)


# -- text ---------------------------------------------------------------------------------------------------------

def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(max_files: int | None = None) -> list[Path]:
    """The stdlib's *.py files in a fixed order (sorted relative paths), third-party packages excluded."""
    root = stdlib_root()
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                  if not _SKIP_DIRS.intersection(p.relative_to(root).parts))
    files = [root / rel for rel in rels]
    return files[:max_files] if max_files is not None else files


def prose_parts(source: str) -> list[str]:
    """Docstrings, prose string literals (4+ words) and full-line comment blocks of one module, in file order."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old escape sequences in stdlib tests: not our concern
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: list[tuple[int, str]] = []
    string_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            end = node.end_lineno or node.lineno
            string_lines.update(range(node.lineno, end + 1))
            text = inspect.cleandoc(node.value) if "\n" in node.value else node.value.strip()
            if len(text.split()) >= 4 and not _BAD_CHARS.search(text):
                found.append((node.lineno, text))
    block: list[str] = []
    block_start = 0
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        is_comment = stripped.startswith("#") and number not in string_lines and not stripped.startswith("#!") \
            and "-*-" not in stripped
        text = stripped.lstrip("#").strip() if is_comment else ""
        if text and _LETTER.search(text) and not _BAD_CHARS.search(text):
            if not block:
                block_start = number
            block.append(text)
            continue
        if block:
            found.append((block_start, "\n".join(block)))
            block = []
    if block:
        found.append((block_start, "\n".join(block)))
    found.sort(key=lambda item: item[0])  # stable: ties keep ast.walk's order, which is deterministic
    return [text for _, text in found]


def _read_source(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def collect_documents(max_files: int | None = None, min_chars: int = MIN_TEXT_CHARS) -> list[str]:
    """The sample's documents: each module's prose (duplicates dropped) cut into pieces of about DOC_CHARS."""
    seen: set[str] = set()
    docs: list[str] = []
    total = 0
    sources: list[str] = []
    for path in stdlib_files(max_files):
        source = _read_source(path)
        if source is None:
            continue
        sources.append(source)
        current: list[str] = []
        size = 0
        for part in prose_parts(source):
            if part in seen:
                continue
            seen.add(part)
            current.append(part)
            size += len(part) + 1
            if size >= DOC_CHARS:
                docs.append("\n".join(current))
                total += size
                current, size = [], 0
        if current:
            docs.append("\n".join(current))
            total += size
    if max_files is None:
        # A stdlib installed without its test suite has too little prose: add module sources themselves.
        for source in sources:
            if total >= min_chars:
                break
            if _BAD_CHARS.search(source):
                continue
            for start in range(0, len(source), DOC_CHARS):
                docs.append(source[start:start + DOC_CHARS])
            total += len(source)
    return docs


# -- tokenizer and shards -----------------------------------------------------------------------------------------

# The challenge's SentencePiece settings (golf.data.caseops trains its tokenizer with these too)
SPM_SETTINGS: dict[str, object] = {
    "model_type": "bpe", "byte_fallback": True, "split_digits": True,
    "normalization_rule_name": "nmt_nfkc", "add_dummy_prefix": False,
    "pad_id": 0, "bos_id": BOS_ID, "eos_id": 2, "unk_id": 3,
    "character_coverage": 0.999, "hard_vocab_limit": False,
    # determinism: one thread, every sentence, in order
    "num_threads": 1, "input_sentence_size": 0, "shuffle_input_sentence": False,
    "max_sentence_length": 1 << 16, "minloglevel": 2,
}


def train_tokenizer(docs: list[str], vocab_size: int = VOCAB_SIZE, **overrides: object) -> bytes:
    """A SentencePiece BPE model (serialized) trained on the documents' lines with the challenge's settings
    (`overrides` replace some of them)."""
    import sentencepiece as spm

    def lines() -> Iterator[str]:
        for doc in docs:
            for line in doc.split("\n"):
                if line.strip():
                    yield line

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=lines(), model_writer=writer, vocab_size=vocab_size,
                                   **{**SPM_SETTINGS, **overrides})
    return writer.getvalue()


def encode_documents(model: bytes, docs: list[str]) -> np.ndarray:
    """[BOS] + tokens for each document, back to back, as uint16."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    pieces: list[np.ndarray] = []
    bos = np.array([BOS_ID], dtype=np.uint16)
    for ids in sp.encode(docs):
        pieces.append(bos)
        pieces.append(np.asarray(ids, dtype=np.uint16))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Serialize builders of one folder (two runs starting at once on a fresh machine)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
