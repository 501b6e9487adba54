"""One parser for golf's trainer and the community's training logs.

Lines are matched by anchored patterns, so source code dumped at the top of a log never matches.
`LogParser.feed` consumes one line at a time (the launcher streams the trainer's stdout through it);
`parse_log` splits a whole file into run segments (ingest keeps the last complete one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

STAGES = ("pre_quant", "post_quant", "sliding", "post_ttt")
# The final score is the last stage a run reached, in this order of precedence.
FINAL_PRECEDENCE = ("post_ttt", "sliding", "post_quant", "pre_quant")

_TIMESTAMP = re.compile(r"^\d{10}\.\d{3} ")
_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"

# -- step and validation lines: `step:N/M ...` (old) or `N/M ...` (04-01 onward)
_STEP_HEAD = re.compile(r"^(?:step:\s*(\d+)/(\d+)|(\d+)/(\d+)(?=\s))(.*)$")
_FIELD = re.compile(r"([A-Za-z_/]+):\s*(" + _NUM + r")(ms|m|s)?\b")

# -- evaluation results: `<label> val_loss:X val_bpb:Y ...` (also `=` in ttt_sliding:done)
_RESULT = re.compile(
    r"^(?P<label>[A-Za-z][\w\-. ]*?)\s+(?:sliding\s+)?val_loss[:=]\s*(?P<loss>" + _NUM + r")\s+"
    r"(?:sliding\s+)?val_bpb[:=]\s*(?P<bpb>" + _NUM + r")(?P<rest>.*)$"
)
_EVAL_TIME = re.compile(r"(?:eval_time|elapsed|time)[:=]\s*(" + _NUM + r")(ms|s)\b")

_SERIALIZED = re.compile(r"^Serialized model(?: (?P<label>\S+?))?:\s*(?P<n>\d+) bytes")
_TOTAL = re.compile(r"^Total submission size(?: (?P<label>\S+?))?:\s*(?P<n>\d+) bytes")
_CODE = re.compile(r"^Code size(?: \((?P<kind>compressed|uncompressed)\))?:\s*(?P<n>\d+) bytes")
_ALT_SIZE = re.compile(r"^(?P<label>\S+) model:\s*(?P<n>\d+) bytes\s*\|\s*Total submission:\s*(?P<total>\d+) bytes")
_BUDGET = re.compile(r"^budget:\s*(\d+)/16000000")
_ARTIFACT_CODE = re.compile(r"^artifact:.*\bcode:(\d+)")
_PEAK = re.compile(r"^peak memory(?: allocated)?:\s*(\d+) MiB(?: reserved:\s*(\d+) MiB)?")
_PARAMS = re.compile(r"^model_params:\s*(\d+)")
_STOP = re.compile(r"^stopping_early:\s*(\w+)(?:\s+train_time:\s*(\d+)ms)?(?:\s+step:\s*(\d+)/(\d+))?")
_TOTAL_EVAL = re.compile(r"^total_eval_time:\s*(" + _NUM + r")s")
_TTT_TIME = re.compile(r"^ttt_time:\s*(\d+)ms")
_BREAKDOWN = re.compile(r"^bytes_breakdown\s+(.*)$")
_DIVERGED = re.compile(r"^diverged:")
_NON_RECORD = re.compile(r"^non_record:\s*(.+)$")
_EVAL_MODE_SLIDING = re.compile(r"^final_eval_mode:\s*sliding_window")
_KV_LINE = re.compile(r"^([a-z_]+):(\S+)(?:\s+([a-z_]+):(\S+))*\s*$")
_KV_PAIR = re.compile(r"([a-z_]+):(\S+)")
_HP_HEADER = re.compile(r"^Hyperparameters:\s*$")
# The start of a result, size, memory or stop line: one that gets this far without matching in full is damaged
# (truncated by a kill, interleaved with another rank's output) and is counted as malformed.
_DAMAGED = re.compile(
    r"^(?:[A-Za-z][\w\-. ]*?\s+(?:sliding\s+)?val_loss[:=]\s*[-+.\dn]|"
    r"Serialized model\b|Total submission size\b|Code size\b|peak memory\b|stopping_early:)"
)
_HP_ROW = re.compile(r"^\s{2,}([A-Za-z_][\w]*):\s?(.*)$")
_RUN_HEADER = re.compile(r"^golf_trainer:\s*(.*)$")
_ATTENTION = re.compile(r"^attention:(\S+) requested:\S+")  # golf's trainer: the attention kernels that ran
_VAL_TOKENS = re.compile(r"^val_loader:.*\btokens:(\d+)")
# Lines that open a new run inside a file that holds several.
_RUN_START = re.compile(r"^(?:Hyperparameters:\s*$|model_params:|warmup_step:\s*1/|golf_trainer:)")

# Old-style one-line config (`train_batch_tokens:786432 train_seq_len:2048 ...`, `seed:1337`): these keys only.
_OLD_CONFIG_KEYS = {
    "train_batch_tokens", "train_seq_len", "iterations", "warmup_steps", "max_wallclock_seconds", "seed",
    "world_size", "grad_accum_steps", "embed_lr", "head_lr", "matrix_lr", "scalar_lr", "tie_embeddings",
    "num_heads", "num_kv_heads",
}


def stage_of(label: str) -> str | None:
    """Map an evaluation-result label (any of the challenge's ~27 spellings) to a stage, or None."""
    low = label.strip().lower()
    low = low.removesuffix("_exact")
    if "ttt" in low:
        # pre-quant TTT diagnostics would still be post-TTT scores; every TTT label scores after adapting
        return "post_ttt"
    if "sliding" in low:
        return "sliding"
    if "post_ema" in low or "post-ema" in low or "pre-quant" in low or low in ("pre_quant", "prequant"):
        return "pre_quant"
    if "roundtrip" in low or low in ("quantized", "diagnostic quantized", "final_temped"):
        return "post_quant"
    return None


@dataclass
class StageValue:
    val_loss: float
    val_bpb: float
    exact: bool
    label: str
    eval_time_ms: float | None = None


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
    eval_time_ms: float | None = None
    ttt_time_ms: float | None = None
    stop_reason: str | None = None
    diverged: bool = False
    non_record_reason: str | None = None
    bytes_breakdown: dict[str, int] | None = None
    header: dict[str, str] = field(default_factory=dict)
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
            "ttt_time_ms": self.ttt_time_ms,
        }
        for stage in STAGES:
            value = self.stages.get(stage)
            out[f"{stage}_bpb"] = value.val_bpb if value else None
            out[f"{stage}_loss"] = value.val_loss if value else None
        final = self.final_stage
        out["final_stage"] = final
        out["final_bpb"] = self.stages[final].val_bpb if final else None
        out["final_loss"] = self.stages[final].val_loss if final else None
        return out

    @property
    def final_stage(self) -> str | None:
        return next((s for s in FINAL_PRECEDENCE if s in self.stages), None)

    @property
    def complete(self) -> bool:
        return self.final_stage is not None

    @property
    def has_content(self) -> bool:
        return bool(self.curve or self.stages or self.steps is not None)


