"""Values read off log lines: integers the run store can hold, floats, printed precision, result labels."""

from __future__ import annotations

import re

# The largest integer SQLite stores: a bigger one in a log line is damage (a value no store can hold), not data.
MAX_INT = 2**63 - 1

# A setting some logs print between a result's label and val_loss (`stride:64`): not part of the label.
_SETTING = re.compile(r"^[A-Za-z_]+[:=]\S+$")


def clean_label(text: str) -> str:
    """The label without the settings some logs print between it and val_loss (`stride:64`)."""
    words = text.strip().split()
    return " ".join([words[0]] + [w for w in words[1:] if not _SETTING.match(w)]) if words else ""


def rounds_to(exact: float, short: float) -> bool:
    """Whether an 8-decimal value prints as the 4-decimal one (the `_exact` twin of a short result line)."""
    return abs(exact - short) <= 0.00005 + 1e-12


def decimals_printed(text: str) -> int:
    """Decimals printed: eight mark an exact value even without the `_exact` suffix (04-01 logs)."""
    return len(text.split(".")[1]) if "." in text else 0


def stored_int(text: str) -> int:
    """An integer of a log line; ValueError (a malformed line) for one the run store could not hold."""
    value = int(text)
    if value > MAX_INT:
        raise ValueError(f"{text[:30]}: larger than any stored integer")
    return value


def float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
