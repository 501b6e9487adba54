"""Fit a table into a terminal width: which columns stay, how wide each is, how a cell is cut.

Rules: a cell that reads as a number (it starts with a digit, a sign or `—`, and is no sentence) is never cut, so its
column is at least that wide; other text is cut with an ellipsis. When even those minimum widths do not fit,
the columns with the highest priority number (0 = never) are hidden, the rightmost first among equals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

TEXT_FLOOR = 10  # a text column is not squeezed below this (or its natural width, if smaller)
ESSENTIAL_WANT = 24  # a never-hidden text column gets up to this much before optional columns are kept
EMPTY_RANK = 1_000  # the hiding rank of a column whose cells are all empty
_NUMBER = re.compile(r"^[-+−<>~]?(\d|\.\d)|^—$")


def is_number(cell: str) -> bool:
    """`1.2244`, `15,939,048 (60,952 left)`, `−0.0025 ± 0.0003, p=0.00042`: a figure, maybe with a unit or two.
    `2 seeds (1, 2) — records usually show 3` starts with a digit but is a sentence: text."""
    text = cell.strip()
    if not _NUMBER.match(text):
        return False
    words = re.findall(r"[A-Za-z]{2,}", text)
    return len(words) <= 2 and all(len(w) <= 6 for w in words)


def table_width(widths: Sequence[int]) -> int:
    """rich's default box: `│ a │ b │` is one border plus two padding per column, plus one."""
    return sum(widths) + 3 * len(widths) + 1


@dataclass
class Layout:
    kept: list[int]
    hidden: list[int]
    widths: dict[int, int]
    width: int | None

    def cell(self, text: str, column: int) -> str:
        """The cell as shown: whole if it fits or is a number, else cut to the column with an ellipsis."""
        w = self.widths[column]
        lines = text.split("\n")
        return "\n".join(line if len(line) <= w or is_number(line) else line[: max(w - 1, 0)] + "…"
                         for line in lines)

    def clip(self, title: str) -> str:
        if self.width is None or len(title) <= self.width:
            return title
        return title[: self.width - 1] + "…"


def fit(headers: Sequence[str], cells: Sequence[Sequence[str]], priorities: Sequence[int],
        width: int | None) -> Layout:
    n = len(headers)
    natural = [max([len(headers[i])] + [_longest(r[i]) for r in cells]) for i in range(n)]
    floors = []
    for i in range(n):
        numbers = [_longest(r[i]) for r in cells if is_number(r[i])]
        floors.append(max([min(natural[i], TEXT_FLOOR), *numbers]))
    kept = list(range(n))
    if width is None:
        return Layout(kept, [], {i: natural[i] for i in kept}, None)
    hidden: list[int] = []
    # hide the least important columns until the essential ones get their text (up to ESSENTIAL_WANT) and the
    # rest their minimum widths
    # a column with nothing in it goes first, whatever its priority
    ranks = [EMPTY_RANK if cells and not any(r[i].strip() for r in cells) else priorities[i] for i in range(n)]
    want = [max(floors[i], min(natural[i], ESSENTIAL_WANT)) if ranks[i] == 0 else floors[i] for i in range(n)]
    droppable = sorted((i for i in range(n) if ranks[i] > 0), key=lambda i: (-ranks[i], -i))
    while table_width([want[i] for i in kept]) > width and droppable:
        gone = droppable.pop(0)
        kept.remove(gone)
        hidden.append(gone)
    widths = {i: floors[i] for i in kept}
    spare = width - table_width(list(widths.values()))
    # share what is left among the cut columns, a character at a time from the left, up to their natural width
    while spare > 0:
        short = [i for i in kept if widths[i] < natural[i]]
        if not short:
            break
        for i in short:
            if spare == 0:
                break
            widths[i] += 1
            spare -= 1
    return Layout(kept, sorted(hidden), widths, width)


def _longest(text: str) -> int:
    return max((len(line) for line in text.split("\n")), default=0)
