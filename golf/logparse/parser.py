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

from golf.logparse.events import MARKERS, match_event
from golf.trainer.limits import TIME_SLACK_S, TRAIN_BUDGET_S
from golf.trainer.stages import STAGES, final_stage, stage_of

# The largest integer SQLite stores: a bigger one in a log line is damage (a value no store can hold), not data.
MAX_INT = 2**63 - 1

_TIMESTAMP = re.compile(r"^\d{10}\.\d{3} ")
# NaN, inf, Infinity: any case. `\d+(?:\.\d*)?`, not `\d+\.?\d*`: one way to split a digit run, so a long one that
# fails to end a number costs linear, not quadratic, time (the same numbers match).
_NUM = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?))"

# -- step and validation lines: `step:N/M ...` (old) or `N/M ...` (04-01 onward)
_STEP_HEAD = re.compile(r"^(?:step:\s*(\d+)/(\d+)|(\d+)/(\d+)(?=\s))(.*)$")
# thousands separators appear in the newest step lines (`tok/s: 6,400,000`); read by step_fields, not findall
_FIELD = re.compile(r"([A-Za-z_/]+):\s*(\d{1,3}(?:,\d{3})+(?!\d)|" + _NUM + r")(ms|m|s)?\b")
_KEY_RUN = re.compile(r"[A-Za-z_/]+")

# -- evaluation results: `<label> val_loss:X val_bpb:Y ...` (also `=` in ttt_sliding:done)
# The label may carry `:`/`()` (`ttt:done`, `final_int6_lzma_roundtrip(ttt_lora)`) and trailing `key:value` settings
# (`final_sliding_window_eval stride:64`); some logs print val_bpb alone (`final_sliding_window val_bpb:1.0902 ...`).
# The label ends in a non-space (the shortest label that matches always does: `\s+` takes its trailing spaces), so a
# long run of spaces is crossed once, not once per label length that ends inside it.
_LABEL = r"(?P<label>[A-Za-z](?:[\w\-.:() ]*?[\w\-.:()])?)"
_RESULT = re.compile(
    r"^" + _LABEL + r"\s+(?:sliding\s+)?val_loss[:=]\s*(?P<loss>" + _NUM + r")\s+"
    r"(?:sliding\s+)?val_bpb[:=]\s*(?P<bpb>" + _NUM + r")(?P<rest>.*)$"
)
_RESULT_BPB_ONLY = re.compile(r"^" + _LABEL + r"\s+val_bpb[:=]\s*(?P<bpb>" + _NUM + r")(?P<rest>(?:\s.*)?)$")
_SETTING = re.compile(r"^[A-Za-z_]+[:=]\S+$")
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
# keys may hold digits (code_sha256). A key is tried where a run of key characters starts (leading digits skipped,
# as a scan would): findall from inside a long run of letters would retry it from every letter (quadratic).
_KV_PAIR = re.compile(r"(?<![a-z0-9_])[0-9]*([a-z_][a-z0-9_]*):(\S+)")
_HP_HEADER = re.compile(r"^Hyperparameters:\s*$")
# The start of a result, size, memory or stop line: one that gets this far without matching in full is damaged
# (truncated by a kill, interleaved with another rank's output) and is counted as malformed.
_DAMAGED = re.compile(
    r"^(?:[A-Za-z](?:[\w\-. ]*?[\w\-.])?\s+(?:sliding\s+)?val_loss[:=]\s*[-+.\dnNiI]|"
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
    "num_heads", "num_kv_heads", "mtp_num_heads", "mtp_loss_weight", "qat",
}
# TTT settings some trainers print on their own line after the header (`ttt_lora_alpha: 144.0`): configuration.
_TTT_SETTING = re.compile(r"^(ttt_[a-z_]+):\s(\S+)$")


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


