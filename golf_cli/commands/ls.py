"""`golf ls`: the runs in the store, newest first."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from golf_cli.options import ColumnsOption, DbOption, ExcludeTagOption, FormatOption, SpecFilterOption, TagFilterOption


def ls(
    status: Annotated[Optional[str], typer.Option("--status", help="Only runs with this status (running, completed, "
                                                                    "failed, interrupted, diverged).")] = None,
    tag: TagFilterOption = None,
    exclude_tag: ExcludeTagOption = None,
    spec: SpecFilterOption = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most N runs.")] = None,
    fmt: FormatOption = "table",
    columns_: ColumnsOption = None,
    db: DbOption = None,
) -> None:
    """List runs, newest first, with their experiment (golf run --name) and seed group.

    Example: golf ls --status completed --tag smoke --format md
    """
    import difflib

    from golf.analysis.filters import RunFilter
    from golf.errors import GolfError
    from golf.output import FORMATS, Col, fint, fnum, render
    from golf.store import STATUSES, Store, run_to_dict

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if status is not None and status not in STATUSES:
        close = difflib.get_close_matches(status, STATUSES, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; expected one of {', '.join(STATUSES)}"
        raise GolfError(f"--status {status}: unknown status{hint}")
    from golf.ingest.compliance import flag_names

    store = Store(db, readonly=True)  # never waits on a writer; shows a run whose golf died as failed
    chosen = RunFilter(tags=tag or (), exclude_tags=exclude_tag or (), specs=spec or ())
    runs = [r for r in store.list_runs(status=status) if chosen.matches(r)][:limit]
    if fmt == "json":
        typer.echo(render([], [], "json", json_rows=[run_to_dict(r) for r in runs]))
        return
    if not runs:
        typer.echo("no runs" + (" matching the filters" if status or chosen.active else "") + f" in {store.path}")
        return

    def status_style(value: object, _row: dict) -> str | None:
        return {"completed": "green", "running": "cyan", "interrupted": "yellow"}.get(str(value), "red")

    columns = [  # priority: which columns a narrow terminal hides first (highest first)
        Col("id"), Col("name"), Col("experiment", priority=3), Col("status", style=status_style),
        Col("seed", justify="right", priority=2),
        Col("final_bpb", "bpb", fnum(4), justify="right"), Col("stage", priority=3),
        Col("total_bytes", "bytes", fint, justify="right", priority=1), Col("steps", justify="right", priority=4),
        Col("step_avg_ms", "ms/step", fnum(1), justify="right", priority=3),
        Col("group_hash", "group", lambda v: v if fmt == "csv" else v[:8], priority=4),
        Col("parent_id", "eval of", priority=4),  # a re-score (golf eval): the run whose artifact it scored
        Col("started_at", "started", priority=5), Col("tags", priority=6),
        Col("flags", "flags", (lambda v: ";".join(v)) if fmt == "csv" else (lambda v: ", ".join(v)), priority=2),
    ]
    if fmt == "csv":
        columns.append(Col("non_record_reason", "non_record_reason"))
    rows = []
    for run in runs:
        stage = run.final_stage
        if run.non_record_reason and fmt != "csv":  # csv has its own column
            stage = f"{stage or '—'} (non-record)"
        rows.append({**run.model_dump(), "stage": stage, "flags": flag_names(run.compliance) or None})
    typer.echo(render(rows, columns, fmt, pick=columns_))
