"""Keeping credentials out of a record folder.

A secret is found two ways, so that what ships does not depend on the shell that exports it:
- by pattern: the tokens of the usual providers (Hugging Face `hf_…`, GitHub `ghp_…`/`github_pat_…`, OpenAI-style
  `sk-…`, AWS `AKIA…`, Slack `xox…`, Google `AIza…`), `Authorization:` / `Bearer …` headers, credentials in URLs
  (`https://user:token@host`), and assignments `NAME=value` / `name: value` / `"name": "value"` whose name is a
  secret's: upper-case names containing TOKEN, KEY, SECRET or PASSWORD, or any-case names ending in `_token`,
  `_key`, `_secret`, `_password` (and `password` itself);
- by value: every literal value of such a variable in this process's environment.
The trainer's own knobs are exempt by name (TOKENIZER_PATH and TRAIN_BATCH_TOKENS are configuration, not
credentials). Logs are redacted; generated files (the trainer, README, submission.json) are never redacted:
finding a secret there refuses the export.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from golf.trainer.hparams import KNOBS_BY_NAME

SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")
REDACTED = "<redacted>"
MIN_SECRET_CHARS = 6  # shorter values ("1", "true") would redact ordinary text
_VALUE = r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s\"',;]+)"
# `NAME=value` as shells, launch lines and env dumps write it (any case: `hf_token=…` is one too)
_ASSIGNMENT = re.compile(r"(?<![A-Za-z0-9_])(?P<name>[A-Za-z][A-Za-z0-9_]*)=" + _VALUE)
# `"NAME": "value"` / `'NAME': 'value'` (a printed dict or JSON)
_QUOTED_PAIR = re.compile(r"(?P<q>[\"'])(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P=q)\s*:\s*(?P<value>\"[^\"\n]*\"|'[^'\n]*')")
# `name: value` (a hyperparameter dump, YAML): only secret names reach the replacement
_COLON_PAIR = re.compile(r"(?<![A-Za-z0-9_\"'])(?P<name>[A-Za-z][A-Za-z0-9_]*):[ \t]+" + _VALUE)
# a lower- or mixed-case name is a secret's only with a suffix (`sort(key=…)`, `chunk_tokens=…` are not)
_SECRET_SUFFIX = re.compile(r"^(?:[A-Za-z0-9]+_)+(?:token|key|secret|password|passwd)$|^(?:password|passwd)$",
                            re.IGNORECASE)
# provider tokens, wherever they appear; each needs a digit or capital (identifiers like hf_transfer are not keys)
PROVIDER_TOKENS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("Hugging Face token", re.compile(r"\bhf_(?=[a-z]*[0-9A-Z])[A-Za-z0-9]{10,}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b")),
    ("API key (sk-)", re.compile(r"\bsk-(?=[A-Za-z_-]*[0-9])[A-Za-z0-9_-]{16,}")),
    ("AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
)
# `Authorization: Bearer abc…`, `authorization=token abc…`, and a bare `Bearer abc…`
_AUTH_HEADER = re.compile(r"(?i)\b(?P<head>authorization\s*[:=]\s*(?:(?:bearer|basic|token)\s+)?)"
                          r"(?P<value>[^\s\"',;]+)")
_BEARER = re.compile(r"(?i)\b(?P<head>bearer\s+)(?P<value>[A-Za-z0-9._~+/-]{8,}=*)")
# `scheme://user:password@host`: the password (or token) goes
_URL_CREDENTIALS = re.compile(r"(?i)\b(?P<head>[a-z][a-z0-9+.-]*://[^\s/:@]+:)(?P<value>[^\s/@]+)(?=@)")


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


def is_secret_assignment(name: str) -> bool:
    """Whether `name=value` (or `name: value`) in a log is a credential: an upper-case env-var name that
    `is_secret_name` accepts, or an any-case name ending in _token/_key/_secret/_password."""
    if name.upper() in KNOBS_BY_NAME:
        return False
    return is_secret_name(name) if name.isupper() else bool(_SECRET_SUFFIX.match(name))


def redact(text: str, environ: Mapping[str, str] | None = None) -> Redaction:
    """`text` with secret assignments, provider tokens, auth headers, URL credentials and the environment's secret
    values replaced by <redacted>."""
    names: list[str] = []

    def assignment(match: re.Match[str]) -> str:
        if not is_secret_assignment(match["name"]) or match["value"].strip("\"'") in ("", REDACTED):
            return match[0]
        names.append(match["name"])
        quote = match["value"][0] if match["value"][0] in "\"'" else ""
        return match[0][: match.start("value") - match.start()] + f"{quote}{REDACTED}{quote}"

    def labelled(label: str) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            if match["value"].startswith(REDACTED):
                return match[0]
            names.append(label)
            return match["head"] + REDACTED

        return replace

    out = _ASSIGNMENT.sub(assignment, text)
    out = _QUOTED_PAIR.sub(assignment, out)
    out = _COLON_PAIR.sub(assignment, out)
    out = _AUTH_HEADER.sub(labelled("Authorization header"), out)
    out = _BEARER.sub(labelled("bearer token"), out)
    out = _URL_CREDENTIALS.sub(labelled("credentials in a URL"), out)
    for value, name in sorted(secret_values(environ).items(), key=lambda kv: -len(kv[0])):
        hits = out.count(value)
        if hits:
            names.extend([name] * hits)
            out = out.replace(value, REDACTED)
    for label, pattern in PROVIDER_TOKENS:
        out, hits = pattern.subn(REDACTED, out)
        names.extend([label] * hits)
    return Redaction(out, names)


def find_secrets(text: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of the secrets that `text` holds (what `redact` would remove), without changing it."""
    return sorted(set(redact(text, environ).names))