# Adapt-first TTT trains whole epochs on the validation tokens before one scoring pass; pre-quant TTT trains on
# them before quantization. Either scores tokens the model has already trained on (non-record, facts §4).
_ADAPT_FIRST = re.compile(r"^(?:sd)?ttt_epoch:\s*(\d+)/(\d+)\s.*\btime:\s*(" + _NUM + r")s")
_PREQUANT_TTT = re.compile(r"^(?:pre_?quant_ttt|pre-quant ttt)\b", re.IGNORECASE)
_PREQUANT_TTT_KNOBS = ("prequant_ttt_enabled", "pre_quant_ttt", "pre_quant_ttt_enabled", "prequant_ttt")
# TTT loop durations printed beside (or instead of) an eval_time on the result line.
_TTT_DONE = re.compile(r"^ttt(?:_sliding)?:(?:done|completed)\b.*?\b(?:time|elapsed)[:=]\s*(" + _NUM + r")(ms|s)\b")
_TTT_PHASE_WALL = re.compile(r"^phase:ttt_eval wall_ms:(\d+)")
# Lines that are nobody's data: runtime noise, nvidia-smi tables, separators, progress of warm-ups.
_NOISE = re.compile(
    r"^(?:[|+=\-_*#>]|Running (?:Python|PyTorch)|nohup:|logs/\S+\.txt$|Source code:|(?:loop_|base_|recur_)?warmup"
    r"(?:_step)?[:\s]|warmup:|(?:[A-Z][a-z]{2} ){2}|NVIDIA-SMI|\d+\s*$|exit$|LOG_END)")
_CODE_LIKE = re.compile(
    r"^(?:def |class |import |from \S+ import|if |elif |else:|for |while |try:|except|finally:|with |return\b|@|"
    r"\"\"\"|'''|[A-Za-z_][\w.]*\s*(?:[-+*/]?=|\()|\)|\]|\}|\{)")
_UNPLACED_CAP = 500


