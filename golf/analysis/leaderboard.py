"""`golf leaderboard`: the best seed groups by mean final bpb, with budgets and flags, optionally interleaved
with the official records of a parameter-golf checkout.

Groups are aggregated in SQL (one pass for the means, one for the squared deviations), so the cost does not
depend on loading run rows into Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from golf.analysis.filters import RunFilter
from golf.analysis.stats import BYTES_CAP, TIME_BUDGET_S, TIME_SLACK_S
from golf.store.db import Store

_GROUPS_SQL = """
WITH r AS (
    SELECT COALESCE(group_hash, 'run:' || id) AS g, id, name, final_bpb, final_loss, total_bytes, step_avg_ms,
           train_time_ms, eval_time_ms, non_record_reason, source, record_name, spec_name, seed, record_author,
           record_date, reported_bpb, final_stage, {compliance} AS compliance,
           {record_eval_time_ms} AS record_eval_time_ms, {parent_id} AS parent_id, {experiment} AS experiment
    FROM run WHERE status = 'completed' AND final_bpb IS NOT NULL AND ({where})
),
m AS (SELECT g, AVG(final_bpb) AS mean, COUNT(*) AS n FROM r GROUP BY g)
SELECT r.g AS g, m.mean AS mean, m.n AS n,
       SUM((r.final_bpb - m.mean) * (r.final_bpb - m.mean)) AS ss,
       AVG(r.final_loss) AS loss, MAX(r.total_bytes) AS max_bytes, AVG(r.step_avg_ms) AS ms,
       MAX(r.train_time_ms) AS train_ms, MAX(r.eval_time_ms) AS eval_ms, MAX(r.non_record_reason) AS non_record,
       MAX(r.source = 'ingested') AS ingested, MAX(r.record_name) AS record_name, MAX(r.spec_name) AS spec_name,
       COUNT(DISTINCT r.spec_name) AS n_specs, GROUP_CONCAT(r.seed) AS seeds, MIN(r.name) AS run_name,
       MAX(r.record_author) AS author, MAX(r.record_date) AS date, MAX(r.reported_bpb) AS reported_bpb,
       MAX(r.final_stage) AS final_stage, GROUP_CONCAT(r.compliance, char(10)) AS compliance,
       MAX(r.record_eval_time_ms) AS record_eval_ms, MAX(r.experiment) AS experiment,
       COUNT(DISTINCT r.experiment) AS n_experiments, MIN(r.parent_id IS NOT NULL) AS eval_only
FROM r JOIN m ON m.g = r.g
GROUP BY r.g
ORDER BY m.mean, r.g
LIMIT ?
"""


def golf_entries(reader: Store, limit: int | None = None, only: RunFilter | None = None) -> list[dict[str, Any]]:
    """The best groups of completed runs in the store, best first."""
    has_experiment = "experiment" in reader.columns["run"]  # an older store, read as it is, may lack it
    where, params = (only or RunFilter()).sql(has_experiment)
    columns = reader.columns["run"]
    sql = _GROUPS_SQL.format(where=where, **{c: c if c in columns else "NULL" for c in (
        "experiment", "compliance", "record_eval_time_ms", "parent_id")})
    rows = reader.query(sql, (*params, -1 if limit is None else int(limit)))
    out = []
    for row in rows:
        n = row["n"]
        std = math.sqrt(row["ss"] / (n - 1)) if n >= 2 else None
        group_hash = None if row["g"].startswith("run:") else row["g"]
        label = (row["record_name"] or (row["experiment"] if row["n_experiments"] == 1 else None)
                 or (row["spec_name"] if row["n_specs"] == 1 else None) or row["run_name"])
        if row["eval_only"]:
            label += " (eval-only re-runs)"  # beside the training runs of the same record
        seeds = sorted(int(s) for s in row["seeds"].split(",")) if row["seeds"] else []
        entry = _entry(
            label=label, source="ingested" if row["ingested"] else "golf", group_hash=group_hash,
            final_bpb=row["mean"], final_bpb_std=std, n=n, seeds=seeds, total_bytes=row["max_bytes"],
            step_avg_ms=row["ms"], train_time_s=_seconds(row["train_ms"]), eval_time_s=_seconds(row["eval_ms"]),
            non_record_reason=row["non_record"], author=row["author"], date=row["date"],
            reported_bpb=row["reported_bpb"], record_name=row["record_name"],
        )
        entry["final_loss"] = row["loss"]
        entry["final_stage"] = row["final_stage"]
        entry["record_eval_time_s"] = _seconds(row["record_eval_ms"])
        entry["compliance"] = _compliance_names(row["compliance"])
        entry["flags"] += [f for f in entry["compliance"] if f not in entry["flags"]]
        out.append(entry)
    return out


def official_entries(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Entries for the record folders under `path` (their submission*.json), and one warning per skipped file."""
    from golf.ingest.records import find_submissions, read_submissions

    subs, warnings = read_submissions(find_submissions(path))
    out = []
    for sub in subs:
        entry = _entry(
            label=sub.label, source="official", group_hash=None, final_bpb=sub.val_bpb,
            final_bpb_std=sub.val_bpb_std, n=sub.n_seeds, seeds=sub.seeds, total_bytes=sub.bytes_total,
            step_avg_ms=sub.step_avg_ms, train_time_s=sub.train_time_s, eval_time_s=sub.eval_time_s,
            non_record_reason="non-record track" if sub.non_record else None, author=sub.author, date=sub.date,
            reported_bpb=sub.val_bpb, record_name=sub.folder,
        )
        entry["notes"] = sub.notes
        entry["path"] = str(sub.path)
        out.append(entry)
    return out, warnings


