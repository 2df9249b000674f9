#!/usr/bin/env bash
# Decoding speed with and without the KV cache, side by side.
#   tools/bench_decode.sh [--tokens N] [--rounds R] [--out DIR]
# For each model (the baby-gpt preset; the default model, MHA and MLA, with model.context=256) it
# writes a checkpoint of freshly initialised weights (2 training steps: speed does not depend on
# what the weights learned), then alternates `attnlab sample --tokens N` with the cache and with
# --no-cache for R rounds (default 3; N default 256, from a one-token prompt), and prints the median
# tokens/s of each, their ratio and the cache's bytes per token and layer.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tokens=256
rounds=3
out=$(mktemp -d)
while [ $# -gt 0 ]; do
  case "$1" in
    --tokens) tokens="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bin="$root/build/attnlab"
cd "$root"
quick="train.steps=2 schedule.warmup_steps=0 eval.iters=1 run.out_dir=$out"
"$bin" -q train configs/bench/baby-gpt.yaml $quick train.batch_size=2 run.name=baby-gpt >/dev/null
"$bin" -q train configs/shakespeare_char.yaml $quick model.context=256 run.name=default >/dev/null
"$bin" -q train configs/shakespeare_char_mla.yaml $quick model.context=256 run.name=default-mla >/dev/null
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
rate() { "$bin" sample --checkpoint "$out/$1/checkpoint.h5" --tokens "$tokens" --seed 1 $2 2>&1 >/dev/null |
           sed -n 's/.* \([0-9.]*\) tokens\/s.*/\1/p'; }
bytes() { "$bin" sample --checkpoint "$out/$1/checkpoint.h5" --tokens 1 2>&1 >/dev/null |
            sed -n 's/.*cache \([0-9]*\) bytes per token per layer.*/\1/p'; }
cpu="$(lscpu | sed -n 's/^Model name: *//p') (family $(sed -n 's/^cpu family\t*: //p' /proc/cpuinfo | head -1) model $(sed -n 's/^model\t*: //p' /proc/cpuinfo | head -1))"
echo "CPU: $cpu, $(nproc) threads; $tokens tokens from a one-token prompt, median of $rounds"
echo
echo "| model | cache tokens/s | no cache tokens/s | cache / no cache | cache bytes per token and layer |"
echo "|---|---|---|---|---|"
for m in baby-gpt default default-mla; do
  c=""; n=""
  for _ in $(seq "$rounds"); do
    c="$c $(rate "$m" "")"
    n="$n $(rate "$m" --no-cache)"
  done
  cm=$(echo $c | tr ' ' '\n' | median)
  nm=$(echo $n | tr ' ' '\n' | median)
  echo "| $m | $cm | $nm | $(awk -v a="$cm" -v b="$nm" 'BEGIN {printf "%.1f×", a / b}') | $(bytes "$m") |"
done
