"""`golf ingest --explain FILE`: the lines of a log that golf's parser could not place.

Source code dumped into a log, indented lines, torchrun/NCCL noise and nvidia-smi tables are not listed (the parser
leaves them out on purpose); every other line that no pattern reads is. Lines that differ only in their numbers are
one family: it is listed once, at its first line, with how often it repeats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from golf.ingest.logs import find_logs
from golf.logparse import LogParser

_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*")


def family_of(line: str) -> str:
    """A line with its numbers blanked: lines of one family print different figures in the same words."""
    return _NUMBER.sub("#", line)


def explain(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """One row per unplaced line family per file: file, first line number, the line, how many lines share it."""
    rows: list[dict[str, Any]] = []
    for path in find_logs(paths):
        text = path.read_text(encoding="utf-8", errors="replace")
        parser = LogParser(unplaced_cap=None)  # one parser over the whole file: its line numbers are the file's
        for raw in text.splitlines():
            parser.feed(raw)
        seen: dict[str, dict[str, Any]] = {}
        for number, line in parser.run.unplaced:
            key = family_of(line)
            if key in seen:
                seen[key]["repeats"] += 1
            else:
                seen[key] = {"file": str(path), "line": number, "text": line, "repeats": 1}
        rows += sorted(seen.values(), key=lambda r: r["line"])
    return rows
