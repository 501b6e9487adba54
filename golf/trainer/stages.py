"""The evaluation stages: the one registry that the trainer, the parser, the store (`<name>_bpb`/`<name>_loss`
columns), show, live, compare, group summaries and the exported README iterate. Stdlib only (the trainer ships as one
file). A result line's label belongs to the stage of the first matching rule, in `order` across all stages; the final
score is the reached stage of highest `precedence`. Adding a stage: docs/CONTRIBUTING.md.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str  # the store's field prefix and the key of the trainer's results
    short: str  # its name in tables: `<short> bpb` in compare and show, the README's column
    live_label: str  # the end-of-run summary's row and the status line while it runs
    precedence: int  # the final score is the reached stage with the highest precedence
    trainer_label: str  # golf's own result-line label; {quant}, {comp} and {ttt} (the TTT mode's) filled by the trainer
    rules: tuple[tuple[int, str], ...] = ()  # (order, regex searched in the label): lowest order tried first
    enabled_by: str | None = None  # the knob that turns it on in golf's trainer (None: always runs)
    pre_ttt: bool = False  # the highest such stage reached is the run's pre-TTT score (ablation tables)

    @property
    def title(self) -> str:
        return f"{self.short} bpb"

    @property
    def bpb_field(self) -> str:
        return f"{self.name}_bpb"

    @property
    def loss_field(self) -> str:
        return f"{self.name}_loss"


# In the order a run goes through them (display order). Precedences and rule orders are spaced by ten so a new stage
# fits between two.
STAGES: tuple[Stage, ...] = (
    Stage("pre_quant", "pre-quant", "pre-quant (trained weights)", 0, "pre_quant", rules=(
        # pre-quantization scores, also after a pre-quant TTT (`post-prequant-ttt`) or a diagnostic pass on the float
        # weights (`DIAGNOSTIC post_ema`, `DIAGNOSTIC post_sdttt`): none of them is the shipped model's score
        (0, r"prequant|pre_quant|pre-quant|^diagnostic(?!.*quantized)"),
        (30, r"post_ema|post-ema"),
    )),
    Stage("post_quant", "post-quant", "post-quant (artifact roundtrip)", 10, "final_{quant}_{comp}_roundtrip",
          rules=((40, r"roundtrip|^(?:quantized|diagnostic quantized|final_temped)$"),), pre_ttt=True),
    # n-gram caches and expert mixers score on top of the sliding window (printed after the plain sliding line)
    Stage("sliding", "sliding", "sliding window", 20, "final_{quant}_sliding_window",
          rules=((20, r"sliding|ngram|mixer"),), enabled_by="EVAL_STRIDE", pre_ttt=True),
    # every other TTT label scores after adapting, so "ttt" wins over "sliding" (`ttt_sliding:done`)
    Stage("post_ttt", "post-TTT", "post-TTT", 30, "{ttt}", rules=((10, r"ttt"),), enabled_by="TTT_ENABLED"),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
BY_PRECEDENCE: tuple[Stage, ...] = tuple(sorted(STAGES, key=lambda s: -s.precedence))
# Every stored field of the stages, in display order: pre_quant_bpb, pre_quant_loss, post_quant_bpb, ...
STAGE_FIELDS: tuple[str, ...] = tuple(f for s in STAGES for f in (s.bpb_field, s.loss_field))
BPB_FIELDS: tuple[str, ...] = tuple(s.bpb_field for s in STAGES)
LOSS_FIELDS: tuple[str, ...] = tuple(s.loss_field for s in STAGES)


_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), stage.name) for _, pattern, stage in
    sorted(((order, pattern, stage) for stage in STAGES for order, pattern in stage.rules), key=lambda r: r[0]))


def stage_of(label: str) -> str | None:
    """The stage a result-line label (any of the challenge's spellings) belongs to, or None."""
    low = label.strip().lower().removesuffix("_exact")
    return next((name for pattern, name in _RULES if pattern.search(low)), None)


def final_stage(reached: Container[str]) -> str | None:
    """The stage that gives the final score among those reached (a container of stage names)."""
    return next((s.name for s in BY_PRECEDENCE if s.name in reached), None)


def pre_ttt_stage(reached: Container[str]) -> str | None:
    """The stage that gives the pre-TTT score (the artifact's score before any test-time training)."""
    return next((s.name for s in BY_PRECEDENCE if s.pre_ttt and s.name in reached), None)


def trainer_labels(quant: str, comp: str, ttt: str) -> dict[str, str]:
    """Golf's trainer's result-line label per stage: quant `int8`, compressor `zlib`, ttt the TTT mode's label
    (`legal_ttt` score-first, `final_int8_ttt` adapt-first, `quantized_ttt_lora` per-document)."""
    return {s.name: s.trainer_label.format(quant=quant, comp=comp, ttt=ttt) for s in STAGES}
