"""Seed groups and the resolver behind every RUN_OR_GROUP argument.

A group is the runs that share `group_hash` (same resolved config except SEED, same trainer code). A reference
may be a run id or name (that one run), a spec name, a group-hash prefix, or an ingested record folder's name
(its group). `kind:` prefixes force one reading: `run:`, `group:`, `spec:`, `record:`.

Rows come from the run store (`golf.store.Store`, opened read-only by the analysis commands); this module turns
them into groups: rows in, rows out.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from golf.analysis.stats import Stat, summarize
from golf.errors import GolfError
from golf.trainer.stages import BPB_FIELDS, LOSS_FIELDS, STAGES, pre_ttt_stage

if TYPE_CHECKING:
    from golf.store.db import Store
    from golf.store.models import Run

# Config keys that never define a group: the seed, the run's id, and per-rank / per-machine bookkeeping.
NON_IDENTITY_KEYS = frozenset({"SEED", "RUN_ID", "LOGFILE", "RANK", "LOCAL_RANK", "IS_MAIN_PROCESS", "WORLD_SIZE",
                               "DISTRIBUTED"})
KINDS = ("run", "experiment", "group", "spec", "record")
# Metrics a group summarizes: every stage's (golf.trainer.stages), the final score, and pre_ttt_* (derived: the
# highest pre-TTT stage reached, e.g. the sliding-window score if present, else post-quant).
SUMMARY_FIELDS = (
    *BPB_FIELDS, "final_bpb", *LOSS_FIELDS, "final_loss",
    "step_avg_ms", "steps", "train_time_ms", "eval_time_ms", "total_bytes", "peak_mem_mib",
)
BPB_METRICS = (*BPB_FIELDS, "final_bpb", "pre_ttt_bpb")


def loss_field(bpb_field: str) -> str:
    """The nats counterpart of a bpb metric (`final_bpb` → `final_loss`)."""
    return bpb_field.removesuffix("_bpb") + "_loss"


def is_identity_key(key: str) -> bool:
    """Whether a config key takes part in a run's configuration identity (paths and bookkeeping do not)."""
    upper = key.upper()
    return upper not in NON_IDENTITY_KEYS and not upper.endswith(("_PATH", "_DIR", "_FILES"))


class RunRecord(dict):  # type: ignore[type-arg]
    """One run as a dict under the store's field names, with attribute access (`run.final_bpb`).

    JSON columns (config, spec, tags, bytes_breakdown) are decoded and started_at/ended_at are aware datetimes
    (UTC); everything else is the stored value. `Store.get(id)` gives the full Run."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def value(self, field_name: str) -> Any:
        """A field, or a derived one: `pre_ttt_bpb`/`pre_ttt_loss` = the highest pre-TTT stage's (sliding if
        present, else post-quant)."""
        if field_name.startswith("pre_ttt_"):
            unit = field_name.removeprefix("pre_ttt_")
            stage = pre_ttt_stage({s.name for s in STAGES if self.get(f"{s.name}_{unit}") is not None})
            return self.get(f"{stage}_{unit}") if stage else None
        return self.get(field_name)


def reader_of(source: Any) -> Store:
    """The store to read: a Store itself, or a path (or None: $GOLF_DB, ./runs.db) opened read-only."""
    from golf.store.db import Store

    return source if isinstance(source, Store) else Store(source, readonly=True)


def records(store: Store, where: str = "1", params: Sequence[Any] = ()) -> list[RunRecord]:
    return [RunRecord(r) for r in store.records(where, params)]


@dataclass
class Group:
    """Runs that differ only by seed (or one run), with a display label and metric aggregation.

    `runs` holds every run of the group, whatever its status, oldest first. Metrics aggregate `scored_runs`:
    the completed runs, or the referenced run itself when the reference named a single run.
    """

    ref: str
    kind: str  # run | group | spec | record
    label: str
    group_hash: str | None
    runs: list[RunRecord] = field(default_factory=list)

    @property
    def scored_runs(self) -> list[RunRecord]:
        if self.kind == "run":
            return list(self.runs)
        return [r for r in self.runs if r.get("status") == "completed"]

    @property
    def n(self) -> int:
        return len(self.scored_runs)

    @property
    def run_ids(self) -> list[str]:
        return [r["id"] for r in self.scored_runs]

    @property
    def seeds(self) -> list[int | None]:
        return [r.get("seed") for r in self.scored_runs]

    def values(self, field_name: str) -> list[float]:
        return [v for v in (r.value(field_name) for r in self.scored_runs) if v is not None]

    def stat(self, field_name: str) -> Stat:
        """Mean ± sample std (n−1) of a metric over the scored runs."""
        return summarize(r.value(field_name) for r in self.scored_runs)

    def maximum(self, field_name: str) -> float | None:
        values = self.values(field_name)
        return max(values) if values else None

    def metrics(self, fields: Sequence[str] = SUMMARY_FIELDS) -> dict[str, Stat]:
        return {f: self.stat(f) for f in fields}

    def common(self, field_name: str) -> Any:
        """A field's value when every run agrees on it, else None."""
        values = {json.dumps(r.get(field_name), sort_keys=True, default=str) for r in self.runs}
        return self.runs[0].get(field_name) if len(values) == 1 and self.runs else None

    @property
    def record_name(self) -> str | None:
        return self.common("record_name")

    @property
    def spec_name(self) -> str | None:
        return self.common("spec_name")

    @property
    def experiment(self) -> str | None:
        return self.common("experiment")

    @property
    def non_record_reason(self) -> str | None:
        return next((r["non_record_reason"] for r in self.runs if r.get("non_record_reason")), None)

    def config(self, identity_only: bool = True) -> dict[str, Any]:
        """The knobs of the scored runs (all runs if none scored): a value where they agree, `(varies)` where not.

        SEED, RUN_ID and per-machine bookkeeping (paths, ranks) are left out unless identity_only is False.
        """
        runs = self.scored_runs or self.runs
        keys: dict[str, None] = {}
        for run in runs:
            keys.update(dict.fromkeys((run.get("config") or {}).keys()))
        out: dict[str, Any] = {}
        for key in sorted(keys):
            if identity_only and not is_identity_key(key):
                continue
            values = {json.dumps((r.get("config") or {}).get(key), default=str) for r in runs}
            out[key] = (runs[0].get("config") or {}).get(key) if len(values) == 1 else "(varies)"
        return out

    def summary(self, fields: Sequence[str] = SUMMARY_FIELDS) -> dict[str, Any]:
        """JSON-ready: who the group is, its runs, and mean/std/n of each metric."""
        return {
            "ref": self.ref, "kind": self.kind, "label": self.label, "group_hash": self.group_hash,
            "n": self.n, "seeds": self.seeds, "run_ids": self.run_ids,
            "record_name": self.record_name, "spec_name": self.spec_name,
            "metrics": {f: s.as_dict() for f, s in self.metrics(fields).items()},
        }


