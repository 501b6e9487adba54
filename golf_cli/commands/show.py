"""`golf show`: one run in full: provenance, results, curve, byte breakdown."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from golf_cli.options import DbOption

if TYPE_CHECKING:
    from golf.store import Run, Step

CURVE_KEYS = ("step", "train_loss", "val_loss", "val_bpb", "train_time_ms", "step_avg_ms")


def show(
    run: Annotated[str, typer.Argument(
        help="Run id, unique id prefix or name; or an experiment (golf run --name), group or spec: its one run, or "
             "its seeds side by side.", metavar="RUN_OR_GROUP", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", metavar="table|md|csv|json", help="Output format (md: one table "
                                     "per section; csv: section,field,value rows; json: every field and the curve).")
                   ] = "table",
    bytes_: Annotated[bool, typer.Option("--bytes", help="Byte breakdown against the 16,000,000 cap.")] = False,
    db: DbOption = None,
) -> None:
    """Show one run (provenance, results, curve, --bytes), or a group's seeds side by side.

    A run: what ran where, its results, its curve and (--bytes) where its bytes go. An experiment, group or spec
    of several seeds: each seed, and every stage's mean ± std.

    Example: golf show smoke-s1337 --bytes
    """
    from golf.analysis.groups import Group, resolve_run_or_group
    from golf.errors import GolfError
    from golf.output import FORMATS, to_json
    from golf.store import Store, run_to_dict

    if fmt not in FORMATS:
        raise GolfError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    store = Store(db, readonly=True)  # never waits on a writer; shows a run whose golf died as failed
    found = resolve_run_or_group(store, run)
    if isinstance(found, Group):  # several seeds side by side
        typer.echo(_group_text(found, fmt))
        return
    steps = store.steps(found.id)
    if fmt == "json":
        data = run_to_dict(found)
        data["curve"] = [{k: getattr(s, k) for k in CURVE_KEYS} for s in steps]
        typer.echo(to_json(data))
        return
    group = [r for r in store.list_runs() if r.group_hash == found.group_hash] if found.group_hash else []
    typer.echo(_table_text(found, steps, bytes_, fmt, store_runs=group))


def _group_text(group: Any, fmt: str) -> str:
    """A seed group: one row per run, then each stage's mean ± std over the completed ones."""
    from golf.output import Col, fint, fnum, render, to_json

    if fmt == "json":
        return to_json({"label": group.label, "kind": group.kind, "group_hash": group.group_hash,
                        "runs": [dict(r) for r in group.runs], "summary": group.summary()})
    rows = [dict(r) for r in sorted(group.runs, key=lambda r: str(r.get("started_at")), reverse=True)]
    cols = [Col("id"), Col("name"), Col("seed", justify="right"), Col("status"),
            Col("final_bpb", "bpb", fnum(4), justify="right"), Col("final_stage", "stage", priority=2),
            Col("total_bytes", "bytes", fint, justify="right", priority=1),
            Col("step_avg_ms", "ms/step", fnum(1), justify="right", priority=3),
            Col("started_at", "started", priority=4)]
    title = f"{group.label}: {len(group.runs)} runs, group {str(group.group_hash)[:8]}"
    table = render(rows, cols, fmt, title=title)
    if fmt != "table":
        return table
    import io

    from rich.console import Console

    from golf.launch.live import seeds_summary

    buf = io.StringIO()
    Console(file=buf, width=120, highlight=False).print(seeds_summary(group.runs, group.label))
    return table + "\n" + buf.getvalue().rstrip()


def byte_rows(run: Run) -> list[dict[str, Any]]:
    """(group, bytes, share of the total) rows, then the total, the cap and the headroom."""
    from golf.trainer.limits import BYTES_CAP

    groups = dict(run.bytes_breakdown or {})
    if not groups:
        groups = {k: v for k, v in (("model", run.model_bytes), ("code", run.code_bytes)) if v is not None}
    total = run.total_bytes if run.total_bytes is not None else (sum(groups.values()) if groups else None)
    rows: list[dict[str, Any]] = [
        {"group": name, "bytes": value, "share": 100.0 * value / total if total else None}
        for name, value in groups.items()
    ]
    if total is not None:
        rows.append({"group": "total", "bytes": total, "share": 100.0 if total else None})
        rows.append({"group": "cap", "bytes": BYTES_CAP, "share": None})
        rows.append({"group": "headroom", "bytes": BYTES_CAP - total, "share": 100.0 * (BYTES_CAP - total) / BYTES_CAP})
    return rows


