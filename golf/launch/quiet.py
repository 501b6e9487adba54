"""What `golf run` keeps off the terminal (the log file keeps every line): the 100-line knob dump and the
tracebacks of a failing trainer and of torchrun. What it keeps instead: the trainer's error line, the cause.

`--verbose` shows everything, as the log has it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# torchrun prefixes worker lines with the rank when it tees them (`[rank0]: ...`)
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d*\]:\s?")
# the line that ends a traceback: `ShardError: ...`, `golf.trainer.shards.ShardError: ...`, `KeyboardInterrupt`
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Z][\w]*(?:Error|Exception|Interrupt|Exit|Failure))\b(?::\s?(.*))?$")
# torchrun's own report of a failed child: not the cause, only its echo
_LAUNCHER = ("ChildFailedError", "SignalException")
_LAUNCHER_LINE = re.compile(r"^(?:=+$|-+$|Root Cause|Failures:|\s*\[\d+\]:|\s*<NO_OTHER_FAILURES>|\S+ FAILED$|"
                            r"\s+(time|host|rank|exitcode|error_file|traceback)\s*:|.*torch\.distributed\.elastic|"
                            r".*torch/distributed/)")


class LineFilter:
    """Fed each log line in order; says whether the terminal shows it, and remembers the trainer's error line."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.cause: str | None = None
        self.hidden = 0
        self._in_knobs = False
        self._in_traceback = False

    def show(self, raw: str) -> bool:
        line = _RANK_PREFIX.sub("", raw)
        visible = self._classify(line)
        if not visible:
            self.hidden += 1
        return visible or self.verbose

    def _classify(self, line: str) -> bool:
        if self._in_knobs:
            if line.startswith("  ") and ":" in line:
                return False
            self._in_knobs = False
        if line.rstrip() == "Hyperparameters:":
            self._in_knobs = True
            return False
        if line.startswith("Traceback (most recent call last):"):
            self._in_traceback = True
            return False
        if self._in_traceback:
            match = _EXCEPTION.match(line)
            if match and not line.startswith((" ", "\t")):
                self._in_traceback = False
                name, message = match.group(1), (match.group(2) or "").strip()
                if name not in _LAUNCHER and self.cause is None:
                    # the first error is the trainer's; later ones are echoes. `a.b.ShardError: x` → `ShardError: x`
                    self.cause = f"{name}: {message}" if message else name
            return False
        return not _LAUNCHER_LINE.match(line) or not self._after_error()

    def _after_error(self) -> bool:
        return self.cause is not None


def error_cause(lines: Iterable[str]) -> str | None:
    """The trainer's error line in a log (`ShardError: ...`), None when the log has no traceback."""
    quiet = LineFilter()
    for line in lines:
        quiet.show(line.rstrip("\n"))
    return quiet.cause
