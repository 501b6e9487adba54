"""`golf eval RUN --set KNOB=VALUE`: re-score a recorded run's artifact with other evaluation knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from golf_cli.options import EXTRA_SETS, DbOption, SetOption, extra_sets


def eval_run(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="The training run whose artifact is scored: id, id prefix or name, or an "
                                            "experiment of one run.",
                                       metavar="RUN", show_default=False)],
    set_: SetOption = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME",
                                                help="Name of the new run (default: RUN's name + -eval).")] = None,
    db: DbOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every trainer line here.")] = False,
) -> None:
    """Score RUN's artifact again with other evaluation knobs (sliding stride, TTT), without retraining.

    The result is a run of its own with RUN's seed and every other knob, linked to RUN (its parent_id,
    shown by show and ls). Only evaluation and TTT knobs may change.

    Example: golf eval smoke-s1337 --set EVAL_STRIDE=16 TTT_ENABLED=1 TTT_LR=0.01
    """
    import shlex
    import sys

    from golf.launch import execute, signal_exit_code
    from golf.launch.evalrun import plan_eval
    from golf.launch.live import print_summary
    from golf.spec import parse_sets
    from golf.store import Store

    sets = parse_sets([*(set_ or []), *extra_sets(ctx.args, "eval", "one RUN")])
    store = Store(db)
    store.reconcile_stale()
    from golf.analysis.groups import resolve_one_run

    parent = resolve_one_run(store, run)  # an experiment of one seed names its run
    plan = plan_eval(parent, sets, store, name=name)
    command = shlex.join(["golf", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("golf", "main.py") else None
    finished = execute(plan, store, live=True, command=command, verbose=verbose)
    print_summary(finished)
    exit_code = signal_exit_code(finished)
    if exit_code:
        raise typer.Exit(exit_code)


eval_run.context_settings = EXTRA_SETS  # type: ignore[attr-defined]
