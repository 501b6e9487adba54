"""Ablation tables (one row per change, in the records' style) and `golf ablate`, which runs what is missing.

A row's "pre-TTT" score is the sliding-window score if the run has one, else post-quant; its "post-TTT" score is
the final stage (post-TTT when the run has TTT). Non-cumulative rows compare each variant with the base;
cumulative rows compare each with the row before, like the "+ change | Pre-TTT | Post-TTT | Delta" tables.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from golf.analysis.compare import differing_params, nats_pair
from golf.analysis.groups import Group, group_of_runs, reader_of
from golf.analysis.stats import Rule, compare_stats, signed, spread
from golf.errors import GolfError

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


# -- rows ---------------------------------------------------------------------------------------------------------

def change_text(key: str, before: Any, after: Any, labels: Mapping[str, str] | None = None) -> str:
    """`XSA on all 11 layers (XSA_LAST_N=11)` from a label, else `XSA_LAST_N 4→11`. Values in their canonical
    form (golf.knobs.canonical_value), so `--label MLP_MULT=3=…` names the change to a stored 3.0."""
    from golf.knobs import canonical_change, canonical_value

    before, after = canonical_value(key, before), canonical_value(key, after)
    canonical_labels = {canonical_change(k): v for k, v in (labels or {}).items()}
    text = canonical_labels.get(f"{key}={after}")
    if text:
        return f"{text} ({key}={after})"
    return f"{key} {'—' if before is None else before}→{'—' if after is None else after}"


def config_change(before: Group, after: Group, labels: Mapping[str, str] | None = None) -> str:
    """What changed between two groups' configs, as change texts; the label when the configs agree."""
    diffs = differing_params([before, after])
    if not diffs:
        return after.label
    return ", ".join(change_text(k, v[0], v[1], labels) for k, v in diffs.items())


def spec_labels(group: Group) -> dict[str, str]:
    """The `labels` mapping of the spec a group's runs were launched from (kept in Run.spec)."""
    for run in group.runs:
        spec = run.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("labels"), dict):
            return {str(k): str(v) for k, v in spec["labels"].items()}
    return {}


def ablation_rows(base: Group, variants: Sequence[Group], cumulative: bool = False,
                  changes: Sequence[str] | None = None, labels: Mapping[str, str] | None = None,
                  rule: Rule = Rule()) -> list[dict[str, Any]]:
    """One row for the base, then one per variant, with deltas against the base (or the previous row)."""
    if changes is not None and len(changes) != len(variants):
        raise ValueError("one change text per variant")
    rows = [_row(base, f"Base: {base.label}", None, rule)]
    previous = base
    for i, variant in enumerate(variants):
        against = previous if cumulative else base
        merged = {**spec_labels(variant), **(labels or {})}
        text = changes[i] if changes is not None else config_change(against, variant, merged)
        rows.append(_row(variant, f"+ {text}" if cumulative else text, against, rule))
        previous = variant
    return rows


def _row(group: Group, change: str, against: Group | None, rule: Rule) -> dict[str, Any]:
    pre, post = group.stat("pre_ttt_bpb"), group.stat("final_bpb")
    row: dict[str, Any] = {
        "change": change, "label": group.label, "group_hash": group.group_hash, "n": group.n,
        "seeds": group.seeds, "run_ids": group.run_ids,
        "pre_ttt_bpb": pre.mean, "pre_ttt_bpb_std": pre.std,
        "post_ttt_bpb": post.mean, "post_ttt_bpb_std": post.std,
        "final_stage": group.common("final_stage"), "non_record_reason": group.non_record_reason,
        "total_bytes": group.maximum("total_bytes"), "step_avg_ms": group.stat("step_avg_ms").mean,
        "vs": against.label if against is not None else None,
        "delta_pre_ttt_bpb": None, "delta_bytes": None, "delta_step_avg_ms": None,
        "delta_bpb": None, "delta_bpb_std": None, "delta_nats": None, "delta_nats_std": None,
        "p_value": None, "p_value_vs_threshold": None, "verdict": "base" if against is None else None,
        "verdict_reason": None,
    }
    if against is None:
        return row
    base_nats, variant_nats, note = nats_pair(against, group, "final_bpb")
    delta = compare_stats(against.stat("final_bpb"), post, base_nats, variant_nats, rule, note)
    row.update({k: v for k, v in delta.as_dict().items() if k in row})
    row["delta_pre_ttt_bpb"] = _sub(pre.mean, against.stat("pre_ttt_bpb").mean)
    row["delta_bytes"] = _sub(row["total_bytes"], against.maximum("total_bytes"))
    row["delta_step_avg_ms"] = _sub(row["step_avg_ms"], against.stat("step_avg_ms").mean)
    return row


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# -- display ------------------------------------------------------------------------------------------------------

