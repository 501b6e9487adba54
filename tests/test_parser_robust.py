"""The parser on hostile numbers: NaN/inf in any spelling, integers no store can hold, floats that overflow int()."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from golf.ingest import ingest_paths
from golf.logparse import LogParser, ParsedRun
from golf.store import Run, Store
from golf.store.fields import fields_from_parsed

HUGE = "99999999999999999999"  # 20 digits: a Python int, but above SQLite's 2**63 - 1


def parsed(*lines: str) -> ParsedRun:
    parser = LogParser()
    for line in lines:
        parser.feed(line)
    return parser.run


@pytest.mark.parametrize("spelling", ["NaN", "nan", "NAN", "inf", "-inf", "Inf", "Infinity", "-Infinity"])
def test_a_non_finite_train_loss_in_any_spelling_is_read_and_marks_divergence(spelling: str) -> None:
    run = parsed(f"step:3/10 train_loss:{spelling} train_time:30ms step_avg:10.00ms")
    value = run.curve[3]["train_loss"]
    assert not math.isfinite(value) and math.isnan(value) == (spelling.lower() == "nan")
    assert run.diverged and run.curve[3]["train_time_ms"] == 30.0 and run.malformed == 0


@pytest.mark.parametrize("line", [
    "step:4/10 val_loss:nan val_bpb:nan train_time:40ms step_avg:10.00ms",
    "step:4/10 val_loss:NaN val_bpb:1.2 train_time:40ms step_avg:10.00ms",
    "step:4/10 val_loss:2.1 val_bpb:inf train_time:40ms step_avg:10.00ms",
])
def test_a_non_finite_validation_marks_the_run_diverged(line: str) -> None:
    run = parsed("step:3/10 train_loss:2.5000 train_time:30ms step_avg:10.00ms", line)
    assert run.diverged and 4 in run.curve


def test_a_non_finite_final_score_marks_the_run_diverged() -> None:
    run = parsed("final_int8_zlib_roundtrip val_loss:NaN val_bpb:NaN eval_time:1401ms")
    assert run.diverged and math.isnan(run.stages["post_quant"].val_bpb)
    healthy = parsed("final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms")
    assert not healthy.diverged


HOSTILE = [
    f"model_params:{HUGE}",
    f"peak memory allocated: {HUGE} MiB reserved: {HUGE} MiB",
    f"Serialized model int8+zlib: {HUGE} bytes",
    f"Code size: {HUGE} bytes",
    f"Total submission size int8+zlib: {HUGE} bytes",
    f"bytes_breakdown embeddings:{HUGE} code:1",
    f"step:{HUGE}/20 train_loss:2.5000 train_time:10ms step_avg:10.00ms",
    f"step:2/{HUGE} train_loss:2.5000 train_time:10ms step_avg:10.00ms",
    f"stopping_early: wallclock_cap train_time:10ms step:{HUGE}/20",
    # floats Python reads (as inf) whose int() overflows: times, losses, results
    "step:3/20 train_loss:2.4000 train_time:1e400ms step_avg:1e400ms",
    "step:4/20 train_loss:1e999 train_time:40ms step_avg:10.00ms",
    "total_eval_time:1e400s",
    "final_int8_zlib_roundtrip val_loss:2.0 val_bpb:1e309 eval_time:1e400ms",
]


def test_hostile_numbers_never_raise_and_never_reach_the_store_as_integers_it_cannot_hold(tmp_path: Path) -> None:
    assert float("1e400") == math.inf
    with pytest.raises(OverflowError):
        int(float("1e400"))
    run = parsed("step:1/20 train_loss:2.5000 train_time:10ms step_avg:10.00ms", *HOSTILE)
    # every 20-digit integer made its line malformed (7 lines with one or two of them); nothing was kept from them
    assert run.malformed == 9
    assert run.model_params is None and run.peak_mem_mib is None and run.model_bytes is None
    assert run.code_bytes is None and run.total_bytes is None and run.bytes_breakdown is None
    assert set(run.curve) == {1, 3, 4} and run.iterations == 20
    assert run.curve[3]["train_time_ms"] == math.inf and run.curve[4]["train_loss"] == math.inf and run.diverged

    store = Store(tmp_path / "runs.db")
    store.create_run(Run(id="r", name="r"))
    store.update_run("r", **fields_from_parsed(run))  # no OverflowError from SQLite either
    store.upsert_steps("r", run.curve)
    assert [s.step for s in store.steps("r")] == [1, 3, 4]
    assert store.get("r").malformed_lines == 9  # type: ignore[union-attr]


def test_ingest_of_a_log_with_hostile_numbers_records_it(tmp_path: Path) -> None:
    log = tmp_path / "hostile_seed1.log"
    log.write_text("\n".join(["step:1/20 train_loss:2.5000 train_time:10ms step_avg:10.00ms", *HOSTILE,
                              "final_int8_zlib_roundtrip_exact val_loss:2.00000000 val_bpb:1.20000000"]) + "\n")
    store = Store(tmp_path / "runs.db")
    report = ingest_paths(store, [log])
    assert [item.action for item in report.items] == ["added"]
    run = store.get(report.items[0].run_id)  # type: ignore[arg-type]
    assert run is not None and run.status == "diverged" and run.final_bpb == pytest.approx(1.2)
    assert run.model_params is None and run.malformed_lines == 9
