"""The trainer's log lines (golf/trainer/loglines.py) read back by golf's parser: each formatter on its own, then
every line of a real CPU run of the bundled trainer."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from golf.logparse import LogParser, ParsedRun
from golf.logparse.patterns import OLD_CONFIG_KEYS
from golf.trainer import loglines
from golf.trainer.stages import STAGES, stage_of, trainer_labels


def parsed(lines: str | list[str]) -> ParsedRun:
    parser = LogParser()
    for line in [lines] if isinstance(lines, str) else lines:
        parser.feed(line)
    return parser.run


def _r(value: float, digits: int) -> float:
    return float(f"{value:.{digits}f}")


# formatter name -> check(args, run parsed from the formatter's output): what the parser must read back
def _check_hparams(args: tuple, run: ParsedRun) -> None:
    rows = list(args[0])
    assert run.config == {name.lower(): str(value).strip() for name, value in rows}


def _check_trainer_id(args: tuple, run: ParsedRun) -> None:
    assert run.header == {"version": args[0], "code_sha256": args[1], "run_id": args[2]}


def _check_settings(args: tuple, run: ParsedRun) -> None:
    kept = {k: str(v) for k, v in args[0].items() if k in OLD_CONFIG_KEYS}
    assert kept and run.config == kept


def _check_train_step(args: tuple, run: ParsedRun) -> None:
    step, iterations, loss, ms = args
    row = run.curve[step]
    assert row["train_loss"] == _r(loss, 4) or (math.isnan(loss) and math.isnan(row["train_loss"]))
    assert row["train_time_ms"] == _r(ms, 0) and row["step_avg_ms"] == _r(ms / max(step, 1), 2)
    assert (run.steps, run.iterations, run.train_time_ms) == (step, iterations, _r(ms, 0))


def _check_val_step(args: tuple, run: ParsedRun) -> None:
    step, iterations, loss, bpb, ms = args
    row = run.curve[step]
    assert (row["val_loss"], row["val_bpb"]) == (_r(loss, 4), _r(bpb, 4))
    assert row["train_time_ms"] == _r(ms, 0) and run.iterations == iterations


def _check_result(args: tuple, run: ParsedRun) -> None:
    label, loss, bpb, eval_ms = args
    stage = run.stages[stage_of(label)]  # type: ignore[index]
    assert (stage.val_loss, stage.val_bpb, stage.exact) == (_r(loss, 8), _r(bpb, 8), True)
    assert stage.eval_time_ms == _r(eval_ms, 0)


def _check_train_budget(args: tuple, run: ParsedRun) -> None:
    train_ms, gptq_ms, _ = args
    total_s = _r(train_ms + gptq_ms, 0) / 1000.0
    assert (run.gptq_time_s, run.train_incl_gptq_s) == (_r(gptq_ms, 0) / 1000.0, total_s)
    assert run.train_fits_budget is (total_s <= 601.0)


CHECKS: dict[str, Callable[[tuple, ParsedRun], None]] = {
    "hparams_lines": _check_hparams,
    "trainer_id_line": _check_trainer_id,
    "model_params_line": lambda a, run: assert_equal(run.model_params, a[0]),
    "attention_line": lambda a, run: assert_equal(run.header, {"attention": a[0]}),
    "settings_line": _check_settings,
    "val_tokens_line": lambda a, run: assert_equal(run.val_tokens, a[1]),
    "train_step_line": _check_train_step,
    "val_step_line": _check_val_step,
    "stopping_early_line": lambda a, run: assert_equal(
        (run.stop_reason, run.train_time_ms, run.steps, run.iterations), ("wallclock_cap", _r(a[0], 0), a[1], a[2])),
    "diverged_line": lambda a, run: assert_equal((run.diverged, run.stop_reason), (True, "diverged")),
    "peak_memory_line": lambda a, run: assert_equal((run.peak_mem_mib, run.peak_mem_reserved_mib), a),
    "serialized_line": lambda a, run: assert_equal((run.quant_label, run.model_bytes), a),
    "code_size_line": lambda a, run: assert_equal(run.code_bytes, a[0]),
    "total_size_line": lambda a, run: assert_equal(run.total_bytes, a[1]),
    "bytes_breakdown_line": lambda a, run: assert_equal(run.bytes_breakdown, dict(a[0])),
    "result_lines": _check_result,
    "ttt_done_line": lambda a, run: assert_equal(
        (run.stages["post_ttt"].val_loss, run.stages["post_ttt"].val_bpb, run.ttt_time_ms),
        (_r(a[0], 6), _r(a[1], 6), _r(a[2], 1) * 1000.0)),
    "ttt_time_line": lambda a, run: assert_equal(run.ttt_time_ms, _r(a[0], 0)),
    "self_calibration_line": lambda a, run: assert_equal(
        (run.events["gptq_calib_seqs"], run.events["gptq_calib_generate_s"]), (a[0], _r(a[2], 1))),
    "train_budget_line": _check_train_budget,
    "total_eval_time_line": lambda a, run: assert_equal(run.eval_time_ms, _r(a[0], 1) * 1000.0),
    "non_record_line": lambda a, run: assert_equal(run.non_record_reason, a[0]),
    "time_to_first_step_line": lambda a, run: assert_equal(run.time_to_first_step_s, _r(a[0], 1)),
    "eval_warmup_line": lambda a, run: assert_equal(
        (run.events["eval_warmup_graphs"], run.eval_warmup_s), ({a[0]: _r(a[1], 1)}, _r(a[2], 1))),
    "compile_cache_line": lambda a, run: assert_equal(
        {k: run.events[k] for k in run.events if k.startswith("compile_cache")},
        {"compile_cache": a[0], **{f"compile_cache_{k}": v for k, v in a[1].items() if "bypass" not in k}}),
    "layer_loop_line": lambda a, run: assert_equal(
        (run.events["layer_loop_step"], run.events["layer_loop_frac"]), (a[1], _r(a[2], 3))),
}


def assert_equal(got: Any, want: Any) -> None:
    assert got == want, (got, want)


def test_every_formatter_has_a_check() -> None:
    formatters = {name for name, value in vars(loglines).items()
                  if callable(value) and getattr(value, "__module__", "") == loglines.__name__}
    assert formatters == set(CHECKS)


SAMPLES: list[tuple[str, tuple]] = [
    ("hparams_lines", ([("EMBED_LR", "0.6"), ("NUM_LAYERS", "9"), ("RUN_ID", "abc")],)),
    ("trainer_id_line", ("0.4.0", "0123456789abcdef", "r-1")),
    ("model_params_line", (17059912,)),
    ("attention_line", ("sdpa", "auto", None)),
    ("settings_line", ({"world_size": 8, "grad_accum_steps": 1},)),
    ("settings_line", ({"train_batch_tokens": 786432, "train_seq_len": 2048, "iterations": 20000,
                        "warmup_steps": 20, "max_wallclock_seconds": "600.000"},)),
    ("settings_line", ({"seed": 1337},)),
    ("val_tokens_line", ("/data/fineweb_val_*.bin", 62021632)),
    ("train_step_line", (7, 20000, 3.1415926, 4321.49)),
    ("train_step_line", (1, 10, float("nan"), 12.0)),
    ("val_step_line", (0, 20000, 6.93578, 4.10775, 0.0)),
    ("val_step_line", (4000, 20000, 2.04321, 1.21012, 360123.6)),
    ("stopping_early_line", (600012.7, 6789, 20000)),
    ("diverged_line", (12, 100)),
    ("peak_memory_line", (10184, 10200)),
    ("serialized_line", ("int6+brotli", 15_815_847)),
    ("code_size_line", (47642, "lzma+b85")),
    ("total_size_line", ("int6+brotli", 15_863_489)),
    ("bytes_breakdown_line", ({"embeddings": 100, "attention": 200, "mlp": 300, "scalars": 4, "other": 5,
                               "overhead": 6, "code": 7},)),
    *[("result_lines", (label, 2.123456789, 1.2345678912, 1401.4))
      for label in trainer_labels("int6", "brotli", "legal_ttt").values()],
    ("result_lines", (trainer_labels("int8", "zlib", "final_int8_ttt")["post_ttt"], 2.0, 1.1, 9.0)),
    ("result_lines", ("quantized_ttt_phased", 2.0, 1.1, 9.0)),
    ("ttt_done_line", (2.123456789, 1.2345678912, 401.27)),
    ("ttt_time_line", (401234.6,)),
    ("self_calibration_line", (64, 2048, 41.27)),
    ("train_budget_line", (588012.4, 11874.2, 600.0)),
    ("train_budget_line", (598000.0, 12300.0, 600.0)),  # over: 610.3 s with calibration
    ("train_budget_line", (211.0, 0.0, 0.0)),
    ("total_eval_time_line", (123.45,)),
    ("non_record_line", ("adapt-first TTT trains on the validation tokens",)),
    ("time_to_first_step_line", (41.26,)),
    ("eval_warmup_line", ("windows", 9.04, 31.76)),
    ("eval_warmup_line", ("ttt_step32x2048", 0.0, 0.0)),
    ("compile_cache_line", ("partial", {"fx_hit": 5, "fx_miss": 1, "fx_bypass": 0, "aot_hit": 2, "aot_miss": 0,
                                        "aot_bypass": 1}, "/home/me/.cache/golf/compile")),
    ("layer_loop_line", ("enabled", 2178, 0.35, [0, 1, 2, 3, 4, 5, 3, 4], [5, 3, 4, 5, 6, 7, 8, 9, 10])),
    ("layer_loop_line", ("phase2", 3001, 0.6504, [0, 1, 2], [3, 4])),
]


@pytest.mark.parametrize(("name", "args"), SAMPLES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SAMPLES)])
def test_each_formatter_round_trips(name: str, args: tuple) -> None:
    out = getattr(loglines, name)(*args)
    run = parsed(out)
    assert run.malformed == 0 and not run.unplaced, run.unplaced
    CHECKS[name](args, run)


def test_each_stage_label_of_the_trainer_maps_to_its_stage() -> None:
    for ttt in ("legal_ttt", "final_int6_ttt", "quantized_ttt_lora", "quantized_ttt_phased"):
        labels = trainer_labels("int6", "brotli", ttt)
        assert {name: stage_of(label) for name, label in labels.items()} == {s.name: s.name for s in STAGES}


# -- a real run ---------------------------------------------------------------------------------------------------

TINY = {
    "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "TRAIN_SEQ_LEN": "64",
    "TRAIN_BATCH_TOKENS": "1024", "ITERATIONS": "6", "VAL_LOSS_EVERY": "3", "TRAIN_LOG_EVERY": "1",
    "WARMUP_STEPS": "0", "MAX_WALLCLOCK_SECONDS": "0", "VAL_BATCH_SIZE": "16384", "EVAL_SEQ_LEN": "64",
    "EVAL_STRIDE": "32", "EVAL_BATCH_SEQS": "64", "TTT_ENABLED": "1", "TTT_CHUNK_TOKENS": "1024",
    "TTT_EPOCHS": "1", "SEED": "7",
}
_NOT_VALUES = {"lines", "unplaced", "events", "evidence", "line_of", "malformed"}  # bookkeeping and events


def _values(run: ParsedRun) -> dict[str, Any]:
    return {k: v for k, v in vars(run).items() if k not in _NOT_VALUES}


def _small_copy(sample: Any, folder: Path) -> Path:
    """The sample's first tokens as a small dataset (a few seconds of CPU evaluation, TTT included)."""
    import numpy as np

    from golf.trainer.shards import read_shard, shard_files, write_shard

    folder.mkdir()
    for split, count in (("train", 60_000), ("val", 2_049)):
        tokens = np.asarray(read_shard(shard_files(str(sample.data_path), split)[0]))[:count]
        write_shard(folder / f"fineweb_{split}_000000.bin", tokens)
    return folder


