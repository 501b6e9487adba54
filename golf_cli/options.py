"""Options shared by several commands, defined once (the same flag means the same thing everywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DbOption = Annotated[Optional[Path], typer.Option(
    "--db", metavar="PATH", help="Run store (default: $GOLF_DB or ./runs.db).")]
FormatOption = Annotated[str, typer.Option("--format", metavar="table|md|csv|json", help="Output format.")]
ColumnsOption = Annotated[Optional[list[str]], typer.Option(
    "--columns", metavar="COL,COL", help="Only these columns, in this order (table, md, csv). A table too wide for "
                                         "the terminal otherwise hides its least important columns.")]
TagFilterOption = Annotated[Optional[list[str]], typer.Option(
    "--tag", metavar="TAG", help="Only runs with this tag (repeatable: every one).")]
ExcludeTagOption = Annotated[Optional[list[str]], typer.Option(
    "--exclude-tag", metavar="TAG", help="Leave out runs with this tag (repeatable).")]
SpecFilterOption = Annotated[Optional[list[str]], typer.Option(
    "--spec", metavar="NAME", help="Only runs of this spec or experiment name (repeatable: any of them).")]
MinDeltaNatsOption = Annotated[float, typer.Option(
    "--min-delta-nats", min=0.0, help="Improvement in NATS (val_loss) the verdict requires.")]
AlphaOption = Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Significance level of the verdict.")]
LabelOption = Annotated[Optional[list[str]], typer.Option(
    "--label", metavar="KEY=VALUE=TEXT", help="Row text for a change, e.g. 'XSA_LAST_N=11=XSA on all 11 layers' "
                                              "(default: the spec's labels, else 'KEY old→new').")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a knob (repeatable; more KEY=VALUE words may follow one --set).")]
DataOption = Annotated[Optional[str], typer.Option(
    "--data", metavar="sample|DIR", help="Data: the built-in sample or a folder of shards.")]
NprocOption = Annotated[Optional[str], typer.Option("--nproc", metavar="N|auto", help="Processes per node.")]
# Commands taking --set accept further KEY=VALUE words after it (`--set A=1 B=2`), as users type them.
EXTRA_SETS = {"allow_extra_args": True, "ignore_unknown_options": True}


def extra_sets(args: list[str], command: str, takes: str) -> list[str]:
    """The KEY=VALUE words typer left over after the options; anything else is a one-line error."""
    from golf.errors import GolfError

    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            raise GolfError(f"unexpected argument {arg!r}: golf {command} takes {takes}, options, and KEY=VALUE "
                            f"overrides (see golf {command} --help)")
    return list(args)
