"""What a person watching `golf run` sees: the log streaming by (dim), a status line while it runs, and a summary.

On a terminal the status line (step, loss, ms/step, tokens/s, ETA) stays pinned under the scrolling log;
anywhere else the log lines are simply echoed, so piping `golf run` to a file gives the plain log.
Lines are printed by a thread of their own: a terminal that is gone (SIGHUP) or a pipe nobody reads never holds
up the launcher (lines beyond ECHO_QUEUE_LINES are skipped on screen; train.log has them all).
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from golf.launch.quiet import LineFilter
from golf.logparse import ParsedRun
from golf.trainer.limits import BYTES_CAP
from golf.trainer.stages import STAGES

ECHO_QUEUE_LINES = 10_000
# Set when golf's output stopped draining (a pipe nobody reads): what golf would print next is skipped, and `golf run`
# ends without flushing it, so golf never hangs on its own output once the run is recorded.
OUTPUT_STUCK = threading.Event()
STAGE_ROWS = tuple((stage.name, stage.live_label) for stage in STAGES)


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def expected_stages(knobs: Mapping[str, str]) -> list[str]:
    """The evaluation stages the bundled trainer runs after training, in order, for these knobs."""
    def on(key: str) -> bool:
        return str(knobs.get(key, "0")).strip().lower() not in ("", "0", "false", "no", "off")

    return [stage.name for stage in STAGES if stage.enabled_by is None or on(stage.enabled_by)]


def training_done(parsed: ParsedRun) -> bool:
    step, total = parsed.steps, parsed.iterations
    return (parsed.peak_mem_mib is not None or bool(parsed.stages) or parsed.stop_reason == "wallclock_cap"
            or (step is not None and bool(total) and step >= total))


def eval_stage_text(parsed: ParsedRun, stages: Sequence[str] | None) -> str:
    """`evaluating: sliding window (2/3)`: the first expected stage without a result yet."""
    if not stages:
        return "evaluating"
    pending = [s for s in stages if s not in parsed.stages]
    if not pending:
        return "evaluation done, writing results"
    labels = dict(STAGE_ROWS)
    return f"evaluating: {labels.get(pending[0], pending[0])} ({stages.index(pending[0]) + 1}/{len(stages)})"


def status_text(parsed: ParsedRun, elapsed_s: float, batch_tokens: float | None = None,
                wallclock_cap_s: float | None = None, stages: Sequence[str] | None = None) -> str:
    """One line: step/total, train loss, ms/step, tokens/s, ETA (the smaller of steps left and the time cap);
    once training is over, the evaluation stage in progress instead of the ETA."""
    parts = []
    step, total = parsed.steps, parsed.iterations
    parts.append(f"step {step if step is not None else '-'}/{total if total is not None else '?'}")
    last_loss = next((row["train_loss"] for _, row in sorted(parsed.curve.items(), reverse=True)
                      if "train_loss" in row), None)
    if last_loss is not None:
        parts.append(f"loss {last_loss:.4f}")
    last_val = next((row["val_bpb"] for _, row in sorted(parsed.curve.items(), reverse=True) if "val_bpb" in row),
                    None)
    if last_val is not None:
        parts.append(f"val_bpb {last_val:.4f}")
    avg = parsed.step_avg_ms
    if avg:
        parts.append(f"{avg:.1f} ms/step")
    tokens_s = parsed.tokens_per_s or (batch_tokens / (avg / 1000.0) if batch_tokens and avg else None)
    if tokens_s:
        parts.append(f"{tokens_s:,.0f} tok/s")
    if training_done(parsed):
        parts.append(eval_stage_text(parsed, stages))
        parts.append(f"elapsed {format_duration(elapsed_s)}")
        return " · ".join(parts)
    eta = None
    if avg and step is not None and total:
        eta = max(total - step, 0) * avg / 1000.0
        if wallclock_cap_s and parsed.train_time_ms is not None:
            eta = min(eta, max(wallclock_cap_s - parsed.train_time_ms / 1000.0, 0.0))
    parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA ?")
    parts.append(f"elapsed {format_duration(elapsed_s)}")
    return " · ".join(parts)


class RunDisplay:
    """Context manager fed every log line; `enabled=False` keeps it silent."""

    def __init__(self, title: str, enabled: bool = True, batch_tokens: float | None = None,
                 wallclock_cap_s: float | None = None, console: Console | None = None,
                 verbose: bool = False, stages: Sequence[str] | None = None) -> None:
        self.title = title
        self.filter = LineFilter(verbose)  # knob dump and tracebacks stay in the log unless verbose
        self.stages = list(stages) if stages is not None else None
        self.enabled = enabled
        self.batch_tokens = batch_tokens
        self.wallclock_cap_s = wallclock_cap_s
        self.console = console or Console(highlight=False)
        self.tty = enabled and self.console.is_terminal
        self.parsed = ParsedRun()
        self.started = time.monotonic()
        self.skipped = 0  # lines not shown because the output could not keep up
        self.output_error: str | None = None
        self._live: Live | None = None
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(ECHO_QUEUE_LINES)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunDisplay:
        if self.tty:
            self._live = Live(get_renderable=self._status, console=self.console, refresh_per_second=4,
                              transient=True, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        if self.enabled:
            self._thread = threading.Thread(target=self._echo, name="golf-display", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
            self._thread.join(timeout=2.0)  # a blocked output is left behind, never waited on
            if self._thread.is_alive():
                OUTPUT_STUCK.set()
            self._thread = None
        if self._live is not None:
            with contextlib.suppress(OSError):
                self._live.stop()
            self._live = None

    def _status(self) -> Text:
        line = status_text(self.parsed, time.monotonic() - self.started, self.batch_tokens, self.wallclock_cap_s,
                           self.stages)
        return Text(f"{self.title}  {line}", style="bold cyan")

    @property
    def cause(self) -> str | None:
        """The trainer's error line (`ShardError: ...`), if its output had a traceback."""
        return self.filter.cause

    def line(self, text: str, parsed: ParsedRun) -> None:
        self.parsed = parsed
        if self.filter.show(text):
            self._put("line", text)

    def note(self, text: str) -> None:
        self._put("note", text)

    def _put(self, kind: str, text: str) -> None:
        if not self.enabled or self.output_error is not None:
            return
        if self._thread is None:  # outside the `with`: print directly
            self._write(kind, text)
            return
        try:
            self._queue.put_nowait((kind, text))
        except queue.Full:
            self.skipped += 1

    def _echo(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.output_error is None:
                self._write(*item)

    def _write(self, kind: str, text: str) -> None:
        try:
            if kind == "note":
                self.console.print(Text(text, style="yellow"))
            elif self._live is not None:
                self._live.console.print(Text(text, style="dim"), soft_wrap=True)
            else:
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
        except (OSError, ValueError) as exc:  # the terminal is gone (SIGHUP) or stdout closed: stop printing
            self.output_error = str(exc)


def summary_renderable(run: Any) -> Group:
    """The end-of-run summary: bpb per stage, bytes against the cap, times, status."""
    table = Table(title=f"{run.name} ({run.id})", show_header=True, header_style="bold", title_justify="left")
    table.add_column("", style="bold")
    table.add_column("val_bpb", justify="right")
    table.add_column("val_loss", justify="right")
    for stage, label in STAGE_ROWS:
        bpb, loss = getattr(run, f"{stage}_bpb", None), getattr(run, f"{stage}_loss", None)
        if bpb is not None:
            table.add_row(label, f"{bpb:.4f}", f"{loss:.4f}" if loss is not None else "")
    if run.final_bpb is not None:
        table.add_row(Text(f"final ({run.final_stage})", style="bold green"), Text(f"{run.final_bpb:.8f}",
                      style="bold green"), f"{run.final_loss:.4f}" if run.final_loss is not None else "")
    else:
        table.add_row("final", Text("none (no evaluation result in the log)", style="yellow"), "")

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    if run.total_bytes is not None:
        headroom = BYTES_CAP - run.total_bytes
        style = "red bold" if headroom < 0 else "green"
        facts.add_row("total bytes", Text(f"{run.total_bytes:,} of {BYTES_CAP:,} "
                                          f"({'over by' if headroom < 0 else 'headroom'} {abs(headroom):,})",
                                          style=style))
        if run.model_bytes is not None or run.code_bytes is not None:
            facts.add_row("", f"model {run.model_bytes or 0:,} + code {run.code_bytes or 0:,}"
                              + (f" ({run.quant_label})" if run.quant_label else ""))
    else:
        facts.add_row("total bytes", Text("not reported", style="yellow"))
    steps = f"{run.steps:,}" if run.steps is not None else "?"
    if run.iterations:
        steps += f"/{run.iterations:,}"
    train = format_duration(run.train_time_ms / 1000.0) if run.train_time_ms is not None else "?"
    avg = f", {run.step_avg_ms:.1f} ms/step" if run.step_avg_ms else ""
    if run.parent_id and not run.steps:  # a `golf eval` re-score trains nothing: name whose artifact it scores
        facts.add_row("train", f"none (re-scores the artifact of run {run.parent_id})")
    else:
        facts.add_row("train", f"{steps} steps in {train}{avg}")
    facts.add_row("eval", format_duration(run.eval_time_ms / 1000.0) if run.eval_time_ms is not None else "?")
    status_style = {"completed": "green", "running": "cyan"}.get(run.status, "red bold")
    facts.add_row("status", Text(status_line(run), style=status_style))
    if run.non_record_reason:
        facts.add_row("non-record", Text(run.non_record_reason, style="yellow"))
    facts.add_row("log", str(run.log_path))
    if run.artifact_path:
        facts.add_row("artifact", str(run.artifact_path))
    return Group(table, facts)


def status_line(run: Any) -> str:
    """`failed: ShardError: … (exit code 1)`, `completed`: the status, its cause, the exit code once."""
    text = run.status
    reason = run.stop_reason if run.status != "completed" else None
    if reason and reason != f"exit code {run.exit_code}":
        text += f": {reason}"
    if run.exit_code not in (0, None):
        text += f" (exit code {run.exit_code})"
    return text


def failure_lines(run: Any) -> list[str]:
    """What a run that stopped without a score says: what happened, where the log is, how to see more."""
    where = f"{run.name} ({run.id})"
    if run.status == "interrupted":
        at = f" at step {run.steps}/{run.iterations}" if run.steps is not None and run.iterations else ""
        return [f"golf: {where} interrupted ({run.stop_reason or 'signal'}){at}, recorded as interrupted; "
                f"log: {run.log_path}"]
    return [f"golf: {where} {status_line(run)}",
            f"golf: log: {run.log_path} (the full output; `golf run --verbose` also shows it here)"]


def seeds_summary(runs: Sequence[Any], label: str | None = None) -> Table:
    """The end of a multi-seed run: each stage's mean ± std over the completed seeds, bytes, times."""
    from golf.analysis.stats import mean_std_text, summarize

    done = [r for r in runs if r.status == "completed"]
    states = ", ".join(f"{r.seed}: {r.status}" for r in runs if r.status != "completed")
    name = label or getattr(runs[0], "experiment", None) or runs[0].name.rsplit("-s", 1)[0]
    title = f"{name}: {len(done)} of {len(runs)} seeds completed" + (
        f" ({states})" if states else "")
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("")
    table.add_column("mean ± std (n)", justify="right")
    table.add_column("per seed", justify="right")

    def add(label: str, values: list[Any], fmt: str, scale: float = 1.0) -> None:
        scaled = [v * scale if v is not None else None for v in values]
        if all(v is None for v in scaled):
            return
        per_seed = " ".join(fmt.format(v) if v is not None else "—" for v in scaled)
        table.add_row(label, mean_std_text(summarize(scaled), fmt=fmt), per_seed)

    for stage, label in STAGE_ROWS:
        add(label, [getattr(r, f"{stage}_bpb") for r in done], "{:.4f}")
    add("final bpb", [r.final_bpb for r in done], "{:.4f}")
    add("total bytes", [r.total_bytes for r in done], "{:,.0f}")
    add("train time s", [r.train_time_ms for r in done], "{:.1f}", 1e-3)
    add("eval time s", [r.eval_time_ms for r in done], "{:.1f}", 1e-3)
    table.caption = "seeds " + " ".join(str(r.seed) for r in done) if done else None
    return table


def print_summary(run: Any, console: Console | None = None) -> None:
    if OUTPUT_STUCK.is_set():
        return
    console = console or Console(highlight=False)
    if run.status != "completed" and (run.status == "interrupted" or run.final_bpb is None):
        for line in failure_lines(run):
            console.print(Text(line, style="yellow" if run.status == "interrupted" else "red"), soft_wrap=True)
        return
    console.print(summary_renderable(run))


def seed_header(plan: Any, k: int, n: int, console: Console | None = None) -> None:
    """`── seed 42 (2/3): xsa-all-s42 ──` before each seed of a multi-seed run."""
    if OUTPUT_STUCK.is_set():
        return
    (console or Console(highlight=False)).rule(f"seed {plan.seed} ({k}/{n}): {plan.name}", style="bold")


def print_seeds_summary(runs: Sequence[Any], console: Console | None = None) -> None:
    if OUTPUT_STUCK.is_set():
        return
    (console or Console(highlight=False)).print(seeds_summary(runs))
