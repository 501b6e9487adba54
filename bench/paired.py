"""Golf and a record's own trainer on the same GPU in one call: a speed ratio or a fidelity comparison.

    python3 bench/paired.py speed    --spec specs/pr1493.yaml --reference .refbench/pr1493/train_gpt.py \
        --data-dir .refbench/data --steps 40 --set ENABLE_LOOPING_AT=0 --out $OUT/paired_pr1493_h200.json
    python3 bench/paired.py fidelity --spec specs/pr1493.yaml --reference .refbench/pr1493/train_gpt.py \
        --data-dir .refbench/data --out $OUT/fidelity_pr1493_h200.json

The reference trainer is a record's train_gpt.py kept out of the repo (FlashAttention-3 mapped to SDPA in a
git-ignored copy). It reads DATA_DIR/datasets/fineweb10B_sp<V> and DATA_DIR/tokenizers/fineweb_<V>_bpe.model,
so --data-dir is laid out that way and golf gets the same shards. Both sides take the same knob overrides
(--set, written in the records' env-var names, which golf's specs share).

speed: golf runs `golf bench` (median ms/step over windows of logged steps); the reference runs ITERATIONS
steps and its step times come from its own log through golf's parser (`tok/s` is the finest figure its lines
carry). The ratio is reference ms/step over golf's, each timed after --skip steps. The two timed runs go one
after the other; --warm-steps N first runs both at once for N steps, untimed, so that their compiles (minutes
each at the frontier shapes) overlap and the timed runs find warm caches.
fidelity: both train at 131,072 tokens/step for 300 steps (warmdown as a fraction, seed 1337) and the raw-weight
val_bpb at steps 100/200/300 is compared; --concurrent runs the two at once (values only, no timing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FIDELITY_KNOBS = {"TRAIN_BATCH_TOKENS": "131072", "ITERATIONS": "300", "VAL_LOSS_EVERY": "100",
                  "TRAIN_LOG_EVERY": "50", "MAX_WALLCLOCK_SECONDS": "0", "SEED": "1337"}
FIDELITY_STEPS = (100, 200, 300)
FIDELITY_TOLERANCE = 0.02


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise SystemExit(f"paired.py: --set {item!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _vocab(spec: Path) -> str:
    from golf.spec import load_spec

    return str(load_spec(spec).env.get("VOCAB_SIZE", "1024"))


def reference_command(args: argparse.Namespace, knobs: dict[str, str], workdir: Path) -> tuple[list[str], dict]:
    env = {**os.environ, "DATA_DIR": str(args.data_dir.resolve()) + "/", "REFBENCH_TRAIN_ONLY": "1",
           "PYTHONUNBUFFERED": "1", **knobs}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            str(args.reference.resolve())]
    workdir.mkdir(parents=True, exist_ok=True)
    return argv, env


def golf_data(args: argparse.Namespace) -> str:
    return str((args.data_dir / "datasets" / f"fineweb10B_sp{_vocab(args.spec)}").resolve())


def _start(argv: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    fh = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _curve(log: Path) -> dict:
    """The step rows of a trainer's log; none where the trainer died before writing any (or no log exists)."""
    from golf.logparse import parse_log

    if not log.is_file():
        return {}
    with open(log, encoding="utf-8", errors="replace") as fh:
        runs = parse_log(fh)
    return runs[-1].curve if runs else {}


def _step_ms(log: Path, skip: int) -> tuple[float | None, int]:
    """Median ms/step over a log's windows of logged steps from step `skip` on, and how many windows there were."""
    from golf.analysis.bench import window_step_ms

    windows = window_step_ms(_curve(log), skip)
    return (statistics.median(windows) if windows else None), len(windows)


def _golf_env(db: Path) -> dict:
    return {**os.environ, "GOLF_DB": str(db), "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _golf_bench(args: argparse.Namespace, sets: dict[str, str], steps: int, skip: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "golf_cli.main", "bench", str(args.spec.resolve()), "--steps", str(steps),
            "--skip", str(skip), "--data", golf_data(args), "--nproc", "1", "--out", str(out),
            *[f"--set={k}={v}" for k, v in sets.items()]]


