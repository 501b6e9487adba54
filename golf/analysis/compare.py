"""`golf compare`: groups side by side — the knobs that differ, every stage's metrics, and deltas with a verdict.

The first group is the base; every other one is tested against it (see golf.analysis.stats for the rule).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from golf.analysis.groups import BPB_METRICS, Group, loss_field
from golf.analysis.stats import (
    BYTES_CAP,
    MINUS,
    TIME_BUDGET_S,
    TIME_SLACK_S,
    Delta,
    Rule,
    Stat,
    compare_stats,
    delta_text,
    mean_std_text,
    p_text,
    summarize,
)
from golf.errors import GolfError
from golf.output import Col
from golf.trainer.stages import STAGES

TOKENIZER_RATIO_TOLERANCE = 0.01


@dataclass(frozen=True)
class MetricRow:
    field: str
    title: str
    scale: float = 1.0  # display unit = value × scale
    pattern: str = "{:.4f}"


METRIC_ROWS = (
    *(MetricRow(stage.bpb_field, stage.title) for stage in STAGES),
    MetricRow("final_bpb", "final bpb"),
    MetricRow("final_loss", "final loss (nats)"),
    MetricRow("step_avg_ms", "ms/step", pattern="{:.2f}"),
    MetricRow("steps", "steps", pattern="{:,.0f}"),
    MetricRow("train_time_ms", "train time s", scale=1e-3, pattern="{:.1f}"),
    MetricRow("eval_time_ms", "eval time s", scale=1e-3, pattern="{:.1f}"),
    MetricRow("total_bytes", "total bytes", pattern="{:,.0f}"),
    MetricRow("peak_mem_mib", "peak memory MiB", pattern="{:,.0f}"),
)


def degenerate_warnings(groups: Sequence[Group]) -> list[str]:
    """One line per pair of references that name the same runs: comparing them measures nothing."""
    out = []
    for i, a in enumerate(groups):
        for b in groups[i + 1:]:
            same_runs = bool(a.run_ids) and sorted(a.run_ids) == sorted(b.run_ids)
            if same_runs or (a.group_hash is not None and a.group_hash == b.group_hash and a.kind == b.kind == "group"):
                out.append(f"{a.ref!r} and {b.ref!r} are the same runs ({a.label}): the comparison is degenerate "
                           "(Δ 0, no test)")
    return out


def check_metric(metric: str) -> str:
    if metric in BPB_METRICS:
        return metric
    guess = difflib.get_close_matches(metric, BPB_METRICS, n=1)
    hint = f"; did you mean {guess[0]}?" if guess else ""
    raise GolfError(f"--metric {metric}: expected one of {', '.join(BPB_METRICS)}{hint}")


@dataclass
class CompareResult:
    groups: list[Group]
    metric: str
    rule: Rule
    params: dict[str, list[Any]]  # knob -> value per group (None: not set)
    deltas: list[Delta | None]  # None for the base
    stats: list[dict[str, Stat]] = field(default_factory=list)

    # -- JSON
    def items(self) -> list[dict[str, Any]]:
        out = []
        for i, (group, delta) in enumerate(zip(self.groups, self.deltas, strict=True)):
            item: dict[str, Any] = {
                "ref": group.ref, "kind": group.kind, "label": group.label, "group_hash": group.group_hash,
                "is_base": i == 0, "n": group.n, "seeds": group.seeds, "run_ids": group.run_ids,
                "record_name": group.record_name, "spec_name": group.spec_name,
                "params": {k: v[i] for k, v in self.params.items()},
                "metrics": {f: s.as_dict() for f, s in self.stats[i].items()},
                "max_total_bytes": group.maximum("total_bytes"),
                "over_budget": over_budget(group), "non_record_reason": group.non_record_reason,
                "metric": self.metric, "min_delta_nats": self.rule.min_delta_nats, "alpha": self.rule.alpha,
            }
            if delta is None:
                item.update({k: None for k in _DELTA_KEYS})
                item["verdict"] = "base"
            else:
                item.update(delta.as_dict())
            out.append(item)
        return out

    # -- table / md / csv: one long table, one column per group
    def rows(self, blank_repeats: bool = False, plain: bool = False) -> list[dict[str, Any]]:
        """Display rows; blank_repeats shows each section's name on its first row only (table, md). `plain` (csv)
        keeps numbers raw: a group's column holds the mean (or the value), `c<i>_std` and `c<i>_n` the rest."""
        rows: list[dict[str, Any]] = []

        def add(section: str, name: str, cells: Sequence[Any], over: Sequence[bool] | None = None,
                spread: Sequence[tuple[Any, Any]] | None = None) -> None:
            row: dict[str, Any] = {"section": section, "field": name}
            for i, cell in enumerate(cells):
                row[f"c{i}"] = cell
                row[f"_over{i}"] = bool(over[i]) if over else False
                if spread is not None:
                    row[f"c{i}_std"], row[f"c{i}_n"] = spread[i]
            rows.append(row)

        for key, values in self.params.items():
            add("params", key, values if plain else ["—" if v is None else str(v) for v in values])
        for spec in METRIC_ROWS:
            stats = [s[spec.field] for s in self.stats]
            if all(s.n == 0 for s in stats):
                continue
            over = None
            if spec.field in ("train_time_ms", "eval_time_ms"):
                over = [(g.maximum(spec.field) or 0) / 1000 > TIME_BUDGET_S + TIME_SLACK_S for g in self.groups]
            scaled = [_scaled(s, spec.scale) for s in stats]
            if plain:
                add("metrics", spec.title, [s.mean for s in scaled], over, [(s.std, s.n) for s in scaled])
            else:
                add("metrics", spec.title, [mean_std_text(s, fmt=spec.pattern) for s in scaled], over)
        # ± above is the sample std (n−1); records often write the population std (÷n) in submission.json
        spreads = [s[self.metric] for s in self.stats]
        if any(st.std is not None for st in spreads):
            add("metrics", f"{self.metric} std, sample (n−1)",
                [st.std if plain else _std_text(st.std) for st in spreads])
            add("metrics", f"{self.metric} std, population (n)",
                [st.std_pop if plain else _std_text(st.std_pop) for st in spreads])
        maxima = [g.maximum("total_bytes") for g in self.groups]
        add("metrics", f"max bytes vs {BYTES_CAP:,}", maxima if plain else [_budget_text(m) for m in maxima],
            [m is not None and m > BYTES_CAP for m in maxima])
        add("metrics", "seeds", [",".join(str(s) for s in g.seeds) or "—" for g in self.groups])
        reasons = [g.non_record_reason for g in self.groups]
        if any(reasons):  # a result that may not be claimed as a record says so beside its numbers
            add("metrics", "non-record", [r or "—" for r in reasons], [bool(r) for r in reasons])
        loss = loss_field(self.metric)
        sections: list[tuple[str, Callable[[Delta], Any], Callable[[Delta], Any]]] = [
            (f"Δ {self.metric}", lambda d: delta_text(d.delta_bpb, d.delta_bpb_std, d.p_value),
             lambda d: (d.delta_bpb, d.delta_bpb_std)),
            (f"Δ {loss} (nats)", lambda d: delta_text(d.delta_nats, d.delta_nats_std, None),
             lambda d: (d.delta_nats, d.delta_nats_std)),
            ("p (variant lower)", lambda d: p_text(d.p_value) if d.p_value is not None else "—",
             lambda d: (d.p_value, None)),
            (f"p (Δ < {MINUS}{self.rule.min_delta_nats:g} nats)",
             lambda d: p_text(d.p_value_vs_threshold) if d.p_value_vs_threshold is not None else "—",
             lambda d: (d.p_value_vs_threshold, None)),
            ("verdict", lambda d: d.verdict, lambda d: (d.verdict, None)),
            ("why", lambda d: d.reason, lambda d: (d.reason, None)),
        ]
        for title, text, raw in sections:
            if plain:
                pairs = [("base", None) if d is None else raw(d) for d in self.deltas]
                add("vs base", title, [p[0] for p in pairs], None, [(p[1], None) for p in pairs])
            else:
                add("vs base", title, ["base" if d is None else text(d) for d in self.deltas])
        if blank_repeats:
            sections_seen = [row["section"] for row in rows]
            for before, row in zip([None, *sections_seen], rows, strict=False):
                if before == row["section"]:
                    row["section"] = ""
        return rows

    def columns(self, plain: bool = False) -> list[Col]:
        cols = [Col("section", "", priority=1), Col("field", "")]
        for i, group in enumerate(self.groups):
            title = f"{group.label} (base)" if i == 0 else group.label
            cols.append(Col(f"c{i}", title, style=_over_style(i)))
            if plain:
                cols += [Col(f"c{i}_std", f"{title} std"), Col(f"c{i}_n", f"{title} n")]
        return cols

    def summary_lines(self) -> list[str]:
        """`XSA-all −0.0020 ± 0.0004, p=0.003 (−0.0046 nats; fail: …)` per variant."""
        lines = []
        for group, delta in zip(self.groups[1:], self.deltas[1:], strict=True):
            assert delta is not None
            nats = delta_text(delta.delta_nats, None, None)
            flag = f"; non-record: {group.non_record_reason}" if group.non_record_reason else ""
            lines.append(f"{group.label} {delta_text(delta.delta_bpb, delta.delta_bpb_std, delta.p_value)} "
                         f"({nats} nats; {delta.verdict}: {delta.reason}{flag})")
        return lines


