"""Planning: resolved knobs, torchrun argv and env, identity hashes, run names, dry-run output."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from spm_model import tokenizer_bytes
from typer.testing import CliRunner

from golf.errors import GolfError
from golf.launch import plan_runs
from golf.spec import apply_overrides, load_spec
from golf.store import Run, Store
from golf.trainer.hparams import KNOBS, KNOBS_BY_NAME
from golf_cli.main import app

runner = CliRunner()
TRAINER_DIR = Path(__file__).resolve().parent.parent / "golf" / "trainer"


def spec_file(workdir: Path, data: Path, extra: str = "", name: str = "exp") -> Path:
    path = workdir / "specs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: {name}\nseeds: [1, 2]\ndata: {{path: {data}}}\nenv: {{NUM_LAYERS: 4, MODEL_DIM: 256}}\n"
                    + extra, encoding="utf-8")
    return path


def documented_config_hash(knobs: dict[str, str], data_path: Path, tokenizer: Path,
                           excluded: tuple[str, ...]) -> str:
    """docs/ARCHITECTURE.md: sha256 of the canonical JSON of the knobs (less the excluded) + the data identity."""
    body = {"knobs": {k: v for k, v in knobs.items() if k not in excluded},
            "data": {"dataset": data_path.name, "tokenizer_sha256": hashlib.sha256(tokenizer.read_bytes()).hexdigest()}}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_bundled_plan_resolves_every_knob(workdir: Path, tiny_data: Path) -> None:
    plans = plan_runs(load_spec(spec_file(workdir, tiny_data)), None)
    assert [p.seed for p in plans] == [1, 2]
    assert [p.name for p in plans] == ["exp-s1", "exp-s2"]
    tokenizer = tiny_data.parent.parent / "tokenizers" / "fineweb_1024_bpe.model"
    for plan in plans:
        assert list(plan.knobs) == [k.name for k in KNOBS]  # every knob, registry order
        assert plan.knobs["NUM_LAYERS"] == "4" and plan.knobs["MODEL_DIM"] == "256"
        assert plan.knobs["SEED"] == str(plan.seed)
        assert plan.knobs["RUN_ID"] == plan.run_id
        assert plan.knobs["DATA_PATH"] == str(tiny_data.absolute())
        assert plan.knobs["TOKENIZER_PATH"] == str(tokenizer.resolve())
        # untouched knobs keep their registry defaults, "0 means inherit" knobs are normalised
        assert plan.knobs["MUON_BACKEND_STEPS"] == "5"
        assert plan.knobs["TIE_EMBEDDINGS"] == "1"
        assert plan.knobs["EVAL_SEQ_LEN"] == plan.knobs["TRAIN_SEQ_LEN"] == "1024"
        assert plan.knobs["MLP_BITS"] == plan.knobs["MATRIX_BITS"] == "8"
        assert plan.argv == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                             "-m", "golf.trainer"]
        assert plan.env["PYTHONUNBUFFERED"] == "1"
        assert plan.env["NCCL_NVLS_ENABLE"] == "0"
        assert all(plan.env[k] == v for k, v in plan.knobs.items())
        assert plan.run_dir == Path("runs") / plan.run_id
        expected = documented_config_hash(plan.knobs, tiny_data, tokenizer,
                                          ("SEED", "RUN_ID", "DATA_PATH", "TOKENIZER_PATH"))
        assert plan.config_hash == expected
        assert plan.group_hash == hashlib.sha256((plan.config_hash + plan.code_hash).encode()).hexdigest()[:16]
    assert plans[0].run_id != plans[1].run_id
    assert plans[0].group_hash == plans[1].group_hash  # seeds of one configuration share a group


def test_bundled_code_hash_covers_the_trainer_sources(workdir: Path, tiny_data: Path) -> None:
    """Every module of the package, in name order, as code_text (comments and docstrings out: tests of it in
    test_trainer_source.py)."""
    from golf.trainer.source import code_text

    plan = plan_runs(load_spec(spec_file(workdir, tiny_data)), None)[0]
    digest = hashlib.sha256()
    for path in sorted(TRAINER_DIR.glob("*.py"), key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + code_text(path.read_text(encoding="utf-8")).encode() + b"\0")
    assert plan.code_hash == digest.hexdigest()


def test_config_hash_tracks_knobs_and_data_identity(workdir: Path, tiny_data: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_file(workdir, tiny_data))
    base = plan_runs(spec, None)[0]
    changed = plan_runs(apply_overrides(spec, sets={"NUM_LAYERS": "5"}), None)[0]
    assert changed.config_hash != base.config_hash
    # spelled differently, resolved the same: same configuration
    same = plan_runs(apply_overrides(spec, sets={"NUM_LAYERS": "+4", "EVAL_SEQ_LEN": "0"}), None)[0]
    assert same.config_hash == base.config_hash
    # a copy of the dataset elsewhere (same folder name, same tokenizer) is the same data
    import shutil

    copy_root = tmp_path / "copy"
    shutil.copytree(tiny_data.parent.parent, copy_root)
    moved = plan_runs(apply_overrides(spec, data=str(copy_root / "datasets" / tiny_data.name)), None)[0]
    assert moved.config_hash == base.config_hash
    (copy_root / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(tokenizer_bytes(1024, word="other"))
    retokenized = plan_runs(apply_overrides(spec, data=str(copy_root / "datasets" / tiny_data.name)), None)[0]
    assert retokenized.config_hash != base.config_hash


def test_community_trainer_plan(workdir: Path, tiny_data: Path) -> None:
    trainer = workdir / "records" / "train_gpt.py"
    trainer.parent.mkdir()
    trainer.write_text("print('x')\n")
    spec = load_spec(spec_file(workdir, tiny_data, extra="trainer: ../records/train_gpt.py\n", name="comm"))
    spec = apply_overrides(spec, sets={"XSA_LAST": "3"})  # any name goes for a community trainer
    plan = plan_runs(spec, None)[0]
    assert plan.trainer == str(trainer.resolve())
    assert plan.argv[-1] == str(trainer.resolve()) and "golf.trainer" not in plan.argv
    assert plan.knobs == {"NUM_LAYERS": "4", "MODEL_DIM": "256", "XSA_LAST": "3", "SEED": "1"}
    assert plan.env["DATA_PATH"] == str(tiny_data.absolute())
    assert plan.env["DATA_DIR"].rstrip("/") == str(tiny_data.parent.parent.absolute())
    assert plan.env["RUN_ID"] == plan.run_id
    assert plan.code_hash == hashlib.sha256(trainer.read_bytes()).hexdigest()
    tokenizer = tiny_data.parent.parent / "tokenizers" / "fineweb_1024_bpe.model"
    assert plan.config_hash == documented_config_hash(plan.knobs, tiny_data, tokenizer, ("SEED",))


def test_run_names_are_unique_in_the_store(workdir: Path, tiny_data: Path, db: Path) -> None:
    store = Store(db)
    store.create_run(Run(id="a1", name="exp-s1"))
    store.create_run(Run(id="a2", name="exp-s1-2"))
    plans = plan_runs(apply_overrides(load_spec(spec_file(workdir, tiny_data)), name="exp"), store)
    assert [p.name for p in plans] == ["exp-s1-3", "exp-s2"]


def test_tokenizer_from_set_when_the_folder_has_several(workdir: Path, tiny_data: Path) -> None:
    tokenizers = tiny_data.parent.parent / "tokenizers"
    other = tokenizers / "fineweb_4096_bpe.model"
    other.write_bytes(tokenizer_bytes(4096))
    spec = load_spec(spec_file(workdir, tiny_data))
    # the folder is …_sp1024: its tokenizer is the 1024 one, unless --set says otherwise
    assert plan_runs(spec, None)[0].tokenizer_path == str((tokenizers / "fineweb_1024_bpe.model").resolve())
    with pytest.raises(GolfError, match="VOCAB_SIZE is 1024 but the tokenizer .*fineweb_4096_bpe.model has 4096"):
        plan_runs(apply_overrides(spec, sets={"TOKENIZER_PATH": str(other)}), None)
    plan = plan_runs(apply_overrides(spec, sets={"TOKENIZER_PATH": str(other), "VOCAB_SIZE": "4096"}), None)[0]
    assert plan.tokenizer_path == str(other.absolute()) == plan.knobs["TOKENIZER_PATH"]
    (tokenizers / "fineweb_1024_bpe.model").unlink()
    (tokenizers / "fineweb_8192_bpe.model").write_bytes(tokenizer_bytes(8192))
    with pytest.raises(GolfError, match="several tokenizers in .*fineweb_4096_bpe.model, fineweb_8192_bpe.model"):
        plan_runs(spec, None)


def test_tokenizer_matching_the_shards_vocabulary(workdir: Path, tmp_path: Path) -> None:
    """The challenge's layout (and ../shared/data): two shard folders, two tokenizers side by side."""
    from golf.trainer.shards import write_shard

    root = tmp_path / "two"
    for vocab in (1024, 8192):
        shards = root / "datasets" / f"fineweb10B_sp{vocab}"
        shards.mkdir(parents=True)
        write_shard(shards / "fineweb_train_000000.bin", np.arange(1, 200) % vocab)
        write_shard(shards / "fineweb_val_000000.bin", np.arange(1, 100) % vocab)
        (root / "tokenizers").mkdir(exist_ok=True)
        (root / "tokenizers" / f"fineweb_{vocab}_bpe.model").write_bytes(tokenizer_bytes(vocab))
    sp8192 = root / "datasets" / "fineweb10B_sp8192"
    spec = load_spec(spec_file(workdir, sp8192, extra="", name="big"))
    with pytest.raises(GolfError, match=r"sp8192 .* VOCAB_SIZE is 1024; add --set VOCAB_SIZE=8192"):
        plan_runs(spec, None)  # the model's default vocabulary does not fit these shards
    plan = plan_runs(apply_overrides(spec, sets={"VOCAB_SIZE": "8192"}), None)[0]
    assert plan.tokenizer_path == str((root / "tokenizers" / "fineweb_8192_bpe.model").resolve())
    small = plan_runs(load_spec(spec_file(workdir, root / "datasets" / "fineweb10B_sp1024", name="small")), None)[0]
    assert small.tokenizer_path == str((root / "tokenizers" / "fineweb_1024_bpe.model").resolve())


SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "datasets" / "docs_sp8192").is_dir(), reason="../shared/data is absent")
def test_tokenizer_of_the_shared_data_layout(workdir: Path) -> None:
    spec = load_spec(spec_file(workdir, SHARED_DATA / "datasets" / "docs_sp8192", name="docs"))
    plan = plan_runs(apply_overrides(spec, sets={"VOCAB_SIZE": "8192"}), None)[0]
    assert Path(plan.tokenizer_path).name == "docs_8192_bpe.model"
    small = plan_runs(load_spec(spec_file(workdir, SHARED_DATA / "datasets" / "docs_sp1024", name="d1")), None)[0]
    assert Path(small.tokenizer_path).name == "docs_1024_bpe.model"


def test_multi_node_flags_reach_torchrun(workdir: Path, tiny_data: Path) -> None:
    plan = plan_runs(load_spec(spec_file(workdir, tiny_data)), None, nnodes=2, node_rank=1,
                     rdzv_endpoint="10.0.0.1:29500")[0]
    assert "--standalone" not in plan.argv
    i = plan.argv.index("--nnodes")
    assert plan.argv[i:i + 8] == ["--nnodes", "2", "--node-rank", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                                  "10.0.0.1:29500"]
    assert "--nproc_per_node=1" in plan.argv


