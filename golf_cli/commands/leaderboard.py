"""`golf leaderboard`: the best seed groups by mean final bpb, with budgets and flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from golf_cli.options import ColumnsOption, DbOption, ExcludeTagOption, FormatOption, SpecFilterOption, TagFilterOption


def leaderboard(
    official: Annotated[Optional[Path], typer.Option(
        "--official", metavar="PATH", help="A parameter-golf checkout (or its records/ or a track folder): "
                                           "interleave its records' submission.json scores, marked official.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows to show.")] = 20,
    tag: TagFilterOption = None,
    exclude_tag: ExcludeTagOption = None,
    spec: SpecFilterOption = None,
    with_bench: Annotated[bool, typer.Option("--with-bench", help="Include `golf bench` runs (tag bench), which are "
                                                                  "left out by default.")] = False,
    fmt: FormatOption = "table",
    columns_: ColumnsOption = None,
    db: DbOption = None,
) -> None:
    """The best seed groups by mean final bpb (`golf bench` runs left out unless --with-bench).

    Shows mean ± std, seeds, max bytes against 16,000,000, ms/step, train and eval
    time against 600 s, and flags: non-record, over budget, single seed, ingested,
    official.

    Example: golf leaderboard --official ../parameter-golf --limit 30
    """
    from golf.analysis.leaderboard import display_columns, display_rows
    from golf.analysis.leaderboard import leaderboard as build
    from golf.errors import GolfError
    from golf.output import FORMATS, render

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if official is not None and not official.exists():
        raise GolfError(f"--official {official}: no such folder (expected a parameter-golf checkout)")
    from golf.analysis.filters import RunFilter
    from golf.store import Store

    excluded = [*(exclude_tag or []), *([] if with_bench or "bench" in (tag or []) else ["bench"])]
    only = RunFilter(tags=tag or (), exclude_tags=excluded, specs=spec or ())
    rows, warnings = build(Store(db, readonly=True), official, limit, only)
    if warnings:
        typer.echo(f"golf: warning: skipped {len(warnings)} submission file(s) that could not be read:", err=True)
        for line in warnings:
            typer.echo(f"  {line}", err=True)
    if fmt == "json":
        typer.echo(render([], [], "json", json_rows=rows))
        return
    if not rows:
        typer.echo("no completed runs with a final score yet (`golf run SPEC`, or `golf ingest PATH`)", err=True)
    typer.echo(render(display_rows(rows), display_columns(fmt), fmt, title="leaderboard (final bpb, lower is better)",
                      pick=columns_))
