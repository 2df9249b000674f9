#!/usr/bin/env bash
# The QK-Clip study (docs/qk_clip.md, experiments/qk_clip/README.md) on the shakespeare_char model:
# for MLA and MHA, Muon at a learning rate where the unclipped max attention logit grows past 10·τ,
# with and without QK-Clip, and AdamW at its default as the baseline; 3 seeds, 2000 steps each.
#   bash experiments/qk_clip/run.sh [--attn "mla mha"] [--arms "adamw muon muon_clip"] [--seeds "1 2 3"]
#                                   [--muon-lr X] [--tau T] [--jobs J]
# --jobs 2 runs two points at once with one thread each. Runs go to experiments/qk_clip/runs/; a
# completed run is skipped, so the script can be re-run after an interruption. Then analyze.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
attns="mla mha"
arms="adamw muon muon_clip"
seeds="1 2 3"
muon_lr=0.08
tau=20
jobs=1
while [ $# -gt 0 ]; do
  case "$1" in
    --attn) attns="$2"; shift 2 ;;
    --arms) arms="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --muon-lr) muon_lr="$2"; shift 2 ;;
    --tau) tau="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
  esac
done
cd "$root"
py=/usr/bin/python3  # Debian's python, which has python3-h5py and python3-matplotlib
[ -x build/attnlab ] || bash tools/setup.sh
bash data/fetch.sh
threads=$(( $(nproc) / jobs ))
[ "$threads" -ge 1 ] || threads=1

completed() {
  $py - "$1" <<'PY' 2>/dev/null
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    sys.exit(0 if f.attrs["status"] == "completed" else 1)
PY
}

points=()
for attn in $attns; do
  cfg=configs/shakespeare_char.yaml
  [ "$attn" = mla ] && cfg=configs/shakespeare_char_mla.yaml
  for arm in $arms; do
    case "$arm" in
      adamw) args="optimizer.name=adamw" ;;
      muon) args="optimizer.name=muon muon.lr=$muon_lr" ;;
      muon_clip) args="optimizer.name=muon muon.lr=$muon_lr train.qk_clip.enabled=true train.qk_clip.tau=$tau" ;;
      *) echo "unknown arm $arm" >&2; exit 2 ;;
    esac
    for seed in $seeds; do
      name="${attn}_${arm}_s${seed}"
      if completed "$here/runs/$name/metrics.h5"; then echo "skip $name (completed)"; continue; fi
      points+=("$name|$cfg $args run.seed=$seed")
    done
  done
done

run_point() {
  local name=${1%%|*} args=${1#*|}
  echo "run $name"
  # shellcheck disable=SC2086
  ./build/attnlab -q train $args run.name="$name" run.out_dir="$here/runs" runtime.threads="$threads" ||
    echo "failed $name (exit $?); the analysis reports its status" >&2
}
running=0
for p in "${points[@]}"; do
  run_point "$p" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait
$py "$here/analyze.py" "$here/runs" --out "$here" --tau "$tau" --muon-lr "$muon_lr"
