"""Time `golf compare` and `golf leaderboard` on a large run store.

Fills a runs.db with 10,000 runs (3-seed groups, realistic config JSON) and 1,000,000 step rows by bulk
`executemany` inserts, then runs the two commands as subprocesses, several times each, and reports the median
wall time (target: under 1 s each). Also times the interpreter start and the heavy imports, which set the floor.

    python bench/bench_store.py                      # writes .bench_data/bench_store.json
    python bench/bench_store.py --runs 2000 --repeat 3 --keep
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / ".bench_data"
TARGET_S = 1.0


def fill(db: Path, runs: int, steps: int, seed: int = 0) -> dict[str, float]:
    """A fresh store at `db` with `runs` runs (groups of 3 seeds) and `steps` step rows in total."""
    from golf.store import Store
    from golf.trainer.hparams import Hyperparameters

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    Store(db)  # the schema, its indexes and the schema version, as golf creates them
    rng = random.Random(seed)
    defaults = Hyperparameters.resolve().as_env()
    started = datetime(2026, 4, 1, 12, 0, 0)
    columns = ("id", "name", "spec_name", "spec", "config", "config_hash", "code_hash", "group_hash", "seed", "tags",
               "status", "started_at", "source", "trainer", "nproc", "steps", "iterations", "step_avg_ms",
               "train_time_ms", "peak_mem_mib", "pre_quant_bpb", "pre_quant_loss", "post_quant_bpb", "post_quant_loss",
               "sliding_bpb", "sliding_loss", "final_bpb", "final_loss", "final_stage", "model_bytes", "code_bytes",
               "total_bytes", "eval_time_ms", "non_record_reason")
    rows = []
    for i in range(runs):
        group, seed_index = divmod(i, 3)
        spec_name = f"spec{group:05d}"
        knobs = dict(defaults, NUM_LAYERS=str(9 + group % 4), XSA_LAST_N=str(group % 12 % (9 + group % 4)),
                     MATRIX_LR=f"{0.02 + (group % 7) * 0.001:.3f}", SEED=str((1337, 42, 2025)[seed_index]),
                     RUN_ID=f"b{i:09d}")
        config_hash = hashlib.sha256(f"config{group}".encode()).hexdigest()
        group_hash = hashlib.sha256(f"group{group}".encode()).hexdigest()[:16]
        status = "completed" if rng.random() < 0.9 else rng.choice(("failed", "interrupted", "diverged"))
        bpb = 1.06 + 0.1 * rng.random() + rng.gauss(0, 0.0005)
        loss = bpb * 1.6885
        done = status == "completed"
        rows.append((
            f"b{i:09d}", f"{spec_name}-s{knobs['SEED']}", spec_name,
            json.dumps({"name": spec_name, "seeds": [int(knobs["SEED"])], "env": {"NUM_LAYERS": knobs["NUM_LAYERS"]}}),
            json.dumps(knobs), config_hash, "c0de" * 16, group_hash, int(knobs["SEED"]), "[]", status,
            (started + timedelta(minutes=11 * i)).strftime("%Y-%m-%d %H:%M:%S.%f"), "golf", "bundled", 8,
            7000 + rng.randrange(200), 20000, 84.0 + rng.random(), 600_000.0 + rng.random() * 50, 20862,
            bpb + 0.015, loss + 0.025, bpb + 0.02, loss + 0.034, bpb if done else None, loss if done else None,
            bpb if done else None, loss if done else None, "sliding" if done else None,
            15_500_000 + rng.randrange(490_000), 67_000, 15_567_000 + rng.randrange(490_000),
            80_000.0 + rng.random() * 1000, None,
        ))
    per_run = max(1, steps // max(runs, 1))
    step_rows = []
    for i in range(runs):
        run_id = f"b{i:09d}"
        for k in range(per_run):
            if len(step_rows) >= steps:
                break
            step = k * 50
            step_rows.append((run_id, step, 6.0 / (1 + step / 500) + 1.9, None, None, step * 84.5, 84.5))
    conn = sqlite3.connect(db)
    t0 = time.perf_counter()
    with conn:
        conn.executemany(f"INSERT INTO run ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    t1 = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO step (run_id, step, train_loss, val_loss, val_bpb, train_time_ms, step_avg_ms) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", step_rows)
    t2 = time.perf_counter()
    conn.execute("ANALYZE")
    conn.close()
    return {"insert_runs_s": t1 - t0, "insert_steps_s": t2 - t1, "runs": len(rows), "steps": len(step_rows),
            "db_mb": db.stat().st_size / 1e6}


def complete_groups(db: Path, count: int = 2) -> list[str]:
    """Spec names of groups whose 3 runs all completed (what the benchmark compares)."""
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT spec_name FROM run GROUP BY spec_name HAVING SUM(status = 'completed') = 3 "
                        "ORDER BY spec_name LIMIT ?", (count,)).fetchall()
    conn.close()
    return [r[0] for r in rows]


def wall(argv: list[str], repeat: int) -> dict[str, float | list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "all_s": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--db", type=Path, default=DEFAULT_DIR / "bench_runs.db")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR / "bench_store.json")
    parser.add_argument("--keep", action="store_true", help="reuse an existing --db instead of refilling it")
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)

    filled = None
    if not (args.keep and args.db.exists()):
        print(f"filling {args.db} with {args.runs:,} runs and {args.steps:,} steps ...", flush=True)
        filled = fill(args.db, args.runs, args.steps)
        print(f"  runs {filled['insert_runs_s']:.2f} s, steps {filled['insert_steps_s']:.2f} s, "
              f"{filled['db_mb']:.0f} MB", flush=True)
    golf = [sys.executable, "-m", "golf_cli.main"]
    a, b = complete_groups(args.db)
    commands = {
        "compare": [*golf, "compare", a, b, "--db", str(args.db)],
        "leaderboard": [*golf, "leaderboard", "--db", str(args.db)],
        "compare --format json": [*golf, "compare", a, b, "--format", "json", "--db", str(args.db)],
        "compare --plot": [*golf, "compare", a, b, "--plot", "--db", str(args.db)],
        "floor: python -c pass": [sys.executable, "-c", "pass"],
        "floor: import scipy.stats": [sys.executable, "-c", "import scipy.stats"],
        "floor: golf --help": [*golf, "--help"],
    }
    results = {}
    for name, argv in commands.items():
        wall(argv, 1)  # warm the page cache
        results[name] = wall(argv, args.repeat)
        status = ""
        if name in ("compare", "leaderboard"):
            status = "  OK" if results[name]["median_s"] < TARGET_S else f"  over the {TARGET_S:.0f} s target"
        print(f"{name:28s} median {results[name]['median_s']:.3f} s  (min {results[name]['min_s']:.3f}, "
              f"max {results[name]['max_s']:.3f}, n={args.repeat}){status}", flush=True)
    report = {
        "when": datetime.now().isoformat(timespec="seconds"), "python": sys.version.split()[0],
        "cpu_count": __import__("os").cpu_count(), "db": str(args.db), "fill": filled,
        "compared": [a, b], "target_s": TARGET_S, "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