# -- resolution --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    kind: str
    key: str  # run id, group hash, spec name or record name
    describe: str


def resolve_ref(source: Any, ref: str) -> Group:
    """The group (or single run) a RUN_OR_GROUP reference names; GolfError listing candidates otherwise.

    `source` is a Store or a db path.
    """
    return _resolve(reader_of(source), ref)


def resolve_refs(source: Any, refs: Sequence[str]) -> list[Group]:
    """Several references (one reader), with `@hash` added to labels that would otherwise read the same."""
    reader = reader_of(source)
    groups = [_resolve(reader, ref) for ref in refs]
    disambiguate_labels(groups)
    return groups


def _resolve(reader: Store, ref: str) -> Group:
    text = ref.strip()
    kind, _, rest = text.partition(":")
    if rest and kind in KINDS:
        targets = _candidates(reader, rest, only=kind)
    else:
        targets = _candidates(reader, text)
    if not targets:
        raise GolfError(_unknown_message(reader, ref))
    if len(targets) > 1:
        listed = "; ".join(t.describe for t in _described(reader, targets)[:8])
        more = f" (+{len(targets) - 8} more)" if len(targets) > 8 else ""
        hint = ("pass group:HASH for one of them, or give each experiment its own `golf run --name`"
                if all(t.kind == "group" for t in targets) else "pass one of these, or prefix run:, experiment:, "
                "group:, spec: or record:")
        raise GolfError(f"{ref!r} is ambiguous (newest first): {listed}{more} — {hint}")
    return _load(reader, targets[0], ref)


def group_of_runs(reader: Store, run_ids: Sequence[str], label: str, group_hash: str | None = None,
                  ref: str | None = None) -> Group:
    """A group made of exactly these runs (e.g. the seeds an ablation asked for)."""
    runs = [RunRecord(r) for r in reader.records_by_id(run_ids)]
    if group_hash is None and runs:
        group_hash = runs[0].get("group_hash")
    return Group(ref=ref or label, kind="group", label=label, group_hash=group_hash, runs=runs)


def disambiguate_labels(groups: Sequence[Group]) -> None:
    """Append `@hash8` to labels that would otherwise read the same."""
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
    for g in groups:
        if seen[g.label] > 1 and g.group_hash and g.kind != "run":
            g.label = f"{g.label}@{g.group_hash[:8]}"