def leaderboard(reader: Store, official: Path | None = None, limit: int | None = 20,
                only: RunFilter | None = None) -> tuple[
        list[dict[str, Any]], list[str]]:
    """Rows best first (golf's groups, plus official records when `official` is given) and warnings."""
    entries = golf_entries(reader, limit, only)
    warnings: list[str] = []
    if official is not None:
        extra, warnings = official_entries(official)
        # A record that is also ingested shows once: golf's row (from its logs), flagged official.
        ingested = {r["v"] for r in reader.query(
            "SELECT DISTINCT record_name AS v FROM run WHERE record_name IS NOT NULL AND source = 'ingested'")}
        official_names = {e["record_name"] for e in extra}
        entries += [e for e in extra if e["record_name"] not in ingested]
        for e in entries:
            if e["source"] == "ingested" and e["record_name"] in official_names:
                e["flags"].append("official")
    entries.sort(key=lambda e: (e["final_bpb"], e["label"] or ""))
    if limit is not None:
        entries = entries[:limit]
    for rank, e in enumerate(entries, 1):
        e["rank"] = rank
    return entries, warnings


def _entry(*, label: str | None, source: str, group_hash: str | None, final_bpb: float, final_bpb_std: float | None,
           n: int | None, seeds: list[int], total_bytes: float | None, step_avg_ms: float | None,
           train_time_s: float | None, eval_time_s: float | None, non_record_reason: str | None,
           author: str | None, date: str | None, reported_bpb: float | None,
           record_name: str | None) -> dict[str, Any]:
    flags = []
    if non_record_reason:
        flags.append("non-record")
    if total_bytes is not None and total_bytes > BYTES_CAP:
        flags.append("over bytes")
    if train_time_s is not None and train_time_s > TIME_BUDGET_S + TIME_SLACK_S:
        flags.append("over train time")
    if eval_time_s is not None and eval_time_s > TIME_BUDGET_S + TIME_SLACK_S:
        flags.append("over eval time")
    if n == 1:
        flags.append("single seed")
    if source in ("ingested", "official"):
        flags.append(source)
    return {
        "rank": None, "label": label, "source": source, "group_hash": group_hash, "final_bpb": final_bpb,
        "final_bpb_std": final_bpb_std, "n": n, "seeds": seeds,
        "total_bytes": int(total_bytes) if total_bytes is not None else None, "step_avg_ms": step_avg_ms,
        "train_time_s": train_time_s, "eval_time_s": eval_time_s, "non_record_reason": non_record_reason,
        "flags": flags, "author": author, "date": date, "reported_bpb": reported_bpb, "record_name": record_name,
    }


def _compliance_names(text: str | None) -> list[str]:
    """The compliance flags of a group's runs (golf.ingest.compliance), named as the leaderboard's own flags."""
    import json

    from golf.ingest.compliance import flag_names

    stored = [f for line in (text or "").splitlines() if line.strip() not in ("", "null") for f in json.loads(line)]
    return [name.replace("_", " ") for name in flag_names(stored)]


def _seconds(ms: float | None) -> float | None:
    return ms / 1000 if ms is not None else None


# -- display ------------------------------------------------------------------------------------------------------

def display_columns(fmt: str) -> list[Any]:
    from golf.output import Col

    plain = fmt == "csv"

    def num(digits: int) -> Callable[[Any], str]:
        return (lambda v: f"{v:.10g}") if plain else (lambda v: f"{v:.{digits}f}")

    def over(limit: float) -> Callable[[Any, dict[str, Any]], str | None]:
        return lambda v, _row: "bold red" if isinstance(v, (int, float)) and v > limit else None

    cols = [Col("rank", "#", justify="right"), Col("label", "group / record")]
    if plain:
        cols += [Col("final_bpb", "final_bpb", num(8)), Col("final_bpb_std", "final_bpb_std", num(8))]
    else:
        cols.append(Col("bpb_text", "final bpb", justify="right"))
    cols += [  # priority: which columns a narrow terminal hides first (highest first)
        Col("n", "seeds", justify="right", priority=2),
        Col("total_bytes", "max bytes", lambda v: f"{v:,}", over(BYTES_CAP), justify="right", priority=1),
        Col("step_avg_ms", "ms/step", num(2), justify="right", priority=3),
        Col("train_time_s", "train s", num(1), over(TIME_BUDGET_S + TIME_SLACK_S), justify="right", priority=4),
        Col("eval_time_s", "eval s", num(1), over(TIME_BUDGET_S + TIME_SLACK_S), justify="right", priority=4),
        Col("record_eval_time_s", "eval s (records)", num(1), over(TIME_BUDGET_S + TIME_SLACK_S), justify="right",
            priority=4),
        Col("flags", "flags", (lambda v: "; ".join(v)) if plain else (lambda v: ", ".join(v)), priority=5),
        Col("group_hash", "group", (lambda v: v) if plain else (lambda v: v[:8]), priority=6),
    ]
    return cols


def display_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        shown = dict(row)
        text = f"{row['final_bpb']:.4f}"
        if row["final_bpb_std"] is not None:
            text += f" ± {row['final_bpb_std']:.4f}"
        shown["bpb_text"] = text
        out.append(shown)
    return out
