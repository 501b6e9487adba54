"""Community training logs → runs marked `source="ingested"`.

Every file is parsed by golf.logparse (the same parser the launcher streams through). A log inside a record
folder (one with submission.json) carries the record's name, author, date and reported val_bpb; the configuration
its log prints decides its group (golf.ingest.grouping), eval-only re-runs point at their training run
(`parent_id`), and each run gets compliance flags with their evidence (golf.ingest.compliance) and the stage its
submission reports (`reported_stage`). A run's id comes from the sha256 of the log's bytes, so ingesting a file
twice, or two identical copies of one log (train.log == train_seed1337.log), gives one run.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from golf.errors import GolfError
from golf.ingest import compliance, grouping
from golf.ingest.records import Submission, SubmissionError, read_submission, record_folder_of
from golf.logparse import ParsedRun, parse_text

LOG_SUFFIXES = (".log", ".txt")
NOT_LOGS = frozenset({"requirements.txt"})
_SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)
_FIRST_TIMESTAMP = re.compile(r"^(\d{10}\.\d{3}) ", re.MULTILINE)


@dataclass
class LogFile:
    path: Path
    text: str
    sha256: str
    record: Path | None

    @property
    def run_id(self) -> str:
        return "i" + self.sha256[:11]


@dataclass
class IngestItem:
    path: Path
    action: str  # added | updated | repaired | exists | duplicate | skipped
    run_id: str | None = None
    detail: str = ""


@dataclass
class IngestReport:
    items: list[IngestItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for item in self.items if item.action == action)

    @property
    def run_ids(self) -> list[str]:
        """Runs the ingested files stand for (added, updated or already there), in file order."""
        return [i.run_id for i in self.items if i.run_id and i.action in ("added", "updated", "repaired", "exists")]

    def summary(self) -> str:
        parts = [f"{self.count('added')} added"]
        for action, words in (("updated", "updated"), ("repaired", "golf runs repaired from their logs"),
                              ("exists", "already in the store"),
                              ("duplicate", "identical copies skipped"), ("skipped", "files without a run")):
            if self.count(action):
                parts.append(f"{self.count(action)} {words}")
        files = len(self.items)
        return f"ingested {files} file{'' if files == 1 else 's'}: " + ", ".join(parts)


def find_logs(paths: Iterable[str | Path]) -> list[Path]:
    """The files named, and the *.log / *.txt files (not requirements.txt) under the folders named."""
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            for candidate in sorted(path.rglob("*")):
                if candidate.is_file() and candidate.suffix.lower() in LOG_SUFFIXES and \
                        candidate.name.lower() not in NOT_LOGS:
                    found[candidate] = None
        else:
            raise GolfError(f"{path}: no such file or folder")
    return list(found)


def seed_of(path: Path, parsed: ParsedRun) -> int | None:
    """From the file name (train_seed42.log), else the log's own `seed` setting."""
    match = _SEED_IN_NAME.search(path.stem)
    if match:
        return int(match.group(1))
    value = parsed.config.get("seed")
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def env_config(parsed: ParsedRun) -> dict[str, str]:
    """The log's settings under env-var names (`train_seq_len` → `TRAIN_SEQ_LEN`)."""
    return {key.upper(): value for key, value in sorted(parsed.config.items())}


