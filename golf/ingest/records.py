"""Record folders and their submission.json, read tolerantly.

The official repo's 58 submission files use 39 different key sets (parameter-golf-facts §4.2): `val_bpb` may be
missing (`mean_val_bpb`, per-seed results), `val_loss` may hold a bpb, `bytes_total` may be missing
(`artifact_bytes`, `artifact_size_bytes`), `seeds` is a list or a dict. `read_submission` maps all of them onto
one `Submission`, noting every guess it made; a file it cannot use raises SubmissionError (one line).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golf.errors import GolfError

SUBMISSION_GLOB = "submission*.json"
# A bpb is about 1.0–1.3 on every tokenizer; a val_loss in nats/token is ≥ 1.7 for sp1024 and larger vocabularies
# and ≤ 0.9 for byte-level ones. A "val_loss" inside the bpb band (and no val_bpb) is a bpb written in the wrong key.
_BPB_BAND = (0.95, 1.6)


class SubmissionError(GolfError):
    pass


@dataclass
class Submission:
    path: Path
    folder: str  # the record folder's name (how golf refers to the record)
    label: str  # folder name, plus the variant for submission_<variant>.json
    name: str | None = None
    author: str | None = None
    github_id: str | None = None
    date: str | None = None  # YYYY-MM-DD
    val_bpb: float | None = None
    val_bpb_std: float | None = None
    val_loss: float | None = None
    n_seeds: int | None = None
    seeds: list[int] = field(default_factory=list)
    seed_bpbs: dict[int, float] = field(default_factory=dict)  # per-seed val_bpb where the file gives them
    bytes_total: int | None = None  # the largest artifact over seeds where per-seed sizes are given
    bytes_code: int | None = None
    step_avg_ms: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    track: str | None = None
    notes: list[str] = field(default_factory=list)  # guesses made while reading

    @property
    def non_record(self) -> bool:
        track = (self.track or "") + " " + str(self.path)
        return "non_record" in track or "non-record" in track

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["path"] = str(self.path)
        out["non_record"] = self.non_record
        return out


def find_submissions(path: Path) -> list[Path]:
    """submission*.json files of a parameter-golf checkout (PATH/records/<track>/<folder>/), a records folder,
    a track folder, or one record folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise GolfError(f"{path}: no such folder (expected a parameter-golf checkout or a records folder)")
    base = path / "records" if (path / "records").is_dir() else path
    found: list[Path] = []
    for depth in range(3):
        found += sorted(base.glob("/".join(["*"] * depth + [SUBMISSION_GLOB])))
    return found