class LogParser:
    """Incremental parser: feed lines, read `.run` at any time."""

    def __init__(self, unplaced_cap: int | None = _UNPLACED_CAP) -> None:
        self.run = ParsedRun()
        self._unplaced_cap = unplaced_cap  # the launcher streams long logs: keep a bounded sample
        self._in_hparams = False
        self._sliding_seen = False
        self._eval_mode_sliding = False
        self._serialized: dict[str | None, int] = {}
        self._totals: dict[str | None, int] = {}
        self._code: dict[str | None, int] = {}
        self._eval_times: dict[str, float] = {}
        self._total_eval_ms: float | None = None
        self._tok_s_logged: float | None = None
        self._ttt_loop_ms: float | None = None  # from `ttt:done time=`, `elapsed=`, adapt-first epochs
        self._last_short: tuple[str, float | None, float] | None = None  # stage, loss, bpb of the last 4-decimal line

    # -- public
    def feed(self, raw: str) -> None:
        line = _TIMESTAMP.sub("", raw.rstrip("\r\n"))
        self.run.lines += 1
        if self._in_hparams:
            row = _HP_ROW.match(line)
            if row:
                self.run.config[row.group(1).lower()] = row.group(2).strip()
                self._knob_evidence(row.group(1).lower(), row.group(2).strip(), line)
                return
            self._in_hparams = False
        if not line or line[0] in "W[" and not line.startswith("W_"):
            return  # torchrun/NCCL warnings and bracketed runtime noise
        try:
            placed = self._dispatch(line)
        except (ValueError, IndexError, OverflowError):
            self.run.malformed += 1
            placed = True
        if not placed:
            self._unplaced(line)
        self._finish()

    # -- internals
    def _dispatch(self, line: str) -> bool:
        """Place one line; False when nothing in the parser knows it."""
        stripped = line.strip()
        if _HP_HEADER.match(line):
            self._in_hparams = True
            return True
        if self._step_line(stripped):
            return True
        result = _RESULT.match(stripped) or _RESULT_BPB_ONLY.match(stripped)
        if result:
            return self._result(result, stripped)
        for pattern, handler in self._handlers:
            m = pattern.match(stripped)
            if m:
                handler(self, m)
                self.run.line_of[handler.__name__.strip("_")] = stripped
                return True
        event = match_event(stripped)
        if event is not None:
            self._event(*event)
            self.run.line_of[event[0].name] = stripped
            return True
        setting = _TTT_SETTING.match(stripped)
        if setting:
            self.run.config[setting.group(1)] = setting.group(2)
            return True
        if MARKERS.match(stripped):
            return True
        if _DAMAGED.match(stripped):
            self.run.malformed += 1
            return True
        kv = _KV_LINE.match(stripped)
        if kv:
            known = False
            for key, value in _KV_PAIR.findall(stripped):
                if key in _OLD_CONFIG_KEYS:
                    # what the run actually used (e.g. grad_accum_steps:8 where the knob said 0 = auto)
                    self.run.config[key] = value
                    known = True
            return known
        return False

    def _unplaced(self, line: str) -> None:
        stripped = line.strip()
        if line[:1].isspace() or _NOISE.match(stripped) or _CODE_LIKE.match(stripped):
            return  # indented lines, source code and runtime noise are nobody's data
        if self._unplaced_cap is None or len(self.run.unplaced) < self._unplaced_cap:
            self.run.unplaced.append((self.run.lines, stripped))

    def _step_line(self, line: str) -> bool:
        head = _STEP_HEAD.match(line)
        if not head:
            return False
        step = _int(head.group(1) or head.group(3))
        total = _int(head.group(2) or head.group(4))
        fields = {k: (float(v.replace(",", "")), unit) for k, v, unit in step_fields(head.group(5))}
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
                if not math.isfinite(value):
                    self.run.diverged = True
            elif key in ("train_time", "t"):
                ms = value * 60000.0 if unit == "m" else value * 1000.0 if unit == "s" else value
                row["train_time_ms"] = ms
            elif key in ("step_avg", "avg"):
                row["step_avg_ms"] = value
            elif key == "tok/s":
                self._tok_s_logged = value
                self._from_tokens_per_s(step, row, value, fields.get("train_time"))
        if "train_loss" in row or "val_loss" in row:
            self._note_progress(step, row)
        return True

    def _from_tokens_per_s(self, step: int, row: dict[str, float], tok_s: float,
                           train_time: tuple[float, str | None] | None) -> None:
        """04-xx lines print train time in tenths of a minute but tok/s (step·batch/elapsed) to the token: with the
        batch size known, tok/s gives the elapsed time and the step time to the millisecond."""
        batch = _float(self.run.config.get("train_batch_tokens"))
        if not batch or tok_s <= 0 or step <= 0:
            return
        if train_time is not None and train_time[1] not in ("m", "s"):
            return  # the line already gives milliseconds
        row["train_time_ms"] = step * batch / tok_s * 1000.0
        row["step_avg_ms"] = batch / tok_s * 1000.0

    def _note_progress(self, step: int, row: dict[str, float]) -> None:
        if self.run.steps is None or step >= self.run.steps:
            self.run.steps = step
            if "train_time_ms" in row:
                self.run.train_time_ms = row["train_time_ms"]

    def _result(self, m: re.Match[str], line: str) -> bool:
        label = _clean_label(m.group("label"))
        loss = float(m.group("loss")) if "loss" in m.groupdict() else None
        bpb_text = m.group("bpb")
        bpb = float(bpb_text)
        if not math.isfinite(bpb) or (loss is not None and not math.isfinite(loss)):
            self.run.diverged = True  # an evaluation that scored NaN/inf: the weights diverged
        rest = m.group("rest")
        stage = stage_of(label)
        if label.lower().startswith("final_int8_zlib_roundtrip") and " sliding" in line:
            stage = "sliding"
        if stage is None:
            return False
        base = label.lower().removesuffix("_exact")
        decimals = 8 if label.lower().endswith("_exact") else _decimals(bpb_text)
        short = self._last_short
        if decimals >= 6 and short is not None and _rounds_to(bpb, short[2]) and \
                (loss is None or short[1] is None or _rounds_to(loss, short[1])):
            stage = short[0]  # the precise twin of the short line just before it, whatever its label says
        elif stage == "post_quant" and "roundtrip" in base and (self._eval_mode_sliding or (
                "sliding_windows" in self.run.events and "post_quant" not in self.run.stages)):
            # `final_eval_mode:sliding_window` (or the sliding pass's progress lines) before the first roundtrip
            # line: that roundtrip was scored by the sliding window (03-19, 03-20, 03-21 records)
            stage = "sliding"
        elif stage == "post_quant" and base == "final_int8_zlib_roundtrip" and (
                self._sliding_seen or "post_ttt" in self.run.stages):
            return True  # legacy alias re-printed with the sliding-window numbers: not a roundtrip score
        self._last_short = (stage, loss, bpb) if decimals <= 4 else None
        current = self.run.stages.get(stage)
        if stage == "pre_quant" and current is not None and "ttt" in base:
            return True  # a score after pre-quant TTT is not the pre-quant model's (the adaptation is evidence)
        if "prequant" in base.replace("-", "").replace("_", "") and "ttt" in base:
            self.run.evidence.setdefault("prequant_ttt", line)
        eval_ms = None
        t = _EVAL_TIME.search(rest)
        if t:
            eval_ms = float(t.group(1)) * (1000.0 if t.group(2) == "s" else 1.0)
            self._eval_times[stage] = eval_ms
            self.run.line_of[f"timed:{stage}"] = line
            if stage == "post_ttt":
                self._ttt_loop_ms = eval_ms
        elif current is not None:
            eval_ms = current.eval_time_ms
        if current is not None and current.decimals > decimals:
            # a coarser print of a score already read precisely: only its timing is news
            current.eval_time_ms = eval_ms
            return True
        self.run.stages[stage] = StageValue(loss, bpb, decimals >= 6, label, eval_ms, decimals)
        self.run.line_of[f"stage:{stage}"] = line
        if stage == "sliding":
            self._sliding_seen = True
        return True

    def _knob_evidence(self, key: str, value: str, line: str) -> None:
        if key in _PREQUANT_TTT_KNOBS and value.strip().lower() in ("1", "true", "yes", "on"):
            self.run.evidence.setdefault("prequant_ttt", line.strip())

    def _event(self, event: Any, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key.endswith("_logged"):
                self.run.events[key] = self.run.events.get(key, 0) + value
            else:
                self.run.events[key] = value
        if "val_tokens" in values:
            self.run.val_tokens = values["val_tokens"]

    def _serialized_line(self, m: re.Match[str]) -> None:
        self._serialized[m.group("label")] = _int(m.group("n"))

    def _total_line(self, m: re.Match[str]) -> None:
        self._totals[m.group("label")] = _int(m.group("n"))

    def _code_line(self, m: re.Match[str]) -> None:
        self._code[m.group("kind")] = _int(m.group("n"))

    def _alt_size(self, m: re.Match[str]) -> None:
        label = m.group("label").lower()
        self._serialized[label] = _int(m.group("n"))
        self._totals[label] = _int(m.group("total"))

    def _budget(self, m: re.Match[str]) -> None:
        self._totals["budget"] = _int(m.group(1))

    def _artifact_code(self, m: re.Match[str]) -> None:
        self._code.setdefault(None, _int(m.group(1)))

    def _peak(self, m: re.Match[str]) -> None:
        self.run.peak_mem_mib = _int(m.group(1))
        if m.group(2):
            self.run.peak_mem_reserved_mib = _int(m.group(2))

    def _params(self, m: re.Match[str]) -> None:
        self.run.model_params = _int(m.group(1))

    def _stop(self, m: re.Match[str]) -> None:
        self.run.stop_reason = m.group(1)
        if m.group(2):
            self.run.train_time_ms = float(m.group(2))
        if m.group(3):
            self.run.steps = _int(m.group(3))
            self.run.iterations = _int(m.group(4))

    def _total_eval(self, m: re.Match[str]) -> None:
        self._total_eval_ms = float(m.group(1)) * 1000.0

    def _ttt_time(self, m: re.Match[str]) -> None:
        self._ttt_loop_ms = float(m.group(1))

    def _ttt_done(self, m: re.Match[str]) -> None:
        self._ttt_loop_ms = float(m.group(1)) * (1.0 if m.group(2) == "ms" else 1000.0)

    def _ttt_phase_wall(self, m: re.Match[str]) -> None:
        self._ttt_loop_ms = max(self._ttt_loop_ms or 0.0, float(m.group(1)))

    def _adapt_first(self, m: re.Match[str]) -> None:
        self.run.evidence.setdefault("adapt_first_ttt", m.group(0))
        self._ttt_loop_ms = float(m.group(3)) * 1000.0  # cumulative: the last epoch's time is the adaptation's

    def _prequant_ttt(self, m: re.Match[str]) -> None:
        self.run.evidence.setdefault("prequant_ttt", m.string)

    def _breakdown(self, m: re.Match[str]) -> None:
        self.run.bytes_breakdown = {k: _int(v) for k, v in _KV_PAIR.findall(m.group(1))}

    def _diverged(self, m: re.Match[str]) -> None:
        self.run.diverged = True
        self.run.stop_reason = "diverged"

    def _non_record(self, m: re.Match[str]) -> None:
        self.run.non_record_reason = m.group(1).strip()

    def _eval_mode(self, m: re.Match[str]) -> None:
        self._eval_mode_sliding = True

    def _val_tokens(self, m: re.Match[str]) -> None:
        self.run.val_tokens = _int(m.group(1))

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
        (_TTT_DONE, _ttt_done),
        (_TTT_PHASE_WALL, _ttt_phase_wall),
        (_ADAPT_FIRST, _adapt_first),
        (_PREQUANT_TTT, _prequant_ttt),
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
        self._eval_totals()
        self._train_budget()
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

    def _train_budget(self) -> None:
        """Training time with GPTQ calibration in it: golf's `train_budget:` line, else (other logs) the training
        clock plus the calibration times their GPTQ lines print (Hessians, self-generated sequences)."""
        run, events = self.run, self.run.events
        if "train_incl_gptq_s" in events:
            run.gptq_time_s, run.train_incl_gptq_s = events["gptq_time_s"], events["train_incl_gptq_s"]
        elif run.train_time_ms is not None:
            parts = [events[k] for k in ("gptq_hessian_s", "gptq_calib_generate_s") if k in events]
            run.gptq_time_s = sum(parts) if parts else None
            run.train_incl_gptq_s = run.train_time_ms / 1000.0 + sum(parts)
        else:
            run.gptq_time_s = run.train_incl_gptq_s = None
        run.train_fits_budget = (None if run.train_incl_gptq_s is None
                                 else run.train_incl_gptq_s <= TRAIN_BUDGET_S + TIME_SLACK_S)

    def _eval_totals(self) -> None:
        """golf's eval time (all scoring after training, plus a TTT loop no result line timed) and the records' (the
        final scoring pass: the TTT loop for a TTT result, else the final stage's own eval_time)."""
        run = self.run
        run.ttt_time_ms = self._ttt_loop_ms
        if self._total_eval_ms is not None:
            run.eval_time_ms = self._total_eval_ms
        elif self._eval_times or self._ttt_loop_ms is not None:
            after_training = {k: v for k, v in self._eval_times.items() if k != "pre_quant"}
            total = sum(after_training.values()) if after_training else sum(self._eval_times.values())
            if self._ttt_loop_ms is not None and "post_ttt" not in self._eval_times:
                total += self._ttt_loop_ms
            run.eval_time_ms = total
        final = run.final_stage
        if final == "post_ttt" and self._ttt_loop_ms is not None:
            run.record_eval_time_ms = self._ttt_loop_ms
        elif final is not None:
            run.record_eval_time_ms = run.stages[final].eval_time_ms
        else:
            run.record_eval_time_ms = None


def step_fields(text: str) -> list[tuple[str, str, str]]:
    """`_FIELD.findall(text)` in linear time. A key that fails where a run of key characters starts fails from every
    later letter of that run too (same end, same text after it), so the scan goes on after the run, where findall
    would retry the run once per letter (quadratic in a long run of letters)."""
    found: list[tuple[str, str, str]] = []
    pos = 0
    while (run := _KEY_RUN.search(text, pos)) is not None:
        field_ = _FIELD.match(text, run.start())
        if field_ is None:
            pos = run.end()
            continue
        key, value, unit = field_.groups(default="")  # findall's empty string for a missing unit
        found.append((key, value, unit))
        pos = field_.end()
    return found


def _clean_label(text: str) -> str:
    """The label without the settings some logs print between it and val_loss (`stride:64`)."""
    words = text.strip().split()
    return " ".join([words[0]] + [w for w in words[1:] if not _SETTING.match(w)]) if words else ""


def _rounds_to(exact: float, short: float) -> bool:
    """Whether an 8-decimal value prints as the 4-decimal one (the `_exact` twin of a short result line)."""
    return abs(exact - short) <= 0.00005 + 1e-12


def _decimals(text: str) -> int:
    """Decimals printed: eight mark an exact value even without the `_exact` suffix (04-01 logs)."""
    return len(text.split(".")[1]) if "." in text else 0


def _int(text: str) -> int:
    """An integer of a log line; ValueError (a malformed line) for one the run store could not hold."""
    value = int(text)
    if value > MAX_INT:
        raise ValueError(f"{text[:30]}: larger than any stored integer")
    return value


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