def ingest_paths(store: Any, paths: Sequence[str | Path], update: bool = False) -> IngestReport:
    """Parse every log under `paths` and add one run per distinct log to the store.

    Everything is read and parsed before the first write; each run and its steps are written in one transaction.
    With `update`, runs already ingested from the same bytes are parsed again and replaced.
    """
    report = IngestReport()
    logs = _read_logs(find_logs(paths), report)
    submissions = _submissions({log.record for log in logs if log.record is not None}, report)
    planned: list[tuple[LogFile, ParsedRun]] = []
    for log in _dedupe(logs, report):
        recorded = _recorded_by_golf(store, log.path)
        if recorded is not None:  # a golf run's own train.log: repair that row rather than add a second run
            from golf.launch.repair import repair_run

            repaired = repair_run(store, recorded)
            report.items.append(IngestItem(log.path, "repaired", repaired.run_id, "a golf run's log: row repaired"))
            continue
        parsed = last_validation_as_score(parse_text(log.text))
        if not parsed.has_content:
            report.items.append(IngestItem(log.path, "skipped", detail="no training-log lines"))
            continue
        planned.append((log, parsed))
        report.warnings += _result_file_check(log.path, parsed)
    built: list[tuple[Any, dict, bool, LogFile, ParsedRun]] = []
    names: set[str] = set()
    for log, parsed in planned:
        existing = store.get(log.run_id)
        exists = existing is not None
        if exists and not update:
            report.items.append(IngestItem(log.path, "exists", log.run_id, "already ingested (same bytes)"))
            continue
        run, steps = build_run(store, log, parsed, submissions.get(log.record) if log.record else None,
                               name=existing.name if existing is not None else None, taken=names)
        names.add(run.name)
        built.append((run, steps, exists, log, parsed))
    runs = [b[0] for b in built]
    _link_eval_children(store, runs)
    _reported_stages(built, submissions)
    _mixed_config_flags(runs)
    for run, steps, exists, log, parsed in built:
        store.put_run(run, steps, replace=exists)
        report.items.append(IngestItem(log.path, "updated" if exists else "added", run.id))
        if parsed.malformed:
            report.warnings.append(f"{log.path}: {parsed.malformed} malformed lines skipped")
    _seed_flags(store, {run.group_hash for run in runs})
    return report


def _recorded_by_golf(store: Any, path: Path) -> str | None:
    """The id of the golf run whose train.log `path` is, if any."""
    rows = store.query("SELECT id FROM run WHERE source = 'golf' AND log_path = ?", (str(path.resolve()),))
    return rows[0]["id"] if rows else None


def build_run(store: Any, log: LogFile, parsed: ParsedRun, submission: Submission | None,
              name: str | None = None, taken: set[str] | None = None) -> tuple[Any, dict]:
    """The Run row (not yet stored) and step rows for one parsed log; `name` keeps a replaced run's name, `taken`
    are names given to runs of this ingest not yet written."""
    from golf.store.fields import fields_from_parsed
    from golf.store.models import Run

    config = env_config(parsed)
    seed = seed_of(log.path, parsed)
    config_hash = grouping.config_hash_of(config)
    folder = log.record.name if log.record is not None else None
    trainer = log.record / "train_gpt.py" if log.record is not None else None
    code_hash = hashlib.sha256(trainer.read_bytes()).hexdigest() if trainer and trainer.is_file() else None
    group_hash = grouping.group_hash_of(config_hash, code_hash, folder, log.sha256, parsed.eval_only)
    if parsed.diverged:
        status = "diverged"
    elif parsed.complete:
        status = "completed"
    else:
        status = "failed"
    base = f"{folder}-s{seed}" if folder and seed is not None else (folder or log.path.stem)
    if folder is None and seed is not None and str(seed) not in log.path.stem:
        base += f"-s{seed}"
    if parsed.eval_only:
        base += "-eval"
    if name is None:
        name = store.unique_name(base)
        n = 2
        while name in (taken or set()):
            name, n = store.unique_name(f"{base}-{n}"), n + 1
    non_record = parsed.non_record_reason
    if non_record is None and submission is not None and submission.non_record:
        non_record = f"non-record track ({submission.track or 'track_non_record_16mb'})"
    fields = fields_from_parsed(parsed)
    fields.update(
        non_record_reason=non_record,
        stop_reason=parsed.stop_reason or (None if status != "failed" else "incomplete log (no final score)"))
    run = Run(
        id=log.run_id, name=name, config=config, config_hash=config_hash,
        code_hash=code_hash, group_hash=group_hash, seed=seed, status=status, started_at=_started_at(log, submission),
        trainer=str(trainer) if trainer and trainer.is_file() else None, nproc=_int(config.get("WORLD_SIZE")),
        source="ingested", source_path=str(log.path.resolve()), log_path=str(log.path.resolve()),
        record_name=folder,
        record_author=submission.author if submission else None,
        record_github_id=submission.github_id if submission else None,
        record_date=submission.date if submission else None,
        reported_bpb=submission.val_bpb if submission else None,
        compliance=compliance.run_flags(parsed, trainer), **fields,
    )
    return run, parsed.curve


