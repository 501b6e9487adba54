"""Ablation tables: one row per change, in the records' style (rows in, rows out; `golf ablate`, which runs what
is missing, is golf.launch.ablate).

A row's "pre-TTT" score is the sliding-window score if the run has one, else post-quant; its "post-TTT" score is
the final stage (post-TTT when the run has TTT). Non-cumulative rows compare each variant with the base;
cumulative rows compare each with the row before, like the "+ change | Pre-TTT | Post-TTT | Delta" tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from golf.analysis.compare import differing_params, nats_pair
from golf.analysis.groups import Group
from golf.analysis.stats import Rule, compare_stats, signed, spread
from golf.errors import GolfError

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


# -- labels ---------------------------------------------------------------------------------------------------

def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """`--label KEY=VALUE=TEXT` items as {"KEY=VALUE": TEXT}."""
    out = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise GolfError(f"--label {item}: expected KEY=VALUE=TEXT, e.g. --label 'XSA_LAST_N=11=XSA on all layers'")
        out[f"{parts[0].strip()}={parts[1].strip()}"] = parts[2].strip()
    return out
