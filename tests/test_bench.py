"""`golf bench`: the step-time windows, the model-FLOPs formula and the report of a real (CPU) benchmark run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from golf.analysis.bench import bench_report, model_flops_per_token, window_step_ms
from golf.logparse import parse_text
from golf_cli.main import app

runner = CliRunner()
SPECS = Path(__file__).resolve().parent.parent / "specs"


def test_windows_difference_logged_times_after_the_skipped_steps() -> None:
    curve = {s: {"train_loss": 3.0, "train_time_ms": 50.0 * s + 900.0} for s in range(1, 11)}  # compile in step 1
    curve |= {20: {"train_loss": 3.0, "train_time_ms": 1850.0}, 30: {"train_loss": 3.0, "train_time_ms": 2450.0},
              40: {"train_loss": 2.0, "train_time_ms": 2950.0}, 35: {"val_loss": 2.5}}
    # windows from step 10 (t=1400): 10→20 45 ms/step, 20→30 60, 30→40 50; the val-only row is not a step time
    assert window_step_ms(curve, skip=10) == pytest.approx([45.0, 60.0, 50.0])
    assert window_step_ms(curve, skip=0)[0] == pytest.approx(50.0)
    assert window_step_ms(curve, skip=40) == []


def _pr549_knobs() -> dict[str, str]:
    from golf.spec import env_text, load_spec

    return {k: env_text(v) for k, v in load_spec(SPECS / "pr549.yaml").env.items()}


def test_model_flops_of_the_549_stack_count_every_matmul_once_per_token() -> None:
    flops = model_flops_per_token(_pr549_knobs())
    per_layer = 512 * 512 + 2 * 256 * 512 + 512 * 512 + 2 * 1536 * 512  # q, k, v, out; MLP in and out
    matmul = 11 * per_layer + 1024 * 512 + 128 * 512 + 128 * 256  # + tied head, bigram and VE projections
    attention = 11 * 2048 * 512
    assert flops["matmul_weights_per_token"] == matmul
    assert flops["flops_per_token"] == 6 * (matmul + attention) == 228_655_104  # the reference's ~227 M


def test_model_flops_count_recurrent_layers_per_visit_and_attention_gates() -> None:
    base = {"NUM_LAYERS": "4", "MODEL_DIM": "64", "NUM_HEADS": "4", "NUM_KV_HEADS": "2", "MLP_MULT": "2",
            "VOCAB_SIZE": "97", "TRAIN_SEQ_LEN": "32", "TIE_EMBEDDINGS": "1"}
    plain = model_flops_per_token(base)
    recur = model_flops_per_token({**base, "RECUR_LAYERS": "1,2"})
    gated = model_flops_per_token({**base, "GATED_ATTENTION": "1"})
    per_layer = 64 * 64 + 2 * 32 * 64 + 64 * 64 + 2 * 128 * 64
    assert plain["matmul_weights_per_token"] == 4 * per_layer + 97 * 64
    assert recur["virtual_layers"] == 6
    assert recur["matmul_weights_per_token"] == 6 * per_layer + 97 * 64
    assert recur["attention_term"] == 6 * 32 * 64
    assert gated["matmul_weights_per_token"] - plain["matmul_weights_per_token"] == 4 * 4 * 64


LOG = """\
golf_trainer: version:0.1.0 code_sha256:abc run_id:r1
attention:fa4 requested:auto flash_attn_4:4.0.0b36
val_loader:shards pattern=/d/fineweb_val_*.bin tokens:1000000
world_size:1 grad_accum_steps:4
eval_warmup:plain time:3.1s total:3.1s
eval_warmup:windows time:20.4s total:23.5s
compile_cache:warm fx_hit:7 fx_miss:0 aot_hit:3 aot_miss:0 dir:/root/.cache/golf/compile
time_to_first_step:38.2s
""" + "".join(f"step:{s}/40 train_loss:3.0 train_time:{t}ms step_avg:1.0ms\n"
              for s, t in ((10, 5000), (20, 9000), (30, 13400), (40, 17000))) + """\
