"""Ingest on synthetic logs in the formats the fixtures do not cover: Unix-timestamp prefixes, several runs per file,
a source-code header, new-format step lines, damaged lines, odd submission.json files, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.ingest import ingest_paths, read_submission
from golf.store import Store
from golf_cli.main import app

runner = CliRunner()


def old_run(seed: int, exact: float, steps: int = 400) -> list[str]:
    """An old-format (step:N/M) run: one-line config, train/val lines, sizes, int8 roundtrip."""
    return [
        "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model",
        "model_params:17059912",
        "train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000",
        f"seed:{seed}",
        "warmup_step:1/20",
        "warmup_step:20/20",
        "step:0/20000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.01ms",
        "step:1/20000 train_loss:6.9370 train_time:24ms step_avg:24.05ms",
        f"step:{steps}/20000 train_loss:2.8000 train_time:16000ms step_avg:40.00ms",
        f"step:{steps}/20000 val_loss:2.5000 val_bpb:1.4800 train_time:16000ms step_avg:40.00ms",
        f"stopping_early: wallclock_cap train_time:16000ms step:{steps}/20000",
        "peak memory allocated: 10184 MiB reserved: 10200 MiB",
        "Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)",
        "Code size: 47642 bytes",
        "Total submission size int8+zlib: 15863489 bytes",
        f"final_int8_zlib_roundtrip val_loss:2.5100 val_bpb:{exact:.4f} eval_time:1401ms",
        f"final_int8_zlib_roundtrip_exact val_loss:2.51000123 val_bpb:{exact:.8f}",
    ]


def new_run(seed: int, ttt: float, layers: int = 11) -> list[str]:
    """A 04-xx style run: Hyperparameters block, `N/M` step lines (train_time in minutes), TTT last."""
    return [
        "Hyperparameters:",
        "  logfile: logs/abc.txt",
        f"  num_layers: {layers}",
        f"  seed: {seed}",
        "  train_batch_tokens: 786432",
        "  vocab_size: 8192",
        "train_shards: 128",
        "model_params:35944536",
        "warmup_step: 1/20",
        "0/20000 val_loss: 9.0090 val_bpb: 3.4877",
        "1/20000 train_loss: 9.0111 train_time: 0.0m tok/s: 8348323",
        "500/20000 train_loss: 3.3346 train_time: 0.9m tok/s: 7691255",
        "4550/20000 val_loss: 2.8119 val_bpb: 1.0886",
        "stopping_early: wallclock_cap train_time: 588047ms step: 4550/20000",
        "peak memory allocated: 39045 MiB reserved: 39124 MiB",
        "pre-quantization post-ema val_loss:2.80873254 val_bpb:1.08734790 eval_time:7440ms",
        "Serialized model quantized+brotli: 15975300 bytes",
        "Total submission size quantized+brotli: 15991930 bytes",
        "quantized val_loss:2.84065044 val_bpb:1.09970431 eval_time:25515ms",
        "quantized_sliding_window val_loss:2.79714850 val_bpb:1.08286335 eval_time:120961ms",
        f"quantized_ttt val_loss:2.79180191 val_bpb:{ttt:.8f} eval_time:366525ms",
    ]


def stamped(lines: list[str], start: float = 1776142360.5) -> str:
    return "\n".join(f"{start + i * 0.25:.3f} {line}" for i, line in enumerate(lines)) + "\n"


def write(path: Path, text: str | list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if isinstance(text, str) else "\n".join(text) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.db")


def only_run(store: Store):  # type: ignore[no-untyped-def]
    runs = store.list_runs(source="ingested")
    assert len(runs) == 1
    return runs[0]


def test_timestamp_prefixes_and_new_format_steps(store: Store, tmp_path: Path) -> None:
    log = write(tmp_path / "logs" / "train0.txt", stamped(new_run(seed=7, ttt=1.08079352)))
    ingest_paths(store, [log])
    run = only_run(store)
    assert run.seed == 7  # from the Hyperparameters block (the file name has none)
    assert run.config["NUM_LAYERS"] == "11" and run.config["TRAIN_BATCH_TOKENS"] == "786432"
    assert run.final_stage == "post_ttt" and run.final_bpb == 1.08079352 and run.final_loss == 2.79180191
    assert run.sliding_bpb == 1.08286335 and run.post_quant_bpb == 1.09970431 and run.pre_quant_bpb == 1.0873479
    assert run.steps == 4550 and run.train_time_ms == 588047
    assert run.step_avg_ms == pytest.approx(588047 / 4550)
    assert run.total_bytes == 15991930
    # the first line's Unix timestamp is when the run started
    assert run.started_at.timestamp() == pytest.approx(1776142360.5, abs=1)
    steps = {s.step: s for s in store.steps(run.id)}
    # `train_time: 0.9m` is rounded to 6 s; tok/s (cumulative step·batch/elapsed) gives the elapsed time exactly
    assert steps[500].train_loss == 3.3346
    assert steps[500].train_time_ms == pytest.approx(500 * 786432 / 7691255 * 1000)
    assert steps[500].step_avg_ms == pytest.approx(786432 / 7691255 * 1000)
    assert steps[4550].val_bpb == 1.0886


def test_several_runs_in_one_file_the_last_complete_one_counts(store: Store, tmp_path: Path) -> None:
    crashed = new_run(seed=3, ttt=1.07)[:12]  # a third attempt that died mid-training
    log = write(tmp_path / "train.log", new_run(1, 1.0901) + new_run(2, 1.0802) + crashed)
    ingest_paths(store, [log])
    run = only_run(store)
    assert run.seed == 2 and run.final_bpb == 1.0802 and run.status == "completed"


def test_a_log_that_begins_with_the_trainer_source(store: Store, tmp_path: Path) -> None:
    source = [
        '"""Reference trainer."""',
        "import os",
        "class Hyperparameters:",
        '    seed = int(os.environ.get("SEED", 1337))',
        "def main():",
        '    log0(f"step:{step}/{args.iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f}")',
        '    log0(f"final_int8_zlib_roundtrip_exact val_loss:{q_val_loss:.8f} val_bpb:{q_val_bpb:.8f}")',
        '    log0(f"Total submission size int8+zlib: {quant_file_bytes + code_bytes} bytes")',
        "    if val_loss: pass",
        "=" * 100,
        "Running Python 3.12.3 (main, Nov  6 2025, 13:44:16) [GCC 13.3.0]",
        "| NVIDIA-SMI 570.172.08             Driver Version: 570.172.08     CUDA Version: 12.8     |",
        "=" * 100,
    ]
    write(tmp_path / "code.txt", source + old_run(seed=5, exact=1.48661234))
    ingest_paths(store, [tmp_path / "code.txt"])
    run = only_run(store)
    assert run.seed == 5 and run.final_stage == "post_quant" and run.final_bpb == 1.48661234
    assert run.malformed_lines == 0  # code lines are not log lines, damaged or otherwise
    assert run.total_bytes == 15863489 and run.steps == 400


def test_damaged_lines_are_counted_not_fatal(store: Store, tmp_path: Path) -> None:
    lines = old_run(seed=9, exact=1.3)
    lines[8:8] = [
        "step:200/20000 train_loss:",  # cut off by a kill
        "step:201/20000 train_loss:x.y train_time:?ms",
        "final_int6_roundtrip_exact val_loss:1.93 val_bpb:",  # truncated result
        "Total submission size int8+zlib: lots bytes",
        "\x00\x00\ufffd\ufffd binary junk",
        "step:" + "9" * 5000 + "/20000 train_loss:1.0",  # an int too long to parse
    ]
    write(tmp_path / "train_seed9.log", lines)
    ingest_paths(store, [tmp_path])
    run = only_run(store)
    assert run.malformed_lines == 5
    assert run.final_bpb == 1.3 and run.status == "completed" and run.seed == 9


def test_incomplete_and_empty_files(store: Store, tmp_path: Path) -> None:
    write(tmp_path / "died_seed4.log", old_run(seed=4, exact=1.2)[:9])
    write(tmp_path / "notes.txt", "remember to try XSA on all layers\n")
    write(tmp_path / "requirements.txt", "brotli\n")
    report = ingest_paths(store, [tmp_path])
    run = only_run(store)
    assert run.status == "failed" and run.final_bpb is None and run.stop_reason.startswith("incomplete log")
    assert [(i.path.name, i.action) for i in report.items if i.action == "skipped"] == [("notes.txt", "skipped")]


def test_identical_copies_and_reingest_key_on_content(store: Store, tmp_path: Path) -> None:
    text = "\n".join(old_run(seed=1337, exact=1.25)) + "\n"
    write(tmp_path / "a" / "train.log", text)
    write(tmp_path / "a" / "train_seed1337.log", text)
    first = ingest_paths(store, [tmp_path])
    assert first.count("added") == 1 and first.count("duplicate") == 1
    run = only_run(store)
    assert run.source_path.endswith("train_seed1337.log")  # the copy whose name carries the seed
    second = ingest_paths(store, [tmp_path / "a" / "train.log"])
    assert second.count("added") == 0 and second.count("exists") == 1
    assert len(store.list_runs()) == 1
    updated = ingest_paths(store, [tmp_path], update=True)
    assert updated.count("updated") == 1 and len(store.list_runs()) == 1
    assert only_run(store).name == run.name  # replaced in place, under its name


def test_loose_logs_group_by_config_and_records_by_folder(store: Store, tmp_path: Path) -> None:
    write(tmp_path / "loose" / "x_seed1.log", new_run(1, 1.081, layers=11))
    write(tmp_path / "loose" / "x_seed2.log", new_run(2, 1.082, layers=11))
    write(tmp_path / "loose" / "y_seed1.log", new_run(1, 1.090, layers=9))
    record = tmp_path / "2026-05-01_Mine"
    write(record / "train_seed1.log", new_run(1, 1.071, layers=12))
    write(record / "logs" / "train_seed2.txt", new_run(2, 1.070, layers=13))  # logs/ subfolder: same record
    (record / "submission.json").write_text(json.dumps({"author": "me", "val_loss": 1.0705, "date": "2026-05-01"}))
    ingest_paths(store, [tmp_path])
    runs = {Path(r.source_path).name: r for r in store.list_runs()}
    assert runs["x_seed1.log"].group_hash == runs["x_seed2.log"].group_hash != runs["y_seed1.log"].group_hash
    # the two logs of the record print different configurations: two groups, each flagged with the difference
    assert runs["train_seed1.log"].group_hash != runs["train_seed2.txt"].group_hash
    for name, mine, other in (("train_seed1.log", 12, 13), ("train_seed2.txt", 13, 12)):
        flags = {f["flag"]: f["evidence"] for f in runs[name].compliance}
        assert flags["mixed_configs"] == f"NUM_LAYERS={mine} (others: {other})"
        assert flags["few_seeds"] == f"1 seed in the group ({1 if mine == 12 else 2})"
    assert "mixed_configs" not in {f["flag"] for f in runs["x_seed1.log"].compliance}
    assert runs["train_seed1.log"].record_name == "2026-05-01_Mine"
    # no val_bpb, and val_loss in the bpb band: it is the bpb (as in the 03-20 Int5 record)
    assert runs["train_seed1.log"].reported_bpb == 1.0705
    assert runs["x_seed1.log"].record_name is None


def test_submission_schemas_are_read_tolerantly(tmp_path: Path) -> None:
    def sub(data: object, name: str = "submission.json") -> Path:
        folder = tmp_path / f"f{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        path = folder / name
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return path

    seeds = read_submission(sub({"val_bpb": "1.0611", "seed_results": {
        "42": {"val_bpb": 1.0610, "artifact_bytes": 15990000, "ms_per_step": 120.0},
        "seed_314": {"val_bpb": 1.0612, "artifact_bytes": 15995000, "step_avg_ms": 122.0}}}))
    assert seeds.val_bpb == 1.0611 and seeds.n_seeds == 2 and seeds.seeds == [42, 314]
    assert seeds.bytes_total == 15995000 and seeds.step_avg_ms == 121.0
    assert seeds.val_bpb_std == pytest.approx(0.000141421, rel=1e-4)
    timed = read_submission(sub({"val_bpb": 1.1, "seed_results": {
        "1": {"val_bpb": 1.1, "train_time_s": 590.5, "eval_time_s": 100.0},
        "2": {"val_bpb": 1.1, "train_time_ms": 599000, "eval_time_ms": 120500}}}))
    assert (timed.train_time_s, timed.eval_time_s) == (599.0, 120.5)  # the slowest seed, in seconds
    mean_key = read_submission(sub({"mean_val_bpb": 1.19, "artifact_size_bytes": 15000000}))
    assert mean_key.val_bpb == 1.19 and mean_key.bytes_total == 15000000
    listed = read_submission(sub({"val_bpb": 1.08, "seeds": [1, 2, 3], "track": "non-record-16mb"}))
    assert listed.n_seeds == 3 and listed.non_record
    from golf.ingest import SubmissionError

    for broken in ("{not json", "[1, 2]", {"val_loss": 2.07}, {"val_bpb": "n/a"}):
        with pytest.raises(SubmissionError):
            read_submission(sub(broken))


def test_cli_json_has_the_store_field_names(tmp_path: Path) -> None:
    log = write(tmp_path / "train_seed42.log", old_run(seed=42, exact=1.2244))
    db = tmp_path / "runs.db"
    result = runner.invoke(app, ["ingest", str(log), "--format", "json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row["source"] == "ingested" and row["source_path"] == str(log.resolve())
    assert row["seed"] == 42 and row["final_bpb"] == 1.2244 and row["status"] == "completed"
    assert row["ingest_action"] == "added"
    for fmt in ("table", "md", "csv"):
        again = runner.invoke(app, ["ingest", str(log), "--format", fmt, "--db", str(db)])
        assert again.exit_code == 0 and "exists" in again.stdout
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--db", str(db)])
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr


def test_a_log_whose_only_score_is_its_last_validation_step(store: Store, tmp_path: Path) -> None:
    # V3 lines (Binary, JEPA, Legendre, XNOR non-record logs; parameter-golf-facts §3.2): no result line at all
    lines = ["step:1000/50000 loss:3.5850 t:51774ms step_avg:51.8ms",
             "step:50000/50000 val_loss:2.9692 val_bpb:1.1497 train_time:7763355ms"]
    ingest_paths(store, [write(tmp_path / "train.log", lines)])
    run = only_run(store)
    assert run.status == "completed" and run.final_stage == "pre_quant"
    assert (run.final_bpb, run.final_loss) == (1.1497, 2.9692)
    # a log cut off before the end of training has no score
    ingest_paths(store, [write(tmp_path / "cut" / "train.log", lines[:1] +
                               ["step:20000/50000 val_loss:3.0100 val_bpb:1.1650 train_time:3100000ms"])])
    cut = next(r for r in store.list_runs() if "cut" in r.source_path)
    assert cut.status == "failed" and cut.final_bpb is None
