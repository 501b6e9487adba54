"""bench/artifact_compare.py on a tiny CPU run trained with SAVE_RAW_MODEL=1: every figure computed, and each one
checked against an independent reading (the saved files, the run's own log, the trainer's functions)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

# 256 wide: the matrices are larger than the trainer's float passthrough (65,536 values), so they are quantized
TINY = {"VOCAB_SIZE": "1024", "NUM_LAYERS": "2", "MODEL_DIM": "256", "NUM_HEADS": "4", "NUM_KV_HEADS": "2",
        "MLP_MULT": "2", "TRAIN_SEQ_LEN": "32", "EVAL_SEQ_LEN": "32", "TRAIN_BATCH_TOKENS": "256", "ITERATIONS": "3",
        "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1", "WARMUP_STEPS": "0", "MAX_WALLCLOCK_SECONDS": "0",
        "VAL_BATCH_SIZE": "4096", "EVAL_STRIDE": "0", "TTT_ENABLED": "0", "USE_GPTQ": "1",
        "GPTQ_CALIBRATION_BATCHES": "1", "MATRIX_BITS": "6", "EMBED_BITS": "8", "COMPRESSOR": "brotli",
        "BYTE_SHUFFLE": "1", "SAVE_RAW_MODEL": "1", "SEED": "5"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as golf leaves one: train.log, the artifact, and final_model_raw.pt."""
    from spm_model import tokenizer_bytes

    from golf.trainer import train
    from golf.trainer.shards import write_shard

    root = tmp_path_factory.mktemp("artifact_compare")
    shards = root / "data"
    shards.mkdir()
    tokenizer = root / "tok.model"
    tokenizer.write_bytes(tokenizer_bytes(1024))
    rng = np.random.default_rng(0)
    write_shard(shards / "fineweb_train_000000.bin", rng.integers(1, 1024, 8000))
    write_shard(shards / "fineweb_val_000000.bin", rng.integers(1, 1024, 1025))
    folder = root / "run"
    folder.mkdir()
    env = {**TINY, "DATA_PATH": str(shards), "TOKENIZER_PATH": str(tokenizer)}
    saved = {k: os.environ.get(k) for k in env}
    old = os.getcwd()
    printed = io.StringIO()
    try:
        os.environ.update(env)
        os.chdir(folder)
        with contextlib.redirect_stdout(printed):
            assert train.main([]) == 0
    finally:
        os.chdir(old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    (folder / "train.log").write_text(printed.getvalue(), encoding="utf-8")
    return folder


def _compare(folder: Path, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    import artifact_compare

    out, blobs = tmp_path / "cmp.json", tmp_path / "blobs"
    with contextlib.redirect_stdout(io.StringIO()):
        assert artifact_compare.main([str(folder), "--out", str(out), "--save-artifacts", str(blobs)]) == 0
    return json.loads(out.read_text()), blobs


def test_raw_model_is_the_weights_the_artifact_quantized(trained: Path) -> None:
    import torch

    from golf.trainer.artifact import load_artifact

    raw = torch.load(trained / "final_model_raw.pt", weights_only=True)
    stored = load_artifact(trained / "final_model.int6.ptz")
    assert set(raw) == set(stored)
    name = "blocks.0.mlp.fc.weight"
    # quantized at 6 bits: close to the raw matrix, not equal to it
    err = (stored[name] - raw[name].float()).abs()
    assert 0 < err.max() < raw[name].float().abs().max() / 8


def test_compare_figures(trained: Path, tmp_path: Path) -> None:
    import torch

    from golf.logparse import parse_text
    from golf.trainer.artifact import unpack

    result, blobs = _compare(trained, tmp_path)
    assert result["complete"] is True
    log = parse_text((trained / "train.log").read_text())
    # the raw weights score as the run's own pre-quant stage did (same weights, same plain evaluation)
    assert result["pre_quant"]["val_bpb"] == pytest.approx(log.stages["pre_quant"].val_bpb, abs=1e-6)
    assert result["run_log"]["model_bytes"] == (trained / "final_model.int6.ptz").stat().st_size
    assert result["gptq"]["layers"] > 0
    for name in ("sdclip", "clip_search"):
        q = result["quant"][name]
        assert math.isfinite(q["gap_bpb"])
        assert q["gap_bpb"] == pytest.approx(q["post_quant"]["val_bpb"] - result["pre_quant"]["val_bpb"])
    assert result["quant"]["sdclip"]["clip_sigmas"] == {"embeddings": 20.0, "attention": 12.85, "mlp": 12.85,
                                                        "other": 12.85}
    # the two clips give different post-quant scores (the clip is all that differs)
    assert result["quant"]["sdclip"]["post_quant"]["val_bpb"] != result["quant"]["clip_search"]["post_quant"]["val_bpb"]
    for name in ("brotli11_shuffle", "pergroup", "pergroup_shuffle"):
        c = result["compress"][name]
        blob = (blobs / f"sdclip.{name}.ptz").read_bytes()
        assert c["bytes"] == len(blob) and c["roundtrip_exact"] is True
        assert c["compress_s"] > 0 and c["decompress_s"] > 0
        assert sum(c["sections"].values()) + c["overhead"] == len(blob)
    # the two containers hold the same tensors, bit for bit
    a = {e.name: e for e in unpack((blobs / "sdclip.brotli11_shuffle.ptz").read_bytes())}
    b = {e.name: e for e in unpack((blobs / "sdclip.pergroup.ptz").read_bytes())}
    assert set(a) == set(b) and all(torch.equal(a[n].data, b[n].data) for n in a)
    assert result["compress"]["pergroup_minus_brotli_bytes"] == (result["compress"]["pergroup"]["bytes"]
                                                                 - result["compress"]["brotli11_shuffle"]["bytes"])
    assert result["codecs_available"]["zlib"] is True
    assert result["quant"]["sdclip"]["brotli11_shuffle_bytes"] == result["compress"]["brotli11_shuffle"]["bytes"]
    assert 0 < result["quant"]["clip_search"]["brotli11_shuffle_bytes"] != result["compress"]["brotli11_shuffle"][
        "bytes"]


def test_entries_equal_sees_one_flipped_code(trained: Path) -> None:
    import artifact_compare

    from golf.trainer.artifact import unpack

    blob = (trained / "final_model.int6.ptz").read_bytes()
    a, b = unpack(blob), unpack(blob)
    assert artifact_compare.entries_equal(a, b)
    coded = next(e for e in b if e.scale is not None)
    coded.data.view(-1)[0] += 1
    assert not artifact_compare.entries_equal(a, b)


def test_missing_raw_model_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import artifact_compare

    (tmp_path / "train.log").write_text("Hyperparameters:\n  seed: 1\n")
    assert artifact_compare.main([str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "SAVE_RAW_MODEL=1" in err[0]
    assert not (tmp_path / "x.json").exists()


def test_cpu_run_row_has_training_with_calibration(trained: Path) -> None:
    """The CPU run's log -> runs.db fields: the steps' clock plus the GPTQ calibration it printed, within 600 s."""
    import re

    from golf.logparse import parse_text
    from golf.store.fields import fields_from_parsed

    text = (trained / "train.log").read_text()
    row = fields_from_parsed(parse_text(text))
    calibrated = float(re.search(r"^gptq:calibrated \d+ layers in ([\d.]+)s$", text, re.MULTILINE).group(1))
    assert row["gptq_time_s"] == pytest.approx(calibrated, abs=0.051)  # the same time, printed to 0.1 s there
    assert row["train_incl_gptq_s"] == pytest.approx(row["train_time_ms"] / 1000 + row["gptq_time_s"], abs=0.002)
    assert row["train_fits_budget"] is True
