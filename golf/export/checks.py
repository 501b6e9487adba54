"""The compliance checks of a record folder: each one a verdict (pass ✅, fail ❌, warn ⚠️) and the figure behind it.

Limits come from golf.trainer.limits (BYTES_CAP, TIME_BUDGET_S, TIME_SLACK_S: a wallclock-capped run stops at the
first step boundary past the cap, as the challenge's own baseline does at 600.04 s). On the non-record track the
10-minute limits and the significance rule do not apply: breaking them warns instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from golf.analysis.stats import Delta, Rule, p_phrase, signed
from golf.trainer.limits import BYTES_CAP, TIME_BUDGET_S, TIME_SLACK_S

RECORD_TRACK = "10min_16mb"
NON_RECORD_TRACK = "non_record_16mb"
TRACKS = (RECORD_TRACK, NON_RECORD_TRACK)
MIN_SEEDS = 3
MARKS = {"pass": "✅", "fail": "❌", "warn": "⚠️"}


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    status: str  # pass | fail | warn
    figure: str

    @property
    def mark(self) -> str:
        return MARKS[self.status]

    def line(self) -> str:
        """The README's compliance line."""
        return f"- {self.mark} **{self.title}**: {self.figure}"

    def as_dict(self) -> dict[str, str]:
        return {"key": self.key, "title": self.title, "status": self.status, "figure": self.figure}


@dataclass(frozen=True)
class SeedFigures:
    """What the checks read of one seed's run."""

    seed: int
    model_bytes: int
    code_bytes: int
    train_time_ms: float | None
    eval_time_ms: float | None  # golf's count: every evaluation after training
    train_incl_gptq_s: float | None = None  # the records' training clock: the steps plus GPTQ calibration
    gptq_time_s: float | None = None
    record_eval_time_ms: float | None = None  # the records' count: the final scoring pass (the TTT loop)

    @property
    def artifact_bytes(self) -> int:
        return self.model_bytes + self.code_bytes


def bytes_check(seeds: Sequence[SeedFigures]) -> Check:
    worst = max(seeds, key=lambda s: s.artifact_bytes)
    left = BYTES_CAP - worst.artifact_bytes
    room = f"{left:,} left" if left >= 0 else f"{-left:,} over"
    figure = (f"largest {worst.artifact_bytes:,} bytes (seed {worst.seed}: model {worst.model_bytes:,} + code "
              f"{worst.code_bytes:,} of the shipped train_gpt.py) vs cap {BYTES_CAP:,} ({room})")
    return Check("bytes", f"Artifact ≤ {BYTES_CAP:,} bytes, every seed", "pass" if left >= 0 else "fail", figure)


def train_time_check(seeds: Sequence[SeedFigures], track: str) -> Check:
    """The training clock as the records count it: the steps plus GPTQ calibration (Hessians, self-generated
    sequences), which must fit the same 600 s. A row from before golf recorded it falls back to the steps' time."""
    values, notes = [], {}
    for s in seeds:
        if s.train_incl_gptq_s is not None:
            values.append((s.seed, s.train_incl_gptq_s))
            if s.gptq_time_s and s.train_time_ms is not None:
                notes[s.seed] = f"steps {s.train_time_ms / 1000:.1f} s + GPTQ/calibration {s.gptq_time_s:.1f} s"
        else:
            values.append((s.seed, None if s.train_time_ms is None else s.train_time_ms / 1000))
            notes[s.seed] = "steps only: no GPTQ/calibration time in the run's row"
    return _limit_check("train_time", f"Train time incl. GPTQ/calibration ≤ {TIME_BUDGET_S:.0f} s", values, notes,
                        track)


def eval_time_check(seeds: Sequence[SeedFigures], track: str) -> Check:
    """Evaluation time as the records count it (the final scoring pass: the TTT loop for a TTT result), with
    golf's total after training beside it; golf's total where the records' count is not in the row."""
    values, notes = [], {}
    for s in seeds:
        ms = s.record_eval_time_ms if s.record_eval_time_ms is not None else s.eval_time_ms
        values.append((s.seed, None if ms is None else ms / 1000))
        if s.record_eval_time_ms is None:
            notes[s.seed] = "golf's total after training: the records' count is not in the run's row"
        elif s.eval_time_ms is not None:
            notes[s.seed] = f"golf's total after training {s.eval_time_ms / 1000:.1f} s"
    return _limit_check("eval_time", f"Evaluation time ≤ {TIME_BUDGET_S:.0f} s, as the records count it (the final "
                        "scoring pass: the TTT loop)", values, notes, track)


