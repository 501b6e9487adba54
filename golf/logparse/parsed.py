"""What one run's log says (`ParsedRun`, with its stages' `StageValue`s), under the run store's field names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from golf.trainer.stages import STAGES, final_stage


@dataclass
class StageValue:
    val_loss: float | None
    val_bpb: float
    exact: bool
    label: str
    eval_time_ms: float | None = None
    decimals: int = 4  # how precisely the log printed val_bpb (8 for `_exact` lines): finer prints win


@dataclass
class ParsedRun:
    """What one run's log says, under the run store's field names."""

    config: dict[str, str] = field(default_factory=dict)
    curve: dict[int, dict[str, float]] = field(default_factory=dict)
    stages: dict[str, StageValue] = field(default_factory=dict)
    steps: int | None = None
    iterations: int | None = None
    train_time_ms: float | None = None
    step_avg_ms: float | None = None
    tokens_per_s: float | None = None
    peak_mem_mib: int | None = None
    peak_mem_reserved_mib: int | None = None
    model_params: int | None = None
    val_tokens: int | None = None
    model_bytes: int | None = None
    code_bytes: int | None = None
    total_bytes: int | None = None
    quant_label: str | None = None
    eval_time_ms: float | None = None  # golf's count: every evaluation after training (total_eval_time if printed)
    record_eval_time_ms: float | None = None  # the records' count: the final scoring pass (the TTT loop for TTT)
    ttt_time_ms: float | None = None
    # the records' training clock: the steps plus GPTQ calibration (Hessians, self-generated sequences), in seconds
    gptq_time_s: float | None = None
    train_incl_gptq_s: float | None = None
    train_fits_budget: bool | None = None  # train_incl_gptq_s within TRAIN_BUDGET_S (+ the step-boundary slack)
    time_to_first_step_s: float | None = None  # golf's trainer: process start to the end of the first step
    eval_warmup_s: float | None = None  # golf's trainer: compiling (priming) the evaluation graphs, all of them
    stop_reason: str | None = None
    diverged: bool = False
    non_record_reason: str | None = None
    bytes_breakdown: dict[str, int] | None = None
    header: dict[str, str] = field(default_factory=dict)
    events: dict[str, Any] = field(default_factory=dict)  # golf.logparse.events: data, GPTQ, compression, TTT
    evidence: dict[str, str] = field(default_factory=dict)  # compliance evidence: kind -> the log line that shows it
    line_of: dict[str, str] = field(default_factory=dict)  # the last line of each family read (events, stop, stages)
    unplaced: list[tuple[int, str]] = field(default_factory=list)  # (line number, line) nothing could place
    malformed: int = 0
    lines: int = 0

    def metrics(self) -> dict[str, Any]:
        """Flat metrics dict with the store's field names (None where the log is silent)."""
        out: dict[str, Any] = {
            "steps": self.steps,
            "step_avg_ms": self.step_avg_ms,
            "train_time_ms": self.train_time_ms,
            "tokens_per_s": self.tokens_per_s,
            "peak_mem_mib": self.peak_mem_mib,
            "model_params": self.model_params,
            "model_bytes": self.model_bytes,
            "code_bytes": self.code_bytes,
            "total_bytes": self.total_bytes,
            "eval_time_ms": self.eval_time_ms,
            "record_eval_time_ms": self.record_eval_time_ms,
            "ttt_time_ms": self.ttt_time_ms,
            "time_to_first_step_s": self.time_to_first_step_s,
            "eval_warmup_s": self.eval_warmup_s,
        }
        for stage in STAGES:
            value = self.stages.get(stage.name)
            out[stage.bpb_field] = value.val_bpb if value else None
            out[stage.loss_field] = value.val_loss if value else None
        final = self.final_stage
        out["final_stage"] = final
        out["final_bpb"] = self.stages[final].val_bpb if final else None
        out["final_loss"] = self.stages[final].val_loss if final else None
        return out

    @property
    def final_stage(self) -> str | None:
        return final_stage(self.stages)

    @property
    def complete(self) -> bool:
        return self.final_stage is not None

    @property
    def has_content(self) -> bool:
        return bool(self.curve or self.stages or self.steps is not None)

    @property
    def eval_only(self) -> bool:
        """An evaluation of a saved artifact: no training steps, a score, or the trainer says so."""
        return bool(self.events.get("eval_only")) or (self.complete and not any(
            "train_loss" in row for row in self.curve.values()) and self.steps in (None, 0))