def display_columns(cumulative: bool, fmt: str) -> list[Any]:
    """Columns for table/md/csv: text with true minus signs for table and md, plain numbers for csv."""
    from golf.output import Col

    plain = fmt == "csv"

    def num(digits: int) -> Callable[[Any], str]:
        return _plain if plain else (lambda v: v if isinstance(v, str) else f"{v:.{digits}f}")

    def delta(digits: int) -> Callable[[Any], str]:
        return _plain if plain else (lambda v: v if isinstance(v, str) else signed(v, digits))

    def bytes_delta(v: Any) -> str:
        if isinstance(v, str):
            return v
        n = int(round(v))
        return str(n) if plain or n == 0 else f"{n:+,}".replace("-", "\u2212")

    p_fmt: Callable[[Any], str] = _plain if plain else _p_cell
    # priority: which columns a narrow terminal hides first (highest first)
    cols = [Col("change", "Change"), Col("pre_ttt_bpb", "Pre-TTT bpb", num(4), justify="right", priority=3),
            Col("post_ttt_bpb", "Post-TTT bpb", num(4), justify="right")]
    if cumulative:
        cols.append(Col("delta_bpb", "Delta", delta(4), justify="right"))
    else:
        cols += [Col("delta_pre_ttt_bpb", "Δ pre-TTT", delta(4), justify="right", priority=2),
                 Col("delta_bpb", "Δ post-TTT", delta(4), justify="right")]
    if plain:
        cols.append(Col("delta_bpb_std", "Δ post-TTT std", num(6), justify="right"))
        cols.append(Col("non_record_reason", "non-record"))  # table and md mark the change text instead
    cols += [Col("delta_bytes", "Δ bytes", bytes_delta, justify="right", priority=4),
             Col("delta_step_avg_ms", "Δ ms/step", delta(2), justify="right", priority=5),
             Col("p_value", "p", p_fmt, justify="right", priority=1), Col("n", "n", justify="right", priority=6)]
    return cols


