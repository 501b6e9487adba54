"""One output formatter for every command: --format table|md|csv|json.

Commands build a list of row dicts plus column specs; this module renders them. JSON and CSV carry the raw
values (numbers as numbers, no thousands separators); table and md use each column's text formatter.
Tables fit the terminal (golf.table_fit): numbers are never wrapped or cut, long text ends in an ellipsis,
and the columns with the highest `priority` numbers are hidden first. md/csv/json never depend on width.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
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
    priority: int = 0  # when the table is too wide, the highest numbers are hidden first; 0 is never hidden

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


def raw_text(value: Any, fmt: Callable[[Any], str] | None = None) -> str:
    """A CSV cell: numbers raw (ten significant digits, no separators), datetimes ISO, the rest as text."""
    if isinstance(value, bool) or value is None:
        return text_of(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.10g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return text_of(value, fmt)


def pick_columns(columns: Sequence[Col], names: Sequence[str] | None) -> list[Col]:
    """The columns `--columns a,b` names (by key or header, any case), in that order."""
    if not names:
        return list(columns)
    from golf.errors import GolfError

    wanted = [n.strip() for name in names for n in name.split(",") if n.strip()]
    by_name: dict[str, Col] = {}
    for col in columns:
        by_name.setdefault(col.key.lower(), col)
        by_name.setdefault(col.title.lower(), col)
    picked = []
    for name in wanted:
        col = by_name.get(name.lower())
        if col is None:
            import difflib

            valid = [c.title or c.key for c in columns]
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise GolfError(f"--columns {name}: no such column; {hint}expected some of {', '.join(valid)}")
        if col not in picked:
            picked.append(col)
    return [replace(c, priority=0) for c in picked]  # what the user picked is never hidden


def render(rows: Sequence[dict[str, Any]], columns: Sequence[Col], fmt: str = "table", title: str | None = None,
           json_rows: Iterable[dict[str, Any]] | None = None, pick: Sequence[str] | None = None,
           width: int | None | str = "auto") -> str:
    """Render rows as text. `json_rows` (default: `rows`) is what --format json prints; `pick` is --columns;
    `width` the table's limit ("auto": the terminal's, None: no limit)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    columns = pick_columns(columns, pick)
    if fmt == "json":
        return to_json(list(json_rows if json_rows is not None else rows))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([c.title for c in columns])
        for row in rows:
            writer.writerow([raw_text(row.get(c.key), c.fmt) for c in columns])
        return buf.getvalue().rstrip("\n")
    if fmt == "md":
        return markdown_table([c.title for c in columns],
                              [[text_of(row.get(c.key), c.fmt) for c in columns] for row in rows],
                              [c.justify for c in columns])
    return rich_table_text(rows, columns, title, terminal_width() if width == "auto" else width)  # type: ignore[arg-type]


def markdown_table(headers: Sequence[str], body: Sequence[Sequence[str]], justify: Sequence[str] | None = None) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    aligns = [{"right": "---:", "center": ":---:"}.get(j, "---") for j in (justify or ["left"] * len(headers))]
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def rich_table(rows: Sequence[dict[str, Any]], columns: Sequence[Col], title: str | None = None,
               width: int | None = None) -> tuple[Any, list[Col]]:
    """A rich Table fitted to `width` (None: natural width) and the columns it had to hide."""
    from rich.table import Table

    from golf.table_fit import fit

    cells = [[text_of(row.get(col.key), col.fmt) for col in columns] for row in rows]
    layout = fit([c.title for c in columns], cells, [c.priority for c in columns], width)
    table = Table(title=layout.clip(title) if title else None, header_style="bold", show_lines=False)
    for i in layout.kept:
        col = columns[i]
        table.add_column(col.title, justify=col.justify, overflow="fold",  # type: ignore[arg-type]
                         min_width=layout.widths[i], max_width=layout.widths[i])
    for row, texts in zip(rows, cells, strict=True):
        out = []
        for i in layout.kept:
            col = columns[i]
            value = row.get(col.key)
            cell = layout.cell(texts[i], i)
            style = col.style(value, row) if col.style else None
            out.append(f"[{style}]{_escape(cell)}[/]" if style and cell else _escape(cell))
        table.add_row(*out)
    return table, [columns[i] for i in layout.hidden]


def rich_table_text(rows: Sequence[dict[str, Any]], columns: Sequence[Col], title: str | None = None,
                    width: int | None = None) -> str:
    from rich.console import Console

    table, hidden = rich_table(rows, columns, title, width)
    tty = sys.stdout.isatty()
    console = Console(file=io.StringIO(), width=100_000, force_terminal=tty, color_system="auto" if tty else None)
    # measure, then print at the table's own width, so the title centres over the table and nothing re-wraps
    console.width = console.measure(table).maximum
    console.print(table)
    text = console.file.getvalue().rstrip("\n")  # type: ignore[attr-defined]
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    if hidden:
        names = ", ".join(c.title or c.key for c in hidden)
        text += "\n" + _clip(f"(hidden to fit {width} columns: {names}; --columns picks)", width)
    return text


def _clip(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def terminal_width() -> int | None:
    """The terminal's width: $COLUMNS, else the size of whichever of stdout, stderr or /dev/tty is a terminal
    (so `golf ls | less` still fits the screen). None when there is no terminal at all: plain, unlimited."""
    import os

    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                return os.get_terminal_size(stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            continue
    try:
        fd = os.open("/dev/tty", os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.get_terminal_size(fd).columns
    except OSError:
        return None
    finally:
        os.close(fd)