def _train_budget_text(run: Run) -> str | None:
    """`599.9 s (steps + GPTQ calibration): fits the 600 s training budget` (or `over`)."""
    if run.train_incl_gptq_s is None:
        return None
    from golf.trainer.limits import TRAIN_BUDGET_S

    verdict = "fits" if run.train_fits_budget else "over"
    return f"{run.train_incl_gptq_s:.1f} s (steps + GPTQ calibration): {verdict} the {TRAIN_BUDGET_S:.0f} s budget"


def _group_spread(runs: list[Run], run: Run) -> list[tuple[str, Any]]:
    """The run's seed group: final bpb mean with both std conventions, labelled (golf's default is n−1; records
    often write the population std in submission.json)."""
    from golf.analysis.stats import summarize

    members = [r for r in runs if run.group_hash is not None and r.group_hash == run.group_hash]
    stat = summarize(r.final_bpb for r in members)
    if stat.n < 2 or stat.mean is None or stat.std is None or stat.std_pop is None:
        return []
    return [("group final_bpb", f"{stat.mean:.8f} over {stat.n} runs"),
            ("group final_bpb std, sample (n−1)", f"{stat.std:.8f}"),
            ("group final_bpb std, population (n)", f"{stat.std_pop:.8f}")]


def _table_text(run: Run, steps: list[Step], with_bytes: bool, fmt: str = "table",
                store_runs: list[Run] | None = None) -> str:
    from golf.output import Col, fint, fnum, render, text_of

    def fmt_value(value: Any) -> str:
        if isinstance(value, float):
            if abs(value) >= 100 or value == int(value):
                return f"{value:,.1f}"
            return f"{value:.8f}".rstrip("0")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
            return f"{value:,}"
        return text_of(value)

    gpu = f"{run.gpu_count} x {run.gpu_name}" if run.gpu_name else "none"
    git = (run.git_commit[:12] + (" (dirty)" if run.git_dirty else "")) if run.git_commit else None
    duration = None
    if run.ended_at is not None and run.started_at is not None:
        duration = f"{(run.ended_at - run.started_at).total_seconds():.0f} s"
    about = [
        ("id", run.id), ("name", run.name), ("status", run.status), ("stop reason", run.stop_reason),
        ("exit code", run.exit_code), ("spec", run.spec_name), ("seed", run.seed), ("tags", run.tags or None),
        ("started", run.started_at), ("ended", run.ended_at), ("duration", duration),
        ("trainer", run.trainer), ("nproc", run.nproc), ("host", run.host), ("gpu", gpu), ("git", git),
        ("versions", f"golf {run.golf_version}, torch {run.torch_version}, python {run.python_version}"
         if run.golf_version else None),
        ("group", run.group_hash), ("eval of run", run.parent_id),
        ("run dir", run.run_dir), ("log", run.log_path), ("artifact", run.artifact_path),
        ("non-record", run.non_record_reason), ("source", run.source_path if run.source != "golf" else None),
    ]
    from golf.trainer.stages import STAGES

    results = [
        *((stage.bpb_field, getattr(run, stage.bpb_field)) for stage in STAGES),
        ("final_bpb", f"{run.final_bpb:.8f} ({run.final_stage})" if run.final_bpb is not None else None),
        ("reported_bpb", f"{run.reported_bpb} ({run.reported_stage or 'no parsed stage equals it'})"
         if run.reported_bpb is not None else None), ("total_bytes", run.total_bytes), ("model_bytes", run.model_bytes),
        ("code_bytes", run.code_bytes), ("steps", f"{run.steps}/{run.iterations}" if run.steps is not None else None),
        ("step_avg_ms", run.step_avg_ms), ("tokens_per_s", run.tokens_per_s), ("train_time_ms", run.train_time_ms),
        ("gptq_time_s", run.gptq_time_s), ("train_incl_gptq_s", _train_budget_text(run)),
        ("eval_time_ms", run.eval_time_ms), ("record_eval_time_ms (final scoring pass)", run.record_eval_time_ms),
        ("ttt_time_ms", run.ttt_time_ms), ("time_to_first_step_s", run.time_to_first_step_s),
        ("eval_warmup_s", _warmup_text(run)), ("compile_cache", _cache_text(run)),
        ("peak_mem_mib", run.peak_mem_mib), ("model_params", run.model_params),
    ]
    results += _group_spread(store_runs or [], run)
    kv = [Col("key", "field"), Col("value", "value", fmt_value)]
    sections: list[tuple[str, list[dict[str, Any]], list[Col]]] = [
        ("run", [{"key": k, "value": v} for k, v in about if v is not None], kv),
        ("results", [{"key": k, "value": v} for k, v in results if v is not None], kv)]
    if run.compliance:
        sections.append(("compliance flags", [{"key": f["flag"], "value": f["evidence"]} for f in run.compliance],
                         [Col("key", "flag"), Col("value", "evidence")]))
    changed = _non_default_knobs(run)
    if changed:
        sections.append(("knobs (not at their defaults)", [{"key": k, "value": v} for k, v in changed.items()], kv))
    if steps and fmt != "csv":
        shown = [s for s in steps if s.val_bpb is not None or s.val_loss is not None]
        if steps[-1] not in shown:
            shown.append(steps[-1])
        curve_cols = [Col("step", justify="right"), Col("train_loss", fmt=fnum(4), justify="right"),
                      Col("val_loss", fmt=fnum(4), justify="right"), Col("val_bpb", fmt=fnum(4), justify="right"),
                      Col("train_time_ms", "train_time", fmt=lambda v: f"{v / 1000:.1f} s", justify="right"),
                      Col("step_avg_ms", "ms/step", fmt=fnum(2), justify="right")]
        title = f"curve (validation steps and the last of {len(steps)} logged; --format json for all)"
        sections.append((title, [s.model_dump() for s in shown], curve_cols))
    bytes_rows = byte_rows(run) if with_bytes else []
    if bytes_rows:
        def over(value: Any, row: dict[str, Any]) -> str | None:
            return "red bold" if row["group"] == "headroom" and value < 0 else None

        cols = [Col("group"), Col("bytes", fmt=fint, justify="right", style=over),
                Col("share", "share %", fmt=fnum(2), justify="right")]
        sections.append(("bytes", bytes_rows, cols))
    if fmt == "csv":  # one table: section, field, value (raw numbers)
        flat = [{"section": title.split(" (")[0], "key": row.get("key", row.get("group")),
                 "value": row.get("value", row.get("bytes"))} for title, rows, _ in sections for row in rows]
        return render(flat, [Col("section"), Col("key", "field"), Col("value")], "csv")
    parts = []
    for title, rows, cols in sections:
        if fmt == "md":
            parts += [f"### {title}", "", render(rows, cols, "md"), ""]
        else:
            parts.append(render(rows, cols, "table", title=title))
    if with_bytes and not bytes_rows:
        parts.append("bytes: the log reports no sizes")
    return "\n".join(parts).rstrip("\n")


