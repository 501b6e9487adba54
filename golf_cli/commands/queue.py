"""`golf queue [SWEEP]` (the sweeps in runs.db, or one sweep's cells) and `golf queue cancel SWEEP|CELL`."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from golf_cli.default_group import QueueGroup
from golf_cli.options import DbOption, FormatOption

app = typer.Typer(cls=QueueGroup, help="The sweep queue: `golf queue` lists sweeps, `golf queue SWEEP` its cells, "
                                       "`golf queue cancel SWEEP|CELL` stops them.")


@app.command("ls")
def ls(
    sweep: Annotated[Optional[str], typer.Argument(metavar="[SWEEP]", help="A sweep id (or prefix): list its "
                                                                          "cells.")] = None,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """List the sweeps (cells by state, lanes, executor), or one sweep's cells in queue order.

    Example: golf queue --format md
    """
    from golf.errors import GolfError
    from golf.launch.queue import cells_of, counts, resolve_ref, sweep_alive, sweeps
    from golf.output import FORMATS, Col, render
    from golf.store import Store

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    store = Store(db, readonly=True)
    if sweep is not None:
        print_cells(store, resolve_ref(store, sweep)[0]["id"], fmt)
        return
    rows = []
    for row in reversed(sweeps(store)):
        by_state = counts(cells_of(store, row["id"]))
        state = row["state"]
        if state == "running" and not sweep_alive(row):
            state = "stopped"  # its golf died: `golf sweep resume` picks it up
        rows.append({"sweep": row["id"], "name": row["name"], "state": state, **by_state,
                     "lanes": row["lanes"], "executor": row["executor"], "created": row["created_at"]})
    columns = [Col("sweep"), Col("name"), Col("state"), *(Col(s, justify="right") for s in
               ("queued", "running", "completed", "failed", "stalled", "cancelled")),
               Col("lanes", justify="right", priority=2), Col("executor", priority=3), Col("created", priority=1)]
    typer.echo(render(rows, columns, fmt, title="sweeps"))


@app.command("cancel")
def cancel(
    ref: Annotated[str, typer.Argument(metavar="SWEEP|CELL", help="A sweep id (or prefix), or a cell "
                                                                 "(<sweep>.<n>).")],
    db: DbOption = None,
) -> None:
    """Cancel a sweep (its queued cells never start, its running cells are stopped) or one cell.

    Example: golf queue cancel 5eed0001
    """
    from golf.launch.queue import cancel as cancel_cells
    from golf.store import Store

    store = Store(db, create=False)
    done = cancel_cells(store, ref)
    typer.echo(f"golf queue: cancelled {len(done)} cells" + (f": {', '.join(done)}" if done else ""), err=True)


def print_cells(store: Any, sweep_id: str, fmt: str) -> None:
    from golf.launch.queue import cells_of, get_sweep
    from golf.output import Col, render

    sweep = get_sweep(store, sweep_id)
    changes = [s.get("change") for s in sweep.get("steps") or []]
    rows = []
    for cell in cells_of(store, sweep_id):
        took = (cell["ended_at"] - cell["started_at"]).total_seconds() \
            if cell.get("ended_at") and cell.get("started_at") and not cell.get("reused") else None
        rows.append({"cell": cell["id"], "change": changes[cell["step"]] if cell["step"] < len(changes) else None,
                     "seed": cell["seed"], "state": cell["state"], "lane": cell["lane"], "job_id": cell["job_id"],
                     "run_id": cell["run_id"], "reused": cell["reused"], "attempts": cell["attempts"],
                     "seconds": took, "group_hash": cell["group_hash"], "spec": cell["spec_name"]})
    columns = [Col("cell"), Col("change"), Col("seed", justify="right"), Col("state"), Col("lane", priority=2),
               Col("run_id", "run"), Col("attempts", justify="right", priority=3),
               Col("seconds", "s", fmt=lambda v: f"{v:.1f}", justify="right", priority=1),
               Col("job_id", "job", priority=4)]
    typer.echo(render(rows, columns, fmt, title=f"sweep {sweep_id} ({sweep['name']}, {sweep['state']})"))
