"""Each run keeps the one-file train_gpt.py it ran (runs/<id>/train_gpt.py, its sha256 on the row); export-record
ships that file, so a run stays exportable after the trainer changes; a comment edit keeps every group_hash, so
`golf ablate` reuses its cells."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from test_export_record import add_group, export

from golf.launch import execute, plan_runs
from golf.launch.ablate import plan_ablation, run_ablation
from golf.spec import load_spec
from golf.store import Store
from golf.trainer.codebytes import KEPT_TRAINER_ENV
from golf.trainer.onefile import baked_of, build_trainer_file

FAKE_TRAINER = """import os, sys
kept = os.environ["{env}"]
print("kept:" + kept, flush=True)
print("step:1/1 train_loss:6.9000 train_time:10ms step_avg:10.00ms", flush=True)
"""


def bundled_spec(workdir: Path, data: Path) -> Path:
    spec = workdir / "tiny.yaml"
    spec.write_text(f"name: tiny\nseeds: [5]\ndata: {{path: {data}}}\nenv: {{NUM_LAYERS: 2, CODE_PACK: lzma}}\n")
    return spec


def test_a_run_keeps_its_one_file_trainer_and_its_sha(workdir: Path, tiny_data: Path, db: Path) -> None:
    plan = plan_runs(load_spec(bundled_spec(workdir, tiny_data)), None)[0]
    fake = workdir / "fake.py"
    fake.write_text(FAKE_TRAINER.format(env=KEPT_TRAINER_ENV))
    plan.argv = [sys.executable, str(fake)]  # the bundled trainer's plan, a quick stand-in for torchrun
    run = execute(plan, Store(db), live=False)
    kept = Path(run.run_dir) / "train_gpt.py"
    assert kept.read_text() == build_trainer_file(pack="lzma", baked=plan.knobs)
    assert run.train_gpt_sha256 == hashlib.sha256(kept.read_bytes()).hexdigest()
    assert f"kept:{kept}" in Path(run.log_path).read_text()  # the trainer measures its code bytes on that file
    assert baked_of(kept.read_text())["SEED"] == "5" and "RUN_ID" not in baked_of(kept.read_text())


def _kept_group(tmp_path: Path, trainer_text: str) -> Path:
    """A finished group whose runs were made by an older trainer (another code_hash) and kept their file."""
    path = tmp_path / "runs.db"
    store = Store(path)
    sha = hashlib.sha256(trainer_text.encode()).hexdigest()
    ids = add_group(store, tmp_path, "old", "f" * 16, code_hash="0" * 64, train_gpt_sha256=sha,
                    knob_values={"NUM_LAYERS": 11})
    for run_id in ids:
        (tmp_path / "runs" / run_id / "train_gpt.py").write_text(trainer_text)
    return path


def test_a_run_from_an_older_trainer_exports_the_file_it_ran(tmp_path: Path) -> None:
    from test_export_record import knobs

    older = build_trainer_file(baked=knobs(1337, NUM_LAYERS=11)) + "\nOLDER_TRAINER = True  # since changed\n"
    result = export(_kept_group(tmp_path, older), tmp_path / "out", ref="old")
    shipped = (result.folder / "train_gpt.py").read_text()
    assert shipped == older and result.code_bytes == len(older.encode())
    assert result.submission["bytes_code"] == len(older.encode())


def test_an_altered_kept_file_is_not_shipped(tmp_path: Path) -> None:
    """A kept file whose sha256 is not the row's is not what ran: the old rule applies (the code must be today's)."""
    from test_export_record import knobs

    from golf.errors import GolfError

    older = build_trainer_file(baked=knobs(1337, NUM_LAYERS=11))
    path = _kept_group(tmp_path, older)
    for kept in (tmp_path / "runs").glob("*/train_gpt.py"):
        kept.write_text(older + "# tampered\n")
    with pytest.raises(GolfError, match="would not be the code that produced these numbers"):
        export(path, tmp_path / "out", ref="old")


def test_ablate_reuses_its_cells_across_a_comment_edit(workdir: Path, tiny_data: Path, db: Path,
                                                       trainer_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import golf.launch.runner

    spec = load_spec(bundled_spec(workdir, tiny_data))
    store = Store(db)
    varies = [("MLP_MULT", ["3"])]
    launched: list[Any] = []

    def fake_execute(plan: Any, store: Store, **_: Any) -> Any:
        from golf.store import Run

        launched.append(plan)
        return store.create_run(Run(id=plan.run_id, name=plan.name, seed=plan.seed, status="completed",
                                    group_hash=plan.group_hash, code_hash=plan.code_hash))

    monkeypatch.setattr(golf.launch.runner, "execute", fake_execute)
    first = run_ablation(plan_ablation(spec, varies, store), store)
    assert len(first.launched) == 2 and first.reused == []
    model = trainer_copy / "model.py"
    model.write_text(model.read_text().replace("from __future__ import annotations\n",
                                               "from __future__ import annotations  # edited comment\n", 1))
    again = run_ablation(plan_ablation(spec, varies, store), store)
    assert again.launched == [] and sorted(again.reused) == sorted(first.launched)
    model.write_text(model.read_text() + "\nEXTRA = 1\n")  # a code change: new cells
    third = run_ablation(plan_ablation(spec, varies, store), store)
    assert len(third.launched) == 2
