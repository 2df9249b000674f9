#!/usr/bin/env bash
# Wall time of the default run against the PyTorch peer, side by side on this machine.
#   tools/bench_default_run.sh [--rounds N] [--threads N] [--peer PATH]
# Alternates, N rounds (default 2): `attnlab -q train configs/shakespeare_char.yaml` (2000 steps,
# evaluations every 250 steps, checkpoints, the final sample) and the peer's cpu-small preset (the
# same model and recipe) for 2000 steps with its final evaluation of 20 batches per split. The peer
# does fewer evaluations than attnlab, so the comparison leans in the peer's favour. Prints both wall
# times (median over rounds, process start to exit) and their ratio.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=2
threads=$(nproc)
peer="$root/../shared/bench/torch_charlm.py"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --peer) peer="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -f "$peer" ] || { echo "bench_default_run: peer script $peer not found (use --peer PATH)" >&2; exit 2; }
bash "$root/tools/setup.sh" >/dev/null

now() { date +%s.%N; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  echo "[round $r/$rounds] attnlab" >&2
  t0=$(now)
  (cd "$root" && ./build/attnlab -q train configs/shakespeare_char.yaml runtime.threads="$threads" \
     run.name="bench_default_run_$r" run.out_dir="$out/runs")
  echo "$t0 $(now)" >> "$out/attnlab"
  echo "[round $r/$rounds] pytorch" >&2
  t0=$(now)
  /usr/bin/python3 "$peer" --data "$root/data/tinyshakespeare.txt" --preset cpu-small --iters 2000 \
    --warmup-steps 1 --eval-iters 20 --threads "$threads" > /dev/null
  echo "$t0 $(now)" >> "$out/pytorch"
done
python3 - "$out" <<'PY'
import statistics, sys
out = sys.argv[1]
def walls(name):
    return [float(t1) - float(t0) for t0, t1 in (line.split() for line in open(f"{out}/{name}"))]
a, p = walls("attnlab"), walls("pytorch")
am, pm = statistics.median(a), statistics.median(p)
print("| default run, 2000 steps | attnlab wall s | PyTorch wall s | ratio |\n|---|---|---|---|")
print(f"| shakespeare_char / cpu-small | {am:.1f} | {pm:.1f} | {am / pm:.2f} |")
print("rounds (attnlab/PyTorch s): " + ", ".join(f"{x:.1f}/{y:.1f}" for x, y in zip(a, p)))
PY
