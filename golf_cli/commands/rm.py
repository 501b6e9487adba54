"""`golf rm RUN_OR_GROUP...`: remove runs from the store (after a confirmation), and with --files their folders."""

from __future__ import annotations

from typing import Annotated

import typer

from golf_cli.options import DbOption


def rm(
    refs: Annotated[list[str], typer.Argument(
        metavar="RUN_OR_GROUP...", help="Runs (id, prefix or name) or groups (experiment, group hash, spec): every "
                                        "run they name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Remove without asking.")] = False,
    files: Annotated[bool, typer.Option("--files", help="Also delete the runs' folders (runs/<id>: log, artifact).")
                     ] = False,
    db: DbOption = None,
) -> None:
    """Remove runs from the store: their rows and curves (and with --files their folders).

    Lists what goes and asks first, unless --yes. A running run is never removed.

    Example: golf rm smoke-s42 --yes
    """
    from golf.analysis.remove import plan_removal, remove

    removal = plan_removal(refs, db, with_files=files)
    typer.echo(f"golf rm: {len(removal.runs)} run(s):", err=True)
    for run in removal.runs:
        folder = f"  + folder {run['run_dir']}" if run["id"] in removal.folders else ""
        typer.echo(f"  {run['id']}  {run['name']}  ({run['status']}){folder}", err=True)
    if not yes and not typer.confirm("Remove them?", default=False, err=True):
        typer.echo("golf rm: nothing removed", err=True)
        raise typer.Exit(1)
    done = remove(removal, db)
    typer.echo(f"removed {done.rows} run(s)" + (f" and {done.folders} folder(s)" if files else ""))
    for problem in done.problems:
        typer.echo(f"golf: warning: {problem}", err=True)
