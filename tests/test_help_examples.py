"""Every command's help `Example:` runs as written, in a prepared folder: a store with the groups the examples
name (smoke, mlp3), the repo's specs/, the sample data, and ../parameter-golf with record folders.

What would take minutes stands in for itself: the trainer (golf.launch's execute writes the run a trainer would
have written), the Hugging Face hub. Everything else (argument parsing, name resolution, the store, the
analysis, the files written) is the real thing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from golf.launch.plan import code_hash_of
from golf.store import Run, Store
from golf.trainer.hparams import Hyperparameters
from golf_cli.main import COMMANDS, app

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO.parent / "shared" / "fixtures" / "records"
SEEDS = (1337, 42, 2025)
GROUPS = {"smoke": ([1.6210, 1.6230, 1.6190], "2.0"), "mlp3": ([1.5950, 1.5970, 1.5940], "3.0")}


def examples() -> list[tuple[str, str]]:
    """(command, example line) for every `Example: golf ...` in the commands' help."""
    out = []
    for name, module_name, func, _panel in COMMANDS:
        module = importlib.import_module(module_name)
        callbacks = [c.callback for c in module.app.registered_commands] if func is None else [getattr(module, func)]
        for callback in callbacks:
            for line in re.findall(r"Example: (golf .+)", callback.__doc__ or ""):
                out.append((name, line.strip()))
    return out


def knobs(seed: int, **values: Any) -> dict[str, str]:
    smoke = {"NUM_LAYERS": 2, "MODEL_DIM": 128, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "TRAIN_SEQ_LEN": 256,
             "TRAIN_BATCH_TOKENS": 8192, "ITERATIONS": 200, "COMPILE": 0, "MAX_WALLCLOCK_SECONDS": 0}
    return Hyperparameters.resolve(values={**smoke, "SEED": seed, "RUN_ID": f"r{seed}", **values}).as_env()


