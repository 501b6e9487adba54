"""The byte codecs of the artifact: zlib, zstd, lzma (raw LZMA2), brotli, and lrzip (ZPAQ) where its binary exists.

zlib and lzma are the standard library's; zstandard and brotli are imported when used; lrzip is Debian's `lrzip`
program (ZPAQ back-end, `-z -L 9`), run through a temporary folder, and only offered where `lrzip` is on PATH.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .hparams import STRONGEST_COMPRESS_LEVEL, KnobError

COMPRESSORS = ("zlib", "zstd", "lzma", "brotli")  # the COMPRESSOR knob's single-codec choices
CODECS = COMPRESSORS + ("lrzip",)  # what per-group compression may pick from (the id is the index)
STRONGEST_LEVEL = STRONGEST_COMPRESS_LEVEL


def compress_level(compressor: str, level: int) -> int:
    """The level actually used: 0 means the strongest; above the strongest is a KnobError."""
    if compressor not in STRONGEST_LEVEL:
        raise KnobError(f"COMPRESSOR={compressor!r} is not valid: expected one of {', '.join(STRONGEST_LEVEL)}")
    top = STRONGEST_LEVEL[compressor]
    if level > top:
        raise KnobError(f"COMPRESS_LEVEL={level} exceeds {compressor}'s strongest level {top} (0 means {top})")
    return level or top


def codec_available(codec: str) -> bool:
    """Whether this machine can run the codec (zlib and lzma always; the others need their module or binary)."""
    if codec in ("zlib", "lzma"):
        return True
    if codec == "lrzip":
        return shutil.which("lrzip") is not None
    try:
        __import__("zstandard" if codec == "zstd" else codec)
    except ImportError:
        return False
    return True


def compress(data: bytes, compressor: str, level: int = 0) -> bytes:
    if compressor == "lrzip":
        return _lrzip(data, ["-z", "-L", "9"])
    level = compress_level(compressor, level)
    if compressor == "zlib":
        return zlib.compress(data, level)
    if compressor == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=level).compress(data)
    if compressor == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(level))
    import brotli

    return brotli.compress(data, quality=level, lgwin=24)


def decompress(blob: bytes, compressor: str, level: int = 0) -> bytes:
    if compressor == "zlib":
        return zlib.decompress(blob)
    if compressor == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompress(blob)
    if compressor == "lzma":
        return lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=_lzma_filters(compress_level("lzma", level)))
    if compressor == "lrzip":
        return _lrzip(blob, ["-d"])
    import brotli

    return brotli.decompress(blob)


def _lzma_filters(preset: int) -> list[dict[str, int]]:
    # raw LZMA2 (no .xz container): the preset is kept in the artifact's prefix
    return [{"id": lzma.FILTER_LZMA2, "preset": preset}]


def _lrzip(data: bytes, mode: list[str]) -> bytes:
    """Run the lrzip binary on `data` (files in a private temporary folder: lrzip wants seekable files)."""
    binary = shutil.which("lrzip")
    if binary is None:
        raise RuntimeError("this artifact needs the lrzip program (Debian/Ubuntu: apt-get install lrzip)")
    with tempfile.TemporaryDirectory(prefix="golf-lrzip-") as folder:
        src, dst = Path(folder) / "in", Path(folder) / "out"
        src.write_bytes(data)
        subprocess.run([binary, "-q", "-f", *mode, "-o", str(dst), str(src)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return dst.read_bytes()


def shuffle_bytes(raw: bytes, itemsize: int) -> bytes:
    """Byte planes: all first bytes of the elements, then all second bytes, ... (high and low bytes apart)."""
    if itemsize == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def unshuffle_bytes(raw: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not raw:
        return raw
    return np.frombuffer(raw, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()
