"""The frontier records' knobs: listed by `golf run --dry-run`, validated with a did-you-mean, older names mapped."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.trainer.hparams import Hyperparameters, KnobError, parse_overrides
from golf_cli.main import app

SPECS = Path(__file__).resolve().parent.parent / "specs"
NEW = ("NUM_LOOPS", "LOOP_START", "LOOP_END", "ENABLE_LOOPING_AT", "LOOP_PHASE2_AT", "PARALLEL_RESIDUAL_START",
       "PARALLEL_FINAL_LANE", "SKIP_GATES_ENABLED", "SPARSE_ATTN_GATE_ENABLED", "SPARSE_ATTN_GATE_SCALE",
       "SPARSE_ATTN_GATE_INIT_STD", "GATE_WINDOW", "ATTN_OUT_GATE_ENABLED", "ATTN_OUT_GATE_SRC", "SMEAR_GATE_ENABLED",
       "SMEAR_GATE_WIDTH", "FUSED_CE_ENABLED", "TRAIN_LOADER", "USE_POLAR_EXPRESS", "WD_TAPER_START_FRAC",
       "WD_TAPER_FINAL_MULT", "MIN_LR")


def test_dry_run_lists_every_frontier_knob_with_the_specs_values() -> None:
    result = CliRunner().invoke(app, ["run", str(SPECS / "pr1855.yaml"), "--dry-run", "--seed", "42"])
    assert result.exit_code == 0, result.output
    listed = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line and line[:1].isupper())
    assert set(NEW) <= set(listed)
    assert (listed["NUM_LOOPS"], listed["PARALLEL_FINAL_LANE"], listed["SPARSE_ATTN_GATE_SCALE"]) == \
        ("2", "mean", "0.5")
    assert (listed["USE_POLAR_EXPRESS"], listed["MIN_LR"], listed["FUSED_CE_ENABLED"]) == ("1", "0.1", "1")


def test_a_typo_of_a_frontier_knob_gets_a_did_you_mean() -> None:
    with pytest.raises(KnobError, match="unknown knob SPARSE_ATTN_GATE_SCAL; did you mean SPARSE_ATTN_GATE_SCALE"):
        parse_overrides({"SPARSE_ATTN_GATE_SCAL": 0.5})
    with pytest.raises(KnobError, match="environment: unknown knob LOOP_STRAT; did you mean LOOP_START"):
        Hyperparameters.from_env({"LOOP_STRAT": "3"})
    result = CliRunner().invoke(app, ["run", str(SPECS / "pr1493.yaml"), "--dry-run", "--set", "NUM_LOOP=2"])
    assert result.exit_code == 2 and "did you mean NUM_LOOPS" in result.output
    with pytest.raises(KnobError, match="TRAIN_LOADER='random' is not valid: expected one of stream, shuffled"):
        parse_overrides({"TRAIN_LOADER": "random"})


def test_aliases_and_foreign_env_vars() -> None:
    assert Hyperparameters.resolve({"POLAR_EXPRESS": 1}).use_polar_express is True
    assert Hyperparameters.resolve({"RECUR_START_FRAC": 0.4}).enable_looping_at == 0.4
    # families too generic to claim: a shell's ENABLE_* or SKIP_* is not mistaken for a knob typo
    assert Hyperparameters.from_env({"ENABLE_COLORS": "1", "SKIP_SLOW": "1"}).num_loops == 0
