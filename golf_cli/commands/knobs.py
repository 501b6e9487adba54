"""`golf knobs [PATTERN]`: the bundled trainer's knobs, their defaults, groups, help and the records that set them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from golf_cli.options import ColumnsOption, FormatOption


def knobs(
    pattern: Annotated[Optional[str], typer.Argument(
        metavar="[PATTERN]", help="A glob on the knob name (XSA_*), or a word in its name or help (ttt).")] = None,
    group: Annotated[Optional[str], typer.Option("--group", metavar="G", help="Only this group (model, eval, ...).")
                     ] = None,
    changed: Annotated[Optional[Path], typer.Option(
        "--changed", metavar="SPEC", help="Only the knobs this spec sets to a non-default value, with the value.")
                       ] = None,
    fmt: FormatOption = "table",
    columns_: ColumnsOption = None,
) -> None:
    """List the knobs: default, group, help and the record specs that set them.

    The same reference, generated, is docs/knobs.md.

    Example: golf knobs XSA --changed specs/pr549.yaml
    """
    from golf.errors import GolfError
    from golf.knobs import columns, knob_rows
    from golf.output import FORMATS, render

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    env = None
    if changed is not None:
        from golf.spec import load_spec

        spec = load_spec(changed)
        if not spec.bundled:
            raise GolfError(f"--changed {changed}: runs a community trainer, whose knobs golf does not know")
        env = spec.env
    rows = knob_rows(pattern, group, env)
    if fmt == "json":
        typer.echo(render([], [], "json", json_rows=rows))
        return
    if not rows:
        typer.echo("no knobs match" + (f" {pattern!r}" if pattern else "") + (f" in group {group}" if group else "")
                   + (f" changed by {changed}" if changed else ""), err=True)
        raise typer.Exit(1)
    title = f"{len(rows)} knob{'s' if len(rows) != 1 else ''}" + (f" {changed} changes" if changed else "")
    typer.echo(render(rows, columns(changed is not None), fmt, title=title, pick=columns_))