def test_dry_run_prints_command_env_and_every_resolved_knob(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = spec_file(workdir, tiny_data)
    result = runner.invoke(app, ["run", str(spec), "--dry-run", "--seed", "9", "--set", "XSA_LAST_N=2", "--nproc",
                                 "3", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h:1", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    torchrun = next(line for line in lines if "torch.distributed.run" in line)
    assert torchrun.split() == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", "0",
                                "--rdzv-backend", "c10d", "--rdzv-endpoint", "h:1", "--nproc_per_node=3", "-m",
                                "golf.trainer"]
    assert "NCCL_NVLS_ENABLE=0" in lines and "PYTHONUNBUFFERED=1" in lines
    values = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith(("#", "/")))
    overrides = {"NUM_LAYERS": "4", "MODEL_DIM": "256", "XSA_LAST_N": "2", "SEED": "9"}
    for knob in KNOBS:
        if knob.name in overrides:
            assert values[knob.name] == overrides[knob.name]
        elif knob.name not in ("RUN_ID", "DATA_PATH", "TOKENIZER_PATH", "EVAL_SEQ_LEN", "TTT_SEQ_LEN", "MLP_BITS",
                               "ATTN_BITS", "EMBED_WD"):
            assert values[knob.name] == KNOBS_BY_NAME[knob.name].format(knob.default), knob.name
    assert values["DATA_PATH"] == str(tiny_data.absolute())
    assert len(values["RUN_ID"]) == 10
    assert not db.exists() and not Path("runs").exists()  # nothing launched, nothing recorded


def test_dry_run_does_not_build_missing_sample_data(workdir: Path, db: Path) -> None:
    spec = workdir / "s.yaml"
    spec.write_text("name: s\ndata: sample\n")
    result = runner.invoke(app, ["run", str(spec), "--dry-run", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "# note: data not present yet: data/sample/datasets/sample_sp1024" in result.stdout
    assert not Path("data").exists()


@pytest.mark.parametrize("visible, expected", [("", 1), (None, None)])
def test_nproc_auto_is_one_without_gpus(workdir: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch,
                                        visible: str | None, expected: int | None) -> None:
    from golf.launch.provenance import gpu_info

    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    plan = plan_runs(apply_overrides(load_spec(spec_file(workdir, tiny_data)), nproc="auto"), None)[0]
    assert plan.nproc == (expected if expected is not None else max(gpu_info()[1], 1))
    assert f"--nproc_per_node={plan.nproc}" in plan.argv


def test_exported_knobs_are_ignored_with_a_note(workdir: Path, tiny_data: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITERATIONS", "50")
    plan = plan_runs(load_spec(spec_file(workdir, tiny_data)), None)[0]
    assert plan.knobs["ITERATIONS"] == "20000" == plan.env["ITERATIONS"]  # the spec's value (the default) is passed
    assert any("ITERATIONS are ignored" in note for note in plan.notes)


def _resolved(**values: object) -> dict[str, str]:
    from golf.trainer.hparams import Hyperparameters

    return Hyperparameters.resolve(values={"SEED": 7, "RUN_ID": "r", "DATA_PATH": "/d", **values}).as_env()


@pytest.mark.parametrize("values, changed", [
    ({}, {}),
    ({"TRAIN_SEQ_LEN": 2048}, {"TRAIN_SEQ_LEN": ("1024", "2048")}),  # EVAL_SEQ_LEN and TTT_SEQ_LEN follow it
    ({"MATRIX_BITS": 6}, {"MATRIX_BITS": ("8", "6")}),  # MLP_BITS and ATTN_BITS follow it
    ({"ADAM_WD": 0.04}, {"ADAM_WD": ("0.0", "0.04")}),  # EMBED_WD follows it
    # pinned rather than following TRAIN_SEQ_LEN: a change, though the baseline's value is also 1024
    ({"TRAIN_SEQ_LEN": 2048, "EVAL_SEQ_LEN": 1024}, {"TRAIN_SEQ_LEN": ("1024", "2048"),
                                                     "EVAL_SEQ_LEN": ("1024", "1024")}),
    ({"NUM_LAYERS": 11, "XSA_LAST_N": 11}, {"NUM_LAYERS": ("9", "11"), "XSA_LAST_N": ("0", "11")}),
])
def test_changed_knobs_are_the_ones_the_run_set(values: dict[str, object], changed: dict[str, tuple[str, str]]) -> None:
    from golf.launch.plan import changed_knobs

    assert changed_knobs(_resolved(**values)) == changed


def test_show_and_export_list_the_same_changed_knobs(tmp_path: Path) -> None:
    """`golf show` and export-record's README both call changed_knobs: TRAIN_SEQ_LEN alone lists only itself."""
    from typer.testing import CliRunner

    from golf.store import Run, Store
    from golf_cli.main import app

    db = tmp_path / "runs.db"
    Store(db).create_run(Run(id="r1", name="long-s7", seed=7, status="completed", trainer="bundled",
                             config=_resolved(TRAIN_SEQ_LEN=2048)))
    result = CliRunner().invoke(app, ["show", "r1", "--db", str(db), "--format", "csv"])
    assert result.exit_code == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()]
    assert [row[1:] for row in rows if row[0] == "knobs"] == [["TRAIN_SEQ_LEN", "2048"]]
