"""The records' time accounting in runs.db: training with GPTQ calibration in it (and whether it fits 600 s), eval
time as the records count it beside golf's total; read from hand-written logs, stored, shown by `golf show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.logparse import parse_text
from golf.store import Run, Store
from golf.store.fields import fields_from_parsed
from golf_cli.main import app

GOLF_LOG = """Hyperparameters:
  seed: 42
step:100/200 train_loss:3.1000 train_time:597000ms step_avg:5970.00ms
stopping_early: wallclock_cap train_time:598000ms step:100/200
pre_quant val_loss:2.9000 val_bpb:1.2000 eval_time:1500ms
gptq:self_generated seqs:64 seq_len:2048 time:9.8s
gptq:calibrated 66 layers in 12.3s
train_budget: train_time:598000ms gptq_time:12300ms total:610300ms cap:600000ms
final_int6_brotli_shuffle_roundtrip val_loss:2.9500 val_bpb:1.2100 eval_time:3000ms
final_int6_brotli_shuffle_roundtrip_exact val_loss:2.95000000 val_bpb:1.21000000
legal_ttt val_loss:2.9100 val_bpb:1.2050 eval_time:401000ms
legal_ttt_exact val_loss:2.91000000 val_bpb:1.20500000
ttt_time:401000ms
total_eval_time:455.5s
"""


def _row(text: str) -> dict:
    return fields_from_parsed(parse_text(text))


def test_golf_log_gives_training_with_calibration_and_the_records_eval_time() -> None:
    row = _row(GOLF_LOG)
    assert row["gptq_time_s"] == 12.3 and row["train_incl_gptq_s"] == 610.3
    assert row["train_fits_budget"] is False  # 598 s of steps fit; with 12.3 s of calibration they do not
    assert row["train_time_ms"] == 598000.0
    assert row["record_eval_time_ms"] == 401000.0 and row["eval_time_ms"] == 455500.0  # the TTT loop, golf's total
    assert parse_text(GOLF_LOG).events["gptq_calib_generate_s"] == 9.8


def test_within_budget_and_without_gptq() -> None:
    fits = GOLF_LOG.replace("train_time:598000ms gptq_time:12300ms total:610300ms",
                            "train_time:588000ms gptq_time:11900ms total:599900ms")
    assert _row(fits)["train_fits_budget"] is True and _row(fits)["train_incl_gptq_s"] == 599.9
    plain = "\n".join(line for line in GOLF_LOG.splitlines() if not line.startswith(("gptq:", "train_budget:")))
    row = _row(plain)
    assert (row["gptq_time_s"], row["train_incl_gptq_s"], row["train_fits_budget"]) == (None, 598.0, True)


def test_a_community_log_adds_the_calibration_its_gptq_lines_print() -> None:
    text = ("step:4554/20000 train_loss:2.8 train_time:588012ms step_avg:129.12ms\n"
            "GPTQ:collected 67 Hessians in 12.7s\n"
            "quantized_sliding_window val_loss:2.7 val_bpb:1.0827 eval_time:90000ms\n")
    row = _row(text)
    assert row["gptq_time_s"] == 12.7 and row["train_incl_gptq_s"] == pytest.approx(600.712)
    assert row["train_fits_budget"] is True  # within the step-boundary slack of golf.trainer.limits
    over = _row(text.replace("12.7s", "14.0s"))
    assert over["train_incl_gptq_s"] == pytest.approx(602.012) and over["train_fits_budget"] is False


def test_the_store_keeps_them_and_golf_show_prints_them(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    store = Store(db)
    store.create_run(Run(id="r1", name="r-s42", seed=42, status="completed", **{
        k: v for k, v in _row(GOLF_LOG).items() if k in Run.model_fields}))
    got = store.resolve_run("r1")
    assert (got.train_incl_gptq_s, got.gptq_time_s, got.train_fits_budget) == (610.3, 12.3, False)
    runner = CliRunner()
    shown = runner.invoke(app, ["show", "r1", "--db", str(db), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert (data["train_incl_gptq_s"], data["train_fits_budget"], data["record_eval_time_ms"]) == (610.3, False,
                                                                                                  401000.0)
    table = runner.invoke(app, ["show", "r1", "--db", str(db), "--format", "md"])
    assert "610.3 s (steps + GPTQ calibration): over the 600 s budget" in table.stdout
