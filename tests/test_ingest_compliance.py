"""Compliance flags on ingested runs, from logs assembled out of real lines (cited in
tests/data/community_lines/lines.yaml): each flag carries the evidence that raised it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from golf.ingest import ingest_paths
from golf.store import Store
from golf_cli.main import app

# 03-19 Int6_MLP3x_MTP_SlideEval (PR folder): a full 600 s of training, then a score
TRAIN = ["model_params:21778504",
         "step:10427/20000 val_loss:1.9700 val_bpb:1.1667 train_time:600031ms step_avg:57.55ms",
         "stopping_early: wallclock_cap train_time:600031ms step:10427/20000"]
SCORE = ["final_int6_sliding_window val_loss:1.9046 val_bpb:1.1280 stride:64 eval_time:83482ms",
         "final_int6_sliding_window_exact val_loss:1.90463555 val_bpb:1.12803544"]


def flags_of(store: Store, tmp_path: Path, lines: list[str], name: str = "train_seed1.log",
             code: bytes | None = None) -> dict[str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / name
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if code is not None:
        (tmp_path / "submission.json").write_text('{"val_bpb": 1.128}')
        (tmp_path / "train_gpt.py").write_bytes(code)
    report = ingest_paths(store, [log])
    run = store.get(report.run_ids[0])
    assert run is not None
    return {f["flag"]: f["evidence"] for f in run.compliance or [] if f["flag"] != "few_seeds"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "runs.db")


def test_a_clean_run_has_no_flags_but_its_single_seed(store: Store, tmp_path: Path) -> None:
    assert flags_of(store, tmp_path, TRAIN + SCORE) == {}
    run = store.list_runs()[0]
    assert [f["flag"] for f in run.compliance] == ["few_seeds"]


def test_gptq_outside_the_training_clock_counts(store: Store, tmp_path: Path) -> None:
    # 03-25/03-31 AR self-generated calibration after the clock stopped: 600.031 + 196.7 + 1.9 s
    lines = TRAIN + ["gptq:generated 64 sequences in 196.7s", "gptq:calibrated 68 layers in 1.9s"] + SCORE
    evidence = flags_of(store, tmp_path, lines)["over_train_time"]
    assert evidence.endswith(f"= {600.031 + 196.7 + 1.9:.1f} s")
    assert "gptq:generated 64 sequences in 196.7s" in evidence


def test_gptq_inside_a_reserved_clock_does_not(store: Store, tmp_path: Path) -> None:
    lines = ["gptq:reserving 12s, effective=588000ms"] + TRAIN + ["GPTQ:collected 67 Hessians in 12.7s"] + SCORE
    assert "over_train_time" not in flags_of(store, tmp_path, lines)


def test_artifact_production_over_600s(store: Store, tmp_path: Path) -> None:
    line = "artifact_production_wallclock: 1121.067s (must be < 600.0)"  # 04-29 reruns
    assert flags_of(store, tmp_path, TRAIN + [line] + SCORE)["over_train_time"] == line


def test_eval_over_600s_as_the_records_count_it(store: Store, tmp_path: Path) -> None:
    # 03-25 SequentialMomentumTTT: a 2434 s LoRA TTT pass scores the run
    score = ["final_int6_lzma_roundtrip(ttt_lora) val_loss:1.7146 val_bpb:1.0147 eval_time:2434054ms",
             "final_int6_lzma_roundtrip_exact val_loss:1.71459599 val_bpb:1.01466169"]
    evidence = flags_of(store, tmp_path, TRAIN + score)["over_eval_time"]
    assert evidence.startswith("2434.1 s scoring post_ttt") and "(ttt_lora)" in evidence


def test_bytes_over_the_cap_on_the_log_and_on_the_shipped_file(store: Store, tmp_path: Path) -> None:
    over = ["Serialized model int6+zstd: 16160481 bytes", "Code size: 79975 bytes",
            "Total submission size int6+zstd: 16240456 bytes"]  # 03-22 11L_SDTTT_XSA4_EMA (PR folder)
    assert flags_of(store, tmp_path / "a", TRAIN + over + SCORE)["over_bytes"] == over[-1]
    # under the cap by the log's count, over it with the train_gpt.py the record ships
    under = ["Serialized model int6+zstd: 15920000 bytes", "Code size: 60000 bytes",
             "Total submission size int6+zstd: 15980000 bytes"]
    evidence = flags_of(store, tmp_path / "b", TRAIN + under + SCORE, code=b"#" * 90_000)["over_bytes"]
    assert evidence.endswith(f"train_gpt.py 90,000 bytes = {15_920_000 + 90_000:,}")


def test_training_on_validation_tokens_before_scoring(store: Store, tmp_path: Path) -> None:
    adapt = ["ttt_epoch:1/3 loss:1.9496 time:14.5s", "ttt_epoch:3/3 loss:1.9475 time:43.0s"]
    flags = flags_of(store, tmp_path / "a", TRAIN + adapt + SCORE)
    assert flags["trained_on_val"] == "adapt first ttt: ttt_epoch:1/3 loss:1.9496 time:14.5s"
    knob = ["Hyperparameters:", "  prequant_ttt_enabled: True", "  prequant_ttt_epochs: 21"]
    flags = flags_of(store, tmp_path / "b", knob + TRAIN + SCORE)
    assert flags["trained_on_val"] == "prequant ttt: prequant_ttt_enabled: True"
    off = ["Hyperparameters:", "  prequant_ttt_enabled: False"]
    assert "trained_on_val" not in flags_of(store, tmp_path / "c", off + TRAIN + SCORE)


def test_few_seeds_is_recounted_when_the_group_grows(store: Store, tmp_path: Path) -> None:
    record = tmp_path / "2026-05-01_Mine"
    record.mkdir()
    (record / "submission.json").write_text('{"val_bpb": 1.128}')
    for seed in (1, 2):
        (record / f"train_seed{seed}.log").write_text("\n".join([f"seed:{seed}"] + TRAIN + SCORE) + "\n")
    ingest_paths(store, [record])
    assert all(f["flag"] == "few_seeds" and f["evidence"] == "2 seeds in the group (1, 2)"
               for r in store.list_runs() for f in r.compliance)
    (record / "train_seed3.log").write_text("\n".join(["seed:3"] + TRAIN + SCORE) + "\n")
    ingest_paths(store, [record])
    assert [r.compliance for r in store.list_runs()] == [[], [], []]


def test_flags_show_in_ls_and_show(store: Store, tmp_path: Path) -> None:
    lines = TRAIN + ["Total submission size int6+zstd: 16240456 bytes"] + SCORE
    flags_of(store, tmp_path, lines)
    runner = CliRunner()
    listed = runner.invoke(app, ["ls", "--db", str(store.path), "--format", "csv"])
    assert listed.exit_code == 0 and "over_bytes;few_seeds" in listed.stdout
    shown = runner.invoke(app, ["show", "--db", str(store.path), store.list_runs()[0].id])
    assert shown.exit_code == 0 and "Total submission size int6+zstd: 16240456 bytes" in shown.stdout


def test_a_store_written_before_these_fields_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from golf.store.models import SCHEMA_VERSION

    path = tmp_path / "runs.db"
    Store(path)
    with sqlite3.connect(path) as conn:  # back to schema 2: the run table without ingest's columns
        conn.execute("DROP INDEX ix_run_parent_id")
        for column in ("parent_id", "reported_stage", "compliance", "log_events", "record_eval_time_ms"):
            conn.execute(f"ALTER TABLE run DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    log = tmp_path / "train.log"
    log.write_text("\n".join(TRAIN + SCORE) + "\n", encoding="utf-8")
    ingest_paths(store, [log])
    assert [f["flag"] for f in store.list_runs()[0].compliance] == ["few_seeds"]