def _candidates(reader: Store, ref: str, only: str | None = None) -> list[_Target]:
    exact: list[_Target] = []
    if only in (None, "run"):
        for row in reader.query("SELECT id, name FROM run WHERE id = ? OR name = ?", (ref, ref)):
            exact.append(_Target("run", row["id"], f"run {row['name']} (id {row['id']})"))
    if only in (None, "record"):
        row = reader.query("SELECT COUNT(*) AS n FROM run WHERE record_name = ?", (ref,))[0]
        if row["n"]:
            exact.append(_Target("record", ref, f"record {ref} ({row['n']} runs)"))
    named = False
    if only in (None, "experiment") and "experiment" in reader.columns["run"]:
        # `golf run --name NAME` (else the spec's name) names a seed group; one name, several configs: pick one
        rows = reader.query("SELECT group_hash, COUNT(*) AS n, SUM(status = 'completed') AS done FROM run "
                            "WHERE experiment = ? GROUP BY group_hash ORDER BY MAX(started_at) DESC", (ref,))
        named = bool(rows)
        if len(rows) == 1:
            exact.append(_Target("experiment", ref, f"experiment {ref} ({rows[0]['n']} runs)"))
        else:
            for row in rows:
                gh = row["group_hash"]
                exact.append(_Target("group", gh or "", f"{ref} group {(gh or '(none)')[:8]} "
                                                         f"({row['done']}/{row['n']} completed)"))
    if only in (None, "spec") and not (named and only is None):  # an experiment's name wins over a spec's
        rows = reader.query("SELECT group_hash, COUNT(*) AS n, SUM(status = 'completed') AS done FROM run "
                            "WHERE spec_name = ? GROUP BY group_hash ORDER BY MAX(started_at) DESC", (ref,))
        if len(rows) == 1:
            exact.append(_Target("spec", ref, f"spec {ref} ({rows[0]['n']} runs)"))
        elif rows:
            # One spec name, several groups (the spec or the trainer changed): the user must pick a group.
            for row in rows:
                gh = row["group_hash"]
                exact.append(_Target("group", gh or "", f"group {(gh or '(none)')[:12]} of spec {ref} "
                                                         f"({row['done']}/{row['n']} completed)"))
    if only in (None, "group"):
        rows = reader.query("SELECT COUNT(*) AS n FROM run WHERE group_hash = ?", (ref,))
        if rows[0]["n"]:
            exact.append(_Target("group", ref, f"group {ref[:12]} ({rows[0]['n']} runs)"))
    exact = _dedupe(exact)
    if exact or len(ref) < 4:
        return exact
    prefixed: list[_Target] = []
    if only in (None, "group"):
        for row in reader.query("SELECT group_hash, COUNT(*) AS n, MAX(spec_name) AS spec, MAX(record_name) AS rec "
                                "FROM run WHERE group_hash >= ? AND group_hash < ? GROUP BY group_hash LIMIT 20",
                                (ref, ref + "\U0010ffff")):
            name = row["rec"] or row["spec"] or ""
            prefixed.append(_Target("group", row["group_hash"],
                                    f"group {row['group_hash'][:12]} {name} ({row['n']} runs)".replace("  ", " ")))
    if only in (None, "run"):
        for row in reader.query("SELECT id, name FROM run WHERE id >= ? AND id < ? LIMIT 20",
                                (ref, ref + "\U0010ffff")):
            prefixed.append(_Target("run", row["id"], f"run {row['name']} (id {row['id']})"))
    return _dedupe(prefixed)


def _described(reader: Store, targets: list[_Target]) -> list[_Target]:
    """Candidate groups told apart by what differs: `smoke group 6f3b1234 (MLP_MULT=3.0; 2/2 completed, 03:50)`."""
    groups = [t for t in targets if t.kind == "group" and t.key]
    if len(groups) < 2:
        return targets
    configs, started = {}, {}
    for t in groups:
        rows = reader.records("group_hash = ?", (t.key,), order="started_at DESC", limit=1)
        configs[t.key] = {k: v for k, v in (rows[0].get("config") or {}).items() if is_identity_key(k)} if rows else {}
        started[t.key] = rows[0].get("started_at") if rows else None
    keys = sorted({k for c in configs.values() for k in c})
    differing = [k for k in keys if len({str(c.get(k)) for c in configs.values()}) > 1]
    out = []
    for t in targets:
        if t not in groups:
            out.append(t)
            continue
        knobs = ", ".join(f"{k}={configs[t.key].get(k, '—')}" for k in differing[:3])
        knobs += ", …" if len(differing) > 3 else ""
        when = started[t.key].astimezone().strftime("%Y-%m-%d %H:%M") if started[t.key] else ""
        detail = "; ".join(x for x in (knobs or "same knobs, other trainer code", when) if x)
        out.append(_Target(t.kind, t.key, t.describe.replace(" (", f" ({detail}; ", 1)))
    return out


def _dedupe(targets: list[_Target]) -> list[_Target]:
    seen: dict[tuple[str, str], _Target] = {}
    for t in targets:
        seen.setdefault((t.kind, t.key), t)
    return list(seen.values())


