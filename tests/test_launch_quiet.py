"""Quiet failures and seeds summarised: what `golf run` shows on the terminal (the log keeps everything)."""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path

from typer.testing import CliRunner

from golf.launch.live import eval_stage_text, expected_stages, failure_lines, status_line, status_text
from golf.launch.quiet import LineFilter, error_cause
from golf.logparse import LogParser
from golf.store import Run, Store
from golf_cli.main import app

runner = CliRunner()

# The shape of a real failure (golf's trainer on a corrupt shard, under torchrun 2.13), shortened.
FAILED_LOG = textwrap.dedent("""\
    Hyperparameters:
      adam_eps: 1e-08
      xsa_last_n: 0
    golf_trainer: version:0.1.0 code_sha256:afa109a8586233de run_id:4028ba4165
    model_params:361608
    Traceback (most recent call last):
      File "<frozen runpy>", line 198, in _run_module_as_main
      File "/x/golf/trainer/shards.py", line 30, in read_header
        raise ShardError(f"{path}: bad magic {int(header[0])} (expected {SHARD_MAGIC}); not a token shard")
    golf.trainer.shards.ShardError: /d/fineweb_val_000000.bin: bad magic 1408308603 (expected 20240520); not a shard
    E1202 03:50:11.729000 23362 site-packages/torch/distributed/elastic/multiprocessing/api.py:1002] failed (exit 1)
    Traceback (most recent call last):
      File "/usr/lib/python3.11/site-packages/torch/distributed/launcher/api.py", line 383, in launch_agent
        raise ChildFailedError(
    torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
    ============================================================
    golf.trainer FAILED
    ------------------------------------------------------------
    Failures:
      <NO_OTHER_FAILURES>
    ------------------------------------------------------------
    Root Cause (first observed failure):
    [0]:
      time      : 2026-12-02_03:50:11
      host      : localhost
      rank      : 0 (local_rank: 0)
      exitcode  : 1 (pid: 23437)
      traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
    ============================================================
    """).splitlines()
CAUSE = "ShardError: /d/fineweb_val_000000.bin: bad magic 1408308603 (expected 20240520); not a shard"


def test_filter_keeps_the_trainers_lines_and_the_cause_only() -> None:
    quiet = LineFilter()
    shown = [line for line in FAILED_LOG if quiet.show(line)]
    assert shown == ["golf_trainer: version:0.1.0 code_sha256:afa109a8586233de run_id:4028ba4165",
                     "model_params:361608"]
    assert quiet.cause == CAUSE and error_cause(FAILED_LOG) == CAUSE
    verbose = LineFilter(verbose=True)
    assert [line for line in FAILED_LOG if verbose.show(line)] == FAILED_LOG and verbose.cause == CAUSE
    assert error_cause(["step:1/2 train_loss:6.9"]) is None


def test_failed_and_interrupted_summaries_name_the_cause_once() -> None:
    run = Run(id="abc", name="x-s1", status="failed", exit_code=1, stop_reason=CAUSE, log_path="/r/abc/train.log")
    assert status_line(run) == f"failed: {CAUSE} (exit code 1)"
    lines = failure_lines(run)
    assert CAUSE in lines[0] and "/r/abc/train.log" in lines[1] and lines[0].count("exit code") == 1
    plain = Run(id="abc", name="x-s1", status="failed", exit_code=1, stop_reason="exit code 1")
    assert status_line(plain) == "failed (exit code 1)"
    stopped = Run(id="abc", name="x-s1", status="interrupted", exit_code=130, stop_reason="SIGINT", steps=40,
                  iterations=120, log_path="/r/abc/train.log")
    [line] = failure_lines(stopped)
    assert "interrupted (SIGINT) at step 40/120" in line and "/r/abc/train.log" in line


