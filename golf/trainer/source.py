"""The trainer's own code: what counts as code bytes and what identifies the trainer version."""

from __future__ import annotations

import hashlib
from pathlib import Path

GOLF_VERSION = "0.1.0"  # golf's version; golf/__init__.py re-exports it

# Set to True by `golf export-record` in the one-file train_gpt.py, whose own bytes are the code bytes.
BUNDLED = False


def trainer_files() -> list[Path]:
    """The trainer package's modules, in name order (the code_hash order)."""
    return sorted(Path(__file__).resolve().parent.glob("*.py"))


def code_hash() -> str:
    """sha256 of the trainer's source: the package's modules, or the shipped one-file trainer itself."""
    if BUNDLED:
        import __main__

        return hashlib.sha256(Path(getattr(__main__, "__file__", __file__)).read_bytes()).hexdigest()
    digest = hashlib.sha256()
    for path in trainer_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def shipped_code(pack: str, baked: dict[str, str]) -> tuple[int, str]:
    """(code bytes, how they were measured) for the file a record would ship.

    Inside the exported train_gpt.py: that file's own size. In the package: the size of the one-file
    trainer that `golf export-record` would generate with this pack mode and these knob values baked in.
    """
    import __main__

    if BUNDLED:
        path = Path(getattr(__main__, "__file__", __file__))
        return path.stat().st_size, f"shipped file {path.name}"
    try:
        from golf.export.bundle import build_trainer_file
    except ImportError:  # exporter not available: count the package's sources
        return sum(p.stat().st_size for p in trainer_files()), "trainer package sources (unbundled)"
    try:
        text = build_trainer_file(pack=pack, baked=baked)
    except Exception as exc:  # a bundling bug must not crash a finished run: log it, count sources
        return sum(p.stat().st_size for p in trainer_files()), f"trainer package sources (bundling failed: {exc})"
    return len(text.encode("utf-8")), f"one-file train_gpt.py (pack={pack})"
