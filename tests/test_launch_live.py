"""The live status line and the end-of-run summary."""

from __future__ import annotations

import io

from rich.console import Console

from golf.launch.live import format_duration, status_text, summary_renderable
from golf.logparse import LogParser
from golf.store import Run


def parsed_from(lines: list[str]):
    parser = LogParser()
    for line in lines:
        parser.feed(line)
    return parser.run


def test_status_line_numbers() -> None:
    run = parsed_from([
        "step:99/1000 train_loss:3.5000 train_time:4950ms step_avg:50.00ms",
        "step:100/1000 val_loss:3.4000 val_bpb:2.0100 train_time:5000ms step_avg:50.00ms",
        "step:100/1000 train_loss:3.2500 train_time:5000ms step_avg:50.00ms",
    ])
    text = status_text(run, elapsed_s=75, batch_tokens=65536)
    # 900 steps left at 50 ms = 45 s; 65536 tokens per 50 ms step = 1,310,720 tokens/s
    assert text == ("step 100/1000 · loss 3.2500 · val_bpb 2.0100 · 50.0 ms/step · 1,310,720 tok/s · ETA 45.0 s · "
                    "elapsed 1:15")
    capped = status_text(run, elapsed_s=5, batch_tokens=65536, wallclock_cap_s=12)
    assert "ETA 7.0 s" in capped  # the 12 s cap ends training 7 s after the 5 s already trained
    assert status_text(parsed_from([]), 0).startswith("step -/? · ETA ?")


def test_format_duration() -> None:
    assert format_duration(0.26) == "0.3 s"
    assert format_duration(59.94) == "59.9 s"
    assert format_duration(61) == "1:01"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(None) == "?"


def render(run: Run) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(summary_renderable(run))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_summary_shows_stages_bytes_and_status() -> None:
    run = Run(id="r1", name="x-s1", status="completed", exit_code=0, pre_quant_bpb=1.2, pre_quant_loss=2.0,
              post_quant_bpb=1.21, post_quant_loss=2.01, final_bpb=1.21234567, final_loss=2.01,
              final_stage="post_quant",
              total_bytes=15_900_000, model_bytes=15_850_000, code_bytes=50_000, quant_label="int8+zlib", steps=10,
              iterations=10, train_time_ms=61_000, step_avg_ms=6100.0, eval_time_ms=2_500, log_path="/l")
    text = render(run)
    assert "pre-quant" in text and "1.2000" in text and "final (post_quant)" in text and "1.21234567" in text
    assert "15,900,000 of 16,000,000 (headroom 100,000)" in text
    assert "model 15,850,000 + code 50,000 (int8+zlib)" in text
    assert "10/10 steps in 1:01, 6100.0 ms/step" in text and "2.5 s" in text
    assert "status       completed\n" in "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    over = render(Run(id="r2", name="y", status="failed", exit_code=1, stop_reason="exit code 1",
                      total_bytes=16_000_123, log_path="/l"))
    assert "16,000,123 of 16,000,000 (over by 123)" in over
    assert "failed (exit code 1)" in over and over.count("exit code") == 1  # said once, not twice
    assert "none (no evaluation result in the log)" in over
    rescore = render(Run(id="r3", name="z-eval", status="completed", exit_code=0, parent_id="r1", final_bpb=1.1,
                         final_stage="post_ttt", eval_time_ms=53_000, log_path="/l"))
    assert "none (re-scores the artifact of run r1)" in rescore and "steps in" not in rescore