def speed(args: argparse.Namespace, work: Path) -> dict:
    sets = _kv(args.set)
    golf_json = work / "golf_bench.json"
    golf_argv = _golf_bench(args, sets, args.steps, args.skip, golf_json)
    ref_knobs = {"ITERATIONS": str(args.steps), "WARMUP_STEPS": "3", "TRAIN_LOG_EVERY": "5", "VAL_LOSS_EVERY": "0",
                 "MAX_WALLCLOCK_SECONDS": "0", "SEED": "1337", **sets}
    ref_argv, ref_env = reference_command(args, ref_knobs, work / "reference")
    warm_wall = _warm_up(args, sets, ref_argv, ref_env, work) if args.warm_steps else None
    t0 = time.monotonic()
    ref = _start(ref_argv, ref_env, work / "reference", work / "reference.log")
    ref.wait()
    ref_wall = time.monotonic() - t0
    t0 = time.monotonic()
    golf = _start(golf_argv, _golf_env(work / "runs.db"), work, work / "golf.log")
    golf.wait()
    golf_wall = time.monotonic() - t0
    ref_ms, ref_windows = _step_ms(work / "reference.log", args.skip)
    report = json.loads(golf_json.read_text()) if golf_json.is_file() else {}
    golf_ms = report.get("ms_per_step_median")
    if golf_ms is None:  # golf cut off (a timeout) after its steps: its log holds the same figure
        golf_ms, _ = _step_ms(work / "golf.log", args.skip)
    return {
        "golf_ms_per_step": golf_ms, "reference_ms_per_step": ref_ms,
        "ratio": ref_ms / golf_ms if ref_ms and golf_ms else None,
        "golf_command": " ".join(golf_argv), "reference_command": " ".join(ref_argv),
        "reference_env": ref_knobs, "golf_attention": report.get("attention"),
        "reference_attention": "sdpa (FlashAttention-3 call mapped to SDPA, flash backend)",
        "golf_code_hash": report.get("code_hash"), "golf_exit": golf.returncode, "reference_exit": ref.returncode,
        "golf_wall_s": golf_wall, "reference_wall_s": ref_wall, "reference_windows": ref_windows,
        "golf_peak_mem_mib": report.get("peak_mem_mib"), "gpu": report.get("gpu"),
        "golf_time_to_first_step_s": report.get("time_to_first_step_s"),
        "golf_compile_cache": report.get("compile_cache"), "warm_up_wall_s": warm_wall,
    }


def _warm_up(args: argparse.Namespace, sets: dict[str, str], ref_argv: list[str], ref_env: dict,
             work: Path) -> float:
    """Both trainers for --warm-steps steps at once, untimed: their compiles fill inductor's caches (and golf's
    compile cache), so the timed runs after, one at a time, spend the call on steps rather than on compiling."""
    steps = str(args.warm_steps)
    golf_warm = _golf_bench(args, sets, args.warm_steps, 0, work / "warm.json")
    t0 = time.monotonic()
    procs = [_start(golf_warm, _golf_env(work / "warm.db"), work, work / "golf_warm.log"),
             _start(ref_argv, {**ref_env, "ITERATIONS": steps}, work / "reference", work / "reference_warm.log")]
    for proc in procs:
        proc.wait()
    return time.monotonic() - t0


def fidelity(args: argparse.Namespace, work: Path) -> dict:
    knobs = {**FIDELITY_KNOBS, **_kv(args.set)}
    golf_argv = [sys.executable, "-m", "golf_cli.main", "run", str(args.spec.resolve()), "--data", golf_data(args),
                 "--nproc", "1", "--seed", knobs["SEED"], "--name", "fidelity",
                 *[f"--set={k}={v}" for k, v in knobs.items() if k != "SEED"]]
    ref_argv, ref_env = reference_command(args, knobs, work / "reference")
    golf = _start(golf_argv, _golf_env(work / "runs.db"), work, work / "golf.log")
    if not args.concurrent:
        golf.wait()
    ref_log, ref_exit = args.reference_log, None
    if ref_log is None:  # else: the reference's log from an earlier call on the same kind of GPU
        ref = _start(ref_argv, ref_env, work / "reference", work / "reference.log")
        ref_exit = ref.wait()
        ref_log = work / "reference.log"
    golf.wait()
    ref_curve = _curve(ref_log)
    golf_curve = _curve(work / "golf.log")
    rows = []
    for step in FIDELITY_STEPS:
        g, r = golf_curve.get(step, {}).get("val_bpb"), ref_curve.get(step, {}).get("val_bpb")
        rows.append({"step": step, "golf_val_bpb": g, "reference_val_bpb": r,
                     "delta": g - r if g is not None and r is not None else None})
    deltas = [abs(row["delta"]) for row in rows if row["delta"] is not None]
    return {"steps": rows, "tolerance": FIDELITY_TOLERANCE,
            "within_tolerance": bool(deltas) and len(deltas) == len(rows) and max(deltas) <= FIDELITY_TOLERANCE,
            "knobs": knobs, "golf_command": " ".join(golf_argv), "reference_command": " ".join(ref_argv),
            "golf_exit": golf.returncode, "reference_exit": ref_exit, "reference_log": str(ref_log),
            "concurrent": args.concurrent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("speed", "fidelity"))
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="the record's train_gpt.py (SDPA copy)")
    parser.add_argument("--data-dir", type=Path, required=True, help="DATA_DIR laid out as the records read it")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=10, help="steps left out of the timing (compile stragglers)")
    parser.add_argument("--warm-steps", type=int, default=0,
                        help="speed: first run both for this many steps at once, untimed, to fill compile caches")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="knob for both sides")
    parser.add_argument("--reference-log", type=Path, help="fidelity: the reference's log of an earlier run")
    parser.add_argument("--concurrent", action="store_true", help="fidelity: run both at once")
    parser.add_argument("--work", type=Path, default=Path("/tmp/paired"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    work = args.work / f"{args.mode}_{args.spec.stem}"
    work.mkdir(parents=True, exist_ok=True)
    result = speed(args, work) if args.mode == "speed" else fidelity(args, work)
    result.update({"mode": args.mode, "spec": args.spec.stem, "reference": str(args.reference),
                   "date": dt.date.today().isoformat(), "work": str(work)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_command")}, indent=2, default=str))


if __name__ == "__main__":
    main()