def _load(reader: Store, target: _Target, ref: str) -> Group:
    if target.kind == "run":
        runs = records(reader, "id = ?", (target.key,))
        run = runs[0]
        return Group(ref=ref, kind="run", label=run["name"], group_hash=run.get("group_hash"), runs=runs)
    if target.kind == "record":
        runs = records(reader, "record_name = ?", (target.key,))
        # a folder may hold several configurations (and eval-only re-runs): the record is the group(s) whose
        # stage equals its submission's val_bpb, where ingest found one
        reporting = {r.get("group_hash") for r in runs if r.get("reported_stage")}
        if reporting:
            runs = [r for r in runs if r.get("group_hash") in reporting]
        hashes = {r.get("group_hash") for r in runs}
        return Group(ref=ref, kind="record", label=target.key,
                     group_hash=next(iter(hashes)) if len(hashes) == 1 else None, runs=runs)
    if target.kind == "experiment":
        runs = records(reader, "experiment = ?", (target.key,))
        return Group(ref=ref, kind="experiment", label=target.key, group_hash=runs[0].get("group_hash"), runs=runs)
    if target.kind == "spec":
        row = reader.query("SELECT group_hash FROM run WHERE spec_name = ? LIMIT 1", (target.key,))[0]
        gh = row["group_hash"]
        runs = records(reader, "group_hash = ?", (gh,)) if gh else records(reader, "spec_name = ?", (target.key,))
        return Group(ref=ref, kind="spec", label=target.key, group_hash=gh, runs=runs)
    runs = records(reader, "group_hash = ?", (target.key,))
    group = Group(ref=ref, kind="group", label="", group_hash=target.key, runs=runs)
    group.label = group.record_name or group.experiment or group.spec_name or target.key[:8]
    return group


def _unknown_message(reader: Store, ref: str) -> str:
    names: list[str] = []
    for column in ("name", "experiment", "spec_name", "record_name"):
        if column not in reader.columns["run"]:
            continue
        rows = reader.query(f"SELECT DISTINCT {column} AS v FROM run WHERE {column} IS NOT NULL LIMIT 50000")
        names.extend(r["v"] for r in rows)
    close = difflib.get_close_matches(ref, names, n=5, cutoff=0.6)
    if not close:
        low = ref.lower()
        close = [n for n in names if low in n.lower()][:5]
    hint = f"; did you mean {', '.join(close)}?" if close else "; `golf ls` lists runs, `golf leaderboard` groups"
    hexish = " (group-hash prefixes need at least 4 characters)" if re.fullmatch(r"[0-9a-f]{1,3}", ref) else ""
    return f"no run, experiment, group, spec or record named {ref!r}{hexish}{hint}"


def resolve_run_or_group(store: Store, ref: str) -> Run | Group:
    """What a RUN_OR_GROUP argument names, runs first: a run by id, id prefix or name (a `Run`), else the
    experiment, group, spec or record it names (a `Group`; one that holds a single run is that `Run`). A reference
    that names neither raises the run lookup's error (its `similar:` hint)."""
    from golf.store.db import RunNotFound

    try:
        return store.resolve_run(ref)
    except RunNotFound as not_a_run:
        try:
            group = resolve_ref(store, ref)
        except GolfError:
            raise not_a_run from None
    if len(group.runs) == 1:
        return store.resolve_run(group.runs[0]["id"])  # an experiment of one seed: that run
    return group


def resolve_one_run(store: Store, ref: str) -> Run:
    """One run (a `Run`): by id, id prefix or name, else an experiment, group or spec that holds exactly one run
    (`golf eval c-ttt0` after `golf run --name c-ttt0`); several runs are a one-line error naming them."""
    found = resolve_run_or_group(store, ref)
    if isinstance(found, Group):
        names = ", ".join(r["name"] for r in found.runs[:6]) + (", …" if len(found.runs) > 6 else "")
        raise GolfError(f"{ref!r} is {found.kind} {found.label} of {len(found.runs)} runs ({names}); name one of them")
    return found


def newest_run(store: Store, ref: str) -> Run:
    """One run (a `Run`) for a command about a single run's progress (`golf logs`): by id, id prefix or name, else
    of an experiment, group or spec, its newest running run (as a reader sees it: a row whose golf died is not
    running), else its newest run."""
    found = resolve_run_or_group(store, ref)
    if not isinstance(found, Group):
        return found
    runs = [store.get(r["id"]) for r in found.runs]
    newest_first = sorted((r for r in runs if r is not None), reverse=True,
                          key=lambda r: (r.started_at is not None, r.started_at and r.started_at.timestamp(), r.id))
    if not newest_first:
        raise GolfError(_unknown_message(store, ref))
    return next((r for r in newest_first if r.status == "running"), newest_first[0])
