#!/usr/bin/env bash
# Runs points of the query-scaling grid on the shakespeare_char model, then the analysis.
#   bash experiments/query_scaling/run.sh [--optimizers "adamw adafactor_rel adafactor"] [--placements "init query logits both"]
#                                         [--seeds "1 2 3"] [--heads N] [--threads N]
# Default: the whole grid, optimizer x query_scaling x seed, 2000 steps each, 4 heads (d_head 32).
# --heads 8 runs the same model with 8 heads of 16, where 1/sqrt(d_head) = 1/4 is exact in binary
# (runs named *_h8_*). Runs go to experiments/query_scaling/runs/; a completed run is skipped, so the
# script can be re-run after an interruption.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
optimizers="adamw adafactor_rel adafactor"
placements="init query logits both"
seeds="1 2 3"
heads=4
threads=0
while [ $# -gt 0 ]; do
  case "$1" in
    --optimizers) optimizers="$2"; shift 2 ;;
    --placements) placements="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --heads) heads="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
  esac
done
cd "$root"
py=/usr/bin/python3  # Debian's python, which has python3-h5py and python3-matplotlib
[ -x build/attnlab ] || bash tools/setup.sh
bash data/fetch.sh
tag=""
[ "$heads" != 4 ] && tag="_h$heads"
for opt in $optimizers; do
  for qs in $placements; do
    for seed in $seeds; do
      name="${opt}${tag}_${qs}_s${seed}"
      if $py - "$here/runs/$name/metrics.h5" <<'PY' 2>/dev/null; then
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    sys.exit(0 if f.attrs["status"] == "completed" else 1)
PY
        echo "skip $name (completed)"; continue
      fi
      echo "run $name"
      ./build/attnlab -q train "$here/configs/$opt.yaml" attention.query_scaling="$qs" run.seed="$seed" \
        model.n_head="$heads" run.name="$name" run.out_dir="$here/runs" runtime.threads="$threads"
    done
  done
done
$py "$here/analyze.py" "$here/runs" --out "$here"
