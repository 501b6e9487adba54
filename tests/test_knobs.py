"""`golf knobs` and docs/knobs.md: every knob with its default, group, help and the record specs that set it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from golf.knobs import DOC_PATH, markdown, record_settings
from golf.trainer.hparams import KNOBS, KNOBS_BY_NAME
from golf_cli.main import app

runner = CliRunner()


def knobs(*args: str) -> list[dict]:
    result = runner.invoke(app, ["knobs", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_knob_listed_with_its_default() -> None:
    rows = knobs()
    assert [r["name"] for r in rows] == [k.name for k in KNOBS]
    by_name = {r["name"]: r for r in rows}
    assert by_name["NUM_LAYERS"]["default"] == "9" and by_name["NUM_LAYERS"]["group"] == "model"
    assert by_name["MLP_MULT"]["default"] == "2.0" and by_name["COMPILE"]["default"] == "1"


def test_pattern_group_and_records(tmp_path: Path) -> None:
    assert {r["name"] for r in knobs("XSA_*")} == {k.name for k in KNOBS if k.name.startswith("XSA_")}
    assert all(r["group"] == "ttt" for r in knobs("--group", "ttt")) and knobs("--group", "ttt")
    words = knobs("warmdown")  # a word matches the name or the help text
    assert {"WARMDOWN_ITERS", "WARMDOWN_FRAC"} <= {r["name"] for r in words}
    # records come from the record specs' own files: pr549 sets XSA_LAST_N: 4, pr1092 (extends pr549) sets 11
    xsa = next(r for r in knobs("XSA_LAST_N") if r["name"] == "XSA_LAST_N")
    assert "pr549=4" in xsa["records"] and "pr1092=11" in xsa["records"]
    assert not any(rec.startswith("smoke=") for r in knobs() for rec in r["records"])  # smoke is no record
    # an independent spec folder: one record, one non-record
    (tmp_path / "a.yaml").write_text("name: rec\nreported: {val_bpb: 1.2}\nenv: {MLP_MULT: 3, NUM_LAYERS: 9}\n")
    (tmp_path / "b.yaml").write_text("name: wip\nenv: {MLP_MULT: 4}\n")
    settings = record_settings(tmp_path)
    assert settings == {"MLP_MULT": [("rec", "3.0")]}  # 3 written as the knob's canonical 3.0; 9 is the default


def test_changed_lists_only_what_the_spec_changes(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nenv: {TRAIN_SEQ_LEN: 2048, MATRIX_BITS: 6, NUM_LAYERS: 9, MLP_MULT: 3}\n")
    rows = knobs("--changed", str(spec))
    # NUM_LAYERS: 9 is the default; EVAL_SEQ_LEN, MLP_BITS (which inherit) are not "changed"
    assert {r["name"]: r["value"] for r in rows} == {"TRAIN_SEQ_LEN": "2048", "MATRIX_BITS": "6", "MLP_MULT": "3.0"}


def test_errors_are_one_line() -> None:
    result = runner.invoke(app, ["knobs", "--group", "modle"])
    assert result.exit_code == 2 and "did you mean model" in result.stderr and result.stderr.count("\n") == 1
    result = runner.invoke(app, ["knobs", "NO_SUCH_THING_AT_ALL"])
    assert result.exit_code == 1 and "no knobs match" in result.stderr


def test_docs_knobs_md_is_current() -> None:
    text = markdown()
    assert DOC_PATH.read_text() == text, "docs/knobs.md is stale: run `python -m golf.knobs --write`"
    for knob in KNOBS:
        assert f"| `{knob.name}` |" in text
    assert "pr549=4" in text.split("`XSA_LAST_N`")[1].split("\n")[0]
    assert KNOBS_BY_NAME["XSA_LAST_N"].group in text
    assert "[docs/knobs.md](docs/knobs.md)" in (DOC_PATH.parent.parent / "README.md").read_text()
