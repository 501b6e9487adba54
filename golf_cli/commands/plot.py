"""`golf plot GROUP... --out curves.png|svg`: validation curves with seed bands, or (--ablation) Δ bpb bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from golf_cli.options import DbOption, LabelOption


def plot(
    refs: Annotated[list[str], typer.Argument(
        metavar="RUN_OR_GROUP...", help="Runs or seed groups, as compare takes them; with --ablation the first is "
                                        "the base.")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE.png|FILE.svg", help="Where to write the figure.")],
    ablation: Annotated[bool, typer.Option(
        "--ablation", help="Bars of each variant's Δ bpb against the first group, ± the std of the difference.")
                        ] = False,
    cumulative: Annotated[bool, typer.Option("--cumulative", help="With --ablation: each against the one before.")
                          ] = False,
    metric: Annotated[str, typer.Option("--metric", help="Curve to draw: val_bpb, val_loss or train_loss.")
                      ] = "val_bpb",
    label: LabelOption = None,
    db: DbOption = None,
) -> None:
    """Draw a figure to paste into a record README (PNG or SVG, no display needed).

    Curves: one thin line per seed, the mean over seeds in a ± std band, per group.
    --ablation: the ablation table's Δ bpb as bars with error bars.

    Example: golf plot smoke mlp3 --out curves.png
    """
    from golf.analysis.figures import (
        ablation_bars,
        ablation_figure,
        curve_sets,
        curves_figure,
        save_figure,
    )
    from golf.analysis.groups import resolve_refs
    from golf.errors import GolfError

    if out.suffix.lower() not in (".png", ".svg"):
        raise GolfError(f"--out {out}: expected a .png or .svg file name")
    from golf.store import Store

    reader = Store(db, readonly=True)
    groups = resolve_refs(reader, refs)
    steps = None if ablation else reader.step_records(r for g in groups for r in g.run_ids)
    if ablation:
        from golf.analysis.ablation import ablation_rows, parse_labels

        if len(groups) < 2:
            raise GolfError("--ablation needs a base and at least one variant, e.g. golf plot base xsa-all --ablation")
        rows = ablation_rows(groups[0], groups[1:], cumulative=cumulative, labels=parse_labels(label or []))
        title = "cumulative ablation" if cumulative else f"ablation against {groups[0].label}"
        fig = ablation_figure(ablation_bars(rows), title)
    else:
        assert steps is not None
        fig = curves_figure(curve_sets(groups, steps, metric), metric)
    save_figure(fig, out)
    typer.echo(f"wrote {out}")