def test_status_line_names_the_evaluation_stage() -> None:
    parser = LogParser()
    for line in ("step:0/10 val_loss:6.9 val_bpb:4.1 train_time:0ms step_avg:0.01ms",
                 "step:5/10 train_loss:5.0 train_time:500ms step_avg:100.00ms"):
        parser.feed(line)
    assert "ETA 0.5 s" in status_text(parser.run, 3.0)
    stages = expected_stages({"EVAL_STRIDE": "64", "TTT_ENABLED": "0"})
    assert stages == ["pre_quant", "post_quant", "sliding"]
    parser.feed("step:10/10 val_loss:4.0 val_bpb:2.5 train_time:1000ms step_avg:100.00ms")
    parser.feed("peak memory allocated: 10 MiB reserved: 12 MiB")
    text = status_text(parser.run, 3.0, stages=stages)
    assert "ETA" not in text and "evaluating: pre-quant (trained weights) (1/3)" in text
    parser.feed("pre_quant val_loss:4.0000 val_bpb:2.5000 eval_time:10ms")
    parser.feed("pre_quant_exact val_loss:4.00000000 val_bpb:2.50000000")
    parser.feed("final_int8_zlib_roundtrip_exact val_loss:4.10000000 val_bpb:2.60000000")
    assert eval_stage_text(parser.run, stages) == "evaluating: sliding window (3/3)", parser.run.stages


def fake_trainer(workdir: Path, data: Path, body: str, seeds: str = "[1]") -> Path:
    (workdir / "train_fake.py").write_text(textwrap.dedent(body), encoding="utf-8")
    spec = workdir / "fake.yaml"
    spec.write_text(f"name: fake\ntrainer: train_fake.py\nseeds: {seeds}\ndata: {{path: {data}}}\n", encoding="utf-8")
    return spec


FAILING = """\
    print("Hyperparameters:")
    for i in range(100):
        print(f"  knob_{i}: {i}")
    print("step:1/4 train_loss:6.9 train_time:10ms step_avg:10.00ms", flush=True)
    class ShardError(ValueError):
        pass
    raise ShardError("shard_000.bin: bad magic 7")
    """


def test_a_failed_run_says_why_without_tracebacks(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = fake_trainer(workdir, tiny_data, FAILING)
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)])
    assert result.exit_code == 1
    out = result.stdout
    assert "Traceback" not in out and "knob_50" not in out and "ChildFailedError" not in out
    assert "step:1/4 train_loss:6.9" in out
    run = Store(db).list_runs()[0]
    assert run.stop_reason == "ShardError: shard_000.bin: bad magic 7"
    assert "failed: ShardError: shard_000.bin: bad magic 7 (exit code 1)" in out and run.log_path in out
    log = Path(run.log_path).read_text()
    assert "Traceback" in log and "  knob_50: 50" in log  # the log keeps everything

    verbose = runner.invoke(app, ["run", str(spec), "--db", str(db), "--verbose"])
    assert "Traceback" in verbose.stdout and "knob_50" in verbose.stdout


SEEDED = """\
    import os
    seed = int(os.environ["SEED"])
    bpb = {1: 2.50, 2: 2.56, 3: 2.47}[seed]
    print("step:4/4 val_loss:4.0 val_bpb:3.0 train_time:100ms step_avg:25.00ms", flush=True)
    print("Total submission size int8+zlib: %d bytes" % (1000 + seed))
    print("final_int8_zlib_roundtrip_exact val_loss:%.8f val_bpb:%.8f" % (bpb * 1.6, bpb))
    """


def test_seeds_have_headers_and_a_group_summary(workdir: Path, tiny_data: Path, db: Path) -> None:
    spec = fake_trainer(workdir, tiny_data, SEEDED, seeds="[1, 2, 3]")
    result = runner.invoke(app, ["run", str(spec), "--db", str(db)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    for k, seed in enumerate((1, 2, 3), 1):
        assert f"seed {seed} ({k}/3): fake-s{seed}" in out
    assert out.index("seed 2 (2/3)") < out.index("seed 3 (3/3)")
    bpbs = [2.50, 2.56, 2.47]
    summary = out[out.index("3 of 3 seeds completed"):]
    mean, std = statistics.fmean(bpbs), statistics.stdev(bpbs)
    assert f"{mean:.4f} ± {std:.4f} (3)" in summary  # post-quant and final
    assert "1,002 ± 1 (3)" in summary  # bytes: 1001, 1002, 1003
