#!/usr/bin/env bash
# On one GPU: (1) pr549 quality curve at 131,072 tokens/step, 300 steps (val_bpb at 100/200/300 vs the reference's
# 1.8071 / 1.3259 / 1.1940), (2) pr549 full-batch (786,432 tokens/step) step time + profile.
# Usage: bash bench/gpu_pr549.sh OUTDIR   (expects the shared corpus copied to .bench_data/)
set -u
out=${1:-bench_out}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
eval "$(python3 bench/spec_env.py specs/pr549.yaml)"
export DATA_PATH=$PWD/.bench_data/datasets/docs_sp1024 TOKENIZER_PATH=$PWD/.bench_data/tokenizers/docs_1024_bpe.model
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)"
python3 -c "import flash_attn_interface" 2>/dev/null && echo "FA3 importable" || echo "FA3 not importable"
( cd "$out" && TRAIN_BATCH_TOKENS=131072 ITERATIONS=300 WARMDOWN_ITERS=100 VAL_LOSS_EVERY=100 TRAIN_LOG_EVERY=50 \
  MAX_WALLCLOCK_SECONDS=0 SEED=1337 EVAL_STRIDE=0 timeout 330 python3 -m torch.distributed.run --standalone \
  --nproc_per_node=1 -m golf.trainer > fidelity.log 2>&1 ); echo "fidelity exit $?"
grep -E "val_bpb|step_avg|peak|error|Error" "$out/fidelity.log" | grep -v "^  " | tail -12
ITERATIONS=1000 MAX_WALLCLOCK_SECONDS=0 timeout 240 python3 bench/profile_step.py --steps 12 --warmup 3 --profile 2 \
  --out "$out/profile_pr549.json" > "$out/profile.stdout" 2>&1; echo "profile exit $?"
python3 - "$out/profile_pr549.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print({k: r[k] for k in ("ms_per_step_median", "tokens_per_s", "tflops", "mfu_vs_778", "peak_mem_allocated_mib", "compile_and_warmup_s")})
for e in r.get("profile_top", [])[:15]:
    print(f"{e['ms_per_step']:8.1f} ms {e['share']*100:5.1f}% x{e['calls_per_step']:.0f} {e['name']}")
PY
