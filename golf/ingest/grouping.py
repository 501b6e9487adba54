"""Which group an ingested log joins, which training run an eval-only log re-scores, and which stage a record's
submission.json reports.

A group is one configuration: the hyperparameters the log prints (its `Hyperparameters:` block, or the old one-line
settings) minus the seed, paths and per-rank bookkeeping, plus the trainer's code (the record's train_gpt.py, else
the record folder). So a folder holding two configurations gives two groups, and an eval-only re-run of saved
artifacts (TTT_EVAL_ONLY) is a group of its own whose runs point at their training runs through `parent_id`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Sequence
from typing import Any

from golf.analysis.groups import is_identity_key
from golf.logparse import ParsedRun
from golf.trainer.stages import BY_PRECEDENCE

# Hyperparameters that name where a run's artifact went: an eval-only log printing the same value re-scores it.
ARTIFACT_KEYS = ("QUANTIZED_MODEL_PATH", "MODEL_PATH", "ARTIFACT_DIR", "EVAL_ONLY_PATH")


def config_hash_of(config: dict[str, str]) -> str | None:
    identity = {k: v for k, v in config.items() if is_identity_key(k)}
    if not identity:
        return None
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def group_hash_of(config_hash: str | None, code_hash: str | None, folder: str | None, file_sha256: str,
                  eval_only: bool) -> str:
    """Same printed configuration and same trainer: one group. Without a printed configuration a record folder is
    the group (as the challenge counts it), else the file is."""
    kind = "eval" if eval_only else "train"
    if config_hash is not None:
        key = f"{kind}:{config_hash}:{code_hash or folder or ''}"
    elif folder is not None:
        key = f"record:{folder}" if not eval_only else f"record-eval:{folder}"
    else:
        key = f"file:{file_sha256}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def artifact_of(config: dict[str, Any] | None) -> str | None:
    """The artifact a run's log names (the first of ARTIFACT_KEYS it prints)."""
    for key in ARTIFACT_KEYS:
        value = (config or {}).get(key)
        if value:
            return str(value)
    return None


def parent_of(child: Any, candidates: Sequence[Any]) -> str | None:
    """The training run an eval-only run re-scored: the one whose log names the same artifact, else the one of the
    same record folder and seed."""
    artifact = artifact_of(child.config)
    trained = [c for c in candidates if c.id != child.id and getattr(c, "parent_id", None) is None
               and c.steps not in (None, 0)]
    if artifact is not None:
        same = [c for c in trained if artifact_of(c.config) == artifact]
        if same:
            return same[0].id
    if child.record_name is not None and child.seed is not None:
        same = [c for c in trained if c.record_name == child.record_name and c.seed == child.seed]
        if same:
            return same[0].id
    return None


def decimals_of(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 8


def equals_reported(value: float, reported: float) -> bool:
    """Whether a parsed figure is the reported one at the precision the submission wrote it."""
    return abs(value - reported) <= 0.5 * 10 ** -decimals_of(reported) + 1e-12


def stage_values(parsed: ParsedRun) -> dict[str, float]:
    return {stage: value.val_bpb for stage, value in parsed.stages.items()}


def reported_stage(groups: dict[str, list[dict[str, float]]], reported: float,
                   seed_bpbs: dict[int, float] | None = None, seeds: dict[str, list[int | None]] | None = None
                   ) -> dict[str, tuple[str, str] | None]:
    """For each group (group hash -> its runs' stage values): (stage, how) where `how` says what equals the
    submission: "mean" (the stage's mean over the group's runs is its val_bpb), "per_seed" (every run's stage is
    its seed's value in the submission; `seeds` names each group's run seeds) or "single" (one run's stage is the
    val_bpb: a best-seed submission); None where nothing does."""
    out: dict[str, tuple[str, str] | None] = {}
    for key, runs in groups.items():
        stage = _mean_stage(runs, reported)
        how = "mean"
        if stage is None and seed_bpbs and seeds:
            stage, how = _per_seed_stage(runs, seeds.get(key, []), seed_bpbs), "per_seed"
        if stage is None:
            stage, how = _single_stage(runs, reported), "single"
        out[key] = (stage, how) if stage is not None else None
    return out


def _order(stages: set[str]) -> list[str]:
    ranked = [s.name for s in BY_PRECEDENCE]
    return [s for s in ranked if s in stages] + sorted(stages - set(ranked))


def _mean_stage(runs: list[dict[str, float]], reported: float) -> str | None:
    if not runs:
        return None
    for stage in _order(set.intersection(*(set(r) for r in runs))):
        if equals_reported(statistics.fmean(r[stage] for r in runs), reported):
            return stage
    return None


def _single_stage(runs: list[dict[str, float]], reported: float) -> str | None:
    for stage in _order(set().union(*(set(r) for r in runs)) if runs else set()):
        if any(stage in r and equals_reported(r[stage], reported) for r in runs):
            return stage
    return None


def _per_seed_stage(runs: list[dict[str, float]], seeds: list[int | None], seed_bpbs: dict[int, float]
                    ) -> str | None:
    pairs = [(r, seed_bpbs[s]) for r, s in zip(runs, seeds, strict=True) if s is not None and s in seed_bpbs]
    if not pairs or len(pairs) < len(runs):
        return None
    for stage in _order(set.intersection(*(set(r) for r, _ in pairs))):
        if all(equals_reported(r[stage], value) for r, value in pairs):
            return stage
    return None
