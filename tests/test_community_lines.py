"""Every line family of the community corpus (tests/data/community_lines/lines.yaml: real lines, cited by record
folder or PR) parses to the values written beside it, and every registered event parses its own example."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from golf.logparse import LogParser, ParsedRun
from golf.logparse.events import EVENTS, match_event

CORPUS = Path(__file__).parent / "data" / "community_lines" / "lines.yaml"
ENTRIES: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
STAGE_KEYS = {"val_bpb": "val_bpb", "val_loss": "val_loss", "stage_eval_ms": "eval_time_ms", "label": "label"}


def parse(entry: dict[str, Any]) -> ParsedRun:
    parser = LogParser()
    for line in entry.get("extra_lines_before", []) + entry["lines"]:
        parser.feed(line)
    return parser.run


def actual(run: ParsedRun, key: str, stage: str | None) -> Any:
    if key in STAGE_KEYS:
        assert stage in run.stages, f"no {stage} stage; stages: {sorted(run.stages)}"
        return getattr(run.stages[stage], STAGE_KEYS[key])
    head, _, rest = key.partition(".")
    if head == "events":
        return run.events.get(rest)
    if head == "curve":
        step, _, column = rest.partition(".")
        return run.curve.get(int(step), {}).get(column)
    if key == "evidence":
        return sorted(run.evidence)
    return getattr(run, key)


def same(key: str, got: Any, want: Any) -> bool:
    if key.endswith(("train_time_ms", "step_avg_ms")) and isinstance(got, float):
        # times derived from tok/s were worked out by hand to the hundredth of a millisecond
        return math.isclose(got, want, abs_tol=0.01)
    if isinstance(want, float) and isinstance(got, (int, float)):
        return math.isclose(got, want, rel_tol=1e-12)  # a value printed on the line: read exactly
    return bool(got == want)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["family"][:60] for e in ENTRIES])
def test_family_parses_to_the_values_on_its_lines(entry: dict[str, Any]) -> None:
    run = parse(entry)
    expect = dict(entry["expect"])
    stage = expect.pop("stage", None)
    if stage is not None:
        assert stage in run.stages, f"{entry['family']}: no {stage} stage; stages: {sorted(run.stages)}"
    for key, want in expect.items():
        if key == "evidence":
            want = sorted(want)
        got = actual(run, key, stage)
        assert same(key, got, want), f"{entry['family']}: {key} = {got!r}, the line says {want!r}"
    assert run.malformed == 0
    assert not run.unplaced, f"{entry['family']}: unplaced {run.unplaced}"


def test_every_family_names_its_source_and_is_unique() -> None:
    families = [e["family"] for e in ENTRIES]
    assert len(families) == len(set(families))
    assert all(e.get("source") for e in ENTRIES)


@pytest.mark.parametrize("event", EVENTS, ids=[e.name for e in EVENTS])
def test_every_event_parses_its_example(event: Any) -> None:
    found = match_event(event.example.strip())
    assert found is not None and found[0].name == event.name
    assert found[1], event.name


def test_an_unknown_line_is_reported_with_its_number_and_code_is_not() -> None:
    parser = LogParser()
    for line in ["def eval_val(args):", "    return x", "model_params:26993756", "zebra_count: 17 stripes",
                 "x = torch.zeros(3)", "warmup_step:1/20"]:
        parser.feed(line)
    assert parser.run.unplaced == [(4, "zebra_count: 17 stripes")]


def test_ingest_explain_lists_unplaced_families_and_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from golf_cli.main import app

    log = tmp_path / "train.log"
    log.write_text("model_params:17059912\nzebra_count: 3 stripes\nzebra_count: 4 stripes\n"
                   "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570\n", encoding="utf-8")
    db = tmp_path / "runs.db"
    result = CliRunner().invoke(app, ["ingest", "--explain", str(log), "--format", "json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["line"], r["text"], r["repeats"]) for r in rows] == [(2, "zebra_count: 3 stripes", 2)]
    assert not db.exists()
