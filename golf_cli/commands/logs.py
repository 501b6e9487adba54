"""`golf logs`: a run's train.log, printed or followed as it grows."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from golf_cli.options import DbOption


def logs(
    run: Annotated[str, typer.Argument(
        help="Run id, unique id prefix or name; or an experiment (golf run --name), group or spec: its newest "
             "running run, else its newest run.", metavar="RUN", show_default=False)],
    follow_: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing lines as the log grows; ends by itself once the run is no longer "
                               "running and its log is printed to the end (Ctrl-C stops following).")] = False,
    lines: Annotated[Optional[int], typer.Option(
        "--lines", "-n", metavar="N", help="Only the last N lines (then, with -f, what follows).",
        show_default=False)] = None,
    db: DbOption = None,
) -> None:
    """Print a run's train.log, or follow it (-f) from another terminal while the run trains.

    Example: golf logs smoke-s1337 -n 5
    """
    from golf.analysis.groups import newest_run
    from golf.errors import GolfError
    from golf.launch.follow import check_lines, follow, last_lines, log_path_of
    from golf.store import Store

    check_lines(lines)
    store = Store(db, readonly=True)  # never writes, never waits on the run's golf
    found = newest_run(store, run)
    path = log_path_of(store, found)
    running = found.status == "running"
    if path is None or (not path.is_file() and not (follow_ and running)):
        raise GolfError(f"run {found.name} ({found.id}) has no log file"
                        + (f" at {path}" if path is not None else "") + f" (status {found.status})")

    def write(text: str) -> None:
        typer.echo(text, nl=False)

    def still_running() -> bool:
        row = store.get(found.id)
        return row is not None and row.status == "running"

    offset = 0
    if lines is not None and path.is_file():
        text, offset = last_lines(path, lines)
        write(text)
        if not follow_:
            return
    follow(path, still_running if follow_ else (lambda: False), write, offset=offset)
