"""Community training logs → runs marked `source="ingested"`.

Every file is parsed by golf.logparse (the same parser the launcher streams through). A log inside a record
folder (one with submission.json) joins that record's group and carries its name, author, date and reported
val_bpb. A run's id comes from the sha256 of the log's bytes, so ingesting a file twice, or two identical
copies of one log (train.log == train_seed1337.log), gives one run.
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

from golf.analysis.groups import is_identity_key
from golf.errors import GolfError
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
    action: str  # added | updated | exists | duplicate | skipped
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
        return [i.run_id for i in self.items if i.run_id and i.action in ("added", "updated", "exists")]

    def summary(self) -> str:
        parts = [f"{self.count('added')} added"]
        for action, words in (("updated", "updated"), ("exists", "already in the store"),
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


def config_hash_of(config: dict[str, str]) -> str | None:
    identity = {k: v for k, v in config.items() if is_identity_key(k)}
    if not identity:
        return None
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def record_group_hash(folder_name: str) -> str:
    return hashlib.sha256(f"record:{folder_name}".encode()).hexdigest()[:16]


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
        parsed = parse_text(log.text)
        if not parsed.has_content:
            report.items.append(IngestItem(log.path, "skipped", detail="no training-log lines"))
            continue
        planned.append((log, parsed))
    for log, parsed in planned:
        existing = store.get(log.run_id)
        exists = existing is not None
        if exists and not update:
            report.items.append(IngestItem(log.path, "exists", log.run_id, "already ingested (same bytes)"))
            continue
        run, steps = build_run(store, log, parsed, submissions.get(log.record) if log.record else None,
                               name=existing.name if existing is not None else None)
        store.put_run(run, steps, replace=exists)
        report.items.append(IngestItem(log.path, "updated" if exists else "added", run.id))
        if parsed.malformed:
            report.warnings.append(f"{log.path}: {parsed.malformed} malformed lines skipped")
    return report


def build_run(store: Any, log: LogFile, parsed: ParsedRun, submission: Submission | None,
              name: str | None = None) -> tuple[Any, dict]:
    """The Run row (not yet stored) and step rows for one parsed log; `name` keeps a replaced run's name."""
    from golf.store.models import Run

    config = env_config(parsed)
    seed = seed_of(log.path, parsed)
    config_hash = config_hash_of(config)
    folder = log.record.name if log.record is not None else None
    if folder is not None:
        group_hash = record_group_hash(folder)
    elif config_hash is not None:
        group_hash = hashlib.sha256(f"log:{config_hash}".encode()).hexdigest()[:16]
    else:  # nothing to group by: a group of its own
        group_hash = hashlib.sha256(f"file:{log.sha256}".encode()).hexdigest()[:16]
    trainer = log.record / "train_gpt.py" if log.record is not None else None
    code_hash = hashlib.sha256(trainer.read_bytes()).hexdigest() if trainer and trainer.is_file() else None
    if parsed.diverged:
        status = "diverged"
    elif parsed.complete:
        status = "completed"
    else:
        status = "failed"
    base = f"{folder}-s{seed}" if folder and seed is not None else (folder or log.path.stem)
    if folder is None and seed is not None and str(seed) not in log.path.stem:
        base += f"-s{seed}"
    non_record = parsed.non_record_reason
    if non_record is None and submission is not None and submission.non_record:
        non_record = f"non-record track ({submission.track or 'track_non_record_16mb'})"
    metrics = parsed.metrics()
    run = Run(
        id=log.run_id, name=name or store.unique_name(base), config=config, config_hash=config_hash,
        code_hash=code_hash, group_hash=group_hash, seed=seed, status=status, started_at=_started_at(log, submission),
        trainer=str(trainer) if trainer and trainer.is_file() else None, nproc=_int(config.get("WORLD_SIZE")),
        source="ingested", source_path=str(log.path.resolve()), log_path=str(log.path.resolve()),
        record_name=folder,
        record_author=submission.author if submission else None,
        record_github_id=submission.github_id if submission else None,
        record_date=submission.date if submission else None,
        reported_bpb=submission.val_bpb if submission else None,
        non_record_reason=non_record, malformed_lines=parsed.malformed, bytes_breakdown=parsed.bytes_breakdown,
        iterations=parsed.iterations, peak_mem_reserved_mib=parsed.peak_mem_reserved_mib,
        quant_label=parsed.quant_label,
        stop_reason=parsed.stop_reason or (None if status != "failed" else "incomplete log (no final score)"),
        **{k: v for k, v in metrics.items() if k not in ("iterations",)},
    )
    return run, parsed.curve


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
