"""Compliance flags on ingested runs, each with the evidence that raised it (the maintainers' review rules,
frontier-techniques.md): no training on validation tokens before scoring them, training within 600 s counting GPTQ,
evaluation within 600 s as the records count it, at most 16,000,000 bytes on the shipped file, three seeds.

`FLAGS` is the one list of flag names and what each means; `run_flags` reads one parsed log, `seed_flag` the
group-level rule. Flags are stored on the run as `[{"flag": name, "evidence": text}]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golf.logparse import ParsedRun
from golf.trainer.limits import BYTES_CAP, TIME_BUDGET_S, TIME_SLACK_S

FLAGS: dict[str, str] = {
    "trained_on_val": "trains on validation tokens before scoring them (pre-quant TTT or adapt-first TTT)",
    "over_train_time": f"training over {TIME_BUDGET_S:.0f} s, GPTQ outside the training clock counted",
    "over_eval_time": f"evaluation over {TIME_BUDGET_S:.0f} s as the records count it (the final scoring pass)",
    "over_bytes": f"shipped artifact over {BYTES_CAP:,} bytes (model + the train_gpt.py shipped)",
    "few_seeds": "fewer than 3 seeds in the run's group",
    "mixed_configs": "the record's training logs print more than one configuration",
}
MIN_SEEDS = 3
# GPTQ work printed after the training clock stopped (unless the log says it reserved time for it inside the clock).
_GPTQ_SECONDS = ("gptq_hessian_s", "gptq_quantize_s", "gptq_calib_generate_s")


def flag(name: str, evidence: str) -> dict[str, str]:
    assert name in FLAGS, name
    return {"flag": name, "evidence": evidence}


def run_flags(parsed: ParsedRun, shipped_code: Path | None = None) -> list[dict[str, str]]:
    """The flags one log raises by itself (the seed count is a group's: `seed_flag`)."""
    out = []
    for kind in ("prequant_ttt", "adapt_first_ttt"):
        if kind in parsed.evidence:
            out.append(flag("trained_on_val", f"{kind.replace('_', ' ')}: {parsed.evidence[kind]}"))
    train = _train_seconds(parsed)
    if train is not None and train[0] > TIME_BUDGET_S + TIME_SLACK_S:
        out.append(flag("over_train_time", train[1]))
    if parsed.record_eval_time_ms is not None and parsed.record_eval_time_ms / 1000 > TIME_BUDGET_S + TIME_SLACK_S:
        stage = parsed.final_stage
        line = parsed.line_of.get(f"timed:{stage}", parsed.line_of.get(f"stage:{stage}", "")) if stage else ""
        out.append(flag("over_eval_time", f"{parsed.record_eval_time_ms / 1000:.1f} s scoring {stage}: {line}"))
    shipped = shipped_bytes(parsed, shipped_code)
    if shipped is not None and shipped[0] > BYTES_CAP:
        out.append(flag("over_bytes", shipped[1]))
    return out


def seed_flag(seeds: set[int]) -> dict[str, str] | None:
    if len(seeds) >= MIN_SEEDS:
        return None
    return flag("few_seeds", f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'} in the group "
                             f"({', '.join(str(s) for s in sorted(seeds)) or 'none named'})")


def config_difference(mine: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """The settings by which one configuration differs from the others (`KEY=value` vs the others' values)."""
    absent = object()
    keys = sorted({k for other in others for k in set(mine) | set(other)
                   if mine.get(k, absent) != other.get(k, absent)})
    parts = []
    for key in keys[:6]:
        theirs = sorted({str(o.get(key, "absent")) for o in others})
        parts.append(f"{key}={mine.get(key, 'absent')} (others: {', '.join(theirs)})")
    more = f" and {len(keys) - 6} more" if len(keys) > 6 else ""
    return "; ".join(parts) + more


def _train_seconds(parsed: ParsedRun) -> tuple[float, str] | None:
    """Training seconds with GPTQ counted where the log ran it outside the training clock, and why."""
    events = parsed.events
    if "artifact_production_s" in events:  # the log's own total of training + GPTQ + serialisation
        key = "artifact_wallclock" if "artifact_wallclock" in parsed.line_of else "post_gptq_wallclock"
        return float(events["artifact_production_s"]), parsed.line_of.get(key, "")
    if parsed.train_time_ms is None:
        return None
    train = parsed.train_time_ms / 1000
    text = f"train_time {train:.1f} s"
    if "gptq_reserve_s" not in events:
        gptq = sum(float(events[k]) for k in _GPTQ_SECONDS if k in events)
        if gptq:
            train += gptq
            lines = [parsed.line_of[k] for k in ("gptq_hessians", "gptq_calibrated", "gptq_quantized",
                                                 "gptq_ar_calibration") if k in parsed.line_of]
            text += f" + GPTQ {gptq:.1f} s outside the clock ({'; '.join(lines)})"
    return train, f"{text} = {train:.1f} s"


def shipped_bytes(parsed: ParsedRun, shipped_code: Path | None) -> tuple[int, str] | None:
    """Bytes of the shipped artifact: the log's quantized model plus the trainer file the record ships, else the
    log's own total."""
    if parsed.model_bytes is not None and shipped_code is not None and shipped_code.is_file():
        code = shipped_code.stat().st_size
        total = parsed.model_bytes + code
        return total, (f"model {parsed.model_bytes:,} bytes ({parsed.line_of.get('serialized_line', '')}) + "
                       f"{shipped_code.name} {code:,} bytes = {total:,}")
    if parsed.total_bytes is not None:
        return parsed.total_bytes, parsed.line_of.get("total_line") or f"{parsed.total_bytes:,} bytes"
    return None


def flag_names(compliance: list[dict[str, Any]] | None) -> list[str]:
    """The flag names of a stored `compliance` list, in FLAGS order."""
    names = {c.get("flag") for c in compliance or []}
    return [name for name in FLAGS if name in names]