_DELTA_KEYS = ("delta_bpb", "delta_bpb_std", "delta_nats", "delta_nats_std", "p_value", "p_value_vs_threshold",
               "t_statistic", "df", "verdict", "verdict_reason")


def compare_groups(groups: Sequence[Group], metric: str = "final_bpb", rule: Rule = Rule(),
                   all_params: bool = False) -> CompareResult:
    """Compare every group with the first one."""
    metric = check_metric(metric)
    if len(groups) < 2:
        raise GolfError("compare needs at least two runs or groups, e.g. golf compare baseline xsa-all")
    loss = loss_field(metric)
    fields = [m.field for m in METRIC_ROWS]
    stats = [{f: g.stat(f) for f in dict.fromkeys([*fields, metric, loss])} for g in groups]
    base = stats[0]
    deltas: list[Delta | None] = [None]
    for group, s in zip(groups[1:], stats[1:], strict=True):
        base_nats, variant_nats, note = nats_pair(groups[0], group, metric)
        deltas.append(compare_stats(base[metric], s[metric], base_nats, variant_nats, rule, note))
    return CompareResult(groups=list(groups), metric=metric, rule=rule,
                         params=differing_params(groups, all_params), deltas=deltas, stats=stats)


def nats_pair(base: Group, variant: Group, metric: str) -> tuple[Stat, Stat, str | None]:
    """The two groups' losses in nats for the rule, and a note when they had to be put on one footing.

    val_loss is nats per token: across tokenizers (sp1024 vs sp8192) it is not comparable. When the groups'
    loss/bpb ratios (tokens per byte) differ by more than 1%, the variant's bpb values are expressed in the
    base's tokens (bpb × the base's mean loss/bpb), so the threshold keeps meaning "nats per base token".
    """
    loss = loss_field(metric)
    base_nats, variant_nats = base.stat(loss), variant.stat(loss)
    base_ratio, variant_ratio = _nats_per_bpb(base, metric), _nats_per_bpb(variant, metric)
    if base_ratio and variant_ratio and abs(variant_ratio / base_ratio - 1) > TOKENIZER_RATIO_TOLERANCE:
        converted = summarize(v * base_ratio for v in variant.values(metric))
        note = (f"tokenizers differ (nats/bpb {base_ratio:.3f} vs {variant_ratio:.3f}): the variant's nats are its "
                "bpb in the base's tokens")
        return base_nats, converted, note
    return base_nats, variant_nats, None


