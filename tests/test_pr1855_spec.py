"""specs/pr1855.yaml end to end on CPU, scaled down: CaseOps data built by `golf data caseops`, document-isolated
attention, GPTQ + LQER, phased LoRA TTT; every stage in runs.db and val_bpb on the original bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from golf.trainer.shards import read_shard
from golf_cli.main import app

# 17 virtual layers through phased TTT: minutes on a busy CPU
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
runner = CliRunner()
SPEC = Path(__file__).resolve().parent.parent / "specs" / "pr1855.yaml"

SCALE_DOWN = {  # the record's techniques, tiny: two micro-batches of 256 tokens a step, 4 steps, short TTT work
    "VOCAB_SIZE": 1024, "MODEL_DIM": 32, "NUM_HEADS": 2, "NUM_KV_HEADS": 1, "ROPE_DIMS": 8, "GATE_WINDOW": 8,
    "SMEAR_GATE_WIDTH": 8, "TRAIN_SEQ_LEN": 128, "EVAL_SEQ_LEN": 128, "TRAIN_BATCH_TOKENS": 512, "GRAD_ACCUM_STEPS": 1,
    "ITERATIONS": 4, "WARMUP_STEPS": 0, "TRAIN_LOG_EVERY": 1, "MAX_WALLCLOCK_SECONDS": 0, "VAL_BATCH_SIZE": 8192,
    "GPTQ_CALIBRATION_BATCHES": 1, "GPTQ_RESERVE_SECONDS": 0, "TTT_SEQ_LEN": 128, "TTT_LORA_RANK": 4,
    "TTT_CHUNK_SIZE": 128, "TTT_BATCH_SIZE": 4, "PHASED_TTT_PREFIX_DOCS": 6, "PHASED_TTT_NUM_PHASES": 2,
    "GLOBAL_TTT_CHUNK_TOKENS": 8192, "GLOBAL_TTT_BATCH_SEQS": 8, "LQER_TOP_K": 2,
}


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from golf.data.caseops import build_caseops
    from golf.data.sample import build_sample

    root = tmp_path_factory.mktemp("caseops")
    sample = build_sample(root / "sample", max_files=60)
    return build_caseops(sample.data_path, root / "caseops")


def test_pr1855_runs_scaled_down_with_every_stage(caseops_data, workdir: Path, db: Path) -> None:  # type: ignore
    sets = [f"{k}={v}" for k, v in SCALE_DOWN.items()]
    result = runner.invoke(app, ["run", str(SPEC), "--db", str(db), "--seed", "1", "--nproc", "1",
                                 "--data", str(caseops_data.data_path), "--set", *sets])
    assert result.exit_code == 0, result.output[-4000:]
    shown = json.loads(runner.invoke(app, ["show", "pr1855-s1", "--format", "json", "--db", str(db)]).stdout)
    assert shown["status"] == "completed" and shown["steps"] == 4
    assert shown["final_stage"] == "post_ttt" and shown["final_bpb"] == shown["post_ttt_bpb"]
    for stage in ("pre_quant", "post_quant", "post_ttt"):
        assert 0.5 < shown[f"{stage}_bpb"] < 12, stage
    assert shown["non_record_reason"] is None  # phased LoRA TTT is score-first
    assert shown["ttt_time_ms"] > 0 and shown["eval_time_ms"] >= shown["ttt_time_ms"]
    assert (shown["log_events"] or {}).get("byte_sidecar") == "enabled"  # runs.db says: CaseOps bytes
    log = Path(shown["log_path"]).read_text()
    for line in ("doc_attention:enabled", "ttt_phased: total_docs:", "ttpp: phase:1/2", "tttg: c1/",
                 "quantized_ttt_phased val_loss:", "ttt:done time=", "beginning TTT eval timer",
                 # the training side (the frontier techniques), each seen at work
                 "layer_loop:enabled step:", "  parallel_final_lane: mean", "  use_polar_express: 1",
                 "  smear_gate_enabled: 1", "  sparse_attn_gate_enabled: 1", "  fused_ce_enabled: 1"):
        assert line in log, line
    # val_bpb divides by the original text's bytes: the sidecar's entries of the targets the trainer scores
    # (the validation stream cut to whole EVAL_SEQ_LEN sequences plus one token)
    side = np.asarray(read_shard(caseops_data.data_path / "fineweb_val_bytes_000000.bin"))
    usable = (side.size - 1) // 128 * 128
    assert f"val_bytes:{int(side[1:usable + 1].sum())}" in log