def _limit_check(key: str, title: str, values: Sequence[tuple[int, float | None]], notes: dict[int, str],
                 track: str) -> Check:
    missing = [seed for seed, s in values if s is None]
    if missing:
        return Check(key, title, "warn", f"not in the log of seed {', '.join(map(str, missing))}")
    seed, worst = max(((seed, s) for seed, s in values if s is not None), key=lambda sv: sv[1])
    figure = f"longest {worst:.1f} s (seed {seed}{': ' + notes[seed] if seed in notes else ''})"
    if worst <= TIME_BUDGET_S + TIME_SLACK_S:
        if worst > TIME_BUDGET_S:
            figure += f"; stops at the first step past the cap (≤ {TIME_SLACK_S:g} s over, as the baseline does)"
        return Check(key, title, "pass", figure)
    if track == NON_RECORD_TRACK:
        return Check(key, title, "warn", figure + " — over the 10-minute budget (allowed on the non-record track; "
                                                  "say so in the README)")
    return Check(key, title, "fail", figure + f" — over the {TIME_BUDGET_S:.0f} s budget")


def seeds_check(seeds: Sequence[int], duplicates: Sequence[int]) -> Check:
    figure = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"
    if duplicates:
        figure += f"; seed {', '.join(map(str, duplicates))} ran more than once: the newest run of each is shipped"
    if len(seeds) >= MIN_SEEDS:
        return Check("seeds", f"At least {MIN_SEEDS} seeds", "pass", figure)
    return Check("seeds", f"At least {MIN_SEEDS} seeds", "warn",
                 figure + f" — records usually show {MIN_SEEDS} to make p < 0.01 credible")


def significance_check(delta: Delta | None, rule: Rule, baseline_label: str | None, track: str,
                       n_base: int | None, n_this: int) -> Check:
    title = f"≥ {rule.min_delta_nats:g} nats better at p < {rule.alpha:g} (one-sided Welch)"
    if delta is None or baseline_label is None:
        return Check("significance", title, "warn",
                     "no baseline given: pass --against RUN_OR_GROUP or --sota-bpb/--sota-std/--sota-n")
    parts = [f"vs {baseline_label} (n={n_base} vs {n_this})"]
    if delta.delta_nats is not None:
        parts.append(f"Δ {signed(delta.delta_nats)} nats")
    if delta.delta_bpb is not None:
        parts.append(f"Δ {signed(delta.delta_bpb)} bpb")
    if delta.p_value_vs_threshold is not None:
        parts.append(f"{p_phrase(delta.p_value_vs_threshold)} for Δ < −{rule.min_delta_nats:g} nats")
    figure = ", ".join(parts) + f" — {delta.verdict}: {delta.reason}"
    if delta.verdict == "pass":
        return Check("significance", title, "pass", figure)
    return Check("significance", title, "warn" if track == NON_RECORD_TRACK else "fail", figure)


def evaluation_check(reason: str | None) -> Check:
    title = "Scores tokens before adapting to them"
    if reason is None:
        return Check("evaluation", title, "pass", "no test-time training, or the legal score-first form")
    return Check("evaluation", title, "warn", f"non-record: {reason}")


def secrets_check(redacted: dict[str, list[str]]) -> Check:
    title = "No secrets (provider tokens, auth headers, URL credentials, *_TOKEN/*_KEY/*_SECRET/PASSWORD values)"
    if not any(redacted.values()):
        return Check("secrets", title, "pass", "none in the baked knobs, the logs or the generated files")
    where = "; ".join(f"{file}: {len(names)} × {', '.join(sorted(set(names)))}"
                      for file, names in sorted(redacted.items()) if names)
    return Check("secrets", title, "warn", f"redacted in the copied logs ({where}); review them before publishing")


def hardware_check(hardware: str, nproc: int | None, gpu_name: str | None) -> Check:
    title = "Ran on 8×H100"
    if nproc == 8 and gpu_name and "H100" in gpu_name:
        return Check("hardware", title, "pass", hardware)
    return Check("hardware", title, "warn",
                 f"{hardware}: the times above are not the challenge's hardware's; rerun on 8×H100 for a record")


def dataset_check(dataset: str | None, shipped: str) -> Check:
    title = "Trained on a challenge dataset"
    if dataset and dataset.startswith("fineweb10B_"):
        return Check("dataset", title, "pass", f"{dataset} (the shipped file reads {shipped})")
    return Check("dataset", title, "warn", f"trained on {dataset or 'unknown data'}, not the challenge's FineWeb "
                                           f"export; the shipped file reads {shipped}")


def metadata_check(author: str | None, github_id: str | None) -> Check:
    missing = [flag for flag, value in (("--author", author), ("--github-id", github_id)) if not value]
    if missing:
        return Check("metadata", "Author and GitHub id", "warn", f"missing: pass {' and '.join(missing)}")
    return Check("metadata", "Author and GitHub id", "pass", f"{author} (@{github_id})")


def code_check(code_hash: str, code_bytes: int, pack: str) -> Check:
    return Check("code", "train_gpt.py is the code that made these runs", "pass",
                 f"generated from golf's trainer sources sha256 {code_hash[:16]} (the runs' code_hash); "
                 f"{code_bytes:,} bytes, pack={pack}")


def verdict(checks: Sequence[Check]) -> str:
    """pass (all ✅), warn (some ⚠️) or fail (some ❌)."""
    statuses = {c.status for c in checks}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"


def check_rows(checks: Sequence[Check]) -> list[dict[str, Any]]:
    return [{"mark": c.mark, **c.as_dict()} for c in checks]