def last_validation_as_score(parsed: ParsedRun) -> ParsedRun:
    """A log that ends training with a `step:N/M val_loss val_bpb` line and prints no result line (early and
    non-record trainers) counts that validation as its score: the trained weights', so the pre-quant stage."""
    from golf.logparse.parser import StageValue

    if parsed.stages or parsed.steps is None:
        return parsed
    row = parsed.curve.get(parsed.steps, {})
    finished = parsed.stop_reason is not None or parsed.steps == parsed.iterations
    if finished and "val_bpb" in row:
        parsed.stages["pre_quant"] = StageValue(row.get("val_loss"), row["val_bpb"], False,
                                                f"step:{parsed.steps}/{parsed.iterations} val_bpb", None)
    return parsed


def _result_file_check(path: Path, parsed: ParsedRun) -> list[str]:
    """A `<log stem>_result.json` beside a log (#1787's ttt_pr1767/seed_42_result.json) states the log's scores
    again (`<stage>_val_bpb`, `<stage>_val_loss`, `<stage>_eval_time_ms`): a value the log does not agree with is a
    warning (the log's value is kept)."""
    result = path.with_name(f"{path.stem}_result.json")
    if not result.is_file():
        return []
    try:
        data = json.loads(result.read_text(encoding="utf-8", errors="replace"))
    except ValueError as exc:
        return [f"{result}: not readable JSON ({exc})"]
    out = []
    for stage, value in parsed.stages.items():
        for key, mine in ((f"{stage}_val_bpb", value.val_bpb), (f"{stage}_val_loss", value.val_loss),
                          (f"{stage}_eval_time_ms", value.eval_time_ms)):
            stated = data.get(key) if isinstance(data, dict) else None
            if isinstance(stated, (int, float)) and mine is not None and abs(stated - mine) > 1e-9 * max(1, abs(mine)):
                out.append(f"{result}: {key} {stated} but {path.name} says {mine}")
    return out


def _link_eval_children(store: Any, runs: list[Any]) -> None:
    """Eval-only runs point at the training run whose artifact they re-score (this ingest's runs, then the store's
    runs of the same record)."""
    for run in runs:
        if not _is_eval_only(run):
            continue
        candidates = [r for r in runs if not _is_eval_only(r)]
        if run.record_name is not None:
            candidates += [r for r in store.list_runs(source="ingested") if r.record_name == run.record_name]
        run.parent_id = grouping.parent_of(run, candidates)


def _is_eval_only(run: Any) -> bool:
    return bool((run.log_events or {}).get("eval_only")) or (run.steps in (None, 0) and run.final_bpb is not None)


def _reported_stages(built: list[tuple[Any, dict, bool, LogFile, ParsedRun]],
                     submissions: dict[Path, Submission]) -> None:
    """Per record folder: the stage of each group that equals its submission's val_bpb (golf.ingest.grouping)."""
    by_folder: dict[Path, list[tuple[Any, ParsedRun]]] = {}
    for run, _steps, _exists, log, parsed in built:
        if log.record is not None and log.record in submissions:
            by_folder.setdefault(log.record, []).append((run, parsed))
    for folder, members in by_folder.items():
        sub = submissions[folder]
        groups: dict[str, list[dict[str, float]]] = {}
        seeds: dict[str, list[int | None]] = {}
        for run, parsed in members:
            groups.setdefault(run.group_hash, []).append(grouping.stage_values(parsed))
            seeds.setdefault(run.group_hash, []).append(run.seed)
        if sub.val_bpb is None:
            continue
        found = grouping.reported_stage(groups, sub.val_bpb, sub.seed_bpbs, seeds)
        for run, parsed in members:
            match = found.get(run.group_hash)
            if match is None:
                continue
            stage, how = match
            value = parsed.stages.get(stage)
            # a best-seed submission: only the run that reports the value itself carries the stage
            if how != "single" or value is not None and grouping.equals_reported(value.val_bpb, sub.val_bpb):
                run.reported_stage = stage