def display_rows(rows: Sequence[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Rows for table/md: `—` where a value is missing, `± std` on the post-TTT delta."""
    if fmt == "csv":
        return list(rows)
    out = []
    for row in rows:
        shown = dict(row)
        if row["delta_bpb"] is not None and row["delta_bpb_std"] is not None:
            shown["delta_bpb"] = f"{signed(row['delta_bpb'])} ± {spread(row['delta_bpb_std'])}"
        if row.get("non_record_reason"):
            shown["change"] = f"{row['change']} (non-record)"
        for key, value in shown.items():
            if value is None and key not in ("vs", "verdict", "verdict_reason"):
                shown[key] = "—"
        if row["vs"] is None:  # the base row: nothing to compare
            for key in ("delta_pre_ttt_bpb", "delta_bpb", "delta_bytes", "delta_step_avg_ms", "p_value"):
                shown[key] = ""
        out.append(shown)
    return out


def _plain(value: Any) -> str:
    """CSV numbers: ten significant digits, no float noise (−0.0040000000000000036 → −0.004)."""
    return f"{value:.10g}" if isinstance(value, float) else str(value)


def _p_cell(value: Any) -> str:
    from golf.analysis.stats import p_text

    return value if isinstance(value, str) else p_text(value)


# -- golf ablate ------------------------------------------------------------------------------------------------

@dataclass
class Step:
    """One cell of an ablation: the base or a variant spec, and what changed."""

    change: str
    spec: Any  # golf.spec.Spec
    sets: dict[str, str] = field(default_factory=dict)
    plans: list[Any] = field(default_factory=list)  # golf.launch RunPlan, one per seed
    run_ids: list[str] = field(default_factory=list)


@dataclass
class LaunchReport:
    reused: list[str] = field(default_factory=list)
    launched: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # run ids (or names) that did not complete


def parse_vary(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--vary KEY=V1,V2` items. Values split on `;` if present, else on `,` — except for list knobs
    (VE_LAYERS=9,10 is one value; write RECUR_LAYERS=3,4;4,5 for two)."""
    from golf.trainer.hparams import KNOBS_BY_NAME

    out = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise GolfError(f"--vary {item}: expected KEY=V1[,V2...], e.g. --vary XSA_LAST_N=4,11")
        if not _ENV_NAME.match(key):
            raise GolfError(f"--vary {item}: {key!r} is not an environment variable name (knobs are upper case)")
        knob = KNOBS_BY_NAME.get(key)
        if ";" in values:
            parts = values.split(";")
        elif knob is not None and knob.kind == "ints":
            parts = [values]
        else:
            parts = values.split(",")
        parts = [p.strip() for p in parts]
        if any(p == "" for p in parts):
            raise GolfError(f"--vary {item}: empty value")
        out.append((key, parts))
    return out


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """`--label KEY=VALUE=TEXT` items as {"KEY=VALUE": TEXT}."""
    out = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise GolfError(f"--label {item}: expected KEY=VALUE=TEXT, e.g. --label 'XSA_LAST_N=11=XSA on all layers'")
        out[f"{parts[0].strip()}={parts[1].strip()}"] = parts[2].strip()
    return out


def plan_ablation(spec: Any, varies: Sequence[tuple[str, list[str]]], store: Any, seeds: Sequence[int] | None = None,
                  cumulative: bool = False, labels: Mapping[str, str] | None = None,
                  prepare_data: bool = True) -> list[Step]:
    """Every spec the ablation needs, planned (and so validated) before anything launches.

    `prepare_data=False` (a dry run) neither builds nor checks the data, as `golf run --dry-run`."""
    from golf.spec import apply_overrides

    plan_runs, _ = _launch_api()
    base_spec = apply_overrides(spec, seeds=list(seeds)) if seeds else spec
    merged_labels = {**getattr(base_spec, "labels", {}), **(labels or {})}
    steps = [Step(change=f"Base: {base_spec.name}", spec=base_spec)]
    steps[0].plans = list(plan_runs(base_spec, store, prepare_data=prepare_data))
    previous = steps[0]
    for key, values in varies:
        for value in values:
            parent = previous if cumulative else steps[0]
            sets = {**(parent.sets if cumulative else {}), key: value}
            variant = apply_overrides(base_spec, sets=sets)
            variant = dataclasses.replace(variant, name=_variant_name(base_spec.name, sets))
            before = _knob_text(parent.plans, key)
            step = Step(change=change_text(key, before, value, merged_labels), spec=variant, sets=sets)
            step.plans = list(plan_runs(variant, store, prepare_data=prepare_data))
            steps.append(step)
            previous = step
    return steps


def noop_warnings(steps: Sequence[Step], cumulative: bool = False) -> list[str]:
    """One line per variant whose configuration is its reference's (`--vary KEY=V` with V the base's value)."""
    out = []
    for i, step in enumerate(steps[1:], 1):
        against = steps[i - 1] if cumulative else steps[0]
        if step.plans and against.plans and step.plans[0].group_hash == against.plans[0].group_hash:
            sets = ", ".join(f"{k}={v}" for k, v in step.sets.items())
            out.append(f"--vary {sets}: the same configuration as {against.change.removeprefix('Base: ')} "
                       "(no change; its runs are the base's)")
    return out


def run_ablation(steps: Sequence[Step], store: Any, live: bool = False,
                 on_event: Callable[[str, Any, str | None], None] | None = None,
                 command: str | None = None) -> LaunchReport:
    """Launch what the store lacks: a (group_hash, seed) with a completed run is reused, anything else is run
    (a failed or interrupted run is run again). A cell two steps share is launched once."""
    _, execute = _launch_api()
    report = LaunchReport()
    done: dict[tuple[str, int | None], str] = {}
    reader = reader_of(store)
    for step in steps:
        for plan in step.plans:
            key = (plan.group_hash, plan.seed)
            run_id = done.get(key) or reader.completed_run_id(plan.group_hash, plan.seed)
            if run_id is not None:
                if key not in done:
                    report.reused.append(run_id)
                    if on_event:
                        on_event("reuse", plan, run_id)
                done[key] = run_id
                step.run_ids.append(run_id)
                continue
            if on_event:
                on_event("launch", plan, None)
            run = execute(plan, store, live=live, command=command)
            report.launched.append(run.id)
            if getattr(run, "status", None) == "completed":
                done[key] = run.id
            else:
                report.failed.append(run.id)
            step.run_ids.append(run.id)
    return report


def ablation_groups(steps: Sequence[Step], store: Any) -> list[Group]:
    """One group per step, made of exactly the runs this ablation used (its seeds)."""
    reader = reader_of(store)
    return [group_of_runs(reader, step.run_ids, label=step.spec.name,
                          group_hash=step.plans[0].group_hash if step.plans else None)
            for step in steps]


def _launch_api() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(plan_runs, execute) of golf.launch, looked up at call time so tests can stand in for them."""
    from golf.launch import plan as plan_module
    from golf.launch import runner as runner_module

    return plan_module.plan_runs, runner_module.execute


def _knob_text(plans: Sequence[Any], key: str) -> Any:
    for plan in plans:
        knobs = getattr(plan, "knobs", None) or {}
        if key in knobs:
            return knobs[key]
    return None


def _variant_name(base: str, sets: Mapping[str, str]) -> str:
    """`baseline+XSA_LAST_N=11`: a spec name per variant, so each group can be referred to by name."""
    parts = [f"{k}={re.sub(r'[^A-Za-z0-9._-]+', '.', str(v))}" for k, v in sets.items()]
    return "+".join([base, *parts])
