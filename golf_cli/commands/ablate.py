"""`golf ablate SPEC --vary KEY=V1,V2` (run the base and one-knob variants over seeds, reusing finished runs)
and `golf ablation-table BASE VARIANT...` (the same table from runs already in the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from golf_cli.options import (
    AlphaOption,
    BaseSpecArgument,
    ColumnsOption,
    CumulativeOption,
    DbOption,
    FormatOption,
    LabelOption,
    MinDeltaNatsOption,
    SeedsOption,
    VaryOption,
)


def ablate(
    spec: BaseSpecArgument,
    vary: VaryOption,
    seeds: SeedsOption = None,
    label: LabelOption = None,
    cumulative: CumulativeOption = False,
    eval_only: Annotated[bool, typer.Option(
        "--eval-only", help="Variants re-score the base runs' artifacts (golf eval: evaluation and TTT knobs only, "
                            "no retraining).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show which runs would be reused or launched; launch "
                                                            "none.")] = False,
    lanes: Annotated[Optional[str], typer.Option(
        "--lanes", metavar="N|auto", help="Run the cells as a sweep (queued in runs.db, resumable): N at once, each "
                                          "on its own GPUs; auto: one lane per visible GPU (see golf sweep).")] = None,
    executor: Annotated[str, typer.Option("--executor", metavar="local|slurm",
                                          help="With --lanes: where cells run.")] = "local",
    min_delta_nats: MinDeltaNatsOption = 0.005,
    alpha: AlphaOption = 0.01,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """Run the base spec and each one-knob variant for each seed, then print the ablation table.

    A cell (same config hash and seed) that completed before is reused, not rerun;
    a failed or interrupted one runs again.
    Rows: Δ pre-TTT, Δ post-TTT (or the final stage), Δ bytes, Δ ms/step and the
    one-sided Welch p against the base (against the row above with --cumulative).

    With --lanes the cells go through the sweep queue (golf sweep, golf queue): N at once,
    resumable with `golf sweep resume`.

    Example: golf ablate specs/smoke.yaml --vary MLP_MULT=3,4 --seeds 1337,42
    """
    import shlex
    import sys

    from golf.analysis.ablation import parse_labels
    from golf.errors import GolfError
    from golf.launch.ablate import ablation_groups, noop_warnings, parse_vary, plan_ablation, run_ablation
    from golf.output import FORMATS
    from golf.spec import load_spec
    from golf.store import Store

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    seed_list = parse_seeds(seeds)
    varies = parse_vary(vary)
    labels = parse_labels(label or [])
    base_spec = load_spec(spec)
    setup = None
    if lanes is not None:  # the sweep's executor and lanes, checked before anything is written
        from golf_cli.commands.sweep import executor_options_of, sweep_setup

        if eval_only:
            raise GolfError("--eval-only re-scores run inside golf itself; drop --lanes")
        setup = sweep_setup(executor, executor_options_of(executor, base_spec), lanes)
    store = Store(db)
    steps = plan_ablation(base_spec, varies, store, seed_list, cumulative, labels, prepare_data=not dry_run,
                          eval_only=eval_only)
    for line in noop_warnings(steps, cumulative):
        typer.echo(f"golf: warning: {line}", err=True)
    if setup is not None:  # through the sweep queue (golf sweep): the same cells, resumable, in parallel lanes
        from golf.store import resolve_db_path
        from golf_cli.commands.sweep import launch_sweep

        launch_sweep(steps, store, setup, db_path=resolve_db_path(db), spec_path=spec, base_sets={},
                     cumulative=cumulative, labels=labels, stall_timeout=None,
                     stop_on_divergence=None, min_delta_nats=min_delta_nats, alpha=alpha, fmt=fmt, dry_run=dry_run)
        return
    if dry_run:
        _print_plan(steps, store, fmt)
        return

    def event(kind: str, plan: Any, run_id: Optional[str]) -> None:
        what = f"{plan.spec.name} seed {plan.seed} (group {str(plan.group_hash)[:8]})"
        if kind == "reuse":
            typer.echo(f"golf ablate: reusing run {run_id}: {what}", err=True)
        else:
            typer.echo(f"golf ablate: launching {plan.name}: {what}", err=True)

    # recorded on each launched run, as `golf run` does: the command that asked for it
    command = shlex.join(["golf", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("golf", "main.py") else None
    # the live view streams the trainer's lines to stdout: only for a terminal reading a table
    live = sys.stdout.isatty() and fmt in ("table", "md")
    report = run_ablation(steps, store, live=live, on_event=event, command=command)
    groups = ablation_groups(steps, store)
    print_table(groups, [s.change for s in steps[1:]], cumulative, labels, min_delta_nats, alpha, fmt)
    typer.echo(f"golf ablate: {len(report.reused)} reused, {len(report.launched)} launched, "
               f"{len(report.failed)} failed", err=True)
    if report.failed:
        typer.echo(f"golf ablate: runs that did not complete: {', '.join(report.failed)} (`golf show ID`)", err=True)
        raise typer.Exit(1)


def ablation_table(
    base: Annotated[str, typer.Argument(metavar="BASE_GROUP",
                                        help="Run, group, spec or record the changes start from.")],
    variants: Annotated[list[str], typer.Argument(metavar="VARIANT_GROUP...", help="One row each, in order.")],
    cumulative: Annotated[bool, typer.Option(
        "--cumulative", help="Each row against the row before (the records' '+ change' tables).")] = False,
    label: LabelOption = None,
    min_delta_nats: MinDeltaNatsOption = 0.005,
    alpha: AlphaOption = 0.01,
    fmt: FormatOption = "table",
    columns_: ColumnsOption = None,
    db: DbOption = None,
) -> None:
    """The ablation table of runs already in the store, one row per variant.

    Rows are labelled by the knobs that changed (or --label, or the spec's labels)
    and show Δ pre-TTT, Δ post-TTT, Δ bytes, Δ ms/step and the one-sided Welch p.

    Example: golf ablation-table smoke mlp3 --format md
    """
    from golf.analysis.ablation import parse_labels
    from golf.analysis.groups import resolve_refs
    from golf.errors import GolfError
    from golf.output import FORMATS

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    labels = parse_labels(label or [])
    from golf.analysis.compare import degenerate_warnings

    groups = resolve_refs(db, [base, *variants])
    for line in degenerate_warnings(groups):
        typer.echo(f"golf: warning: {line}", err=True)
    print_table(groups, None, cumulative, labels, min_delta_nats, alpha, fmt, columns_)


def print_table(groups: list[Any], changes: Optional[list[str]], cumulative: bool, labels: dict,
                 min_delta_nats: float, alpha: float, fmt: str, pick: Optional[list[str]] = None) -> None:
    from golf.analysis.ablation import ablation_rows, display_columns, display_rows
    from golf.analysis.stats import Rule
    from golf.output import render

    rows = ablation_rows(groups[0], groups[1:], cumulative=cumulative, changes=changes, labels=labels,
                         rule=Rule(min_delta_nats=min_delta_nats, alpha=alpha))
    if fmt == "json":
        typer.echo(render([], [], "json", json_rows=rows))
        return
    title = "cumulative ablation" if cumulative else f"ablation against {groups[0].label}"
    typer.echo(render(display_rows(rows, fmt), display_columns(cumulative, fmt), fmt, title=title,
                      pick=pick))


def _print_plan(steps: list[Any], store: Any, fmt: str) -> None:
    from golf.output import Col, render

    rows = []
    for step in steps:
        if step.eval_only:  # planned once the base runs exist: one re-score per base seed
            rows += [{"change": step.change, "spec": step.spec.name, "seed": plan.seed, "group_hash": None,
                      "action": "re-score", "run_id": None} for plan in steps[0].plans]
        for plan in step.plans:
            existing = store.completed_run_id(plan.group_hash, plan.seed)
            rows.append({"change": step.change, "spec": step.spec.name, "seed": plan.seed,
                         "group_hash": plan.group_hash, "action": "reuse" if existing else "launch",
                         "run_id": existing})
    columns = [Col("change"), Col("spec"), Col("seed", justify="right"), Col("group_hash", "group"),
               Col("action"), Col("run_id", "reuses")]
    typer.echo(render(rows, columns, fmt, title="ablation plan (dry run)"))


def parse_seeds(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    from golf.errors import GolfError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise GolfError(f"--seeds {text}: expected comma-separated non-negative integers, e.g. 1337,42,2025")
    return [int(p) for p in parts]
