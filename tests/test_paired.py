"""bench/paired.py speed: what it launches (the untimed warm-up of both trainers, then one after the other) and the
ratio it computes from the two logs, with golf's figure taken from its log when golf was cut off after its steps."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "paired.py"
TOKENS_PER_STEP = 786_432


def _paired():
    spec = importlib.util.spec_from_file_location("paired_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _reference_log(ms_per_step: float, steps: int) -> str:
    """Step lines as the 2026-04 records print them: train time in tenths of a minute, tok/s to the token."""
    lines = ["Hyperparameters:", f"  train_batch_tokens: {TOKENS_PER_STEP}", "  iterations: 25"]
    for step in range(5, steps + 1, 5):
        elapsed_ms = step * ms_per_step
        tok_s = round(step * TOKENS_PER_STEP / (elapsed_ms / 1000))
        lines.append(f"{step}/{steps} train_loss: 6.0 train_time: {elapsed_ms / 60000:.1f}m tok/s: {tok_s}")
    return "\n".join(lines) + "\n"


def _golf_log(ms_per_step: float, steps: int) -> str:
    return "".join(f"step:{step}/{steps} train_loss:6.0 train_time:{step * ms_per_step:.0f}ms "
                   f"step_avg:{ms_per_step:.2f}ms\n" for step in (1, 10, steps))


class _Done:
    returncode = 0

    def wait(self) -> int:
        return 0


def _args(tmp_path: Path, warm_steps: int) -> argparse.Namespace:
    spec = Path(__file__).resolve().parent.parent / "specs" / "pr1493.yaml"
    return argparse.Namespace(spec=spec, reference=tmp_path / "train_gpt.py", data_dir=tmp_path / "data", steps=25,
                              skip=10, set=["ENABLE_LOOPING_AT=0"], warm_steps=warm_steps)


def test_the_warm_up_runs_both_first_then_the_timed_runs_and_golf_falls_back_to_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paired = _paired()
    launched: list[tuple[str, list[str], dict]] = []

    def start(argv: list[str], env: dict, cwd: Path, log: Path) -> _Done:
        launched.append((log.name, argv, env))
        text = {"reference.log": _reference_log(1250.0, 25), "golf.log": _golf_log(1000.0, 25)}.get(log.name, "")
        log.write_text(text)  # golf wrote no bench JSON: as when a timeout cuts it in its evaluation
        return _Done()

    monkeypatch.setattr(paired, "_start", start)
    result = paired.speed(_args(tmp_path, warm_steps=3), tmp_path)

    assert [name for name, _, _ in launched] == ["golf_warm.log", "reference_warm.log", "reference.log", "golf.log"]
    warm_golf, warm_ref, timed_ref, timed_golf = (argv for _, argv, _ in launched)
    assert warm_golf[warm_golf.index("--steps") + 1] == "3" and "--set=ENABLE_LOOPING_AT=0" in warm_golf
    assert timed_golf[timed_golf.index("--steps") + 1] == "25"
    assert launched[1][2]["ITERATIONS"] == "3" and launched[2][2]["ITERATIONS"] == "25"
    assert result["golf_ms_per_step"] == pytest.approx(1000.0)
    assert result["reference_ms_per_step"] == pytest.approx(1250.0, abs=0.5)
    assert result["ratio"] == pytest.approx(1.25, abs=1e-3)
    assert result["warm_up_wall_s"] is not None


def test_without_warm_steps_only_the_two_timed_runs_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paired = _paired()
    launched: list[str] = []

    def start(argv: list[str], env: dict, cwd: Path, log: Path) -> _Done:
        launched.append(log.name)
        log.write_text(_reference_log(1200.0, 25) if log.name == "reference.log" else "")
        return _Done()

    monkeypatch.setattr(paired, "_start", start)
    result = paired.speed(_args(tmp_path, warm_steps=0), tmp_path)
    assert launched == ["reference.log", "golf.log"]
    assert result["golf_ms_per_step"] is None and result["ratio"] is None and result["warm_up_wall_s"] is None
