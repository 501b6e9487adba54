"""`golf run`: launch a spec (one run per seed), stream and record it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from golf_cli.options import (
    EXTRA_SETS,
    CompileCacheOption,
    DataOption,
    DbOption,
    NprocOption,
    SetOption,
    extra_sets,
)

if TYPE_CHECKING:
    from golf.launch.plan import RunPlan


def run(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="Run spec (YAML).", metavar="SPEC", show_default=False)],
    seed: Annotated[Optional[list[int]], typer.Option("--seed", metavar="N",
                                                      help="Seed (repeatable); replaces the spec's seeds.")] = None,
    set_: SetOption = None,
    data: DataOption = None,
    nproc: NprocOption = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="NAME",
                                                help="Base of the run names (default: the spec's name).")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", metavar="TAG", help="Tag the runs (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command, environment and every resolved "
                                                            "knob; launch nothing.")] = False,
    db: DbOption = None,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Nodes (multi-node runs).")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This node's rank.")] = 0,
    rdzv_endpoint: Annotated[Optional[str], typer.Option("--rdzv-endpoint", metavar="HOST:PORT",
                                                         help="Rendezvous endpoint (multi-node).")] = None,
    stall_timeout: Annotated[Optional[float], typer.Option(
        "--stall-timeout", metavar="SECONDS",
        help="Stop a run whose log gets no new line for this long, as `stalled` (default: the spec's "
             "stall_timeout, else never).")] = None,
    stop_on_divergence: Annotated[Optional[bool], typer.Option(
        "--stop-on-divergence/--no-stop-on-divergence",
        help="Stop a run once its loss is NaN/inf (default: the spec's stop_on_divergence; a diverged run is "
             "marked `diverged` either way).", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show every trainer line here, the knob dump and tracebacks too (the log file "
                                "always has them).")] = False,
    cell: Annotated[Optional[str], typer.Option(
        "--cell", metavar="CELL", hidden=True, help="The sweep queue's cell this run is (set by golf sweep).")] = None,
    compile_cache: CompileCacheOption = True,
) -> None:
    """Run a spec: one torchrun job per seed, streamed live, parsed and recorded in the run store.

    Example: golf run specs/smoke.yaml --set ITERATIONS=50 --seed 1 --seed 2 --stall-timeout 600

    Several overrides may follow one --set: `--set NUM_LAYERS=2 MODEL_DIM=64 ITERATIONS=5`.
    """
    import shlex
    import sys

    from golf.launch import execute, plan_runs, signal_exit_code
    from golf.launch.live import OUTPUT_STUCK, print_seeds_summary, print_summary, seed_header
    from golf.launch.repair import repair_dead
    from golf.spec import apply_overrides, check_stall_timeout, load_spec, parse_sets
    from golf.store import Store, resolve_db_path

    OUTPUT_STUCK.clear()
    loaded = load_spec(spec)
    if stall_timeout is not None:
        stall_timeout = check_stall_timeout(stall_timeout, f"--stall-timeout {stall_timeout:g}")
    sets = parse_sets([*(set_ or []), *extra_sets(ctx.args, "run", "one SPEC")])
    loaded = apply_overrides(loaded, seeds=seed, sets=sets, data=data, nproc=nproc, name=name, tags=tag)
    if dry_run:
        db_path = resolve_db_path(db)
        store = Store(db_path, readonly=True) if db_path.exists() else None  # a dry run writes nothing
        plans = plan_runs(loaded, store, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                          prepare_data=False, compile_cache=compile_cache)
        typer.echo("\n\n".join(_dry_run_text(plan) for plan in plans))
        return
    # every check (knobs, shards, tokenizer) before anything is written: a bad input leaves no runs.db, no folder
    plans = plan_runs(loaded, None, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                      compile_cache=compile_cache)
    store = Store(db)
    for repaired in repair_dead(store):  # runs whose golf died: their logs say how far they got
        typer.echo(f"golf: note: run {repaired.name}'s golf process died; repaired from its log "
                   f"({repaired.status}, {repaired.steps} steps)", err=True)
    store.reconcile_stale()
    for plan in plans:
        plan.name = store.unique_name(plan.name)
    command = shlex.join(["golf", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("golf", "main.py") else None
    for note in dict.fromkeys(note for plan in plans for note in plan.notes):
        typer.echo(f"golf: note: {note}", err=True)
    exit_code = 0
    finished_runs = []
    for k, plan in enumerate(plans, 1):
        if len(plans) > 1:
            seed_header(plan, k, len(plans))
        finished = execute(plan, store, live=True, command=command, stall_timeout=stall_timeout,
                           stop_on_divergence=stop_on_divergence, verbose=verbose, cell_id=cell)
        finished_runs.append(finished)
        print_summary(finished)
        if finished.status == "interrupted":
            exit_code = signal_exit_code(finished)
            break  # Ctrl-C stops the remaining seeds too
        exit_code = exit_code or signal_exit_code(finished)  # one failed seed fails the command
    if len(plans) > 1 and not any(r.status == "interrupted" for r in finished_runs):
        print_seeds_summary(finished_runs)
    if OUTPUT_STUCK.is_set():
        # stdout is a pipe nobody reads: every run is recorded; exiting normally would block on flushing it
        import os

        os._exit(exit_code)
    if exit_code:
        raise typer.Exit(exit_code)


run.context_settings = EXTRA_SETS  # type: ignore[attr-defined]


def _dry_run_text(plan: RunPlan) -> str:
    import shlex

    lines = [f"# run {plan.name} (seed {plan.seed}); group {plan.group_hash}, config {plan.config_hash[:16]}, "
             f"code {plan.code_hash[:16]}"]
    lines += [f"# note: {note}" for note in plan.notes]
    lines.append(f"cd {shlex.quote(str(plan.run_dir))}")
    lines.append(plan.command_line)
    lines.append("# environment (besides the knobs)")
    lines += [f"{k}={v}" for k, v in plan.env.items() if k not in plan.knobs]
    trainer = "bundled trainer, defaults included" if plan.bundled else plan.trainer
    lines.append(f"# knobs ({trainer})")
    lines += [f"{k}={v}" for k, v in plan.knobs.items()]
    return "\n".join(lines)
