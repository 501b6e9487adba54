"""Compare a run on N GPUs with the same run on fewer (same spec, seed and global batch): loss curves, stage
results, step time and scaling efficiency. Multi-GPU data parallelism must not change what is learned.

    python bench/rank_parity.py ONE.log MANY.log [--json OUT.json]

Each log is a trainer log (runs/<id>/train.log); the world sizes come from the logs' `world_size:` lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from golf.analysis.parity import rank_parity
from golf.logparse import parse_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("one", type=Path, help="train.log of the run on fewer GPUs")
    ap.add_argument("many", type=Path, help="train.log of the run on more GPUs")
    ap.add_argument("--json", type=Path, help="write the comparison here")
    args = ap.parse_args()
    report = rank_parity(parse_text(args.one.read_text()), parse_text(args.many.read_text()))
    w1, w2 = report["world_sizes"]
    if not report["steps_compared"]:
        raise SystemExit(f"{args.one} and {args.many} share no logged train-loss steps: nothing to compare")
    print(f"world_size:{w1} vs {w2} steps_compared:{report['steps_compared']} "
          f"train_loss_max_abs_diff:{report['train_loss_max_abs_diff']:.4f} "
          f"train_loss_mean_abs_diff:{report['train_loss_mean_abs_diff']:.4f}")
    for step, (a, b) in report["val_bpb"].items():
        print(f"step:{step} val_bpb:{a:.4f} vs {b:.4f} diff:{b - a:+.4f}")
    for name, row in report["stages"].items():
        print(f"{name} val_bpb:{row['one']:.4f} vs {row['many']:.4f} diff:{row['diff']:+.4f}")
    if report["speedup"] is not None:
        print(f"step_avg_ms:{report['step_avg_ms'][0]:.1f} vs {report['step_avg_ms'][1]:.1f} "
              f"speedup:{report['speedup']:.3f} scaling_efficiency:{report['scaling_efficiency']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
