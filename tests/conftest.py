"""Shared fixtures: a run-store path, a tiny dataset in the challenge's layout, a copy of the trainer code_hash
reads, the built sample dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def triton_interpreter() -> None:
    """Skips a test of Triton kernels unless triton's CPU interpreter can run them in this process."""
    pytest.importorskip("triton", reason="triton is not installed (pip install triton to run its CPU interpreter)")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("run with TRITON_INTERPRET=1: triton reads it at import, so it must be set before the test run")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Path of a fresh run store (not created yet)."""
    return tmp_path / "runs.db"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own current directory (runs/ and data/ are created relative to it)."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("GOLF_DB", raising=False)
    return work


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A few-token dataset in the challenge's layout: <root>/datasets/fineweb10B_sp1024/ (train + val shards) and
    <root>/tokenizers/fineweb_1024_bpe.model (a SentencePiece model of 1024 pieces). Returns the shard folder."""
    from spm_model import tokenizer_bytes

    from golf.trainer.shards import write_shard

    root = tmp_path / "tinydata"
    shards = root / "datasets" / "fineweb10B_sp1024"
    shards.mkdir(parents=True)
    (root / "tokenizers").mkdir()
    (root / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(tokenizer_bytes(1024))
    write_shard(shards / "fineweb_train_000000.bin", np.arange(1, 200) % 1024)
    write_shard(shards / "fineweb_val_000000.bin", np.arange(1, 100) % 1024)
    return shards


@pytest.fixture
def trainer_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the trainer package that code_hash reads instead of the real one (edit it to change the code)."""
    import shutil

    from golf.trainer import source

    folder = tmp_path / "trainer"
    shutil.copytree(Path(source.__file__).parent, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(source, "trainer_files", lambda: sorted(folder.glob("*.py")))
    return folder


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory):
    """The full sample dataset, built once per test session (about 15 s)."""
    from golf.data.sample import build_sample

    return build_sample(tmp_path_factory.mktemp("sample"))


def perturbed_tiny_gpt(vocab: int, seq: int, seed: int = 0, **knobs: object):  # type: ignore[no-untyped-def]
    """A 2-layer, 32-wide GPT whose zero-initialised projections were perturbed, so every layer has an effect
    (`knobs`: more of the trainer's knobs, e.g. DOC_ATTENTION=1)."""
    import torch

    from golf.trainer.hparams import Hyperparameters
    from golf.trainer.model import GPT

    hp = Hyperparameters.resolve(values={"NUM_LAYERS": 2, "MODEL_DIM": 32, "NUM_HEADS": 2, "NUM_KV_HEADS": 1,
                                         "VOCAB_SIZE": vocab, "TRAIN_SEQ_LEN": seq, "TRAIN_BATCH_TOKENS": seq, **knobs})
    torch.manual_seed(seed)
    model = GPT(hp)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()
