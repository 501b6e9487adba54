"""`golf ablate`: plan every cell of an ablation (base and variants, per seed), run what the store lacks, reuse the
rest. A cell is a (group_hash, seed): the same configuration under the same trainer code (comments and docstrings
aside) is the same cell, so a finished run is never launched twice. The table is golf.analysis.ablation's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from golf.analysis.ablation import change_text
from golf.analysis.groups import Group, group_of_runs, reader_of
from golf.errors import GolfError

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass
class Step:
    """One cell of an ablation: the base or a variant spec, and what changed."""

    change: str
    spec: Any  # golf.spec.Spec
    sets: dict[str, str] = field(default_factory=dict)
    plans: list[Any] = field(default_factory=list)  # golf.launch RunPlan, one per seed
    run_ids: list[str] = field(default_factory=list)
    eval_only: bool = False  # a re-score of the base runs' artifacts (golf eval), planned once they exist


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


def plan_ablation(spec: Any, varies: Sequence[tuple[str, list[str]]], store: Any, seeds: Sequence[int] | None = None,
                  cumulative: bool = False, labels: Mapping[str, str] | None = None,
                  prepare_data: bool = True, eval_only: bool = False) -> list[Step]:
    """Every spec the ablation needs, planned (and so validated) before anything launches.

    `prepare_data=False` (a dry run) neither builds nor checks the data, as `golf run --dry-run`. With
    `eval_only`, the variants are re-scores of the base runs' artifacts (evaluation knobs only, checked here);
    their plans are made once the base runs exist."""
    from golf.launch.evalrun import check_eval_sets
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
            step = Step(change=change_text(key, before, value, merged_labels), spec=variant, sets=sets,
                        eval_only=eval_only)
            if eval_only:
                check_eval_sets(sets, "--vary")
            else:
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
        if step.eval_only:  # one re-score of each base run that completed, with this step's evaluation knobs
            from golf.launch.evalrun import plan_eval

            parents = [reader_of(store).get(run_id) for run_id in steps[0].run_ids]
            step.plans = [plan_eval(p, step.sets, store) for p in parents if p is not None and p.status == "completed"]
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
