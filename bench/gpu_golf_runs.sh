#!/usr/bin/env bash
# Run specs through `golf run` on a GPU box with the shared benchmark corpus, and pack what golf recorded.
# Usage: bash bench/gpu_golf_runs.sh OUTDIR "SPEC [--set K=V ...]" ["SPEC ..."]...
#   e.g. bash bench/gpu_golf_runs.sh out "specs/baseline.yaml --set ITERATIONS=300"
# Expects .bench_data/ (the corpus: datasets/docs_sp1024 + tokenizers/) and, where golf's own dependencies are
# missing, wheels in .whl/ (sqlmodel, sqlalchemy, pydantic, zstandard, brotli, plotext).
set -u
out=$1; shift; mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 GOLF_DB=$PWD/runs.db
data=$PWD/.bench_data/datasets/docs_sp1024
for job in "$@"; do
  echo "=== golf run $job"
  # shellcheck disable=SC2086
  timeout 560 python3 -m golf_cli.main run $job --nproc 1 --data "$data" > "$out/last_run.txt" 2>&1
  echo "exit $?"; grep -vE "^\s{2}|^step:[0-9]+/[0-9]+ train" "$out/last_run.txt" | tail -25
done
python3 -m golf_cli.main ls --format json > "$out/ls.json"
python3 -m golf_cli.main ls
cp runs.db "$out/runs.db"
tar czf "$out/runs.tgz" runs/*/train.log runs/*/spec.yaml
