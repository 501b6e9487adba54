"""`golf repair [RUN...]`: bring rows back in line with their train.log."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from golf_cli.options import DbOption, FormatOption


def repair(
    refs: Annotated[Optional[list[str]], typer.Argument(
        metavar="[RUN...]", help="Runs (id, prefix or name). Without any: every run whose golf process died "
                                 "(a `running` row without a recent heartbeat).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Also repair a run whose golf still beats (it may "
                                                        "overwrite what that golf writes next).")] = False,
    db: DbOption = None,
    fmt: FormatOption = "table",
) -> None:
    """Re-derive runs' rows from their train.log: every metric, every step, and the status golf recorded in the run
    folder (golf_status.json), else `failed` for a run whose golf died.

    What it is for: a golf killed with kill -9, a crash, a runs.db that was locked or full until the run ended.
    `golf run` repairs dead runs by itself before it starts.

    Example: golf repair smoke-s1337
    """
    from golf.errors import GolfError
    from golf.launch.repair import dead_runs, repair_run
    from golf.output import FORMATS, Col, render
    from golf.store import Store

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    store = Store(db, create=False)
    targets = list(refs) if refs else dead_runs(store)
    if not targets:
        typer.echo(f"no run to repair in {store.path} (every run's golf is alive or finished)")
        return
    rows = [repair_run(store, ref, force=force).as_row() for ref in targets]
    columns = [Col("id"), Col("name"), Col("status_before", "was"), Col("status"),
               Col("steps_before", "steps were", justify="right"), Col("steps", justify="right"), Col("log")]
    typer.echo(render(rows, columns, fmt))