def _nats_per_bpb(group: Group, metric: str) -> float | None:
    loss = loss_field(metric)
    ratios = [r.value(loss) / r.value(metric) for r in group.scored_runs
              if r.value(loss) is not None and r.value(metric)]
    return sum(ratios) / len(ratios) if ratios else None


def differing_params(groups: Sequence[Group], all_params: bool = False) -> dict[str, list[Any]]:
    """knob -> value per group, for the knobs whose values differ (every knob with all_params)."""
    configs = [g.config() for g in groups]
    keys = sorted({k for c in configs for k in c})
    out: dict[str, list[Any]] = {}
    for key in keys:
        values = [c.get(key) for c in configs]
        if all_params or len({json.dumps(v, default=str) for v in values}) > 1:
            out[key] = values
    return out


def over_budget(group: Group) -> list[str]:
    """Which of the challenge's budgets the group's worst seed breaks: bytes, train_time, eval_time."""
    flags = []
    max_bytes = group.maximum("total_bytes")
    if max_bytes is not None and max_bytes > BYTES_CAP:
        flags.append("bytes")
    for name in ("train_time", "eval_time"):
        worst = group.maximum(f"{name}_ms")
        if worst is not None and worst / 1000 > TIME_BUDGET_S + TIME_SLACK_S:
            flags.append(name)
    return flags


def _scaled(stat: Stat, scale: float) -> Stat:
    if scale == 1.0 or stat.mean is None:
        return stat
    return Stat(stat.mean * scale, stat.std * scale if stat.std is not None else None, stat.n,
                tuple(v * scale for v in stat.values))


def _std_text(std: float | None) -> str:
    return "—" if std is None else f"{std:.5f}"


def _budget_text(value: float | None) -> str:
    if value is None:
        return "—"
    left = BYTES_CAP - int(value)
    return f"{int(value):,} ({left:,} left)" if left >= 0 else f"{int(value):,} ({-left:,} over)"


def _over_style(i: int) -> Callable[[Any, dict[str, Any]], str | None]:
    return lambda _value, row: "bold red" if row.get(f"_over{i}") else None
