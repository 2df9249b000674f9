#!/usr/bin/env bash
# Runs every point of the query-scaling grid, then the analysis:
#   optimizer {adamw, adafactor} x query_scaling {init, query, logits, both} x seed {1, 2, 3}
# 2000 steps each on the shakespeare_char model. Runs go to experiments/query_scaling/runs/
# (a finished run is skipped, so the script can be re-run after an interruption).
#   bash experiments/query_scaling/run.sh [--seeds "1 2 3"] [--threads N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seeds="1 2 3"
threads=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) echo "usage: $0 [--seeds \"1 2 3\"] [--threads N]" >&2; exit 2 ;;
  esac
done
cd "$root"
[ -x build/attnlab ] || bash tools/setup.sh
bash data/fetch.sh
for opt in adamw adafactor; do
  for qs in init query logits both; do
    for seed in $seeds; do
      name="${opt}_${qs}_s${seed}"
      if python3 - "$here/runs/$name/metrics.h5" <<'PY' 2>/dev/null; then
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    sys.exit(0 if f.attrs["status"] == "completed" else 1)
PY
        echo "skip $name (completed)"; continue
      fi
      echo "run $name"
      ./build/attnlab -q train "$here/configs/$opt.yaml" attention.query_scaling="$qs" run.seed="$seed" \
        run.name="$name" run.out_dir="$here/runs" runtime.threads="$threads"
    done
  done
done
python3 "$here/analyze.py" "$here/runs" --out "$here"
