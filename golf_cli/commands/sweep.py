"""`golf sweep SPEC --vary KEY=V1,V2` (an ablation as a persistent queue of cells, run in parallel GPU lanes) and
`golf sweep resume [SWEEP]` (pick a sweep up after golf or the machine died)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from golf_cli.default_group import SweepGroup
from golf_cli.options import (
    EXTRA_SETS,
    AlphaOption,
    BaseSpecArgument,
    CumulativeOption,
    DataOption,
    DbOption,
    FormatOption,
    LabelOption,
    MinDeltaNatsOption,
    NprocOption,
    SeedsOption,
    SetOption,
    SlurmAccountOption,
    SlurmClusterOption,
    SlurmCpusOption,
    SlurmJobNameOption,
    SlurmMemOption,
    SlurmNodesOption,
    SlurmParamOption,
    SlurmPartitionOption,
    SlurmTimeOption,
    VaryOption,
    extra_sets,
    slurm_flags,
)

app = typer.Typer(cls=SweepGroup, no_args_is_help=True,
                  help="Sweeps: an ablation's cells queued in runs.db and run in parallel lanes "
                       "(`golf sweep SPEC ...` is `golf sweep start SPEC ...`).")

LanesOption = Annotated[str, typer.Option(
    "--lanes", metavar="N|auto", help="Cells at once: each on its own GPUs (CUDA_VISIBLE_DEVICES) and rendezvous "
                                      "port; auto: one lane per visible GPU (1 on CPU).")]
ExecutorOption = Annotated[str, typer.Option(
    "--executor", metavar="local|slurm", help="Where cells run: local GPU lanes, or Slurm jobs.")]
StallOption = Annotated[Optional[float], typer.Option(
    "--stall-timeout", metavar="SECONDS", help="Stop a cell whose log gets no new line for this long, as `stalled` "
                                               "(the sweep goes on).")]
DivergenceOption = Annotated[Optional[bool], typer.Option(
    "--stop-on-divergence/--no-stop-on-divergence", show_default=False,
    help="Stop a cell once its loss is NaN/inf (default: the spec's); the sweep goes on.")]


@app.command("start", context_settings=EXTRA_SETS)
def start(
    ctx: typer.Context,
    spec: BaseSpecArgument,
    vary: VaryOption,
    seeds: SeedsOption = None,
    set_: SetOption = None,
    data: DataOption = None,
    nproc: NprocOption = None,
    label: LabelOption = None,
    cumulative: CumulativeOption = False,
    lanes: LanesOption = "auto",
    executor: ExecutorOption = "local",
    stall_timeout: StallOption = None,
    stop_on_divergence: DivergenceOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the queue (cells, order, reuse); launch and "
                                                            "write nothing.")] = False,
    min_delta_nats: MinDeltaNatsOption = 0.005,
    alpha: AlphaOption = 0.01,
    fmt: FormatOption = "table",
    db: DbOption = None,
    slurm_partition: SlurmPartitionOption = None,
    slurm_time: SlurmTimeOption = None,
    slurm_account: SlurmAccountOption = None,
    slurm_cpus_per_task: SlurmCpusOption = None,
    slurm_mem_gb: SlurmMemOption = None,
    slurm_nodes: SlurmNodesOption = None,
    slurm_job_name: SlurmJobNameOption = None,
    slurm_param: SlurmParamOption = None,
    slurm_cluster: SlurmClusterOption = None,
) -> None:
    """Queue every cell of an ablation in runs.db, run them in parallel lanes, then print the ablation table.

    Planning is golf ablate's: the base spec and one variant per --vary value, each for every seed.
    Cells are queued seed-major (each seed's base beside its variants), so a partial sweep still
    gives paired comparisons. A cell whose config and seed completed before is reused, never rerun.
    Each cell is one `golf run` process; if golf dies, the cells run on and `golf sweep resume`
    picks the sweep up (`golf queue` lists sweeps and cells).

    Example: golf sweep specs/smoke.yaml --vary MLP_MULT=3,4 --seeds 1337,42 --lanes 1 --dry-run
    """
    from golf.errors import GolfError
    from golf.launch.ablate import noop_warnings, parse_vary, plan_ablation
    from golf.output import FORMATS
    from golf.spec import apply_overrides, check_stall_timeout, load_spec, parse_sets
    from golf.store import Store, resolve_db_path
    from golf_cli.commands.ablate import parse_seeds

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if stall_timeout is not None:
        stall_timeout = check_stall_timeout(stall_timeout, f"--stall-timeout {stall_timeout:g}")
    seed_list = parse_seeds(seeds)
    varies = parse_vary(vary)
    from golf.analysis.ablation import parse_labels

    labels = parse_labels(label or [])
    sets = parse_sets([*(set_ or []), *extra_sets(ctx.args, "sweep", "one SPEC")])
    base_spec = apply_overrides(load_spec(spec), sets=sets, data=data, nproc=nproc)
    flags = slurm_flags(slurm_partition, slurm_time, slurm_account, slurm_cpus_per_task, slurm_mem_gb, slurm_nodes,
                        slurm_job_name, slurm_param, slurm_cluster)
    given = [f"--slurm-{k.replace('_', '-')}" for k, v in flags.items() if v is not None]
    if given and executor != "slurm":
        raise GolfError(f"{given[0]}: a Slurm option; add --executor slurm")
    setup = sweep_setup(executor, executor_options_of(executor, base_spec, flags), lanes)  # checked before any write
    db_path = resolve_db_path(db)
    if dry_run:
        store = Store(db_path, readonly=True) if db_path.exists() else None
    else:
        store = Store(db_path)
    steps = plan_ablation(base_spec, varies, store, seed_list, cumulative, labels, prepare_data=not dry_run)
    for line in noop_warnings(steps, cumulative):
        typer.echo(f"golf: warning: {line}", err=True)
    launch_sweep(steps, store, setup, db_path=db_path, spec_path=spec, base_sets=sets, data=data,
                 cumulative=cumulative, labels=labels, stall_timeout=stall_timeout,
                 stop_on_divergence=stop_on_divergence, min_delta_nats=min_delta_nats, alpha=alpha, fmt=fmt,
                 dry_run=dry_run)


@app.command("resume")
def resume(
    sweep: Annotated[Optional[str], typer.Argument(metavar="[SWEEP]", help="Sweep id (default: the newest sweep "
                                                                          "with cells left).")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed, stalled and cancelled cells "
                                                                      "again too.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what resuming would do; change nothing.")] = False,
    min_delta_nats: MinDeltaNatsOption = 0.005,
    alpha: AlphaOption = 0.01,
    fmt: FormatOption = "table",
    db: DbOption = None,
) -> None:
    """Pick a sweep up where it stopped, after golf or the machine died.

    Cells still running are reattached; cells whose process died before their run ended are
    queued again; completed cells are kept (never rerun).

    Example: golf sweep resume --retry-failed --dry-run
    """
    from golf.errors import GolfError
    from golf.launch.queue import executor_of, get_sweep, resolve_ref
    from golf.launch.sweep import latest_unfinished, prepare_resume
    from golf.output import FORMATS
    from golf.store import Store, resolve_db_path

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    db_path = resolve_db_path(db)
    if not db_path.exists():
        raise GolfError(f"{db_path}: no run store here (pass --db PATH)")
    store = Store(db_path, readonly=dry_run)
    sweep_id = resolve_ref(store, sweep)[0]["id"] if sweep else latest_unfinished(store)
    if sweep_id is None:
        typer.echo("golf sweep: no sweep with cells left to run (`golf queue` lists sweeps)", err=True)
        return
    row = get_sweep(store, sweep_id)
    executor = executor_of(row)
    report = prepare_resume(store, sweep_id, executor, retry_failed=retry_failed, dry_run=dry_run)
    verb = "would be" if dry_run else ""
    for what, ids in (("reattached", report.reattached), ("queued again", report.requeued),
                      ("settled from their runs", report.settled), ("retried", report.retried)):
        if ids:
            typer.echo(f"golf sweep: {len(ids)} cells {verb + ' ' if verb else ''}{what}: {', '.join(ids)}",
                       err=True)
    if dry_run:
        _print_queue(store, sweep_id, fmt)
        return
    _schedule(store, sweep_id, executor, report.handles, min_delta_nats, alpha, fmt)


def executor_options_of(executor: str, spec: Any, flags: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """What the sweep's executor is built with, stored on its row (resume builds the same one): for Slurm the
    spec's `slurm:` keys with the --slurm-* flags over them; nothing for local lanes."""
    if executor != "slurm":
        return {}
    from golf.launch.slurm import sweep_options

    return sweep_options(getattr(spec, "slurm", None), flags)


def sweep_setup(executor_name: str, executor_options: dict[str, Any], lanes: str) -> dict[str, Any]:
    """The executor and the lanes of a new sweep, made (and so checked) before anything is written."""
    from golf.launch.executor import executor_named
    from golf.launch.sweep import lane_gpus

    executor = executor_named(executor_name, cwd=Path.cwd(), **executor_options)
    n_lanes, gpu_ids = lane_gpus(lanes, pins_gpus=bool(getattr(executor, "pins_gpus", False)))
    return {"name": executor_name, "executor": executor, "options": executor_options, "lanes": n_lanes,
            "gpu_ids": gpu_ids}


def launch_sweep(steps: list[Any], store: Any, setup: dict[str, Any], *, db_path: Path, spec_path: Path,
                 base_sets: dict[str, str], data: Optional[str] = None, cumulative: bool, labels: dict[str, str],
                 stall_timeout: Optional[float], stop_on_divergence: Optional[bool], min_delta_nats: float,
                 alpha: float, fmt: str, dry_run: bool = False) -> None:
    """Queue planned ablation steps as a sweep and run it (golf sweep, golf ablate --lanes)."""
    import shlex
    import sys

    from golf.launch.queue import create_sweep, new_sweep_id
    from golf.launch.sweep import plan_sweep

    executor_name, n_lanes, gpu_ids = setup["name"], setup["lanes"], setup["gpu_ids"]
    command = shlex.join(["golf", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("golf", "main.py") else None
    sweep_id = new_sweep_id()
    plan = plan_sweep(steps, sweep_id, db_path=db_path.absolute(), spec_path=spec_path.absolute(),
                      base_sets=base_sets, data=data, executor=executor_name, lanes=n_lanes, gpu_ids=gpu_ids,
                      cumulative=cumulative, labels=labels, stall_timeout=stall_timeout,
                      stop_on_divergence=stop_on_divergence, command=command, executor_options=setup["options"])
    if dry_run:
        _print_plan(plan.cells, steps, store, fmt)
        return
    create_sweep(store, plan.sweep, plan.cells)
    where = f"GPUs {','.join(gpu_ids)}" if gpu_ids is not None else f"executor {executor_name}"
    typer.echo(f"golf sweep: sweep {sweep_id}: {len(plan.cells)} cells queued, {n_lanes or len(plan.cells)} "
               f"lanes ({where}); if golf stops, `golf sweep resume {sweep_id}`", err=True)
    _schedule(store, sweep_id, setup["executor"], {}, min_delta_nats, alpha, fmt)


def _schedule(store: Any, sweep_id: str, executor: Any, handles: dict[str, Any], min_delta_nats: float,
              alpha: float, fmt: str) -> None:
    from golf.launch.queue import cells_of, counts, get_sweep
    from golf.launch.sweep import Scheduler
    from golf.launch.sweep_view import SweepView

    sweep = get_sweep(store, sweep_id)
    view = SweepView(sweep_id, int(sweep.get("lanes") or 1))
    cells_now = {c["id"]: c for c in cells_of(store, sweep_id)}
    for cid in handles:
        view.event("reattach", cells_now[cid], "", list(cells_now.values()))
    try:
        final = Scheduler(store, sweep_id, executor,
                          lambda kind, cell, detail: view.event(kind, cell, detail, cells_of(store, sweep_id)),
                          handles).run()
    except KeyboardInterrupt:
        view.close()
        typer.echo(f"golf sweep: interrupted; the running cells were stopped and queued again "
                   f"(`golf sweep resume {sweep_id}`)", err=True)
        raise typer.Exit(130) from None
    finally:
        view.close()
    _print_sweep_table(store, sweep_id, min_delta_nats, alpha, fmt)
    by_state = counts(cells_of(store, sweep_id))
    typer.echo(f"golf sweep: sweep {sweep_id} {final['state']}: "
               + ", ".join(f"{n} {state}" for state, n in by_state.items() if n), err=True)
    if final["state"] != "completed":
        raise typer.Exit(1)


def _print_sweep_table(store: Any, sweep_id: str, min_delta_nats: float, alpha: float, fmt: str) -> None:
    from golf.analysis.groups import group_of_runs
    from golf.launch.queue import get_sweep
    from golf.launch.sweep import step_run_ids
    from golf_cli.commands.ablate import print_table

    sweep = get_sweep(store, sweep_id)
    steps = sweep.get("steps") or []
    run_ids = step_run_ids(store, sweep_id)
    if len(steps) < 2 or not run_ids[0]:
        return
    groups = [group_of_runs(store, ids, label=step["spec_name"]) for step, ids in zip(steps, run_ids, strict=True)]
    options = sweep.get("options") or {}
    print_table(groups, [s["change"] for s in steps[1:]], bool(options.get("cumulative")),
                dict(options.get("labels") or {}), min_delta_nats, alpha, fmt)


def _print_plan(cells: list[dict[str, Any]], steps: list[Any], store: Any, fmt: str) -> None:
    from golf.output import Col, render

    rows = []
    for cell in cells:
        existing = store.completed_run_id(cell["group_hash"], cell["seed"]) if store is not None else None
        rows.append({"cell": cell["id"].split(".", 1)[1], "change": steps[cell["step"]].change,
                     "spec": cell["spec_name"], "seed": cell["seed"], "gpus": cell["gpus"],
                     "group_hash": cell["group_hash"], "action": "reuse" if existing else "launch",
                     "run_id": existing})
    columns = [Col("cell", justify="right"), Col("change"), Col("spec", priority=2), Col("seed", justify="right"),
               Col("gpus", justify="right"), Col("group_hash", "group", priority=1), Col("action"),
               Col("run_id", "reuses")]
    typer.echo(render(rows, columns, fmt, title="sweep queue (dry run)"))


def _print_queue(store: Any, sweep_id: str, fmt: str) -> None:
    from golf_cli.commands.queue import print_cells

    print_cells(store, sweep_id, fmt)
