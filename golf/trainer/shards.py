"""The challenge's token shard format: 256 little-endian int32 header words (magic 20240520, version 1,
token count, zeros), then uint16 little-endian token ids."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
MAX_VOCAB = 1 << 16


class ShardError(ValueError):
    """A shard file that does not follow the format (message names the file and the problem)."""


def read_header(path: str | os.PathLike[str]) -> int:
    """Validate a shard's header and size; returns its token count."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes is shorter than the {HEADER_BYTES}-byte shard header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_WORDS)
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC}); not a token shard")
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {int(header[1])} (expected {SHARD_VERSION})")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        raise ShardError(f"{path}: size {size} bytes does not match its header ({count} tokens -> {expected} bytes)")
    return count


def read_shard(path: str | os.PathLike[str]) -> np.ndarray:
    """The shard's tokens as a uint16 array (memory-mapped: shards are up to 200 MB)."""
    count = read_header(path)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def write_shard(path: str | os.PathLike[str], tokens: np.ndarray) -> None:
    """Write tokens (< 65536) as a shard, atomically (temp file + rename)."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= MAX_VOCAB):
        raise ShardError(f"{path}: token ids must be in [0, {MAX_VOCAB}) to fit uint16")
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)


def shard_files(data_path: str | os.PathLike[str], split: str) -> list[Path]:
    """Sorted `fineweb_{split}_*.bin` files (the CaseOps `_bytes_` sidecars are not token shards)."""
    return sorted(p for p in Path(data_path).glob(f"fineweb_{split}_*.bin") if "_bytes_" not in p.name)
