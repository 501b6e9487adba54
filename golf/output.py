"""One output formatter for every command: --format table|md|csv|json.

Commands build a list of row dicts plus column specs; this module renders them. JSON output is the
raw row values (no colour, no decoration); the other formats use each column's text formatter.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

FORMATS = ("table", "md", "csv", "json")


@dataclass(frozen=True)
class Col:
    key: str
    header: str | None = None
    fmt: Callable[[Any], str] | None = None  # value -> text (table, md, csv)
    style: Callable[[Any, dict[str, Any]], str | None] | None = None  # (value, row) -> rich style (table only)
    justify: str = "left"

    @property
    def title(self) -> str:
        return self.header if self.header is not None else self.key


def text_of(value: Any, fmt: Callable[[Any], str] | None = None) -> str:
    if value is None:
        return ""
    if fmt is not None:
        return fmt(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def fnum(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:.{digits}f}"


def fint(v: Any) -> str:
    return f"{int(v):,}"


def fsigned(digits: int) -> Callable[[Any], str]:
    """Signed number with a true minus sign, as the records' tables write deltas."""
    return lambda v: f"{v:+.{digits}f}".replace("-", "−")


def json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(_clean(data), indent=2, default=json_default, ensure_ascii=False)


def _clean(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _clean(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_clean(v) for v in data]
    return data


def render(rows: Sequence[dict[str, Any]], columns: Sequence[Col], fmt: str = "table", title: str | None = None,
           json_rows: Iterable[dict[str, Any]] | None = None) -> str:
    """Render rows as text. `json_rows` (default: `rows`) is what --format json prints."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if fmt == "json":
        return to_json(list(json_rows if json_rows is not None else rows))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([c.title for c in columns])
        for row in rows:
            writer.writerow([text_of(row.get(c.key), c.fmt) for c in columns])
        return buf.getvalue().rstrip("\n")
    if fmt == "md":
        return markdown_table([c.title for c in columns],
                              [[text_of(row.get(c.key), c.fmt) for c in columns] for row in rows],
                              [c.justify for c in columns])
    return rich_table_text(rows, columns, title)


def markdown_table(headers: Sequence[str], body: Sequence[Sequence[str]], justify: Sequence[str] | None = None) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    aligns = [{"right": "---:", "center": ":---:"}.get(j, "---") for j in (justify or ["left"] * len(headers))]
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def rich_table(rows: Sequence[dict[str, Any]], columns: Sequence[Col], title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, header_style="bold", show_lines=False)
    for col in columns:
        table.add_column(col.title, justify=col.justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col.key)
            cell = text_of(value, col.fmt)
            style = col.style(value, row) if col.style else None
            cells.append(f"[{style}]{_escape(cell)}[/]" if style and cell else _escape(cell))
        table.add_row(*cells)
    return table


def rich_table_text(rows: Sequence[dict[str, Any]], columns: Sequence[Col], title: str | None = None) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=_width(), force_terminal=sys.stdout.isatty(),
                      color_system="auto" if sys.stdout.isatty() else None)
    console.print(rich_table(rows, columns, title))
    return console.file.getvalue().rstrip("\n")  # type: ignore[attr-defined]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _width() -> int:
    import shutil

    return max(shutil.get_terminal_size((160, 40)).columns, 100)