class LogParser:
    """Incremental parser: feed lines, read `.run` at any time."""

    def __init__(self) -> None:
        self.run = ParsedRun()
        self._in_hparams = False
        self._sliding_seen = False
        self._eval_mode_sliding = False
        self._serialized: dict[str | None, int] = {}
        self._totals: dict[str | None, int] = {}
        self._code: dict[str | None, int] = {}
        self._eval_times: dict[str, float] = {}
        self._total_eval_ms: float | None = None
        self._tok_s_logged: float | None = None

    # -- public
    def feed(self, raw: str) -> None:
        line = _TIMESTAMP.sub("", raw.rstrip("\r\n"))
        self.run.lines += 1
        if self._in_hparams:
            row = _HP_ROW.match(line)
            if row:
                self.run.config[row.group(1).lower()] = row.group(2).strip()
                return
            self._in_hparams = False
        if not line or line[0] in "W[" and not line.startswith("W_"):
            return  # torchrun/NCCL warnings and bracketed runtime noise
        try:
            self._dispatch(line)
        except (ValueError, IndexError, OverflowError):
            self.run.malformed += 1
        self._finish()

    # -- internals
    def _dispatch(self, line: str) -> None:
        stripped = line.strip()
        if _HP_HEADER.match(line):
            self._in_hparams = True
            return
        if self._step_line(stripped):
            return
        result = _RESULT.match(stripped)
        if result:
            self._result(result, stripped)
            return
        for pattern, handler in self._handlers:
            m = pattern.match(stripped)
            if m:
                handler(self, m)
                return
        if _DAMAGED.match(stripped):
            self.run.malformed += 1
            return
        kv = _KV_LINE.match(stripped)
        if kv:
            for key, value in _KV_PAIR.findall(stripped):
                if key in _OLD_CONFIG_KEYS:
                    # what the run actually used (e.g. grad_accum_steps:8 where the knob said 0 = auto)
                    self.run.config[key] = value

    def _step_line(self, line: str) -> bool:
        head = _STEP_HEAD.match(line)
        if not head:
            return False
        step = int(head.group(1) or head.group(3))
        total = int(head.group(2) or head.group(4))
        fields = {k: (float(v), unit) for k, v, unit in _FIELD.findall(head.group(5))}
        if not fields:
            if head.group(1):  # `step:N/M` with nothing we can read: a damaged line
                self.run.malformed += 1
            return head.group(1) is not None
        row = self.run.curve.setdefault(step, {})
        self.run.iterations = total
        for key, (value, unit) in fields.items():
            if key in ("train_loss", "loss"):
                row["train_loss"] = value
                if not math.isfinite(value):
                    self.run.diverged = True
            elif key in ("val_loss", "val_bpb"):
                row[key] = value
            elif key in ("train_time", "t"):
                ms = value * 60000.0 if unit == "m" else value * 1000.0 if unit == "s" else value
                row["train_time_ms"] = ms
            elif key in ("step_avg", "avg"):
                row["step_avg_ms"] = value
            elif key == "tok/s":
                self._tok_s_logged = value
        if "train_loss" in row or "val_loss" in row:
            self._note_progress(step, row)
        return True

    def _note_progress(self, step: int, row: dict[str, float]) -> None:
        if self.run.steps is None or step >= self.run.steps:
            self.run.steps = step
            if "train_time_ms" in row:
                self.run.train_time_ms = row["train_time_ms"]

    def _result(self, m: re.Match[str], line: str) -> None:
        label = m.group("label").strip()
        loss, bpb = float(m.group("loss")), float(m.group("bpb"))
        rest = m.group("rest")
        stage = stage_of(label)
        if label.lower().startswith("final_int8_zlib_roundtrip") and " sliding" in line:
            stage = "sliding"
        if stage is None:
            return
        base = label.lower().removesuffix("_exact")
        if stage == "post_quant" and base == "final_int8_zlib_roundtrip":
            if self._eval_mode_sliding:
                stage = "sliding"
            elif self._sliding_seen or "post_ttt" in self.run.stages:
                return  # legacy alias re-printed with the sliding-window numbers: not a roundtrip score
        exact = label.lower().endswith("_exact") or _precise(m.group("bpb"))
        current = self.run.stages.get(stage)
        if current is not None and current.exact and not exact:
            return
        eval_ms = None
        t = _EVAL_TIME.search(rest)
        if t:
            eval_ms = float(t.group(1)) * (1000.0 if t.group(2) == "s" else 1.0)
            self._eval_times[stage] = eval_ms
        elif current is not None:
            eval_ms = current.eval_time_ms
        self.run.stages[stage] = StageValue(loss, bpb, exact, label, eval_ms)
        if stage == "sliding":
            self._sliding_seen = True
        if stage == "post_ttt" and eval_ms is not None:
            self.run.ttt_time_ms = eval_ms

    def _serialized_line(self, m: re.Match[str]) -> None:
        self._serialized[m.group("label")] = int(m.group("n"))

    def _total_line(self, m: re.Match[str]) -> None:
        self._totals[m.group("label")] = int(m.group("n"))

    def _code_line(self, m: re.Match[str]) -> None:
        self._code[m.group("kind")] = int(m.group("n"))

    def _alt_size(self, m: re.Match[str]) -> None:
        label = m.group("label").lower()
        self._serialized[label] = int(m.group("n"))
        self._totals[label] = int(m.group("total"))

    def _budget(self, m: re.Match[str]) -> None:
        self._totals["budget"] = int(m.group(1))

    def _artifact_code(self, m: re.Match[str]) -> None:
        self._code.setdefault(None, int(m.group(1)))

    def _peak(self, m: re.Match[str]) -> None:
        self.run.peak_mem_mib = int(m.group(1))
        if m.group(2):
            self.run.peak_mem_reserved_mib = int(m.group(2))

    def _params(self, m: re.Match[str]) -> None:
        self.run.model_params = int(m.group(1))

    def _stop(self, m: re.Match[str]) -> None:
        self.run.stop_reason = m.group(1)
        if m.group(2):
            self.run.train_time_ms = float(m.group(2))
        if m.group(3):
            self.run.steps = int(m.group(3))
            self.run.iterations = int(m.group(4))

    def _total_eval(self, m: re.Match[str]) -> None:
        self._total_eval_ms = float(m.group(1)) * 1000.0

    def _ttt_time(self, m: re.Match[str]) -> None:
        self.run.ttt_time_ms = float(m.group(1))

    def _breakdown(self, m: re.Match[str]) -> None:
        self.run.bytes_breakdown = {k: int(v) for k, v in _KV_PAIR.findall(m.group(1))}

    def _diverged(self, m: re.Match[str]) -> None:
        self.run.diverged = True
        self.run.stop_reason = "diverged"

    def _non_record(self, m: re.Match[str]) -> None:
        self.run.non_record_reason = m.group(1).strip()

    def _eval_mode(self, m: re.Match[str]) -> None:
        self._eval_mode_sliding = True

    def _val_tokens(self, m: re.Match[str]) -> None:
        self.run.val_tokens = int(m.group(1))

    def _header(self, m: re.Match[str]) -> None:
        self.run.header.update(dict(_KV_PAIR.findall(m.group(1))))

    def _attention(self, m: re.Match[str]) -> None:
        self.run.header["attention"] = m.group(1)

    _handlers: list[tuple[re.Pattern[str], Any]] = [
        (_SERIALIZED, _serialized_line),
        (_TOTAL, _total_line),
        (_CODE, _code_line),
        (_ALT_SIZE, _alt_size),
        (_BUDGET, _budget),
        (_ARTIFACT_CODE, _artifact_code),
        (_PEAK, _peak),
        (_PARAMS, _params),
        (_STOP, _stop),
        (_TOTAL_EVAL, _total_eval),
        (_TTT_TIME, _ttt_time),
        (_BREAKDOWN, _breakdown),
        (_DIVERGED, _diverged),
        (_NON_RECORD, _non_record),
        (_EVAL_MODE_SLIDING, _eval_mode),
        (_RUN_HEADER, _header),
        (_ATTENTION, _attention),
        (_VAL_TOKENS, _val_tokens),
    ]

    def _finish(self) -> None:
        """Recompute the derived fields (cheap; keeps `.run` consistent after every line)."""
        run = self.run
        quantized = {k: v for k, v in self._serialized.items() if k is not None}
        if quantized:
            label = next(reversed(quantized))
            run.quant_label = label
            run.model_bytes = quantized[label]
        code = self._code.get("compressed", self._code.get(None))
        if code is not None:
            run.code_bytes = code
        labeled_totals = {k: v for k, v in self._totals.items() if k is not None}
        if run.quant_label in labeled_totals:
            run.total_bytes = labeled_totals[run.quant_label]
        elif labeled_totals:
            run.total_bytes = next(reversed(labeled_totals.values()))
        elif run.model_bytes is not None and run.code_bytes is not None:
            run.total_bytes = run.model_bytes + run.code_bytes
        if run.total_bytes is not None and run.model_bytes is not None and code is not None and "compressed" in \
                self._code and run.total_bytes != run.model_bytes + code:
            run.total_bytes = run.model_bytes + code  # logs that count the packed code size add it themselves
        if self._total_eval_ms is not None:
            run.eval_time_ms = self._total_eval_ms
        elif self._eval_times:
            run.eval_time_ms = sum(v for k, v in self._eval_times.items() if k != "pre_quant") or \
                sum(self._eval_times.values())
        if run.steps:
            logged = self.run.curve.get(run.steps, {}).get("step_avg_ms")
            if logged is not None:
                run.step_avg_ms = logged
            elif run.train_time_ms:
                run.step_avg_ms = run.train_time_ms / run.steps
        if self._tok_s_logged is not None:
            run.tokens_per_s = self._tok_s_logged
        elif run.step_avg_ms:
            batch = _float(run.config.get("train_batch_tokens"))
            if batch:
                run.tokens_per_s = batch / (run.step_avg_ms / 1000.0)


def _precise(text: str) -> bool:
    """Eight decimals mark an exact value even without the `_exact` suffix (04-01 logs)."""
    return "." in text and len(text.split(".")[1]) >= 6


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_log(lines: Iterable[str]) -> list[ParsedRun]:
    """Split a log into run segments and parse each; segments without content are dropped."""
    segments: list[ParsedRun] = []
    parser = LogParser()
    for raw in lines:
        line = _TIMESTAMP.sub("", raw.rstrip("\r\n"))
        if _RUN_START.match(line) and parser.run.has_content and not parser._in_hparams:
            segments.append(parser.run)
            parser = LogParser()
        parser.feed(raw)
    segments.append(parser.run)
    return [s for s in segments if s.has_content or s.config]


def parse_text(text: str) -> ParsedRun:
    """The run a log counts for: its last complete segment, else its last segment."""
    runs = parse_log(text.splitlines())
    if not runs:
        return ParsedRun()
    complete = [r for r in runs if r.complete]
    return complete[-1] if complete else runs[-1]
