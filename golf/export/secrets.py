"""Keeping credentials out of a record folder.

A secret is the value of an environment variable whose name contains TOKEN, KEY, SECRET or PASSWORD (HF_TOKEN,
WANDB_API_KEY, AWS_SECRET_ACCESS_KEY, ...). The trainer's own knobs are exempt by name (TOKENIZER_PATH and
TRAIN_BATCH_TOKENS are configuration, not credentials). Logs are redacted: every `NAME=value` with such a NAME, and
every literal value of such a variable in this process's environment. Generated files (the trainer, README,
submission.json) are never redacted: finding a secret there refuses the export.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from golf.trainer.hparams import KNOBS_BY_NAME

SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
REDACTED = "<redacted>"
MIN_SECRET_CHARS = 6  # shorter values ("1", "true") would redact ordinary text
# `NAME=value` as shells, launch lines and env dumps write it; env-var names are upper case (lower-case log fields
# such as `chunk_tokens=32768` are the trainer's, not the environment's)
_ASSIGNMENT = re.compile(r"(?<![A-Za-z0-9_])(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;]+)")
# `"NAME": "value"` / `'NAME': 'value'` (a printed dict or JSON)
_QUOTED_PAIR = re.compile(r"(?P<q>[\"'])(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P=q)\s*:\s*(?P<value>\"[^\"\n]*\"|'[^'\n]*')")


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return upper not in KNOBS_BY_NAME and any(word in upper for word in SECRET_WORDS)


def secret_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """value -> variable name, for the secret-named variables of the environment (long enough to search for)."""
    env = os.environ if environ is None else environ
    return {value: name for name, value in sorted(env.items())
            if is_secret_name(name) and len(value.strip()) >= MIN_SECRET_CHARS}


@dataclass
class Redaction:
    text: str
    names: list[str] = field(default_factory=list)  # one entry per redacted occurrence

    @property
    def count(self) -> int:
        return len(self.names)


def redact(text: str, environ: Mapping[str, str] | None = None) -> Redaction:
    """`text` with secret assignments and secret values replaced by <redacted>."""
    names: list[str] = []

    def assignment(match: re.Match[str]) -> str:
        if not is_secret_name(match["name"]) or match["value"].strip("\"'") in ("", REDACTED):
            return match[0]
        names.append(match["name"])
        quote = match["value"][0] if match["value"][0] in "\"'" else ""
        return match[0][: match.start("value") - match.start()] + f"{quote}{REDACTED}{quote}"

    out = _ASSIGNMENT.sub(assignment, text)
    out = _QUOTED_PAIR.sub(assignment, out)
    for value, name in sorted(secret_values(environ).items(), key=lambda kv: -len(kv[0])):
        hits = out.count(value)
        if hits:
            names.extend([name] * hits)
            out = out.replace(value, REDACTED)
    return Redaction(out, names)


def find_secrets(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of the secrets that `text` holds (what `redact` would remove), without changing it."""
    return sorted(set(redact(text, environ).names))
