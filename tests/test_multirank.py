"""Data parallelism on CPU (gloo): 2 ranks must train exactly like 1 process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from golf.analysis.parity import rank_parity
from golf.logparse import parse_text

pytestmark = pytest.mark.slow

TINY = {
    "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "64",
    "TRAIN_BATCH_TOKENS": "2048", "ITERATIONS": "10", "VAL_LOSS_EVERY": "5", "TRAIN_LOG_EVERY": "1",
    "WARMUP_STEPS": "0", "MAX_WALLCLOCK_SECONDS": "0", "VAL_BATCH_SIZE": "32768", "EVAL_SEQ_LEN": "64",
    "MATRIX_LR": "0.1", "TIED_EMBED_LR": "0.3", "SCALAR_LR": "0.1", "SEED": "7",
}


def run_trainer(workdir: Path, nproc: int, data: object, extra: dict[str, str] | None = None) -> str:
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(TINY)
    env.update({"DATA_PATH": str(data.data_path), "TOKENIZER_PATH": str(data.tokenizer_path),  # type: ignore[attr-defined]
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "golf.trainer"], cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_two_ranks_train_like_one_process_with_the_same_global_batch(tmp_path: Path, sample_data: object) -> None:
    one = parse_text(run_trainer(tmp_path / "one", 1, sample_data))
    two = parse_text(run_trainer(tmp_path / "two", 2, sample_data))
    assert (one.config["world_size"], one.config["grad_accum_steps"]) == ("1", "8")
    assert (two.config["world_size"], two.config["grad_accum_steps"]) == ("2", "4")
    steps = sorted(s for s, row in one.curve.items() if "train_loss" in row)
    assert steps == list(range(1, 11))
    losses_one = [one.curve[s]["train_loss"] for s in steps]
    losses_two = [two.curve[s]["train_loss"] for s in steps]
    assert losses_one == pytest.approx(losses_two, abs=2e-4)
    assert losses_one[-1] < losses_one[0] - 0.05  # it trained: the comparison is not between two flat lines
    for stage in ("pre_quant", "post_quant"):
        assert one.stages[stage].val_bpb == pytest.approx(two.stages[stage].val_bpb, abs=2e-4)
    assert one.curve[5]["val_bpb"] == pytest.approx(two.curve[5]["val_bpb"], abs=2e-4)
    report = rank_parity(one, two)  # the comparison bench/rank_parity.py reports for GPU runs, on these real logs
    assert report["world_sizes"] == [1, 2] and report["steps_compared"] == 10
    assert report["train_loss_max_abs_diff"] <= 2e-4
    assert abs(report["stages"]["post_quant"]["diff"]) <= 2e-4