def _mixed_config_flags(runs: list[Any]) -> None:
    """A record whose training logs fall into several groups: every such run says how its configuration differs."""
    by_folder: dict[str, dict[str, list[Any]]] = {}
    for run in runs:
        if run.record_name is not None and run.parent_id is None and not _is_eval_only(run):
            by_folder.setdefault(run.record_name, {}).setdefault(run.group_hash, []).append(run)
    for groups in by_folder.values():
        if len(groups) < 2:
            continue
        identity = {g: _identity(members[0].config) for g, members in groups.items()}
        for group_hash, members in groups.items():
            others = [identity[g] for g in groups if g != group_hash]
            evidence = compliance.config_difference(identity[group_hash], others)
            for run in members:
                run.compliance = [*(run.compliance or []), compliance.flag("mixed_configs", evidence)]


def _identity(config: dict[str, Any] | None) -> dict[str, Any]:
    from golf.analysis.groups import is_identity_key

    return {k: v for k, v in (config or {}).items() if is_identity_key(k)}


def _seed_flags(store: Any, group_hashes: set[str | None]) -> None:
    """Every run of a group carries `few_seeds` while the group has fewer than three seeds (recounted over the
    store, so a group completed by a later ingest loses the flag)."""
    for group_hash in group_hashes:
        if group_hash is None:
            continue
        members = [r for r in store.list_runs(source="ingested") if r.group_hash == group_hash]
        flag = compliance.seed_flag({r.seed for r in members if r.seed is not None})
        for run in members:
            kept = [f for f in run.compliance or [] if f.get("flag") != "few_seeds"]
            if flag is not None:
                kept.append(flag)
            if kept != (run.compliance or []):
                store.update_run(run.id, compliance=kept)


def _read_logs(paths: Sequence[Path], report: IngestReport) -> list[LogFile]:
    logs = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.items.append(IngestItem(path, "skipped", detail=f"unreadable: {exc.strerror or exc}"))
            continue
        text = data.decode("utf-8", errors="replace")
        logs.append(LogFile(path, text, hashlib.sha256(data).hexdigest(), record_folder_of(path)))
    return logs


def _dedupe(logs: Sequence[LogFile], report: IngestReport) -> list[LogFile]:
    """One log per content hash: the copy whose name carries the seed, else the shortest name."""
    by_hash: dict[str, list[LogFile]] = {}
    for log in logs:
        by_hash.setdefault(log.sha256, []).append(log)
    keep: set[int] = set()
    for copies in by_hash.values():
        best = min(copies, key=lambda g: (_SEED_IN_NAME.search(g.path.stem) is None, len(g.path.name), str(g.path)))
        keep.add(id(best))
        for other in copies:
            if other is not best:
                report.items.append(IngestItem(other.path, "duplicate", best.run_id, f"same bytes as {best.path}"))
    return [log for log in logs if id(log) in keep]


def _submissions(folders: Iterable[Path], report: IngestReport) -> dict[Path, Submission]:
    out = {}
    for folder in sorted(folders):
        path = folder / "submission.json"
        if not path.is_file():
            path = next(iter(sorted(folder.glob("submission*.json"))), path)
        try:
            out[folder] = read_submission(path)
        except SubmissionError as exc:
            report.warnings.append(f"{exc} (record metadata left empty)")
    return out


def _started_at(log: LogFile, submission: Submission | None) -> datetime:
    match = _FIRST_TIMESTAMP.search(log.text[:200_000])
    if match:
        return datetime.fromtimestamp(float(match.group(1))).astimezone()
    if submission is not None and submission.date:
        return datetime.fromisoformat(submission.date).astimezone()
    return datetime.fromtimestamp(log.path.stat().st_mtime).astimezone()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
