"""Does the flex doc-attention kernel run where the evaluation graphs call it? One case per subprocess (a CUDA
illegal memory access poisons its process), each compiled as the trainer compiles its graphs, checked against the
blockwise SDPA kernel on the same inputs.

    CUDA_LAUNCH_BLOCKING=1 python3 bench/flex_eval_check.py --out $OUT/flex_eval_check.json
    python3 bench/flex_eval_check.py --small --out /tmp/fec.json          # CPU check of the script itself

Cases (rows x tokens, span, grad mode): evaluation batches as prime_eval_graphs makes them (256 x 2048 at
VAL_BATCH_SIZE 524,288 on one GPU, and 32 x 2048), one block per row (no previous block), under inference_mode and
under no_grad; a packed training row (1 x 32,768, span 2048: blocks with their previous one), forward only.
Each case is golf.trainer.doc_attention.kernel_disagreement, the check a run asking for DOC_ATTENTION_KERNEL=flex
makes at its own shapes. Documents: BOS every 300-900 tokens. Prints one line per case: the max |flex - sdpa|
(a run accepts flex below FLEX_CHECK_TOLERANCE), or the error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {  # name: (rows, tokens, span, mode)
    "eval_256x2048_inference": (256, 2048, 2048, "inference"),
    "eval_256x2048_no_grad": (256, 2048, 2048, "no_grad"),
    "eval_32x2048_inference": (32, 2048, 2048, "inference"),
    "train_1x32768_span2048": (1, 32768, 2048, "no_grad"),
}
SMALL = {name: (max(1, rows // 64), tokens // 16, span // 16, mode) for name, (rows, tokens, span, mode) in
         CASES.items()}


def run_case(rows: int, tokens: int, span: int, mode: str) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    from golf.trainer.doc_attention import kernel_disagreement

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    # inference_mode as prime_eval_graphs runs the plain evaluation graph; no_grad as the stages do
    with torch.inference_mode() if mode == "inference" else contextlib.nullcontext():
        diff = kernel_disagreement(rows, tokens, span, 8, 4, 64, dev, dtype, compiled=dev.type == "cuda")
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {"ok": True, "max_abs_diff": diff, "seconds": round(time.perf_counter() - t0, 1), "device": str(dev),
            "torch": torch.__version__}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--small", action="store_true", help="shapes / 16 (CPU)")
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds per case")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # the subprocess side
    args = ap.parse_args()
    cases = SMALL if args.small else CASES
    if args.case:
        print(json.dumps(run_case(*cases[args.case])))
        return 0
    results = {}
    for name in cases:
        cmd = [sys.executable, __file__, "--out", str(args.out), "--case", name] + (["--small"] if args.small else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            last = proc.stdout.strip().splitlines()[-1:] or [""]
            if proc.returncode == 0 and last[0].startswith("{"):
                results[name] = json.loads(last[0])
            else:
                err = [ln for ln in proc.stderr.splitlines() if "Error" in ln or "error" in ln][-3:]
                results[name] = {"ok": False, "exit_code": proc.returncode, "error": err}
        except subprocess.TimeoutExpired:
            results[name] = {"ok": False, "error": [f"timed out after {args.timeout:.0f}s"]}
        print(name, json.dumps(results[name]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
