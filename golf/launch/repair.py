"""A run's row brought back in line with its train.log: the log is the record, the row is derived from it.

After any death of golf (kill -9, a crash, a store that stayed unavailable to the end) a row can lag its log: steps
parsed in the last second, the final metrics, the status. `repair_run` parses the whole log again (the parser the
launcher streams it through) and writes every metric and step. The status comes from golf_status.json, which golf
writes into the run folder when a run ends; without it (golf died first) a run left `running` is `failed` with
the store's reason for a dead golf process (or `diverged` when the log says so). A run still being recorded by a
live golf is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golf.errors import GolfError
from golf.launch.recorder import fields_of, read_status_file, step_rows
from golf.logparse import LogParser
from golf.store import Store
from golf.store.db import STALE_REASON, is_dead
from golf.store.models import now


@dataclass
class Repair:
    run_id: str
    name: str
    status_before: str
    status: str
    steps_before: int
    steps: int
    log: Path

    def as_row(self) -> dict[str, Any]:
        return {"id": self.run_id, "name": self.name, "status_before": self.status_before, "status": self.status,
                "steps_before": self.steps_before, "steps": self.steps, "log": str(self.log)}


def _ended_status(record: dict[str, Any], run_dir: Path | None, diverged: bool, log: Path) -> dict[str, Any]:
    """The end of the run: as golf recorded it in the run folder, else what a dead golf leaves."""
    end = read_status_file(run_dir) if run_dir is not None else None
    if end is not None and end.get("run_id") in (None, record["id"]) and end.get("status"):
        out = {k: end.get(k) for k in ("status", "exit_code", "stop_reason", "artifact_path")}
        ended = end.get("ended_at")
        if isinstance(ended, str):
            from datetime import datetime

            out["ended_at"] = datetime.fromisoformat(ended)
        return out
    died = record["status"] == "running" or (record["status"] == "failed" and record.get("stop_reason") == STALE_REASON)
    if not died:
        return {}  # a finished row keeps its status; only its numbers come from the log again
    from datetime import datetime, timezone

    last_line = datetime.fromtimestamp(log.stat().st_mtime, timezone.utc)
    return {"status": "diverged" if diverged else "failed", "stop_reason": STALE_REASON,
            "ended_at": record.get("ended_at") or record.get("heartbeat_at") or last_line}


def repair_run(store: Store, ref: str, force: bool = False) -> Repair:
    """Re-derive one run's row from its log (see the module's doc)."""
    run = store.resolve_run(ref)
    record = store.records("id = ?", (run.id,))[0]
    if record["status"] == "running" and not is_dead(record) and not force:
        raise GolfError(f"run {run.name} is being recorded by a live golf process (its heartbeat is recent); "
                        "repair it once it ends, or pass --force")
    log = store.log_file(record)
    if log is None:
        raise GolfError(f"run {run.name}: its log {record.get('log_path') or '(none recorded)'} is missing; "
                        "nothing to repair from")
    parser = LogParser()
    errors = 0
    with open(log, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                parser.feed(line)
            except Exception:  # the same tolerance as while streaming: a bad line is counted, never fatal
                errors += 1
    before = len(store.steps(run.id))
    run_dir = Path(record["run_dir"]) if record.get("run_dir") else log.parent
    # what the log holds replaces the row's; what it lacks is left as it is (never erased)
    fields = {k: v for k, v in fields_of(parser.run, record.get("non_record_reason"), errors).items() if v is not None}
    ended = _ended_status(record, run_dir, parser.run.diverged, log)
    if not ended:
        fields.pop("stop_reason", None)  # a finished row's reason (SIGINT, a rule) is golf's, not the log's
    fields.update(ended)
    store.update_run(run.id, **fields)
    store.upsert_steps(run.id, step_rows(parser.run))
    status = fields.get("status", record["status"])
    return Repair(run.id, run.name, record["status"], status, before, len(store.steps(run.id)), log)


def dead_runs(store: Store) -> list[str]:
    """Ids of the `running` rows whose golf process is gone (no heartbeat), oldest first."""
    at = now()
    return [r["id"] for r in store.records("status = 'running'") if is_dead(r, at)]


def repair_dead(store: Store) -> list[Repair]:
    """Repair every dead `running` row that still has its log (the rest are left to reconcile_stale)."""
    done = []
    for run_id in dead_runs(store):
        try:
            done.append(repair_run(store, run_id))
        except GolfError:
            continue
    return done
