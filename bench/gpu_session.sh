#!/usr/bin/env bash
# One device call: golf jobs in order under a time budget, on the shared corpus; what golf recorded comes back.
#
#   BUDGET_S=580 bash bench/gpu_session.sh OUTDIR "JOB" ["JOB"]...
#   JOB: "bench SPEC [golf bench options]"    golf bench (tag bench), report JSON to bench_<spec>_<job n>.json
#        "run SPEC [golf run options]"        golf run, seed 1337 and one GPU unless the job names --seed / --nproc
#        "profile SPEC [KEY=VALUE ...]"       bench/profile_step.py at the spec's knobs + overrides (kernel profile)
#        "fidelity [golf run options]"        pr549 at 131,072 tokens/step, 300 steps, val_bpb at 100/200/300
#   A job may start with KEY=VALUE words: env vars for that job only (e.g. "TORCHINDUCTOR_MAX_AUTOTUNE=1 profile …").
# A job starts only while MIN_LEFT_S (default 150) seconds remain and is cut off at the budget. OUTDIR gets ONE
# file, results.tgz (the device tool brings back few files): runs.db with runs/<id>/train.log + spec.yaml beside
# it (`golf show/export-record --db runs.db` work there), one job_<n>.txt per job, the bench/profile JSON files
# and the GPU's name and clocks.
# Several GPUs: one instance per GPU lane runs at once with CUDA_VISIBLE_DEVICES and its own OUTDIR (each gets
# its own work folder and runs.db); a job with --nproc 2 needs both GPUs to itself.
# Expects .bench_data/ (datasets/docs_sp1024 + tokenizers/) and, where golf's own dependencies are missing, .whl/.
set -u
start=$(date +%s)
mkdir -p "$1/results"; final=$(cd "$1" && pwd); out=$final/results; shift
repo=$PWD
budget=${BUDGET_S:-580}
min_left=${MIN_LEFT_S:-150}
if ls .whl/*.whl >/dev/null 2>&1; then  # once per machine: parallel lanes must not reinstall under each other
  mark=/tmp/site/.golf_wheels_$(ls .whl | md5sum | cut -c1-12)  # another set of wheels installs again
  ( flock 9; [ -f "$mark" ] || { python3 -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && touch "$mark"; } ) 9>/tmp/golf_wheels.lock
fi
export PYTHONPATH=$repo:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# NVLink multicast stays off on the shared multi-GPU hosts (it can take the host's GPUs out of service)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
work=/tmp/golfwork_$(basename "$final"); mkdir -p "$work"; cd "$work" || exit 1
export GOLF_DB=$work/runs.db
data=$repo/.bench_data/datasets/docs_sp1024
nvidia-smi --query-gpu=index,name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
nvidia-smi topo -m >> "$out/gpu.txt" 2>&1
n=0
for job in "$@"; do
  n=$((n + 1))
  left=$((budget - ($(date +%s) - start)))
  if [ "$left" -lt "$min_left" ]; then echo "=== SKIPPED (${left}s left): $job"; continue; fi
  read -r -a words <<< "$job"
  envs=()
  while [[ ${#words[@]} -gt 0 && ${words[0]} =~ ^[A-Z_][A-Z0-9_]*= ]]; do envs+=("${words[0]}"); words=("${words[@]:1}"); done
  kind=${words[0]:-}; spec=${words[1]:-}; extra=("${words[@]:2}")
  log=$out/job_$n.txt
  t0=$(date +%s)
  ( for kv in "${envs[@]}"; do export "${kv?}"; done  # this job's own env vars
    case $kind in
      bench)
        timeout $((left - 15)) python3 -m golf_cli.main bench "$repo/$spec" --data "$data" --nproc 1 \
          --out "$out/bench_$(basename "$spec" .yaml)_$n.json" "${extra[@]}" > "$log" 2>&1 ;;
      run)
        seed=(--seed 1337); [[ " ${extra[*]} " == *" --seed "* ]] && seed=()
        nproc=(--nproc 1); [[ " ${extra[*]} " == *" --nproc "* ]] && nproc=()
        timeout $((left - 15)) python3 -m golf_cli.main run "$repo/$spec" --data "$data" "${nproc[@]}" "${seed[@]}" \
          "${extra[@]}" > "$log" 2>&1 ;;
      profile)
        ( eval "$(python3 "$repo/bench/spec_env.py" "$repo/$spec")"
          export DATA_PATH=$data TOKENIZER_PATH=$repo/.bench_data/tokenizers/docs_1024_bpe.model
          for kv in "${extra[@]}"; do export "${kv?}"; done
          timeout $((left - 15)) python3 "$repo/bench/profile_step.py" --steps 12 --warmup 3 --profile 2 \
            --dump-kernels 8 --out "$out/profile_$n.json" ) > "$log" 2>&1 ;;
      fidelity)
        timeout $((left - 15)) python3 -m golf_cli.main run "$repo/specs/pr549.yaml" --data "$data" --nproc 1 \
          --seed 1337 --name fidelity --set TRAIN_BATCH_TOKENS=131072 ITERATIONS=300 WARMDOWN_ITERS=100 \
          VAL_LOSS_EVERY=100 TRAIN_LOG_EVERY=50 MAX_WALLCLOCK_SECONDS=0 EVAL_STRIDE=0 WARMUP_STEPS=3 \
          "${words[@]:1}" > "$log" 2>&1 ;;
      *) echo "unknown job kind: $kind" > "$log" ;;
    esac
  )
  rc=$?
  echo "=== job $n: $job -> exit $rc in $(($(date +%s) - t0))s"
  grep -E "val_bpb|step_avg:|peak memory|Total submission|ttt_time|total_eval_time|eval_warmup|error|Error|ms_per_step|tokens_per_s\"|mfu|sliding_eval_s" "$log" \
    | grep -vE "^step:[0-9]+/[0-9]+ train|^\s{2}" | tail -14
done
python3 -m golf_cli.main ls --format md 2>/dev/null | tail -20
cp runs.db "$out/runs.db" 2>/dev/null
tar cf "$out/runs.tar" runs/*/train.log runs/*/spec.yaml 2>/dev/null
tar czf "$final/results.tgz" -C "$final" results && rm -rf "$out"
echo "session total $(($(date +%s) - start))s"