def _non_default_knobs(run: Run) -> dict[str, str]:
    """For bundled-trainer runs: the knobs the run set (golf.launch.plan.changed_knobs)."""
    if run.trainer != "bundled" or not run.config:
        return {}
    from golf.launch.plan import changed_knobs

    return {k: value for k, (_, value) in changed_knobs(run.config).items()}


def _warmup_text(run: Any) -> str | None:
    """The evaluation graphs' compile time and, from the log's events, each graph's."""
    if run.eval_warmup_s is None:
        return None
    graphs = (run.log_events or {}).get("eval_warmup_graphs") or {}
    each = ", ".join(f"{g} {s:.1f}" if isinstance(s, (int, float)) else g for g, s in graphs.items())
    return f"{run.eval_warmup_s:.1f}" + (f" ({each})" if each else "")


def _cache_text(run: Any) -> str | None:
    """Whether the run's graphs came from inductor's compile cache (the trainer's last compile_cache: line)."""
    events = run.log_events or {}
    if "compile_cache" not in events:
        return None
    return (f"{events['compile_cache']} (FX graphs {events.get('compile_cache_fx_hit')} hit "
            f"{events.get('compile_cache_fx_miss')} missed; AOTAutograd {events.get('compile_cache_aot_hit')} hit "
            f"{events.get('compile_cache_aot_miss')} missed)")