def fake_log(path: Path, steps: int, bpb: float) -> None:
    lines = ["golf_trainer: version:0.1.0 code_sha256:abc run_id:x", "attention:sdpa requested:auto flash_attn_4:none"]
    lines += [f"step:{s}/{steps} train_loss:{6 - s / 100:.4f} train_time:{s * 50}ms step_avg:50.00ms"
              for s in range(10, steps + 1, 10)]
    lines += [f"step:{steps}/{steps} val_loss:{bpb * 1.69:.4f} val_bpb:{bpb:.4f} train_time:{steps * 50}ms "
              "step_avg:50.00ms", "Total submission size int8+zlib: 400000 bytes",
              f"final_int8_zlib_roundtrip_exact val_loss:{bpb * 1.69:.8f} val_bpb:{bpb:.8f}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def artifact_for(config: dict[str, str], path: Path) -> str:
    """A real artifact of the config's model (random weights): what `golf eval` re-scores."""
    from golf.trainer.artifact import ArtifactConfig, build_artifact, write_atomic
    from golf.trainer.model import GPT

    hp = Hyperparameters.resolve(values=config)
    write_atomic(path, build_artifact(GPT(hp), ArtifactConfig.from_hp(hp))[0].blob)
    return str(path)


def add_group(store: Store, work: Path, name: str) -> None:
    bpbs, mlp = GROUPS[name]
    sample = next((work / "data" / "sample" / "datasets").iterdir())
    data = {"DATA_PATH": str(sample), "TOKENIZER_PATH": str(next(sample.parent.parent.glob("tokenizers/*.model")))}
    for seed, bpb in zip(SEEDS, bpbs, strict=True):
        run_id = f"{name}{seed}"
        log = work / "runs" / run_id / "train.log"
        fake_log(log, 200, bpb)
        config = knobs(seed, MLP_MULT=mlp, **data)
        artifact = artifact_for(config, log.parent / "final_model.int8.ptz") if name == "smoke" else None
        run = store.create_run(Run(
            id=run_id, name=f"{name}-s{seed}", spec_name=name, experiment=name, group_hash=(name * 16)[:16],
            config_hash=name * 8, code_hash=code_hash_of(None), seed=seed, status="completed", config=config,
            artifact_path=artifact,
            trainer="bundled", source="golf", nproc=1, tags=["smoke"], log_path=str(log), run_dir=str(log.parent),
            final_bpb=bpb, final_loss=bpb * 1.69, final_stage="post_quant", post_quant_bpb=bpb,
            post_quant_loss=bpb * 1.69, pre_quant_bpb=bpb - 0.01, model_bytes=390_000, code_bytes=10_000,
            total_bytes=400_000, bytes_breakdown={"embeddings": 100_000, "mlp": 290_000, "code": 10_000},
            steps=200, iterations=200, step_avg_ms=50.0, train_time_ms=10_000.0, eval_time_ms=2_000.0))
        store.upsert_steps(run.id, {0: {"val_bpb": 4.1}, 100: {"val_bpb": bpb + 0.2}, 200: {"val_bpb": bpb}})


def add_sweep(store: Store, work: Path) -> None:
    """A sweep of one queued cell whose golf is gone (what `golf queue cancel` and `golf sweep resume` name)."""
    from golf.launch.queue import create_sweep

    spec = str(work / "specs" / "smoke.yaml")
    create_sweep(store, dict(id="5eed0001", name="smoke", spec_path=spec, cwd=str(work), lanes=1, gpu_ids=["0"],
                             steps=[{"change": "Base: smoke", "spec_name": "smoke"}]),
                 [dict(id="5eed0001.0", sweep_id="5eed0001", position=0, step=0, spec_name="smoke", spec_path=spec,
                       seed=7, group_hash="smoke" * 3 + "s", argv=["golf", "run", spec, "--seed", "7"],
                       log_path=str(work / "runs" / "sweeps" / "5eed0001.0.log"))])


class FakeTrainer:
    """Stands in for golf.launch's execute: the row and the log a finished trainer run leaves."""

    def __call__(self, plan: Any, store: Store, live: bool = True, command: str | None = None,
                 **_options: Any) -> Run:
        steps = int(plan.knobs["ITERATIONS"])
        log = Path(plan.run_dir).absolute() / "train.log"
        fake_log(log, steps, 1.7)
        return store.create_run(Run(
            id=plan.run_id, name=plan.name, spec_name=plan.spec.name, spec=plan.spec.to_dict(),
            group_hash=plan.group_hash, config=dict(plan.knobs), config_hash=plan.config_hash,
            code_hash=plan.code_hash, seed=plan.seed,
            status="completed", tags=list(plan.spec.tags), log_path=str(log), run_dir=str(log.parent), steps=steps,
            iterations=steps, final_bpb=1.7, final_loss=1.7 * 1.69, final_stage="post_quant", post_quant_bpb=1.7,
            total_bytes=400_000, step_avg_ms=50.0, train_time_ms=steps * 50.0, command=command))


class FakeHub:
    """huggingface_hub.hf_hub_download for a manifest with one sp1024 variant of 1 val and 20 train shards."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __call__(self, repo_id: str, filename: str, repo_type: str, subfolder: str | None = None, **_: Any) -> str:
        path = self.root / (subfolder or "") / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if filename == "manifest.json":
            path.write_text(json.dumps({
                "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                              "stats": {"files_val": 1, "files_train": 20}}],
                "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}]}))
        else:
            path.write_bytes(b"x")
        return str(path)


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_data: Any) -> Path:
    import huggingface_hub

    import golf.launch
    import golf.launch.runner

    work = tmp_path / "work"
    work.mkdir()
    (work / "specs").symlink_to(REPO / "specs")
    (work / "data").mkdir()
    shutil.copytree(Path(sample_data.data_path).parent.parent, work / "data" / "sample")  # a valid build: reused
    track = tmp_path / "parameter-golf" / "records" / "track_10min_16mb"
    track.mkdir(parents=True)
    if FIXTURES.is_dir():
        for name in ("2026-03-17_NaiveBaseline", "2026-03-19_SlidingWindowEval"):
            shutil.copytree(FIXTURES / name, track / name)
    store = Store(work / "runs.db")
    for name in GROUPS:
        add_group(store, work, name)
    add_sweep(store, work)
    monkeypatch.chdir(work)
    monkeypatch.delenv("GOLF_DB", raising=False)
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    fake = FakeTrainer()
    # golf eval re-scores an artifact: stand one in (its format and shapes are golf.launch.evalrun's own tests')
    import golf.launch.evalrun

    artifact = work / "runs" / "smoke1337" / "final_model.int8.ptz"
    artifact.write_bytes(b"stand-in")
    monkeypatch.setattr(golf.launch.evalrun, "artifact_of", lambda parent: artifact)
    monkeypatch.setattr(golf.launch.evalrun, "check_fits", lambda path, hp: None)
    monkeypatch.setattr(golf.launch, "execute", fake)
    monkeypatch.setattr(golf.launch.runner, "execute", fake)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(tmp_path / "hub"))
    return work


EXAMPLES = examples()


def test_every_command_has_an_example() -> None:
    names = {name for name, *_ in COMMANDS}
    assert names <= {name for name, _ in EXAMPLES}


@pytest.mark.parametrize("command, line", EXAMPLES, ids=[f"{c}:{i}" for i, (c, _) in enumerate(EXAMPLES)])
def test_example_runs_as_written(prepared: Path, command: str, line: str) -> None:
    if "../parameter-golf/records" in line and not FIXTURES.is_dir():
        pytest.skip("needs the record folders of ../shared/fixtures")
    argv = shlex.split(line)[1:]
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, f"{line}\n{result.output[-3000:]}"
    assert "Traceback" not in result.output
    wrote = {"plot": prepared / "curves.png", "bench": prepared / "smoke-bench.json"}.get(command)
    if wrote is not None:
        assert wrote.is_file() and wrote.stat().st_size > 0
    if command == "export-record":
        folders = list((prepared.parent / "parameter-golf" / "records" / "track_10min_16mb").glob("*_mlp3"))
        assert len(folders) == 1 and (folders[0] / "README.md").is_file()
    if command == "compare":
        assert "mlp3" in result.stdout and "smoke (base)" in result.stdout
    assert os.getcwd() == str(prepared)
