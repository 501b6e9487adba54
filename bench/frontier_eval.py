"""Phased LoRA TTT against golf's chunked SGD TTT on ONE artifact: specs/pr1855.yaml at full size, ~200 steps.

    python3 bench/frontier_eval.py --data .gpurun/data --out $OUT/frontier_eval.json            # one H200
    python3 bench/frontier_eval.py --data .gpurun/data --out /tmp/fe/fe.json --tiny              # CPU smoke

--data is a data root as `golf data caseops --out` writes it (datasets/<name>/ and tokenizers/<name>.model): its
*_caseops dataset is used (--dataset NAME picks another, e.g. a plain sp8192 root to run with CaseOps off).
(a) `golf run SPEC` on one GPU, seed 42, ITERATIONS=200 at TRAIN_BATCH_TOKENS=262,144 (a quarter of the record's
    batch: #1493's stack ran ~1.0 s/step at 786,432 on an H200, so ~0.3 s/step, ~60-80 s of training), then the
    spec's whole evaluation: pre-quant, GPTQ + LQER + pergroup, post-quant, phased LoRA TTT on the full val set.
(b) `golf eval <(a)>` on the same artifact with golf's chunked SGD TTT (TTT_MODE=score_first, #1493's knobs) and
    its sliding window (stride 64): post-quant, sliding, post-TTT.
Each part runs under a hard `timeout` taken from one budget (--budget; (b) keeps --reserve-b of it), so a part cut
off keeps what its log printed: a TTT cut mid-way reports its running val_bpb over the documents scored so far.
The JSON (--out) has per part: every stage's val_bpb, val_loss and seconds, training steps and time, golf's eval
time and the records' (the TTT loop), compile warm-ups, the TTT progress, the exit code and whether it was cut.
--set-a / --set-b add knob overrides to a part (KEY=VALUE words). --tiny scales the model and data down for a CPU
check of the whole path (the data root cut to a few documents in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = REPO / "specs" / "pr1855.yaml"
SEED = 42
NAME = "fe-pr1855"
FULL_A = {"ITERATIONS": "200", "TRAIN_BATCH_TOKENS": "262144", "MAX_WALLCLOCK_SECONDS": "150",
          "TRAIN_LOG_EVERY": "25", "VAL_LOSS_EVERY": "0"}
# golf's chunked full-model SGD TTT as specs/pr1493.yaml runs it, with its sliding stage
SGD_TTT = {"TTT_ENABLED": "1", "TTT_MODE": "score_first", "PHASED_TTT_ENABLED": "0", "TTT_OPTIMIZER": "sgd",
           "TTT_LR": "0.005", "TTT_MOMENTUM": "0.9", "TTT_EPOCHS": "3", "TTT_CHUNK_TOKENS": "32768",
           "TTT_BATCH_SEQS": "256", "TTT_GRAD_CLIP": "1.0", "TTT_FREEZE_BLOCKS": "0", "TTT_SCHEDULE": "cosine_chunks",
           "EVAL_STRIDE": "64"}
TINY_A = {  # the spec's techniques on a CPU: 2 steps of 2 x 256 tokens, 2 layers looped, short TTT work
    "NUM_LAYERS": "3", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "ROPE_DIMS": "8",
    "GATE_WINDOW": "8", "SMEAR_GATE_WIDTH": "8", "LOOP_START": "1", "LOOP_END": "1", "PARALLEL_START_LAYER": "2",
    "XSA_LAST_N": "3", "TRAIN_SEQ_LEN": "128", "EVAL_SEQ_LEN": "128", "TTT_SEQ_LEN": "128",
    "TRAIN_BATCH_TOKENS": "512", "GRAD_ACCUM_STEPS": "2", "ITERATIONS": "2", "WARMUP_STEPS": "0",
    "TRAIN_LOG_EVERY": "1", "MAX_WALLCLOCK_SECONDS": "0", "VAL_BATCH_SIZE": "4096", "GPTQ_CALIBRATION_BATCHES": "1",
    "GPTQ_RESERVE_SECONDS": "0", "TTT_LORA_RANK": "4", "TTT_CHUNK_SIZE": "64", "TTT_BATCH_SIZE": "4",
    "PHASED_TTT_PREFIX_DOCS": "4", "GLOBAL_TTT_CHUNK_TOKENS": "4096", "GLOBAL_TTT_BATCH_SEQS": "8",
    "LQER_TOP_K": "2"}
TINY_B = {"TTT_CHUNK_TOKENS": "4096", "TTT_BATCH_SEQS": "8", "EVAL_STRIDE": "64", "TTT_EPOCHS": "1"}
TINY_DOCS = 12  # validation documents kept by --tiny (shortest-first would bias nothing here: stream order)
_WARMUP = re.compile(r"^(ttt_lora:compile warmup done|eval_warmup:compiled|gptq:calibrated|"
                     r"Serialize|serialize|compress|ttt_phased: total_docs|ttpp:|ttpr:|ttt:done|"
                     r"stopping_early|peak memory|doc_attention:|byte_sidecar|val_loader)")
_TTP = re.compile(r"^ttp: b(\d+)/(\d+) .*?rl:(\S+) rb:(\S+)")
_TIMED = re.compile(r"^(\S+) val_loss:(\S+) val_bpb:(\S+) eval_time:(\d+)ms")


def golf(*args: str) -> list[str]:
    return [sys.executable, "-m", "golf_cli.main", *args]


def sets(knobs: dict[str, str], extra: list[str]) -> list[str]:
    return ["--set", *[f"{k}={v}" for k, v in knobs.items()], *extra] if knobs or extra else []


def dataset_of(root: Path, name: str | None) -> Path:
    folders = sorted(p for p in (root / "datasets").iterdir() if p.is_dir()) if (root / "datasets").is_dir() else []
    chosen = [p for p in folders if p.name == name] if name else [p for p in folders if p.name.endswith("_caseops")]
    if not chosen:
        sys.exit(f"frontier_eval: {root}/datasets has no {'folder ' + name if name else '*_caseops folder'} "
                 f"(found: {', '.join(p.name for p in folders) or 'none'})")
    return chosen[0]


def tiny_root(data: Path, into: Path) -> Path:
    """The dataset cut to its first TINY_DOCS validation documents (tokens and byte sidecar alike) and its first
    40,000 training tokens, with its tokenizer, under `into` (the same layout)."""
    import numpy as np

    from golf.trainer.shards import read_shard, shard_files, write_shard

    out = into / "datasets" / data.name
    out.mkdir(parents=True)
    val = np.asarray(read_shard(shard_files(data, "val")[0]))
    cut = int(np.flatnonzero(val == 1)[TINY_DOCS]) + 1  # through the next document's BOS (the last target)
    write_shard(out / "fineweb_val_000000.bin", val[:cut])
    sidecar = data / "fineweb_val_bytes_000000.bin"
    if sidecar.is_file():
        write_shard(out / sidecar.name, np.asarray(read_shard(sidecar))[:cut])
    write_shard(out / "fineweb_train_000000.bin", np.asarray(read_shard(shard_files(data, "train")[0]))[:40_000])
    (into / "tokenizers").mkdir()
    for model in (data.parent.parent / "tokenizers").glob("*.model"):
        (into / "tokenizers" / model.name).write_bytes(model.read_bytes())
    return out


def run_part(argv: list[str], limit_s: float, log: Path, env: dict[str, str]) -> dict[str, Any]:
    """One golf command under a hard timeout (SIGTERM, which golf forwards to the trainer and records; SIGKILL 30 s
    later); its console output to `log`."""
    t0 = time.time()
    limit = max(int(limit_s), 1)
    with open(log, "w") as f:
        rc = subprocess.call(["timeout", "-k", "30", str(limit), *argv], stdout=f, stderr=subprocess.STDOUT,
                             env=env)
    return {"exit_code": rc, "cut_off": rc in (124, 137, 143), "wall_s": round(time.time() - t0, 1),
            "limit_s": limit}


def newest_run_log(work: Path, before: set[Path]) -> Path | None:
    logs = [p for p in (work / "runs").glob("*/train.log") if p not in before]
    return max(logs, key=lambda p: p.stat().st_mtime) if logs else None


def summarize(log: Path | None) -> dict[str, Any]:
    """Every stage's score and time, the timings and the TTT progress, from the trainer's log."""
    if log is None or not log.is_file():
        return {"log": None}
    from golf.logparse.parser import parse_text

    text = log.read_text(errors="replace")
    parsed = parse_text(text)
    stages = {name: {"label": v.label, "val_bpb": v.val_bpb, "val_loss": v.val_loss,
                     "seconds": None if v.eval_time_ms is None else round(v.eval_time_ms / 1000, 2)}
              for name, v in parsed.stages.items()}
    lines = text.splitlines()
    ttp = [m for m in map(_TTP.match, lines) if m]
    progress = None
    if ttp:
        last = ttp[-1]
        progress = {"batches_done": int(last.group(1)), "batches": int(last.group(2)),
                    "running_loss": float(last.group(3)), "running_bpb": float(last.group(4))}
    ms = lambda v: None if v is None else round(v / 1000, 2)  # noqa: E731
    return {
        "log": str(log), "stages": stages, "result_lines": [ln for ln in lines if _TIMED.match(ln)],
        "steps": parsed.steps, "train_s": ms(parsed.train_time_ms), "step_avg_ms": parsed.step_avg_ms,
        "tokens_per_s": parsed.tokens_per_s, "peak_mem_mib": parsed.peak_mem_mib,
        "eval_s_golf": ms(parsed.eval_time_ms), "eval_s_records": ms(parsed.record_eval_time_ms),
        "ttt_s": ms(parsed.ttt_time_ms), "total_bytes": parsed.total_bytes, "ttt_progress": progress,
        "timing_lines": [ln for ln in lines if _WARMUP.match(ln)][:60],
        "last_lines": lines[-15:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="data root (datasets/ and tokenizers/)")
    ap.add_argument("--dataset", help="dataset folder name under DATA/datasets (default: the *_caseops one)")
    ap.add_argument("--out", type=Path, required=True, help="the JSON report")
    ap.add_argument("--work", type=Path, default=None, help="work folder (runs/, runs.db; default: a temp folder)")
    ap.add_argument("--budget", type=float, default=530.0, help="seconds for both parts together")
    ap.add_argument("--reserve-b", type=float, default=140.0, help="seconds of the budget kept for part (b)")
    ap.add_argument("--set-a", nargs="*", default=[], help="more KEY=VALUE overrides for (a)")
    ap.add_argument("--set-b", nargs="*", default=[], help="more KEY=VALUE overrides for (b)")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, a few documents")
    args = ap.parse_args()
    start = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="frontier_eval_"))
    work.mkdir(parents=True, exist_ok=True)
    data = dataset_of(args.data.resolve(), args.dataset)
    knobs_a, knobs_b = dict(FULL_A), dict(SGD_TTT)
    if args.tiny:
        data = tiny_root(data, work / "tiny_data")
        knobs_a.update(TINY_A)
        knobs_b.update(TINY_B)
    env = {**os.environ, "GOLF_DB": str(work / "runs.db"), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    report: dict[str, Any] = {"spec": str(SPEC.relative_to(REPO)), "data": str(data), "seed": SEED,
                              "caseops": data.name.endswith("_caseops"), "tiny": args.tiny, "budget_s": args.budget,
                              "overrides_a": {**knobs_a, "+": args.set_a}, "overrides_b": {**knobs_b, "+": args.set_b}}

    def write() -> None:
        report["wall_s"] = round(time.time() - start, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, args.out)

    os.chdir(work)
    before: set[Path] = set()
    argv_a = golf("run", str(SPEC), "--data", str(data), "--nproc", "1", "--seed", str(SEED), "--name", NAME,
                  *sets(knobs_a, args.set_a))
    limit_a = args.budget - args.reserve_b - (time.time() - start)
    report["a"] = {"command": argv_a[2:], **run_part(argv_a, limit_a, args.out.with_name("frontier_eval_a.txt"),
                                                      env)}
    log_a = newest_run_log(work, before)
    report["a"].update(summarize(log_a))
    write()
    before = set((work / "runs").glob("*/train.log"))
    argv_b = golf("eval", f"{NAME}-s{SEED}", "--name", f"{NAME}-sgd", *sets(knobs_b, args.set_b))
    limit_b = args.budget - (time.time() - start)
    report["b"] = {"command": argv_b[2:], **run_part(argv_b, limit_b, args.out.with_name("frontier_eval_b.txt"),
                                                      env)}
    report["b"].update(summarize(newest_run_log(work, before)))
    a_stages, b_stages = report["a"].get("stages", {}), report["b"].get("stages", {})
    report["comparison"] = {
        "post_quant_bpb": (a_stages.get("post_quant") or {}).get("val_bpb"),
        "phased_lora_ttt_bpb": (a_stages.get("post_ttt") or {}).get("val_bpb"),
        "sliding_bpb": (b_stages.get("sliding") or {}).get("val_bpb"),
        "sgd_ttt_bpb": (b_stages.get("post_ttt") or {}).get("val_bpb"),
        "phased_lora_ttt_s_records": report["a"].get("eval_s_records"),
        "sgd_ttt_s_records": report["b"].get("eval_s_records"),
    }
    write()
    print(json.dumps(report["comparison"], indent=2))
    return 0 if report["a"]["exit_code"] == 0 and report["b"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
