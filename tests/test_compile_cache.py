"""Compile once per shape: inductor's caches in golf's cache folder (golf/trainer/compile_cache.py), wired into the
trainer's environment by the launcher; the evaluation graphs a run compiles (`eval_warmup:`), its time to the first
step, and both parsed into runs.db. The slow tests run the trainer twice on a CPU, compiled (GOLF_COMPILE_CPU=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from golf.errors import GolfError
from golf.launch import plan_runs
from golf.logparse import LogParser, parse_text
from golf.spec import load_spec
from golf.store import Run, Store
from golf.store.fields import fields_from_parsed
from golf.trainer.compile_cache import cache_env, cache_state, compile_cache_dir
from golf.trainer.hparams import KNOBS_BY_NAME, KnobError, looks_like_knob
from golf_cli.main import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
INDUCTOR_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE",
                 "TORCHINDUCTOR_FORCE_DISABLE_CACHES", "GOLF_COMPILE_CACHE", "GOLF_CACHE_DIR", "XDG_CACHE_HOME")


@pytest.fixture
def clean_cache_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in INDUCTOR_VARS:
        monkeypatch.delenv(key, raising=False)


# -- the folder and the variables ---------------------------------------------------------------------------------

def test_the_cache_folder_follows_golf_cache_dir_then_xdg_then_home(tmp_path: Path) -> None:
    assert compile_cache_dir({"GOLF_CACHE_DIR": str(tmp_path / "g"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "g" / \
        "compile"
    assert compile_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "golf" / "compile"
    assert compile_cache_dir({}) == Path.home() / ".cache" / "golf" / "compile"


def test_cache_env_fills_only_what_the_user_left_unset(tmp_path: Path) -> None:
    env = {"GOLF_CACHE_DIR": str(tmp_path)}
    assert cache_env(env) == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "compile"),
                              "TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
    mine = {**env, "TORCHINDUCTOR_CACHE_DIR": "/mine", "TORCHINDUCTOR_FX_GRAPH_CACHE": "0"}
    assert cache_env(mine) == {"TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
    assert cache_env({**env, "GOLF_COMPILE_CACHE": "off"}) == {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}
    with pytest.raises(KnobError, match=r"^GOLF_COMPILE_CACHE=maybe: expected 1 .* or 0 "):
        cache_env({"GOLF_COMPILE_CACHE": "maybe"})


def test_cache_state_says_warm_only_when_every_lookup_hit() -> None:
    def counts(fx_hit: int, fx_miss: int, aot_hit: int, aot_miss: int) -> dict[str, int]:
        return {"fx_hit": fx_hit, "fx_miss": fx_miss, "aot_hit": aot_hit, "aot_miss": aot_miss}

    assert cache_state("/c", counts(3, 0, 2, 0)) == "warm"
    assert cache_state("/c", counts(0, 3, 0, 2)) == "cold"
    assert cache_state("/c", counts(3, 1, 2, 0)) == "partial"
    assert cache_state("/c", counts(0, 0, 0, 0)) == "none"
    assert cache_state("off", counts(0, 3, 0, 0)) == "off"


def test_the_switch_is_no_knob_the_trainer_would_refuse() -> None:
    assert "GOLF_COMPILE_CACHE" not in KNOBS_BY_NAME and not looks_like_knob("GOLF_COMPILE_CACHE")
    assert not looks_like_knob("GOLF_COMPILE_CPU") and not looks_like_knob("GOLF_CACHE_DIR")


def _spec(workdir: Path, data: Path) -> Path:
    path = workdir / "exp.yaml"
    path.write_text(f"name: exp\nseeds: [1]\ndata: {{path: {data}}}\n", encoding="utf-8")
    return path


def test_the_launcher_puts_the_cache_into_the_trainers_environment(workdir: Path, tiny_data: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  clean_cache_env: None) -> None:
    monkeypatch.setenv("GOLF_CACHE_DIR", str(workdir / "cache"))
    spec = load_spec(_spec(workdir, tiny_data))
    env = plan_runs(spec, None)[0].env
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(workdir / "cache" / "compile")
    assert env["TORCHINDUCTOR_FX_GRAPH_CACHE"] == env["TORCHINDUCTOR_AUTOGRAD_CACHE"] == "1"
    off = plan_runs(spec, None, compile_cache=False)[0].env
    assert off["GOLF_COMPILE_CACHE"] == "0" and off["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] == "1"
    assert "TORCHINDUCTOR_CACHE_DIR" not in off
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/users/own")  # the user's variable reaches the trainer as it is
    assert "TORCHINDUCTOR_CACHE_DIR" not in plan_runs(spec, None)[0].env
    monkeypatch.setenv("GOLF_COMPILE_CACHE", "sometimes")
    with pytest.raises(GolfError, match="^your environment's GOLF_COMPILE_CACHE=sometimes: expected 1"):
        plan_runs(spec, None)


def test_golf_run_no_compile_cache_in_the_dry_run(workdir: Path, tiny_data: Path, clean_cache_env: None) -> None:
    spec = str(_spec(workdir, tiny_data))
    on = runner.invoke(app, ["run", spec, "--dry-run"])
    off = runner.invoke(app, ["run", spec, "--dry-run", "--no-compile-cache"])
    assert on.exit_code == off.exit_code == 0, on.output + off.output
    assert f"TORCHINDUCTOR_CACHE_DIR={Path.home() / '.cache' / 'golf' / 'compile'}" in on.stdout.splitlines()
    assert "GOLF_COMPILE_CACHE=0" in off.stdout.splitlines() and "TORCHINDUCTOR_CACHE_DIR" not in off.stdout


# -- the log lines, parsed and stored ------------------------------------------------------------------------------

LOG = """\
warmup_step:3/3
eval_warmup:plain time:2.5s total:2.5s
eval_warmup:windows time:9.0s total:11.5s
compile_cache:partial fx_hit:4 fx_miss:2 aot_hit:1 aot_miss:1 dir:/root/.cache/golf/compile
time_to_first_step:41.7s
step:1/2 train_loss:6.9 train_time:500ms step_avg:500.00ms
eval_warmup:ttt_lora time:20.2s total:31.7s
compile_cache:partial fx_hit:6 fx_miss:3 aot_hit:1 aot_miss:1 dir:/root/.cache/golf/compile
"""


def test_the_figures_reach_the_runs_row(tmp_path: Path) -> None:
    parsed = parse_text(LOG)
    assert parsed.malformed == 0 and parsed.unplaced == []
    assert (parsed.time_to_first_step_s, parsed.eval_warmup_s) == (41.7, 31.7)  # the last running total
    assert parsed.events["eval_warmup_graphs"] == {"plain": 2.5, "windows": 9.0, "ttt_lora": 20.2}
    assert (parsed.events["compile_cache"], parsed.events["compile_cache_fx_hit"],
            parsed.events["compile_cache_fx_miss"]) == ("partial", 6, 3)
    store = Store(tmp_path / "runs.db")
    run = store.create_run(Run(id="r1", name="r", status="completed",
                               **{k: v for k, v in fields_from_parsed(parsed).items() if v is not None}))
    row = Store(tmp_path / "runs.db", readonly=True).get(run.id)
    assert (row.time_to_first_step_s, row.eval_warmup_s) == (41.7, 31.7)  # type: ignore[union-attr]
    shown = runner.invoke(app, ["show", "r", "--db", str(tmp_path / "runs.db")])
    assert shown.exit_code == 0, shown.output
    assert "31.7 (plain 2.5, windows 9.0, ttt_lora 20.2)" in shown.stdout
    assert "partial (FX graphs 6 hit 3 missed; AOTAutograd 1 hit 1 missed)" in shown.stdout


def test_an_older_golfs_summary_line_still_gives_the_warm_up() -> None:
    parser = LogParser()
    parser.feed("eval_warmup:compiled windows,ttt_step32x2048 in 93.9s")
    parsed = parser.run
    assert parsed.eval_warmup_s == 93.9 and list(parsed.events["eval_warmup_graphs"]) == ["windows", "ttt_step32x2048"]


# -- the trainer, compiled on a CPU, twice --------------------------------------------------------------------------

TINY = {
    "NUM_LAYERS": "1", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "TRAIN_SEQ_LEN": "32",
    "TRAIN_BATCH_TOKENS": "256", "GRAD_ACCUM_STEPS": "1", "ITERATIONS": "1", "VAL_LOSS_EVERY": "0",
    "TRAIN_LOG_EVERY": "1", "WARMUP_STEPS": "1", "MAX_WALLCLOCK_SECONDS": "0", "VAL_BATCH_SIZE": "8192",
    "EVAL_SEQ_LEN": "32", "EVAL_STRIDE": "0", "EVAL_BATCH_SEQS": "8", "TTT_ENABLED": "0", "SEED": "7",
}
TTT_ON = {"TTT_ENABLED": "1", "TTT_MODE": "score_first", "TTT_CHUNK_TOKENS": "512", "TTT_EPOCHS": "1",
          "TTT_BATCH_SEQS": "8"}


def _train(folder: Path, data: Path, cache: Path, **knobs: str) -> Any:
    return parse_text(_trainer_log(folder, data, cache, **knobs))


def _trainer_log(folder: Path, data: Path, cache: Path, **knobs: str) -> str:
    """The trainer's console log, compiled on a CPU with this cache, in a folder of its own."""
    env = {k: v for k, v in os.environ.items() if k not in KNOBS_BY_NAME and not looks_like_knob(k)
           and k not in INDUCTOR_VARS and not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update(TINY, **knobs, DATA_PATH=str(data), TOKENIZER_PATH=str(data.parent.parent / "tokenizers" /
                                                                      "fineweb_1024_bpe.model"),
               GOLF_COMPILE_CPU="1", GOLF_CACHE_DIR=str(cache), PYTHONPATH=str(REPO),
               TORCHINDUCTOR_COMPILE_THREADS="1")  # no pool of compile workers to start: faster on a small CPU
    folder.mkdir()
    done = subprocess.run([sys.executable, "-m", "golf.trainer"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A TTT-off run on an empty cache, then a score-first TTT run of the same shapes on the cache it left."""
    from spm_model import tokenizer_bytes

    from golf.trainer.shards import write_shard

    root = tmp_path_factory.mktemp("cc")
    data = root / "datasets" / "fineweb10B_sp1024"
    data.mkdir(parents=True)
    (root / "tokenizers").mkdir()
    (root / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(tokenizer_bytes(1024))
    rng = np.random.default_rng(0)
    write_shard(data / "fineweb_train_000000.bin", rng.integers(1, 1024, 20_000))
    write_shard(data / "fineweb_val_000000.bin", rng.integers(1, 1024, 1025))
    cache = root / "cache"
    first = _train(root / "first", data, cache)
    files_after_first = sorted(p.relative_to(cache) for p in cache.rglob("*") if p.is_file())
    second = _train(root / "second", data, cache, **TTT_ON)
    artifact = next((root / "first").glob("final_model.*.ptz"))
    scored = _trainer_log(root / "scored", data, cache, EVAL_ONLY_PATH=str(artifact))
    return {"first": first, "second": second, "files": files_after_first, "eval_only": parse_text(scored),
            "eval_only_lines": scored.splitlines()}


@pytest.mark.slow
def test_a_first_compiled_run_fills_the_cache_and_compiles_no_ttt_graph(two_runs: dict[str, Any]) -> None:
    first = two_runs["first"]
    assert first.events["compile_cache"] == "cold" and first.events["compile_cache_fx_hit"] == 0
    assert first.events["compile_cache_fx_miss"] >= 2  # the training step and the plain evaluation at least
    fx = [f for f in two_runs["files"] if f.parts[1:2] == ("fxgraph",)]
    assert len({f.parts[2] for f in fx}) >= first.events["compile_cache_fx_miss"]  # one entry per graph compiled
    assert set(first.events["eval_warmup_graphs"]) == {"plain"}  # TTT and sliding off: nothing compiled for them
    assert first.eval_warmup_s == pytest.approx(first.events["eval_warmup_graphs"]["plain"], abs=0.05)
    assert first.time_to_first_step_s is not None and first.time_to_first_step_s > first.eval_warmup_s
    assert first.final_stage == "post_quant"


@pytest.mark.slow
def test_a_second_run_of_the_same_shapes_hits_the_cache_and_compiles_its_ttt_graphs(two_runs: dict[str, Any]) -> None:
    first, second = two_runs["first"], two_runs["second"]
    graphs = second.events["eval_warmup_graphs"]
    assert set(graphs) == {"plain", "windows", "ttt_step8x32"}  # score-first TTT: its scorer and its step
    assert second.eval_warmup_s == pytest.approx(sum(graphs.values()), abs=0.15)
    # the training step and the plain evaluation come from the first run's cache; the TTT graphs are new
    assert second.events["compile_cache"] == "partial"
    assert second.events["compile_cache_fx_hit"] >= first.events["compile_cache_fx_miss"]
    assert second.events["compile_cache_aot_hit"] >= first.events["compile_cache_aot_miss"]
    assert second.final_stage == "post_ttt"


@pytest.mark.slow
def test_an_eval_only_run_compiles_its_graphs_before_the_stages_clocks(two_runs: dict[str, Any]) -> None:
    """`golf eval` (EVAL_ONLY_PATH) primes the plain evaluation's graph before the post-quant stage is timed, and
    scores what the training run scored."""
    scored, first, lines = two_runs["eval_only"], two_runs["first"], two_runs["eval_only_lines"]
    assert set(scored.events["eval_warmup_graphs"]) == {"plain"}
    warmup = next(i for i, line in enumerate(lines) if line.startswith("eval_warmup:plain"))
    result = next(i for i, line in enumerate(lines) if "_roundtrip val_loss:" in line)
    assert warmup < result
    assert scored.stages["post_quant"].val_bpb == first.stages["post_quant"].val_bpb
