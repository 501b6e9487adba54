"""`golf compare A B [C ...]`: runs or seed groups side by side, with deltas, Welch p-values and a verdict."""

from __future__ import annotations

from typing import Annotated

import typer

from golf_cli.options import AlphaOption, DbOption, FormatOption, MinDeltaNatsOption


def compare(
    refs: Annotated[list[str], typer.Argument(
        metavar="RUN_OR_GROUP...", help="Run id or name, spec name, group-hash prefix, or ingested record folder "
                                        "name (prefix run:, group:, spec: or record: to force one); the first is "
                                        "the base.")],
    metric: Annotated[str, typer.Option(
        "--metric", help="bpb metric to test: final_bpb, pre_ttt_bpb or a stage's <stage>_bpb (pre_quant_bpb, "
                         "sliding_bpb, ...; an unknown name lists them).")] = "final_bpb",
    all_params: Annotated[bool, typer.Option("--all-params", help="Show every knob, not only those that differ.")
                          ] = False,
    plot: Annotated[bool, typer.Option("--plot", help="Overlay the runs' train-loss curves in the terminal.")] = False,
    min_delta_nats: MinDeltaNatsOption = 0.005,
    alpha: AlphaOption = 0.01,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """Compare runs or seed groups side by side, each against the first.

    Shows the knobs that differ, every stage's bpb (mean ± std over seeds), bytes,
    time and memory, then Δ bpb, Δ nats, one-sided Welch p-values and a verdict.
    The verdict passes when the mean improvement is ≥ --min-delta-nats NATS and a
    one-sided Welch test of "variant < base − min-delta" gives p < --alpha
    (the challenge's record rule by default).

    Example: golf compare smoke mlp3 --format md
    """
    from golf.analysis.compare import compare_groups, degenerate_warnings
    from golf.analysis.groups import resolve_refs
    from golf.analysis.stats import Rule
    from golf.errors import GolfError
    from golf.output import FORMATS, render

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    from golf.store import Store

    reader = Store(db, readonly=True)
    groups = resolve_refs(reader, refs)
    result = compare_groups(groups, metric, Rule(min_delta_nats=min_delta_nats, alpha=alpha), all_params)
    steps = reader.step_records(r for g in groups for r in g.run_ids) if plot else None
    for line in degenerate_warnings(groups):
        typer.echo(f"golf: warning: {line}", err=True)
    for group in groups:
        if group.n == 0:
            states = ", ".join(sorted({str(r.get("status")) for r in group.runs}))
            typer.echo(f"golf: warning: {group.label} has no completed runs yet ({states})", err=True)
    if fmt == "json":
        typer.echo(render([], [], "json", json_rows=result.items()))
    else:
        title = f"compare on {result.metric} · rule: {result.rule.describe()}"
        plain = fmt == "csv"
        typer.echo(render(result.rows(blank_repeats=not plain, plain=plain), result.columns(plain), fmt, title=title))
        if fmt != "csv":
            lines = result.summary_lines()
            typer.echo("\n".join(["", *(f"- {line}" if fmt == "md" else line for line in lines)]))
    if steps is not None:
        import sys

        from golf.analysis.plot import loss_curves

        to_stderr = fmt in ("json", "csv")  # keep stdout machine-readable
        color = (sys.stderr if to_stderr else sys.stdout).isatty()
        typer.echo(loss_curves(groups, steps, color=color), err=to_stderr)
