"""The training loop's side of the frontier techniques: recurrence phases switch on, the WD taper reaches Muon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from golf.trainer.doc_attention import make_train_loader
from golf.trainer.hparams import Hyperparameters
from golf.trainer.runtime import Runtime
from golf.trainer.shards import write_shard
from golf.trainer.train import Trainer

BASE = {"NUM_LAYERS": 6, "MODEL_DIM": 32, "NUM_HEADS": 2, "NUM_KV_HEADS": 1, "VOCAB_SIZE": 50, "TRAIN_SEQ_LEN": 8,
        "TRAIN_BATCH_TOKENS": 32, "GRAD_ACCUM_STEPS": 1, "MUON_WD": 0.1}


def trainer(tmp_path: Path, **knobs: object) -> Trainer:
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(2000) % 50)
    hp = Hyperparameters.resolve({**BASE, "DATA_PATH": str(tmp_path), **knobs})
    return Trainer(hp, Runtime(device=torch.device("cpu")))


def test_progressive_recurrence_switches_each_phase_once_with_its_line(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    t = trainer(tmp_path, NUM_LOOPS=2, LOOP_START=2, LOOP_END=3, ENABLE_LOOPING_AT=0.3, LOOP_PHASE2_AT=0.6)
    seen = []
    for step, progress in ((0, 0.0), (1, 0.29), (2, 0.3), (3, 0.5), (4, 0.6), (5, 0.9)):
        t._maybe_recur(step, progress)
        seen.append(t.model.loop_passes)
    assert seen == [0, 0, 1, 1, 2, 2]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("layer_loop:")]
    assert lines == ["layer_loop:phase1 step:2 frac:0.300 encoder:[0, 1, 2, 3] decoder:[2, 3, 4, 5]",
                     "layer_loop:phase2 step:4 frac:0.600 encoder:[0, 1, 2, 3, 2] decoder:[3, 2, 3, 4, 5]"]


def test_the_wd_taper_sets_muons_weight_decay(tmp_path: Path) -> None:
    tapered = trainer(tmp_path, WD_TAPER_START_FRAC=0.5, WD_TAPER_FINAL_MULT=0.25)
    loader = make_train_loader(tapered.hp, 0, 1, torch.device("cpu"))
    tapered.train_step(loader, 0, 1.0, wd_mul=0.5)
    assert [g["weight_decay"] for g in tapered.muon.param_groups] == [pytest.approx(0.05)]
    plain = trainer(tmp_path)
    plain.train_step(loader, 0, 1.0, wd_mul=0.5)  # no taper knob: the multiplier is never applied
    assert [g["weight_decay"] for g in plain.muon.param_groups] == [0.1]
    loader.close()