@pytest.mark.slow
def test_every_line_of_a_cpu_run_parses_back_to_its_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], sample_data) -> None:
    from golf.trainer import artifact, hparams, runtime, train, ttt

    calls: list[tuple[str, tuple, list[str]]] = []

    def recorded(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            out = fn(*args)
            calls.append((name, args, [out] if isinstance(out, str) else list(out)))
            return out
        return wrapper

    for name in CHECKS:
        wrapped = recorded(name, getattr(loglines, name))
        monkeypatch.setattr(loglines, name, wrapped)
        for module in (artifact, hparams, runtime, ttt):  # modules that import a formatter by name
            if hasattr(module, name):
                monkeypatch.setattr(module, name, wrapped)
    for key in [k for k in list(__import__("os").environ) if k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK"))]:
        monkeypatch.delenv(key)
    data = _small_copy(sample_data, tmp_path / "data")
    for key, value in {**TINY, "DATA_PATH": str(data), "TOKENIZER_PATH": str(sample_data.tokenizer_path)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    assert train.main([]) == 0
    printed = capsys.readouterr().out.splitlines()

    made = [line for _, _, out in calls for line in out]
    assert set(made) <= set(printed)
    for name, args, out in calls:  # each formatted line reads back as the values that made it
        CHECKS[name](args, parsed(out))
    names = {name for name, _, _ in calls}
    assert {"hparams_lines", "train_step_line", "val_step_line", "result_lines", "serialized_line",
            "total_size_line", "bytes_breakdown_line", "ttt_done_line", "ttt_time_line",
            "total_eval_time_line"} <= names
    assert len([c for c in calls if c[0] == "result_lines"]) == len(STAGES)  # every stage ran and was printed
    # every other line carries no value the parser reads: the formatters are the whole log format
    empty = _values(ParsedRun())
    others = [line for line in printed if line not in set(made)]
    assert others
    readers = [line for line in others if _values(parsed(line)) != empty]
    assert readers == []
    # and the whole log parses to what the formatters said
    whole = parsed(printed)
    assert whole.malformed == 0 and whole.final_stage == "post_ttt" and whole.steps == 6
