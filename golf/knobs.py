"""The knob reference: every knob of the bundled trainer with its default, group, help, and the records that set it.

`golf knobs` prints it; `python -m golf.knobs --write` regenerates docs/knobs.md from it (a test keeps the page
current). "Records" are the specs in specs/ that reproduce a record (they carry `reported: {val_bpb: ...}`); a
record sets a knob when its own file (not a spec it extends) gives it a value other than the default.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from golf.errors import GolfError
from golf.trainer.hparams import KNOBS, KNOBS_BY_NAME, Knob, KnobError

REPO = Path(__file__).resolve().parent.parent
SPECS_DIR = REPO / "specs"
DOC_PATH = REPO / "docs" / "knobs.md"


def canonical(knob: Knob, value: Any) -> str:
    """A knob value as the trainer's env text (`3` and `3.0` for a float knob are both `3.0`)."""
    try:
        return knob.format(knob.parse(value))
    except KnobError:
        return str(value)


def canonical_value(name: str, value: Any) -> Any:
    """The one written form of a value of knob `name` (labels, tables, ablations); None stays None, and a name
    that is no knob of the bundled trainer (a community trainer's env var) keeps its text."""
    if value is None:
        return None
    knob = KNOBS_BY_NAME.get(name)
    return canonical(knob, value) if knob is not None else str(value)


def canonical_change(change: str) -> str:
    """`MLP_MULT=3` → `MLP_MULT=3.0`: a label's KEY=VALUE in the canonical form."""
    key, sep, value = change.partition("=")
    return f"{key}={canonical_value(key, value)}" if sep else change


@lru_cache(maxsize=4)
def record_settings(specs_dir: Path = SPECS_DIR) -> dict[str, list[tuple[str, str]]]:
    """knob -> [(record spec name, value it sets)], oldest record (lowest PR number) first."""
    import yaml

    out: dict[str, list[tuple[str, str]]] = {}
    found = []
    for path in specs_dir.glob("*.yaml"):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        reported = raw.get("reported") or {}
        if not isinstance(reported, dict) or "val_bpb" not in reported:
            continue  # not a record's reproduction (smoke, work in progress)
        pr = reported.get("pr")
        found.append((pr if isinstance(pr, int) else 0, str(raw.get("name", path.stem)), raw))
    for _pr, name, raw in sorted(found, key=lambda f: (f[0], f[1])):  # in the order the records came
        for key, value in (raw.get("env") or {}).items():
            knob = KNOBS_BY_NAME.get(str(key))
            if knob is None:
                continue
            text = canonical(knob, value)
            if text != knob.format(knob.default):
                out.setdefault(knob.name, []).append((name, text))
    return out


def groups() -> list[str]:
    return list(dict.fromkeys(k.group for k in KNOBS))


def knob_rows(pattern: str | None = None, group: str | None = None, changed: dict[str, Any] | None = None,
              specs_dir: Path = SPECS_DIR) -> list[dict[str, Any]]:
    """One row per knob matching PATTERN (a glob on the name, or words in the name or help), GROUP, and, with
    `changed` (a spec's env), only the knobs it sets to a non-default value, with that value."""
    if group is not None and group not in groups():
        import difflib

        close = difflib.get_close_matches(group, groups(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise GolfError(f"--group {group}: no such knob group; {hint}expected one of {', '.join(groups())}")
    records = record_settings(specs_dir)
    rows = []
    for knob in KNOBS:
        if group is not None and knob.group != group:
            continue
        if pattern and not _matches(knob, pattern):
            continue
        default = knob.format(knob.default)
        row: dict[str, Any] = {"name": knob.name, "group": knob.group, "kind": knob.kind, "default": default,
                               "expects": knob.expects(), "help": knob.help,
                               "records": [f"{spec}={value}" for spec, value in records.get(knob.name, [])]}
        if changed is not None:
            if knob.name not in changed:
                continue
            value = canonical(knob, changed[knob.name])
            if value == default:
                continue
            row["value"] = value
        rows.append(row)
    return rows


def _matches(knob: Knob, pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatch(knob.name, pattern.upper())
    low = pattern.lower()
    return low in knob.name.lower() or low in knob.help.lower()


def columns(changed: bool) -> list[Any]:
    from golf.output import Col

    cols = [Col("name", "knob"), Col("group", priority=2)]
    if changed:
        cols.append(Col("value"))
    cols += [Col("default"), Col("help", priority=1), Col("records", fmt=lambda v: ", ".join(v), priority=3)]
    return cols


def markdown(specs_dir: Path = SPECS_DIR) -> str:
    """docs/knobs.md: one table per group."""
    from golf.output import markdown_table

    lines = ["# Knobs of the bundled trainer", "",
             "Generated by `python -m golf.knobs --write` from `golf/trainer/hparams.py` and `specs/*.yaml`; "
             "`golf knobs` prints the same (filter with `PATTERN`, `--group`, `--changed SPEC`). Every knob is an "
             "environment variable named as in the challenge's trainers, set in a spec's `env:` or with "
             "`golf run SPEC --set KNOB=VALUE`. \"Records\" are the record specs in `specs/` that set the knob "
             "to something other than its default.", ""]
    rows = knob_rows(specs_dir=specs_dir)
    for group in groups():
        body = [[f"`{r['name']}`", f"`{r['default']}`" if r["default"] != "" else "(empty)", r["expects"],
                 r["help"], ", ".join(r["records"])] for r in rows if r["group"] == group]
        lines += [f"## {group}", "", markdown_table(["Knob", "Default", "Accepts", "What it does", "Records"], body),
                  ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    text = markdown()
    if args == ["--write"]:
        DOC_PATH.write_text(text)
        print(f"wrote {DOC_PATH}")
        return 0
    if args:
        print("usage: python -m golf.knobs [--write]", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
