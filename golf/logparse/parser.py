"""One parser for golf's trainer and the community's training logs.

Lines are matched by the line families of `golf.logparse.patterns` and read into a `ParsedRun`
(`golf.logparse.parsed`) through the coercions of `golf.logparse.values`.
`LogParser.feed` consumes one line at a time (the launcher streams the trainer's stdout through it);
`parse_log` splits a whole file into run segments (ingest keeps the last complete one).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from golf.logparse import patterns
from golf.logparse.events import MARKERS, match_event
from golf.logparse.parsed import ParsedRun, StageValue
from golf.logparse.values import clean_label, decimals_printed, float_or_none, rounds_to, stored_int
from golf.trainer.limits import TIME_SLACK_S, TRAIN_BUDGET_S
from golf.trainer.stages import stage_of

__all__ = ["LogParser", "ParsedRun", "StageValue", "parse_log", "parse_text", "stage_of"]

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
        line = patterns.TIMESTAMP.sub("", raw.rstrip("\r\n"))
        self.run.lines += 1
        if self._in_hparams:
            row = patterns.HP_ROW.match(line)
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
        if patterns.HP_HEADER.match(line):
            self._in_hparams = True
            return True
        if self._step_line(stripped):
            return True
        result = patterns.RESULT.match(stripped) or patterns.RESULT_BPB_ONLY.match(stripped)
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
        setting = patterns.TTT_SETTING.match(stripped)
        if setting:
            self.run.config[setting.group(1)] = setting.group(2)
            return True
        if MARKERS.match(stripped):
            return True
        if patterns.DAMAGED.match(stripped):
            self.run.malformed += 1
            return True
        kv = patterns.KV_LINE.match(stripped)
        if kv:
            known = False
            for key, value in patterns.KV_PAIR.findall(stripped):
                if key in patterns.OLD_CONFIG_KEYS:
                    # what the run actually used (e.g. grad_accum_steps:8 where the knob said 0 = auto)
                    self.run.config[key] = value
                    known = True
            return known
        return False

    def _unplaced(self, line: str) -> None:
        stripped = line.strip()
        if line[:1].isspace() or patterns.NOISE.match(stripped) or patterns.CODE_LIKE.match(stripped):
            return  # indented lines, source code and runtime noise are nobody's data
        if self._unplaced_cap is None or len(self.run.unplaced) < self._unplaced_cap:
            self.run.unplaced.append((self.run.lines, stripped))

    def _step_line(self, line: str) -> bool:
        head = patterns.STEP_HEAD.match(line)
        if not head:
            return False
        step = stored_int(head.group(1) or head.group(3))
        total = stored_int(head.group(2) or head.group(4))
        fields = {k: (float(v.replace(",", "")), unit) for k, v, unit in patterns.step_fields(head.group(5))}
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
        batch = float_or_none(self.run.config.get("train_batch_tokens"))
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
        label = clean_label(m.group("label"))
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
        decimals = 8 if label.lower().endswith("_exact") else decimals_printed(bpb_text)
        short = self._last_short
        if decimals >= 6 and short is not None and rounds_to(bpb, short[2]) and \
                (loss is None or short[1] is None or rounds_to(loss, short[1])):
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
        t = patterns.EVAL_TIME.search(rest)
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
        if key in patterns.PREQUANT_TTT_KNOBS and value.strip().lower() in ("1", "true", "yes", "on"):
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
        self._serialized[m.group("label")] = stored_int(m.group("n"))

    def _total_line(self, m: re.Match[str]) -> None:
        self._totals[m.group("label")] = stored_int(m.group("n"))

    def _code_line(self, m: re.Match[str]) -> None:
        self._code[m.group("kind")] = stored_int(m.group("n"))

    def _alt_size(self, m: re.Match[str]) -> None:
        label = m.group("label").lower()
        self._serialized[label] = stored_int(m.group("n"))
        self._totals[label] = stored_int(m.group("total"))

    def _budget(self, m: re.Match[str]) -> None:
        self._totals["budget"] = stored_int(m.group(1))

    def _artifact_code(self, m: re.Match[str]) -> None:
        self._code.setdefault(None, stored_int(m.group(1)))

    def _peak(self, m: re.Match[str]) -> None:
        self.run.peak_mem_mib = stored_int(m.group(1))
        if m.group(2):
            self.run.peak_mem_reserved_mib = stored_int(m.group(2))

    def _params(self, m: re.Match[str]) -> None:
        self.run.model_params = stored_int(m.group(1))

    def _stop(self, m: re.Match[str]) -> None:
        self.run.stop_reason = m.group(1)
        if m.group(2):
            self.run.train_time_ms = float(m.group(2))
        if m.group(3):
            self.run.steps = stored_int(m.group(3))
            self.run.iterations = stored_int(m.group(4))

    def _total_eval(self, m: re.Match[str]) -> None:
        self._total_eval_ms = float(m.group(1)) * 1000.0

    def _ttt_time(self, m: re.Match[str]) -> None:
        self._ttt_loop_ms = float(m.group(1))

    def _first_step(self, m: re.Match[str]) -> None:
        self.run.time_to_first_step_s = float(m.group(1))

    def _eval_warmup(self, m: re.Match[str]) -> None:
        graphs = self.run.events.setdefault("eval_warmup_graphs", {})  # graph -> seconds
        if m.group("graph"):
            graphs[m.group("graph")] = float(m.group("s"))
            self.run.eval_warmup_s = float(m.group("total"))
        else:
            graphs.update(dict.fromkeys(m.group("graphs").split(",")))
            self.run.eval_warmup_s = float(m.group("old_total"))

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
        self.run.bytes_breakdown = {k: stored_int(v) for k, v in patterns.KV_PAIR.findall(m.group(1))}

    def _diverged(self, m: re.Match[str]) -> None:
        self.run.diverged = True
        self.run.stop_reason = "diverged"

    def _non_record(self, m: re.Match[str]) -> None:
        self.run.non_record_reason = m.group(1).strip()

    def _eval_mode(self, m: re.Match[str]) -> None:
        self._eval_mode_sliding = True

    def _val_tokens(self, m: re.Match[str]) -> None:
        self.run.val_tokens = stored_int(m.group(1))

    def _header(self, m: re.Match[str]) -> None:
        self.run.header.update(dict(patterns.KV_PAIR.findall(m.group(1))))

    def _attention(self, m: re.Match[str]) -> None:
        self.run.header["attention"] = m.group(1)

    _handlers: list[tuple[re.Pattern[str], Any]] = [
        (patterns.SERIALIZED, _serialized_line),
        (patterns.TOTAL, _total_line),
        (patterns.CODE, _code_line),
        (patterns.ALT_SIZE, _alt_size),
        (patterns.BUDGET, _budget),
        (patterns.ARTIFACT_CODE, _artifact_code),
        (patterns.PEAK, _peak),
        (patterns.PARAMS, _params),
        (patterns.STOP, _stop),
        (patterns.TOTAL_EVAL, _total_eval),
        (patterns.TTT_TIME, _ttt_time),
        (patterns.FIRST_STEP, _first_step),
        (patterns.EVAL_WARMUP, _eval_warmup),
        (patterns.TTT_DONE, _ttt_done),
        (patterns.TTT_PHASE_WALL, _ttt_phase_wall),
        (patterns.ADAPT_FIRST, _adapt_first),
        (patterns.PREQUANT_TTT, _prequant_ttt),
        (patterns.BREAKDOWN, _breakdown),
        (patterns.DIVERGED, _diverged),
        (patterns.NON_RECORD, _non_record),
        (patterns.EVAL_MODE_SLIDING, _eval_mode),
        (patterns.RUN_HEADER, _header),
        (patterns.ATTENTION, _attention),
        (patterns.VAL_TOKENS, _val_tokens),
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
            batch = float_or_none(run.config.get("train_batch_tokens"))
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


def parse_log(lines: Iterable[str]) -> list[ParsedRun]:
    """Split a log into run segments and parse each; segments without content are dropped."""
    segments: list[ParsedRun] = []
    parser = LogParser()
    for raw in lines:
        line = patterns.TIMESTAMP.sub("", raw.rstrip("\r\n"))
        if patterns.RUN_START.match(line) and parser.run.has_content and not parser._in_hparams:
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
