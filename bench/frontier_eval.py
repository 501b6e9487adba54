"""Phased LoRA TTT against golf's chunked SGD TTT on ONE artifact: specs/pr1855.yaml at full size, ~200 steps.

    python3 bench/frontier_eval.py --data .gpurun/data --out $OUT/fe.json --parts train,sgd --save $OUT/fe_work.tgz
    python3 bench/frontier_eval.py --data .gpurun/data --out $OUT/fe.json --parts lora --restore .gpurun/fe_work.tgz
    python3 bench/frontier_eval.py --data .gpurun/data --out /tmp/fe/fe.json --tiny             # CPU smoke

--data is a data root as `golf data caseops --out` writes it (datasets/<name>/ and tokenizers/<name>.model): its
*_caseops dataset is used (--dataset NAME picks another, e.g. a plain sp8192 root to run with CaseOps off).
Parts, run in the order given (--parts, default train,sgd,lora), each under a hard `timeout` out of one budget:
  train  `golf run SPEC` on one GPU, seed 42, ITERATIONS=200 at TRAIN_BATCH_TOKENS=262,144 (a third of the
         record's batch: #1493's stack ran ~1.0 s/step at 786,432 on an H200, so ~0.35 s/step, ~70 s of training),
         GPTQ + LQER + pergroup, pre-quant and post-quant on the full val set; TTT off (the parts below score it).
  run    the same with the spec's whole evaluation in the one process (phased LoRA TTT after post-quant).
  lora   `golf eval` of that run's artifact with the spec's phased LoRA TTT: post-quant, then the TTT.
  sgd    `golf eval` of that artifact with golf's chunked SGD TTT (TTT_MODE=score_first, #1493's knobs) and its
         sliding window (stride 64): post-quant, sliding, post-TTT.
Document-isolated attention runs on the trainer's default kernel (DOC_ATTENTION_KERNEL=auto: blockwise SDPA;
compiled FlexAttention gave wrong values here and crashed pr1855's evaluation graph, bench/flex_eval_check.py).
A part cut off keeps what its log printed (a TTT cut mid-way reports its running val_bpb over the documents scored
so far). The work folder (--work, default /tmp/frontier_eval: runs.db and runs/ with the artifact) stays between
calls on a warm machine; the JSON (--out; one per call, merged with what the folder's earlier calls wrote) has per
part: every stage's val_bpb, val_loss and seconds, steps and training time, golf's eval time and the records' (the
TTT loop), the compile warm-up and timing lines, the TTT progress, the exit code and whether it was cut off.
--set-PART KEY=VALUE... adds overrides to a part. --tiny scales model and data down for a CPU check of every part
(the data cut to a few short documents in the work folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = REPO / "specs" / "pr1855.yaml"
SEED = 42
NAME = "fe-pr1855"
PARTS = ("train", "run", "lora", "sgd")
# EMA_DECAY scaled to the short run: the record's 0.9965 averages its last ~290 of ~4,900 steps (6 %); over 200 steps
# it would keep half the initial weights (0.9965^200 = 0.50: pre-quant 2.599 against 1.222 before EMA, session 13)
FULL_TRAIN = {"ITERATIONS": "200", "TRAIN_BATCH_TOKENS": "262144", "MAX_WALLCLOCK_SECONDS": "150",
              "TRAIN_LOG_EVERY": "25", "VAL_LOSS_EVERY": "0", "EMA_DECAY": "0.92"}
NO_TTT = {"TTT_ENABLED": "0", "PHASED_TTT_ENABLED": "0"}
# the spec's own TTT (named in full: the parent trained with TTT off)
LORA_TTT = {"TTT_ENABLED": "1", "TTT_MODE": "lora", "PHASED_TTT_ENABLED": "1"}
# golf's chunked full-model SGD TTT as specs/pr1493.yaml runs it, with its sliding stage
SGD_TTT = {"TTT_ENABLED": "1", "TTT_MODE": "score_first", "PHASED_TTT_ENABLED": "0", "TTT_OPTIMIZER": "sgd",
           "TTT_LR": "0.005", "TTT_MOMENTUM": "0.9", "TTT_EPOCHS": "3",
           "TTT_CHUNK_TOKENS": "32768", "TTT_BATCH_SEQS": "256", "TTT_GRAD_CLIP": "1.0", "TTT_FREEZE_BLOCKS": "0",
           "TTT_SCHEDULE": "cosine_chunks", "EVAL_STRIDE": "64"}
TINY_TRAIN = {  # the spec's techniques on a CPU: 2 steps of 2 x 256 tokens, one layer looped, short TTT work
    "NUM_LAYERS": "3", "MODEL_DIM": "32", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "ROPE_DIMS": "8",
    "GATE_WINDOW": "8", "SMEAR_GATE_WIDTH": "8", "LOOP_START": "1", "LOOP_END": "1", "PARALLEL_START_LAYER": "2",
    "XSA_LAST_N": "3", "TRAIN_SEQ_LEN": "128", "EVAL_SEQ_LEN": "128", "TTT_SEQ_LEN": "128",
    "TRAIN_BATCH_TOKENS": "512", "GRAD_ACCUM_STEPS": "2", "ITERATIONS": "2", "WARMUP_STEPS": "0",
    "TRAIN_LOG_EVERY": "1", "MAX_WALLCLOCK_SECONDS": "0", "VAL_BATCH_SIZE": "4096", "GPTQ_CALIBRATION_BATCHES": "1",
    "GPTQ_RESERVE_SECONDS": "0"}
TINY_TTT = {"TTT_LORA_RANK": "4", "TTT_CHUNK_SIZE": "64", "TTT_BATCH_SIZE": "2", "PHASED_TTT_PREFIX_DOCS": "3",
            "GLOBAL_TTT_CHUNK_TOKENS": "1024", "GLOBAL_TTT_BATCH_SEQS": "4"}
TINY_SGD = {"TTT_CHUNK_TOKENS": "1024", "TTT_BATCH_SEQS": "4", "EVAL_STRIDE": "64", "TTT_EPOCHS": "1"}
TINY_DOCS = (1, 6)  # --tiny keeps validation documents 1-5 (about 4,500 tokens; document 0 has 29,000)
_TIMING = re.compile(r"^(ttt_lora:compile warmup done|eval_warmup:compiled|gptq:|Serialize|serialize|compress|"
                     r"ttt_phased: total_docs|ttpp:|ttpr:|ttt:done|ttt_lora:done|ttt_phased:done|stopping_early|"
                     r"peak memory|doc_attention:|byte_sidecar|val_loader|eval_only:|train_budget|"
                     r"total_eval_time|ttt_time|attention:)")
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
    """The dataset cut to the TINY_DOCS validation documents (tokens and byte sidecar alike) and its first 40,000
    training tokens, with its tokenizer, under `into` (the same layout; built once)."""
    import numpy as np

    from golf.trainer.shards import read_shard, shard_files, write_shard

    out = into / "datasets" / data.name
    if (out / "fineweb_train_000000.bin").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    val = np.asarray(read_shard(shard_files(data, "val")[0]))
    bos = np.flatnonzero(val == 1)
    lo, hi = int(bos[TINY_DOCS[0]]), int(bos[TINY_DOCS[1]]) + 1  # through the next document's BOS (its last target)
    write_shard(out / "fineweb_val_000000.bin", val[lo:hi])
    sidecar = data / "fineweb_val_bytes_000000.bin"
    if sidecar.is_file():
        write_shard(out / sidecar.name, np.asarray(read_shard(sidecar))[lo:hi])
    write_shard(out / "fineweb_train_000000.bin", np.asarray(read_shard(shard_files(data, "train")[0]))[:40_000])
    (into / "tokenizers").mkdir(exist_ok=True)
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
        "timing_lines": [ln for ln in lines if _TIMING.match(ln)][:80],
        "last_lines": lines[-15:],
    }


def part_command(part: str, data: Path, knobs: dict[str, str], extra: list[str], trained: str) -> list[str]:
    """The golf command of a part; `trained`: the training run's name (its --name, or the run an eval scores)."""
    if part in ("train", "run"):
        return golf("run", str(SPEC), "--data", str(data), "--nproc", "1", "--seed", str(SEED), "--name", trained,
                    *sets(knobs, extra))
    return golf("eval", f"{trained}-s{SEED}", "--name", f"{NAME}-{part}", *sets(knobs, extra))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="data root (datasets/ and tokenizers/)")
    ap.add_argument("--dataset", help="dataset folder name under DATA/datasets (default: the *_caseops one)")
    ap.add_argument("--out", type=Path, required=True, help="the JSON report")
    ap.add_argument("--work", type=Path, default=Path("/tmp/frontier_eval"), help="work folder (runs/, runs.db)")
    ap.add_argument("--parts", default="train,sgd,lora", help=f"comma-separated, in order: {', '.join(PARTS)}")
    ap.add_argument("--budget", type=float, default=530.0, help="seconds for this call's parts together")
    ap.add_argument("--keep", type=float, default=0.0,
                    help="seconds of the budget each part leaves to the parts after it (default: none)")
    for part in PARTS:
        ap.add_argument(f"--set-{part}", nargs="*", default=[], metavar="KEY=VALUE", help=f"more overrides: {part}")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny model, a few short documents")
    ap.add_argument("--save", type=Path, help="after the parts: the work folder's runs.db, runs/ (logs, artifact) and "
                    "report packed into this .tgz (to carry into a later call on a fresh machine)")
    ap.add_argument("--restore", type=Path, help="before the parts: unpack a --save file into an empty work folder")
    args = ap.parse_args()
    start = time.time()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    wrong = [p for p in parts if p not in PARTS]
    if wrong or not parts:
        sys.exit(f"frontier_eval: --parts {args.parts}: valid parts are {', '.join(PARTS)}")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.out = args.out.resolve()  # before the chdir into the work folder
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.restore and not (work / "runs.db").exists():
        if not args.restore.is_file():
            sys.exit(f"frontier_eval: --restore {args.restore}: no such file")
        subprocess.check_call(["tar", "xzf", str(args.restore.resolve()), "-C", str(work)])
    data = dataset_of(args.data.resolve(), args.dataset)
    train_knobs = dict(FULL_TRAIN)
    ttt_knobs = {"lora": dict(LORA_TTT), "sgd": dict(SGD_TTT)}
    if args.tiny:
        data = tiny_root(data, work / "tiny_data")
        train_knobs.update(TINY_TRAIN)
        ttt_knobs["lora"].update(TINY_TTT)
        ttt_knobs["sgd"].update(TINY_SGD)
    knobs = {"train": {**train_knobs, **NO_TTT}, "run": {**train_knobs, **(TINY_TTT if args.tiny else {})},
             "lora": ttt_knobs["lora"], "sgd": ttt_knobs["sgd"]}
    env = {**os.environ, "GOLF_DB": str(work / "runs.db"), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    state = work / "frontier_eval.json"  # what earlier calls on this work folder found
    report: dict[str, Any] = json.loads(state.read_text()) if state.is_file() else {}
    report.update({"spec": str(SPEC.relative_to(REPO)), "data": str(data), "seed": SEED,
                   "caseops": data.name.endswith("_caseops"), "tiny": args.tiny})
    report.setdefault("calls", []).append({"parts": parts, "budget_s": args.budget})

    def write() -> None:
        report["calls"][-1]["wall_s"] = round(time.time() - start, 1)
        report["comparison"] = comparison(report)
        for path in (args.out, state):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(report, indent=2) + "\n")
            os.replace(tmp, path)

    os.chdir(work)
    ok = True
    report.setdefault("trained_run", NAME)
    for n, part in enumerate(parts):
        extra = getattr(args, f"set_{part}")
        training = part in ("train", "run")
        if training:
            report["trained_run"] = NAME
        left = args.budget - (time.time() - start) - args.keep * (len(parts) - n - 1)
        if left < 20:
            report[part] = {"skipped": f"{left:.0f}s of the budget left"}
            write()
            ok = False
            continue
        argv = part_command(part, data, knobs[part], extra, report["trained_run"])
        before = set((work / "runs").glob("*/train.log"))
        console = args.out.with_name(f"frontier_eval_{part}.txt")
        report[part] = {"command": argv[2:], "overrides": {**knobs[part], "+": extra},
                        **run_part(argv, left, console, env)}
        report[part].update(summarize(newest_run_log(work, before)))
        ok = ok and report[part]["exit_code"] == 0
        write()
    if args.save:
        kept = [name for name in ("runs.db", "runs", state.name) if (work / name).exists()]
        subprocess.call(["tar", "czf", str(args.save.resolve()), "-C", str(work), *kept])
    print(json.dumps(report["comparison"], indent=2))
    return 0 if ok else 1


def comparison(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of every part run so far."""
    def stage(part: str, name: str) -> Any:
        return ((report.get(part) or {}).get("stages") or {}).get(name, {}).get("val_bpb")

    trained = "run" if "run" in report else "train"
    lora_part = "lora" if "lora" in report else "run"
    return {"pre_quant_bpb": stage(trained, "pre_quant"), "post_quant_bpb": stage(trained, "post_quant"),
            "phased_lora_ttt_bpb": stage(lora_part, "post_ttt"), "sliding_bpb": stage("sgd", "sliding"),
            "sgd_ttt_bpb": stage("sgd", "post_ttt"),
            "phased_lora_ttt_loop_s": (report.get(lora_part) or {}).get("eval_s_records"),
            "sgd_ttt_loop_s": (report.get("sgd") or {}).get("eval_s_records"),
            "lora_ttt_progress_if_cut": (report.get(lora_part) or {}).get("ttt_progress")
            if (report.get(lora_part) or {}).get("cut_off") else None}


if __name__ == "__main__":
    raise SystemExit(main())
