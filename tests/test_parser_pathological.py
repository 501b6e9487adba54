"""Hostile lines: the parser reads a 200,000-character line in linear time (its regexes never retry a long run of
letters, digits or spaces once per character), and reads every real line exactly as the backtracking forms did."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from golf.logparse import LogParser, patterns
from golf.trainer import loglines

CORPUS = Path(__file__).parent / "data" / "community_lines" / "lines.yaml"
SHARED_LOGS = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

# Each took minutes before (quadratic or worse: ~0.7 s at 10,000 characters, 4x per doubling).
PATHOLOGICAL = {
    "letters after a step head": "step:1/2 " + "a" * 200_000,
    "letter pairs after a 04-01 step head": "1/2 " + "ab" * 100_000,
    "a digit run that ends no number": "step:1/2 train_loss:" + "1" * 200_000 + "x",
    "spaces after a label-like word": "x" + " " * 200_000 + "y",
    "spaces after a key": "final_x val_loss:" + " " * 200_000 + "y",
    "letters as a header's settings": "golf_trainer: " + "a" * 200_000,
}


@pytest.mark.timeout(30)  # a regression fails here instead of hanging the suite for minutes
@pytest.mark.parametrize("line", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_a_200k_character_pathological_line_parses_well_under_a_second(line: str) -> None:
    parser = LogParser()
    start = time.perf_counter()
    parser.feed(line)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"{elapsed:.2f}s for {len(line):,} characters"
    assert parser.run.curve == {} and parser.run.stages == {}  # none of them is data


def _step_lines() -> list[str]:
    """Every step line the tests know: the community corpus, the trainer's formatters, the record logs in ../shared."""
    lines = [str(line) for entry in yaml.safe_load(CORPUS.read_text(encoding="utf-8")) for line in entry["lines"]]
    lines += [loglines.train_step_line(7, 20000, 3.1415926, 4321.49),
              loglines.train_step_line(1, 10, float("nan"), 12.0),
              loglines.val_step_line(4000, 20000, 2.04321, 1.21012, 360123.6)]
    if SHARED_LOGS.is_dir():
        for log in sorted(SHARED_LOGS.rglob("*.log")) + sorted(SHARED_LOGS.rglob("*.txt")):
            lines += log.read_text(encoding="utf-8", errors="replace").splitlines()
    stripped = [patterns.TIMESTAMP.sub("", line).strip() for line in lines]
    return [line for line in stripped if patterns.STEP_HEAD.match(line)]


def test_step_fields_reads_every_step_line_as_findall_does() -> None:
    lines = _step_lines()
    assert len(lines) >= 20
    read = 0
    for line in lines:
        rest = patterns.STEP_HEAD.match(line).group(5)  # type: ignore[union-attr]
        fields = patterns.step_fields(rest)
        assert fields == patterns.FIELD.findall(rest), line
        read += bool(fields)
    assert read >= 20  # real fields, not empty lists agreeing
    # where a field ends inside a run of key characters (a unit, then `/`), the next key starts there, as in findall
    tricky = "step_avg:1.5ms/b:2 tok/s: 6,400,000 x:nan/y:3 aaaa bb:"
    assert patterns.step_fields(tricky) == patterns.FIELD.findall(tricky) == [
        ("step_avg", "1.5", "ms"), ("/b", "2", ""), ("tok/s", "6,400,000", ""), ("x", "nan", ""), ("/y", "3", "")]


# The backtracking forms the parser used before: a label of any ending, a number split two ways, findall's keys.
_OLD = {"label": (r"[A-Za-z](?:[\w\-.:() ]*?[\w\-.:()])?", r"[A-Za-z][\w\-.:() ]*?"),
        "damaged": (r"[A-Za-z](?:[\w\-. ]*?[\w\-.])?", r"[A-Za-z][\w\-. ]*?"),
        "number": (r"\d+(?:\.\d*)?", r"\d+\.?\d*"),
        "kv": (r"(?<![a-z0-9_])[0-9]*([a-z_]", r"([a-z_]")}


def _old_form(pattern: re.Pattern[str], *parts: str) -> re.Pattern[str]:
    text = pattern.pattern
    for part in parts:
        new, old = _OLD[part]
        assert new in text, f"{part}: the pattern changed; update _OLD"
        text = text.replace(new, old)
    return re.compile(text)


def test_the_linear_patterns_read_every_real_line_as_the_backtracking_ones() -> None:
    lines = [str(line) for entry in yaml.safe_load(CORPUS.read_text(encoding="utf-8")) for line in entry["lines"]]
    if SHARED_LOGS.is_dir():
        for log in sorted(SHARED_LOGS.rglob("*.log")):
            lines += log.read_text(encoding="utf-8", errors="replace").splitlines()
    pairs = [(getattr(patterns, name), _old_form(getattr(patterns, name), *parts)) for name, parts in (
        ("RESULT", ("label", "number")), ("RESULT_BPB_ONLY", ("label", "number")), ("DAMAGED", ("damaged",)),
        ("EVAL_TIME", ("number",)), ("TTT_DONE", ("number",)), ("ADAPT_FIRST", ("number",)))]
    kv_old = _old_form(patterns.KV_PAIR, "kv")
    matched = 0
    for raw in lines:
        line = patterns.TIMESTAMP.sub("", raw).strip()
        for new, old in pairs:
            a, b = new.search(line), old.search(line)
            assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), (new.pattern, line)
            matched += a is not None
        assert patterns.KV_PAIR.findall(line) == kv_old.findall(line), line
    assert matched >= 50
