"""Fit a table into a terminal width: which columns stay, how wide each is, how a cell is cut.

Rules: a cell that reads as a number (it starts with a digit, a sign or `—`) is never cut or wrapped, so its
column is at least that wide; other text is cut with an ellipsis. When even those minimum widths do not fit,
the columns with the highest priority number (0 = never) are hidden, the rightmost first among equals.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

TEXT_FLOOR = 10  # a text column is not squeezed below this (or its natural width, if smaller)
ESSENTIAL_WANT = 24  # a never-hidden text column gets up to this much before optional columns are kept
_NUMBER = re.compile(r"^[-+−<>~]?(\d|\.\d)|^—$")


def is_number(cell: str) -> bool:
    return bool(_NUMBER.match(cell.strip()))


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
    want = [max(floors[i], min(natural[i], ESSENTIAL_WANT)) if priorities[i] == 0 else floors[i] for i in range(n)]
    droppable = sorted((i for i in range(n) if priorities[i] > 0), key=lambda i: (-priorities[i], -i))
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
