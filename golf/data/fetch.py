"""Download the challenge's tokenized FineWeb from the Hugging Face hub, driven by the dataset's manifest.

Remote layout (under the root prefix, default `datasets`): `manifest.json`,
`datasets/fineweb10B_<variant>/fineweb_{val,train}_NNNNNN.bin`, and the tokenizer files that the manifest's
tokenizer entry names (`tokenizers/...`). Local layout under `out` (default `./data`): `manifest.json`,
`datasets/fineweb10B_<variant>/`, `tokenizers/`, which is what the challenge's trainers expect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from golf.errors import GolfError

DEFAULT_REPO = "willdepueoai/parameter-golf"
DEFAULT_OUT = Path("data")
_VARIANT = re.compile(r"^(sp\d+|byte260)$")

Progress = Callable[[str], None]


@dataclass
class FetchResult:
    data_path: Path
    tokenizer_paths: list[Path]
    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def repo_id() -> str:
    return os.environ.get("MATCHED_FINEWEB_REPO_ID") or DEFAULT_REPO


def remote_prefix() -> str:
    return os.environ.get("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", "datasets").strip("/")


def dataset_dir(variant: str) -> str:
    if not _VARIANT.match(variant):
        raise GolfError(f"--variant {variant}: expected sp<VOCAB> (e.g. sp1024, sp4096, sp8192) or byte260")
    return f"fineweb10B_{variant}"


def _remote(rel: str) -> str:
    prefix = remote_prefix()
    return f"{prefix}/{rel}" if prefix else rel


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """The hub logs a warning per retry ("Retrying in 4s [Retry 3/5]") before it gives up: golf reports the
    outcome in one line instead, so its loggers say nothing below an error while golf downloads."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _download(repo: str, remote_path: str) -> Path:
    """One file from the hub's cache (downloaded if needed); returns the cached file."""
    from huggingface_hub import hf_hub_download  # imported here: slow, and tests replace it

    path = PurePosixPath(remote_path)
    try:
        with _quiet_hub():
            cached = hf_hub_download(repo_id=repo, filename=path.name, repo_type="dataset",
                                     subfolder=str(path.parent) if str(path.parent) != "." else None)
    except Exception as exc:  # the hub raises many types (network, 404, auth); report them as one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GolfError(f"{repo}: cannot download {remote_path}: {first}") from None
    return Path(cached)


def _place(cached: Path, dest: Path) -> None:
    """Hard-link the cached blob into place (copy across filesystems); atomic via a temporary name."""
    source = cached.resolve(strict=True)  # hub cache entries are symlinks into blobs/
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def fetch_dataset(variant: str = "sp1024", train_shards: int | None = None,
                  out: str | os.PathLike[str] = DEFAULT_OUT, progress: Progress | None = None) -> FetchResult:
    """Fetch a variant's val shards, its first `train_shards` train shards (default: all) and its tokenizer,
    skipping files already present."""
    say = progress or (lambda _msg: None)
    root = Path(out)
    name = dataset_dir(variant)
    if train_shards is not None and train_shards < 0:
        raise GolfError(f"--train-shards {train_shards}: expected 0 or more")
    repo = repo_id()
    manifest = _manifest(repo, root, name, say)
    entry = next((d for d in manifest.get("datasets", []) if isinstance(d, dict) and d.get("name") == name), None)
    if entry is None:
        listed = ", ".join(str(d.get("name")) for d in manifest.get("datasets", []) if isinstance(d, dict))
        raise GolfError(f"{repo}: the manifest lists no dataset {name} (it has: {listed or 'none'}); "
                        "set MATCHED_FINEWEB_REPO_ID to the repo that hosts it")
    stats = entry.get("stats") or {}
    try:
        files_val, files_train = int(stats["files_val"]), int(stats["files_train"])
    except (KeyError, TypeError, ValueError):
        raise GolfError(f"{repo}: manifest entry {name} has no stats.files_val/files_train") from None
    wanted_train = files_train if train_shards is None else train_shards
    if wanted_train > files_train:
        raise GolfError(f"--train-shards {train_shards}: {name} has only {files_train} train shards on {repo}")
    tokenizer_name = entry.get("tokenizer_name")
    tokenizer = next((t for t in manifest.get("tokenizers", [])
                      if isinstance(t, dict) and t.get("name") == tokenizer_name), None)
    if tokenizer is None:
        raise GolfError(f"{repo}: the manifest lists no tokenizer {tokenizer_name!r} (needed by {name})")
    tokenizer_files = [str(tokenizer[k]) for k in ("model_path", "vocab_path", "path") if tokenizer.get(k)]
    if not tokenizer_files:
        raise GolfError(f"{repo}: tokenizer entry {tokenizer_name!r} names no files (model_path/vocab_path/path)")

    data_path = root / "datasets" / name
    # (local path under `out`, remote path under the prefix); the manifest names tokenizer files relative to
    # the prefix (tokenizers/fineweb_1024_bpe.model), and they land in out/tokenizers/ whatever their folder
    wanted = [(f"datasets/{name}/fineweb_val_{i:06d}.bin",) * 2 for i in range(files_val)]
    wanted += [(f"datasets/{name}/fineweb_train_{i:06d}.bin",) * 2 for i in range(wanted_train)]
    wanted += [(f"tokenizers/{PurePosixPath(p).name}", p) for p in tokenizer_files]
    tokenizer_paths = [root / local for local, _ in wanted[-len(tokenizer_files):]]
    result = FetchResult(data_path=data_path, tokenizer_paths=tokenizer_paths)
    for i, (local, remote) in enumerate(wanted, start=1):
        dest = root / local
        if dest.is_file():
            result.skipped.append(dest)
            continue
        say(f"[{i}/{len(wanted)}] {local}")
        _place(_download(repo, _remote(remote)), dest)
        result.downloaded.append(dest)
    return result


def _manifest(repo: str, root: Path, name: str, say: Progress) -> dict[str, Any]:
    """The local manifest if it lists `name`; else a fresh one from the hub (a manifest cached from another repo
    lacks the other repo's variants)."""
    path = root / "manifest.json"
    manifest = _read_manifest(path) if path.is_file() else None
    if manifest is not None and any(isinstance(d, dict) and d.get("name") == name
                                    for d in manifest.get("datasets", [])):
        return manifest
    say(f"manifest.json from {repo}")
    _place(_download(repo, _remote("manifest.json")), path)
    fresh = _read_manifest(path)
    if fresh is None:
        raise GolfError(f"{path}: the downloaded manifest is not valid JSON")
    return fresh


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