peak memory allocated: 21000 MiB reserved: 22000 MiB
pre_quant val_loss:2.0 val_bpb:1.2 eval_time:100ms
final_int6_lzma_6_roundtrip val_loss:2.0 val_bpb:1.21 eval_time:100ms
final_int6_sliding_window val_loss:1.9 val_bpb:1.18 eval_time:8000ms
"""


def test_report_of_a_logged_run_gives_median_throughput_mfu_and_sliding_speed() -> None:
    parsed = parse_text(LOG)
    run = SimpleNamespace(id="r1", name="pr549-bench-s1337", spec_name="pr549", command="golf bench x", gpu_name="H100",
                          gpu_count=1, torch_version="2.11", code_hash="abc", git_commit=None, status="completed",
                          steps=40, config=_pr549_knobs(), peak_mem_mib=21000, peak_mem_reserved_mib=22000,
                          pre_quant_bpb=1.2, post_quant_bpb=1.21, sliding_bpb=1.18, time_to_first_step_s=38.2,
                          eval_warmup_s=23.5)
    report = bench_report(run, parsed, skip=10, peak_tflops=778.0)
    assert report["timed_windows"] == 3
    assert report["ms_per_step_median"] == pytest.approx(400.0)  # windows 400, 440, 360 ms/step
    assert report["tokens_per_s"] == pytest.approx(786432 / 0.4)
    assert report["mfu"] == pytest.approx(228_655_104 * 786432 / 0.4 / 778e12)
    assert report["grad_accum_steps"] == 4 and report["peak_mem_mib"] == 21000
    assert report["sliding_eval_s"] == pytest.approx(8.0)
    assert report["sliding_tokens_per_s"] == pytest.approx(125_000.0)
    assert (report["sliding_stride"], report["sliding_seq_len"]) == (64, 2048)
    assert report["attention"] == "fa4"  # what ran, not the knob's "auto"
    # what the run cost before its steps, as figures of their own
    assert (report["time_to_first_step_s"], report["eval_warmup_s"]) == (38.2, 23.5)
    assert report["eval_warmup_graphs"] == {"plain": 3.1, "windows": 20.4}
    assert report["compile_cache"] == "warm"
    assert report["compile_cache_hits"] == {"fx_hit": 7, "fx_miss": 0, "aot_hit": 3, "aot_miss": 0}


def test_a_cpu_run_has_no_mfu_against_the_h100_unless_a_peak_is_given() -> None:
    parsed = parse_text(LOG)
    run = SimpleNamespace(id="r1", name="cpu-bench-s1", spec_name="smoke", command=None, gpu_name=None, gpu_count=0,
                          torch_version="2.13", code_hash="abc", git_commit=None, status="completed", steps=40,
                          config=_pr549_knobs(), peak_mem_mib=None, peak_mem_reserved_mib=None, pre_quant_bpb=1.2,
                          post_quant_bpb=1.21, sliding_bpb=1.18, time_to_first_step_s=None, eval_warmup_s=None)
    report = bench_report(run, parsed, skip=10)
    assert report["mfu"] is None and report["peak_tflops"] is None and report["tflops"] > 0
    given = bench_report(run, parsed, skip=10, peak_tflops=2.0)
    assert given["mfu"] == pytest.approx(given["tflops"] / 2.0)
    run.gpu_name = "H100"
    assert bench_report(run, parsed, skip=10)["peak_tflops"] == 778.0  # a GPU run: the H100's rate by default


@pytest.mark.slow
def test_bench_cli_runs_a_spec_records_it_and_reports_from_its_steps(sample_data, workdir: Path, db: Path) -> None:
    out = workdir / "bench.json"
    args = ["bench", str(SPECS / "smoke.yaml"), "--steps", "30", "--db", str(db), "--data", "sample", "--out", str(out),
            "--set", "NUM_LAYERS=1", "MODEL_DIM=64", "TRAIN_SEQ_LEN=64", "TRAIN_BATCH_TOKENS=512", "EVAL_STRIDE=32",
            "EVAL_SEQ_LEN=64", "VAL_BATCH_SIZE=65536"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    report = json.loads(out.read_text())
    shown = json.loads(runner.invoke(app, ["show", report["run_id"], "--format", "json", "--db", str(db)]).stdout)
    assert shown["steps"] == 30 and "bench" in shown["tags"] and shown["status"] == "completed"
    assert shown["config"]["TTT_ENABLED"] == "0" and shown["config"]["ITERATIONS"] == "30"
    # the report's windows are the recorded steps' own times (10→20, 20→30), read back independently
    times = {row["step"]: row["train_time_ms"] for row in shown["curve"] if row["train_time_ms"] is not None}
    expected = statistics.median([(times[20] - times[10]) / 10, (times[30] - times[20]) / 10])
    assert report["timed_windows"] == 2
    assert report["ms_per_step_median"] == pytest.approx(expected)
    assert report["tokens_per_s"] == pytest.approx(512 / (expected / 1000))
    assert report["sliding_eval_s"] > 0 and report["val_tokens"] > 0
    assert report["attention"] == "sdpa"  # the trainer's log line, parsed: no GPU, so auto ran SDPA
    assert report["time_to_first_step_s"] == shown["time_to_first_step_s"] > 0
    assert report["eval_warmup_s"] is None and report["compile_cache"] is None  # the smoke spec does not compile
    # a recorded run can be reported again, with the same figures
    again = runner.invoke(app, ["bench", report["run_id"], "--db", str(db), "--format", "json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["ms_per_step_median"] == report["ms_per_step_median"]


def test_bench_of_an_unknown_run_is_a_one_line_error(db: Path, workdir: Path) -> None:
    from golf.store import Store

    Store(db)  # an empty store
    result = runner.invoke(app, ["bench", "no-such-run", "--db", str(db)])
    assert result.exit_code == 2
    assert "no-such-run" in result.output and "Traceback" not in result.output


def _rank_log(world: int, losses: list[float], step_ms: float, post_ttt: float) -> str:
    lines = [f"world_size:{world} grad_accum_steps:{8 // world}"]
    for i, loss in enumerate(losses, start=1):
        lines.append(f"step:{i}/{len(losses)} train_loss:{loss:.4f} train_time:{i * step_ms:.0f}ms "
                     f"step_avg:{step_ms:.2f}ms")
    lines.append(f"step:{len(losses)}/{len(losses)} val_loss:2.5 val_bpb:1.5 train_time:{len(losses) * step_ms:.0f}ms "
                 f"step_avg:{step_ms:.2f}ms")
    lines.append(f"legal_ttt val_loss:4.7 val_bpb:{post_ttt:.4f} eval_time:5000ms")
    return "\n".join(lines) + "\n"


def test_rank_parity_gives_curve_and_stage_differences_and_scaling_efficiency() -> None:
    from golf.analysis.parity import rank_parity

    one = parse_text(_rank_log(1, [6.9, 5.0, 4.0], 600.0, 2.9517))
    two = parse_text(_rank_log(2, [6.9, 5.02, 3.99], 320.0, 2.9522))
    report = rank_parity(one, two)
    assert report["world_sizes"] == [1, 2]
    assert report["steps_compared"] == 3
    assert report["train_loss_max_abs_diff"] == pytest.approx(0.02)
    assert report["train_loss_mean_abs_diff"] == pytest.approx(0.01)
    assert report["stages"]["post_ttt"]["diff"] == pytest.approx(0.0005)
    assert report["speedup"] == pytest.approx(600 / 320)
    assert report["scaling_efficiency"] == pytest.approx(600 / 320 / 2)  # 1.875x on 2x the GPUs: 93.75%
