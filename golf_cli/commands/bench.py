"""`golf bench`: time a spec's training step and sliding-window evaluation on this machine's GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from golf_cli.options import (
    EXTRA_SETS,
    CompileCacheOption,
    DataOption,
    DbOption,
    FormatOption,
    NprocOption,
    SetOption,
    extra_sets,
)

if TYPE_CHECKING:
    from golf.store import Run


def bench(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="A spec (YAML) to run, or a recorded run (id, prefix or name) to "
                                               "report on.", metavar="SPEC|RUN", show_default=False)],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps to run (the spec's batch).")] = 100,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Compile warm-up steps (not timed).")] = 3,
    skip: Annotated[int, typer.Option("--skip", min=0, help="Steps left out of the median (compile stragglers).")] = 10,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed (default: the spec's first).")] = None,
    set_: SetOption = None,
    data: DataOption = None,
    nproc: NprocOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", metavar="FILE.json",
                                                help="Also write the report here.")] = None,
    peak_tflops: Annotated[Optional[float], typer.Option(
        "--peak-tflops", min=1.0, help="Matmul peak the MFU is taken against (TFLOP/s; default on a GPU: 778, the "
                                       "H100's bf16 rate; on a CPU: none, MFU n/a).")] = None,
    fmt: FormatOption = "table",
    db: DbOption = None,
    compile_cache: CompileCacheOption = True,
) -> None:
    """Benchmark a spec: run it for --steps steps (no validation, no TTT) and report the median ms/step, tokens/s,
    model FLOPs per token and MFU, peak memory, the sliding-window evaluation's time, and what the run cost before
    its steps: the time to its first step and the evaluation graphs' warm-up (warm or cold compile cache). The run
    is recorded in the run store like any other (tag `bench`).

    Example: golf bench specs/smoke.yaml --steps 40 --out smoke-bench.json
    """
    import json

    from golf.analysis.bench import bench_report
    from golf.errors import GolfError
    from golf.logparse import parse_log
    from golf.output import FORMATS, Col, render, to_json
    from golf.store import Store

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    spec_path = Path(target)
    if spec_path.suffix in (".yaml", ".yml") or spec_path.is_file():
        run = _launch(ctx, spec_path, steps, warmup, seed, set_ or [], data, nproc, db, compile_cache)
    else:
        if set_ or ctx.args:
            raise GolfError(f"--set applies to a spec; {target!r} names a recorded run")
        run = Store(db, readonly=True).resolve_run(target)
    if not run.log_path or not Path(run.log_path).is_file():
        raise GolfError(f"run {run.name}: its log {run.log_path} is missing")
    with open(run.log_path, encoding="utf-8", errors="replace") as fh:
        parsed = parse_log(fh)[-1]
    report = bench_report(run, parsed, skip=skip, peak_tflops=peak_tflops)
    if out is not None:
        out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    if fmt == "json":
        typer.echo(to_json(report))
        return
    rows = [{"metric": key, "value": value} for key, value in report.items()
            if key not in ("flops_formula", "flops_terms")]
    typer.echo(render(rows, [Col("metric"), Col("value", fmt=_text)], fmt, title=f"bench {run.name}"))


def _text(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def _launch(ctx: typer.Context, spec_path: Path, steps: int, warmup: int, seed: int | None, sets: list[str],
            data: str | None, nproc: str | None, db: Path | None, compile_cache: bool = True) -> Run:
    import shlex
    import sys

    from golf.analysis.bench import bench_overrides
    from golf.launch import execute, plan_runs
    from golf.launch.live import print_summary
    from golf.spec import apply_overrides, load_spec, parse_sets
    from golf.store import Store

    more = extra_sets(ctx.args, "bench", "one SPEC|RUN")
    loaded = load_spec(spec_path)
    # the benchmark's knobs first, so that --set can still change any of them
    overrides = {**bench_overrides(steps, warmup), **parse_sets([*sets, *more])}
    first_seed = seed if seed is not None else (loaded.seeds[0] if loaded.seeds else None)
    loaded = apply_overrides(loaded, seeds=[first_seed] if first_seed is not None else None, sets=overrides,
                             data=data, nproc=nproc, name=f"{loaded.name}-bench", tags=["bench"])
    store = Store(db)
    store.reconcile_stale()
    plan = plan_runs(loaded, store, compile_cache=compile_cache)[0]
    for note in plan.notes:
        typer.echo(f"golf: note: {note}", err=True)
    command = shlex.join(["golf", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("golf", "main.py") else None
    run = execute(plan, store, live=True, command=command)
    print_summary(run)
    if run.status != "completed":
        from golf.launch import signal_exit_code

        typer.echo(f"golf: error: benchmark run {run.name} {run.status}; see {run.log_path}", err=True)
        raise typer.Exit(signal_exit_code(run) or 1)
    return run


bench.context_settings = EXTRA_SETS  # type: ignore[attr-defined]
