"""Every seed-record spec runs end to end through `golf run` on CPU, scaled down, with each stage it uses in runs.db.

The scale-down keeps each spec's techniques (layer count, XSA/VE/bigram/recurrence layout, quantization,
compressor, TTT form) and shrinks width, sequence length, batch, steps and TTT work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf_cli.main import app

pytestmark = pytest.mark.slow
runner = CliRunner()
SPECS = Path(__file__).resolve().parent.parent / "specs"

SCALE_DOWN = {
    "MODEL_DIM": 64, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "TRAIN_SEQ_LEN": 128, "EVAL_SEQ_LEN": 128,
    "TRAIN_BATCH_TOKENS": 2048, "ITERATIONS": 6, "WARMUP_STEPS": 0, "WARMDOWN_ITERS": 3, "VAL_LOSS_EVERY": 0,
    "TRAIN_LOG_EVERY": 1, "MAX_WALLCLOCK_SECONDS": 0, "VAL_BATCH_SIZE": 8192, "EVAL_BATCH_SEQS": 16,
    "TTT_EPOCHS": 1, "TTT_CHUNK_TOKENS": 4096, "TTT_BATCH_SEQS": 4, "TTT_SEQ_LEN": 128,
    "GPTQ_CALIBRATION_BATCHES": 2, "GPTQ_RESERVE_SECONDS": 0,
}

# spec -> (extra knobs, final stage, quant label, non-record?)
CASES = {
    "pr549": ({"EVAL_STRIDE": 32}, "sliding", "int6+lzma-6", False),
    "pr371": ({"EVAL_STRIDE": 32}, "post_ttt", "int6+zstd-22", True),
    "pr371-legal": ({"EVAL_STRIDE": 32}, "post_ttt", "int6+zstd-22", False),
    "pr562": ({"EVAL_STRIDE": 32, "SWA_EVERY": 2, "SWA_START_FRAC": 0.9}, "post_ttt", "mixed_int5_int6+zstd-22",
              True),
    "pr1045": ({"EVAL_STRIDE": 32}, "sliding", "int6+lzma", False),
    "pr1045-adamw-ttt": ({"EVAL_STRIDE": 32}, "post_ttt", "int6+lzma", False),
    "pr1092": ({"EVAL_STRIDE": 32, "SWA_EVERY": 2, "SWA_START_FRAC": 0.9}, "post_ttt", "int6+lzma-6", False),
    "pr1550": ({"EVAL_STRIDE": 32, "VOCAB_SIZE": 1024, "RECUR_START_STEP": 3}, "sliding", "int6+brotli-shuffle",
               True),
    # 17 virtual layers: one micro-step per step keeps these two near the others' time on CPU
    "pr1493": ({"EVAL_STRIDE": 64, "VOCAB_SIZE": 1024, "TTT_BATCH_SEQS": 4, "WARMUP_STEPS": 1, "GRAD_ACCUM_STEPS": 1},
               "post_ttt", "int6+brotli-shuffle", False),
    # pr1855 runs on CaseOps data with phased LoRA TTT: tests/test_pr1855_spec.py
}
# the frontier records' techniques, each seen at work in the run's log
FRONTIER_LINES = {
    "pr1493": ("layer_loop:enabled step:3 frac:0.500 encoder:[0, 1, 2, 3, 4, 5, 3, 4] "
               "decoder:[5, 3, 4, 5, 6, 7, 8, 9, 10]", "loop_warmup:enabled", "  train_loader: shuffled"),
}


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory):
    from golf.data.sample import build_sample

    return build_sample(tmp_path_factory.mktemp("seed_sample"), max_files=60)


@pytest.mark.timeout(1800)  # a 17-virtual-layer spec's stages take minutes on a busy 2-core CI box
@pytest.mark.parametrize("spec", sorted(CASES))
def test_seed_spec_runs_scaled_down_with_its_stages(spec: str, small_sample, workdir: Path, db: Path) -> None:
    extra, final_stage, quant_label, non_record = CASES[spec]
    sets = [f"{k}={v}" for k, v in {**SCALE_DOWN, **extra}.items()]
    result = runner.invoke(app, ["run", str(SPECS / f"{spec}.yaml"), "--db", str(db), "--seed", "1", "--nproc", "1",
                                 "--data", str(small_sample.data_path), "--set", *sets])
    assert result.exit_code == 0, result.output[-4000:]
    shown = json.loads(runner.invoke(app, ["show", f"{spec}-s1", "--format", "json", "--db", str(db)]).stdout)
    assert shown["status"] == "completed"
    assert shown["final_stage"] == final_stage
    stages = ["pre_quant", "post_quant", "sliding", "post_ttt"]
    for stage in stages[:stages.index(final_stage) + 1]:
        if stage == "sliding" and final_stage == "post_ttt" and not extra.get("EVAL_STRIDE"):
            continue
        assert 0.5 < shown[f"{stage}_bpb"] < 12, stage
    assert shown["final_bpb"] == shown[f"{final_stage}_bpb"]
    assert shown["quant_label"] == quant_label
    assert (shown["non_record_reason"] is not None) == non_record
    assert sum(shown["bytes_breakdown"].values()) == shown["total_bytes"] == shown["model_bytes"] + shown["code_bytes"]
    assert shown["steps"] == 6 and shown["spec_name"] == spec
    log = Path(shown["log_path"]).read_text()
    if spec == "pr1550":
        assert "layer_loop:enabled step:3" in log and "gptq:calibrated" in log
    for line in FRONTIER_LINES.get(spec, ()):
        assert line in log, line
    if spec in ("pr1092", "pr562"):
        assert "swa:applying averaged" in log
    if spec == "pr1045":
        assert "qat:enabled whole_run" in log
