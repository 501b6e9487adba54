"""EVAL_ONLY_PATH: the trainer scores a recorded artifact with other evaluation knobs, without training."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from golf.logparse.parser import parse_text
from tests.test_finish import run, tiny

KNOBS = {"MATRIX_BITS": 6, "COMPRESSOR": "lzma", "EVAL_STRIDE": 16, "TTT_ENABLED": 1}


def _sizes(lines: list[str]) -> list[str]:
    return [line for line in lines if re.match(r"^(Serialized model|Code size|Total submission size|bytes_breakdown)",
                                               line)]


def test_eval_only_reproduces_the_stages_and_ttt_lr_changes_only_post_ttt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    train_lines, trained = run(tiny(**KNOBS), capsys)
    artifact = tmp_path / "final_model.int6.ptz"
    blob = artifact.read_bytes()
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    monkeypatch.chdir(eval_dir)

    same_lines, same = run(tiny(**KNOBS, EVAL_ONLY_PATH=str(artifact)), capsys)
    assert set(same) == {"post_quant", "sliding", "post_ttt"}  # no float weights here: no pre_quant
    for stage in same:
        assert (same[stage].val_loss, same[stage].val_bpb) == (trained[stage].val_loss, trained[stage].val_bpb)
    assert _sizes(same_lines) == _sizes(train_lines)  # the same file, the same size lines and breakdown
    assert not list(eval_dir.glob("final_model.*")) and artifact.read_bytes() == blob  # nothing written
    assert any(line.startswith(f"eval_only: artifact={artifact} bytes:{len(blob)} ") for line in same_lines)

    other_lines, other = run(tiny(**KNOBS, EVAL_ONLY_PATH=str(artifact), TTT_LR=0.05), capsys)
    for stage in ("post_quant", "sliding"):
        assert other[stage].val_loss == trained[stage].val_loss
    assert other["post_ttt"].val_loss != trained["post_ttt"].val_loss

    parsed = parse_text("\n".join(other_lines))  # golf's parser reads an eval-only log as any other
    assert set(parsed.stages) == {"post_quant", "sliding", "post_ttt"} and parsed.final_stage == "post_ttt"
    assert parsed.total_bytes == parse_text("\n".join(train_lines)).total_bytes
