"""End to end: a real golf run of the bundled trainer (CPU, tiny), exported as a record folder; the folder alone is
copied elsewhere and its train_gpt.py run from inside it — plain, lzma- and brotli-packed — must print the same step
losses, the same final val_bpb and the same artifact size as the golf run it came from."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from golf.trainer.hparams import KNOBS_BY_NAME, looks_like_knob
from golf_cli.main import app

pytestmark = pytest.mark.slow
runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
SEED = 7
# tiny: 2 layers of width 64, 4 steps of 1024 tokens, a 4096-token validation set
SETS = ["ITERATIONS=4", "VAL_LOSS_EVERY=2", "TRAIN_LOG_EVERY=1", "WARMDOWN_ITERS=2", "TRAIN_SEQ_LEN=128",
        "TRAIN_BATCH_TOKENS=1024", "VAL_BATCH_SIZE=4096", "MODEL_DIM=64"]
# what must agree line for line between the golf run's log and the exported file's (times excluded)
SAME = re.compile(r"^(step:\d+/\d+ (train_loss|val_loss):\S+( val_bpb:\S+)?|\S+_exact .*|Serialized model .*)")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A slice of the sample dataset under names that are not the challenge's (so the export must bake the
    challenge's default paths, and the exported run must be pointed at the data)."""
    from golf.data.sample import build_sample
    from golf.trainer.shards import read_shard, write_shard

    sample = build_sample(tmp_path_factory.mktemp("sample"), max_files=60)
    root = tmp_path_factory.mktemp("tiny")
    data, tokenizer = root / "datasets" / "tiny_sp1024", root / "tokenizers" / "tiny_1024_bpe.model"
    data.mkdir(parents=True)
    tokenizer.parent.mkdir()
    shutil.copy(sample.tokenizer_path, tokenizer)
    write_shard(data / "fineweb_train_000000.bin", read_shard(sample.data_path / "fineweb_train_000000.bin")[:40_000])
    write_shard(data / "fineweb_val_000000.bin", read_shard(sample.data_path / "fineweb_val_000000.bin")[:4097])
    return data, tokenizer


@pytest.fixture(scope="module")
def golf_run(tiny_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("work")
    db = work / "runs.db"
    before = Path.cwd()
    os.chdir(work)
    try:
        args = ["run", str(REPO / "specs" / "smoke.yaml"), "--db", str(db), "--data", str(tiny_data[0]),
                "--seed", str(SEED), "--name", "tiny"]
        for item in SETS:
            args += ["--set", item]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output[-3000:]
    finally:
        os.chdir(before)
    shown = runner.invoke(app, ["show", f"tiny-s{SEED}", "--format", "json", "--db", str(db)])
    return {**json.loads(shown.stdout), "db": str(db), "work": str(work)}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KNOBS_BY_NAME and not looks_like_knob(k)}
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def same_lines(log: str) -> list[str]:
    return [m.group(0) for m in map(SAME.match, log.splitlines()) if m]


@pytest.mark.parametrize("pack", ["none", "lzma", "brotli"])
def test_the_exported_file_reproduces_the_run_from_its_folder(pack: str, golf_run: dict[str, Any],
                                                              tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    exported = runner.invoke(app, ["export-record", f"tiny-s{SEED}", "--out", str(tmp_path / "pg"), "--pack", pack,
                                   "--db", golf_run["db"], "--author", "T", "--github-id", "t", "--format", "json"])
    assert exported.exit_code == 0, exported.output
    result = json.loads(exported.stdout)
    folder = Path(result["folder"])
    submission = json.loads((folder / "submission.json").read_text())
    size = (folder / "train_gpt.py").stat().st_size
    assert submission["bytes_code"] == result["code_bytes"] == size
    assert submission["bytes_total"] == golf_run["model_bytes"] + size
    if pack == "none":
        # the golf run logged the size of exactly this file (its own knobs baked, no pack)
        assert golf_run["code_bytes"] == size
        assert golf_run["total_bytes"] == submission["bytes_total"]
    else:
        assert (folder / "train_gpt.py").read_text().startswith(f"import {pack} as ")

    # the folder alone, somewhere else; `golf` must not be importable from the shipped file
    alone = tmp_path / "alone" / folder.name
    shutil.copytree(folder, alone)
    blocker = tmp_path / "blocker" / "golf"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('the shipped train_gpt.py imported golf')\n")
    data, tokenizer = tiny_data
    if pack == "none":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                   "train_gpt.py"]
        env = clean_env(DATA_PATH=str(data), TOKENIZER_PATH=str(tokenizer))
    elif pack == "lzma":
        # no env at all: the data where the baked challenge paths point
        (alone / "data" / "datasets").mkdir(parents=True)
        (alone / "data" / "tokenizers").mkdir()
        shutil.copytree(data, alone / "data" / "datasets" / "fineweb10B_sp1024")
        shutil.copy(tokenizer, alone / "data" / "tokenizers" / "fineweb_1024_bpe.model")
        command, env = [sys.executable, "train_gpt.py"], clean_env()
    else:
        command = [sys.executable, "train_gpt.py"]
        env = clean_env(DATA_PATH=str(data), TOKENIZER_PATH=str(tokenizer))
    env["PYTHONPATH"] = str(blocker.parent)
    done = subprocess.run(command, cwd=alone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    original = Path(golf_run["log_path"]).read_text()
    reproduced = same_lines(done.stdout)
    assert len([x for x in reproduced if "train_loss" in x]) == 4
    assert reproduced == same_lines(original)
    assert f"val_bpb:{golf_run['final_bpb']:.8f}" in done.stdout
    assert f"Code size: {size} bytes (shipped file train_gpt.py)" in done.stdout
    assert re.search(rf"^Total submission size \S+: {submission['bytes_total']} bytes$", done.stdout, re.MULTILINE)
    assert f"seed:{SEED}" in done.stdout  # the baked seed