def read_submission(path: Path) -> Submission:
    """One submission file as a Submission; SubmissionError when it is unreadable or has no usable score."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        raise SubmissionError(f"{path}: not readable JSON ({_short(exc)})") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if isinstance(data.get("results"), dict):  # some files nest the scores: {"results": {"seeds": ..., "mean_val_bpb"}}
        data = {**data["results"], **{k: v for k, v in data.items() if k != "results"}}
    folder = path.parent.name
    variant = path.stem.removeprefix("submission").lstrip("_-")
    sub = Submission(path=path, folder=folder, label=f"{folder} [{variant}]" if variant else folder)
    sub.name = _text(data.get("name"))
    sub.author = _text(data.get("author"))
    sub.github_id = _text(data.get("github_id"))
    sub.date = _date(data.get("date")) or _date(folder[:10])
    sub.track = _text(data.get("track"))
    per_seed = _per_seed(data)
    sub.seeds = sorted(per_seed) if per_seed else _seed_list(data)
    sub.n_seeds = len(per_seed) or len(sub.seeds) or (1 if _num(data.get("seed")) is not None else None)
    _score(sub, data, per_seed)
    _sizes(sub, data, per_seed)
    _times(sub, data, per_seed)
    return sub


def read_submissions(paths: Iterable[Path]) -> tuple[list[Submission], list[str]]:
    """Every readable submission, and one warning per file skipped."""
    subs, warnings = [], []
    for path in paths:
        try:
            subs.append(read_submission(path))
        except SubmissionError as exc:
            warnings.append(str(exc))
    return subs, warnings


# -- fields --------------------------------------------------------------------------------------------------------

def _score(sub: Submission, data: dict[str, Any], per_seed: dict[int, dict[str, Any]]) -> None:
    sub.seed_bpbs = {seed: v for seed, r in per_seed.items() if (v := _num(r.get("val_bpb"))) is not None}
    if not sub.seed_bpbs and isinstance(data.get("val_bpb_seeds"), dict):
        sub.seed_bpbs = {int(m.group()): v for k, raw in data["val_bpb_seeds"].items()
                         if (m := re.search(r"\d+", str(k))) and (v := _num(raw)) is not None}
    seed_bpbs = list(sub.seed_bpbs.values())
    seed_losses = [v for v in (_num(r.get("val_loss")) for r in per_seed.values()) if v is not None]
    bpb = _num(data.get("val_bpb"))
    if bpb is None:
        bpb = _num(data.get("mean_val_bpb"))
        if bpb is not None:
            sub.notes.append("val_bpb from mean_val_bpb")
    if bpb is None and seed_bpbs:
        bpb = statistics.fmean(seed_bpbs)
        sub.notes.append("val_bpb = mean of seed_results")
    loss = _num(data.get("val_loss"))
    if bpb is None and loss is not None and _BPB_BAND[0] <= loss <= _BPB_BAND[1]:
        bpb, loss = loss, None
        sub.notes.append("val_loss holds a bpb")
    if bpb is None or not math.isfinite(bpb):
        raise SubmissionError(f"{sub.path}: no val_bpb (nor mean_val_bpb, seed_results, or a bpb in val_loss)")
    sub.val_bpb = bpb
    sub.val_loss = loss if loss is not None else (statistics.fmean(seed_losses) if seed_losses else None)
    std = _num(data.get("val_bpb_std"))
    if std is None and len(seed_bpbs) >= 2:
        std = statistics.stdev(seed_bpbs)
    sub.val_bpb_std = std


def _sizes(sub: Submission, data: dict[str, Any], per_seed: dict[int, dict[str, Any]]) -> None:
    seed_bytes = [v for r in per_seed.values() for v in [_int(_first(r, "artifact_bytes", "bytes_total",
                                                                    "total_bytes"))] if v is not None]
    candidates = [("seed_results", max(seed_bytes) if seed_bytes else None)]
    candidates += [(k, _int(data.get(k))) for k in ("artifact_bytes_max", "bytes_total", "artifact_bytes",
                                                    "artifact_size_bytes", "total_bytes", "artifact_bytes_mean")]
    for key, value in candidates:
        if value is not None:
            sub.bytes_total = value
            if key not in ("seed_results", "artifact_bytes_max", "bytes_total"):
                sub.notes.append(f"bytes from {key}")
            break
    sub.bytes_code = _int(_first(data, "bytes_code", "code_bytes"))


def _seconds(row: dict[str, Any], name: str) -> float | None:
    """A per-seed duration written as `<name>_s`, `<name>_seconds` or `<name>_ms`, in seconds."""
    seconds = _num(_first(row, f"{name}_s", f"{name}_seconds"))
    if seconds is None and (ms := _num(row.get(f"{name}_ms"))) is not None:
        seconds = ms / 1000
    return seconds


def _times(sub: Submission, data: dict[str, Any], per_seed: dict[int, dict[str, Any]]) -> None:
    rows = list(per_seed.values())
    ms = [v for v in (_num(_first(r, "step_avg_ms", "ms_per_step")) for r in rows) if v is not None]
    sub.step_avg_ms = _num(_first(data, "step_avg_ms_mean", "step_avg_ms", "ms_per_step")) or \
        (statistics.fmean(ms) if ms else None)
    train = [v for v in (_seconds(r, "train_time") for r in rows) if v is not None]
    sub.train_time_s = _num(_first(data, "wallclock_seconds", "train_time_s", "train_time_seconds")) or \
        (max(train) if train else None)
    evals = [v for v in (_seconds(r, "eval_time") or _seconds(r, "ttt_eval_time") for r in rows) if v is not None]
    sub.eval_time_s = _num(_first(data, "eval_time_seconds", "eval_time_s")) or (max(evals) if evals else None) or \
        _num(data.get("eval_time_s_mean"))


def _per_seed(data: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """seed -> metrics from `seed_results` or a dict-valued `seeds` (keys may be "42" or "seed_42")."""
    keyed = {k: v for k, v in data.items() if re.fullmatch(r"seed_\d+", k) and isinstance(v, dict)}
    for key in ("seed_results", "seeds", "per_seed"):
        value = data.get(key)
        if isinstance(value, dict):
            out = {}
            for seed, metrics in value.items():
                number = re.search(r"\d+", str(seed))
                if number and isinstance(metrics, dict):
                    out[int(number.group())] = metrics
            if out:
                return out
    return {int(k.removeprefix("seed_")): v for k, v in keyed.items()}


def _seed_list(data: dict[str, Any]) -> list[int]:
    value = data.get("seeds")
    if isinstance(value, list):
        return [int(v) for v in (_num(s) for s in value) if v is not None and float(v).is_integer()]
    return []


def _first(data: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else (str(value) if value is not None else None)


def _date(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    match = re.match(r"(\d{4}-\d{2}-\d{2})", value.strip())
    return match.group(1) if match else None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120]


# -- record folders --------------------------------------------------------------------------------------------

def record_folder_of(log: Path) -> Path | None:
    """The log's folder, or the one above it, when it holds a submission*.json: the record the log belongs to
    (records keep logs beside submission.json or in a subfolder such as logs/)."""
    folder = log.parent
    for _ in range(2):
        if any(folder.glob(SUBMISSION_GLOB)):
            return folder
        if folder.parent == folder:
            return None
        folder = folder.parent
    return None
