"""`golf ingest PATH...`: community training logs and record folders → runs in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from golf_cli.options import DbOption, FormatOption


def ingest(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH...", help="Log files, or folders searched for *.log and *.txt (not requirements.txt); logs "
                                "in a record folder (with submission.json) carry the record's metadata.")],
    update: Annotated[bool, typer.Option("--update", help="Parse already-ingested logs again and replace their runs.")
                      ] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Write nothing: list the lines of each log that golf "
                                                            "could not place (one row per family of lines).")
                       ] = False,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """Parse community training logs into runs marked as ingested.

    The configuration a log prints decides its group; eval-only re-runs are children
    of their training run. Logs in a record folder (one with submission.json) carry the
    record's name, author, date and reported val_bpb, the stage that equals it
    (reported_stage) and compliance flags with their evidence; refer to the record by
    the folder's name. Ingesting the same bytes twice adds nothing.

    Example: golf ingest ../parameter-golf/records/track_10min_16mb

    Example: golf ingest --explain ../parameter-golf/records/track_10min_16mb/2026-03-17_NaiveBaseline/train.log
    """
    from golf.errors import GolfError
    from golf.output import FORMATS, Col, render

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if explain:
        _explain(paths, fmt)
        return
    from golf.ingest import ingest_paths
    from golf.store import Store, run_to_dict

    store = Store(db)
    report = ingest_paths(store, paths, update=update)
    for line in report.warnings:
        typer.echo(f"golf: warning: {line}", err=True)
    for item in report.items:
        if item.action in ("duplicate", "skipped"):
            typer.echo(f"golf: {item.action}: {item.path}: {item.detail}", err=True)
    typer.echo(report.summary(), err=True)
    runs = []
    for item in report.items:
        if item.run_id and item.action in ("added", "updated", "exists"):
            run = store.get(item.run_id)
            if run is not None:
                runs.append({**run_to_dict(run), "ingest_action": item.action})
    if fmt == "json":
        typer.echo(render([], [], "json", json_rows=runs))
        return
    columns = [Col("ingest_action", "action"), Col("id"), Col("name"), Col("seed", justify="right"),
               Col("status"), Col("final_stage", "final stage"),
               Col("final_bpb", "final bpb", lambda v: f"{v:.8f}", justify="right"),
               Col("total_bytes", "bytes", (lambda v: str(v)) if fmt == "csv" else (lambda v: f"{v:,}"),
                   justify="right"),
               Col("steps", justify="right"), Col("malformed_lines", "bad lines", justify="right"),
               Col("reported_stage", "reported stage"),
               Col("flags", "flags", (lambda v: ";".join(v)) if fmt == "csv" else (lambda v: ", ".join(v)))]
    from golf.ingest.compliance import flag_names

    for row in runs:
        row["flags"] = flag_names(row.get("compliance")) or None
    typer.echo(render(runs, columns, fmt, title="ingested runs", json_rows=[
        {k: v for k, v in r.items() if k != "flags"} for r in runs]))


def _explain(paths: list[Path], fmt: str) -> None:
    from golf.ingest.explain import explain
    from golf.output import Col, render

    rows = explain(paths)
    typer.echo(f"{len(rows)} unplaced line famil{'y' if len(rows) == 1 else 'ies'}", err=True)
    columns = [Col("file"), Col("line", justify="right"), Col("repeats", justify="right"), Col("text")]
    typer.echo(render(rows, columns, fmt, title="lines golf could not place", json_rows=rows))
