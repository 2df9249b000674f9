#!/usr/bin/env bash
# attnlab vs the PyTorch peer, side by side on this machine.
#   tools/bench_vs_pytorch.sh [--precision f32|bf16] [--attn mha|mla] [--optimizer adamw|muon] [--rounds N]
#                             [--threads N] [--peer PATH] [PRESET ...]
# PRESET: cpu-small, mid, baby-gpt (default: all). For each preset it alternates attnlab
# (`attnlab bench configs/bench/PRESET.yaml --json`) and the peer (its --preset of the same name,
# at its own best default settings) for N rounds (default 3), with the same thread count, and
# prints both systems' median tokens/s, the ratio, MFU and peak RSS. --precision bf16 compares
# attnlab's bf16 matmuls with the peer's --autocast-bf16. --attn mla compares attnlab's
# configs/bench/mla-PRESET.yaml (MLA at the peer's default MLA sizes) with the peer's --attn mla.
# --optimizer muon runs both with Muon on the blocks' matrices and AdamW on the rest (Muon lr 0.02).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
precision=f32
attn=mha
optimizer=adamw
rounds=3
threads=$(nproc)
peer="$root/../shared/bench/torch_charlm.py"
presets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --precision) precision="$2"; shift 2 ;;
    --attn) attn="$2"; shift 2 ;;
    --optimizer) optimizer="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --peer) peer="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) presets+=("$1"); shift ;;
  esac
done
[ ${#presets[@]} -gt 0 ] || presets=(cpu-small mid baby-gpt)
case "$attn" in mha|mla) ;; *) echo "bench_vs_pytorch: --attn must be mha or mla, got $attn" >&2; exit 2 ;; esac
case "$optimizer" in adamw|muon) ;; *) echo "bench_vs_pytorch: --optimizer must be adamw or muon, got $optimizer" >&2; exit 2 ;; esac
[ -f "$peer" ] || { echo "bench_vs_pytorch: peer script $peer not found (use --peer PATH)" >&2; exit 2; }

bash "$root/tools/apt_install.sh" python3-torch libopenblas0-pthread
bash "$root/tools/setup.sh" >/dev/null

declare -A steps=([cpu-small]=60 [mid]=25 [baby-gpt]=12)
peer_flag="--attn $attn --optimizer $optimizer"
[ "$precision" = bf16 ] && peer_flag="$peer_flag --autocast-bf16"
config_prefix=""
[ "$attn" = mla ] && config_prefix="mla-"
for preset in "${presets[@]}"; do
  [ -f "$root/configs/bench/$config_prefix$preset.yaml" ] ||
    { echo "bench_vs_pytorch: no configs/bench/$config_prefix$preset.yaml for --attn $attn" >&2; exit 2; }
done
out=$(mktemp -d)
for preset in "${presets[@]}"; do
  n=${steps[$preset]:-20}
  for r in $(seq "$rounds"); do
    echo "[$preset round $r/$rounds] attnlab" >&2
    (cd "$root" && ./build/attnlab -q bench "configs/bench/$config_prefix$preset.yaml" precision.matmul="$precision" optimizer.name="$optimizer" \
       runtime.threads="$threads" --steps "$n" --warmup 5 --json) >> "$out/$preset.attnlab"
    echo "[$preset round $r/$rounds] pytorch" >&2
    /usr/bin/python3 "$peer" --data "$root/data/tinyshakespeare.txt" --preset "$preset" --iters $((n + 10)) \
      --warmup-steps 10 --eval-iters 0 --threads "$threads" $peer_flag | tail -n 1 >> "$out/$preset.pytorch"
  done
done

python3 - "$out" "$precision" "$attn" "$optimizer" "${presets[@]}" <<'PY'
import json, statistics, sys
out, precision, attn, optimizer, presets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
print(f"\n{precision}, attention {attn}, optimizer {optimizer}, median over rounds; MFU against attnlab's measured oneDNN {precision} matmul peak\n")
print("| preset | attnlab tok/s | PyTorch tok/s | ratio | attnlab MFU | PyTorch MFU | attnlab RSS MB | PyTorch RSS MB | RSS ratio |")
print("|---|---|---|---|---|---|---|---|---|")
for p in presets:
    a = [json.loads(l) for l in open(f"{out}/{p}.attnlab") if l.strip()]
    t = [json.loads(l) for l in open(f"{out}/{p}.pytorch") if l.strip()]
    at = statistics.median(x["tokens_per_s"] for x in a)
    pt = statistics.median(x["tokens_per_s"] for x in t)
    peak = a[0]["peak_gflops_bf16" if precision == "bf16" else "peak_gflops_f32"]
    amfu = statistics.median(x["mfu"] for x in a)
    pmfu = statistics.median(x["model_gflops"] for x in t) / peak
    arss = max(x["peak_rss_mb"] for x in a)
    prss = max(x["peak_rss_mb"] for x in t)
    print(f"| {p} | {at:,.0f} | {pt:,.0f} | {at/pt:.2f}x | {100*amfu:.0f}% | {100*pmfu:.0f}% | {arss:,.0f} | {prss:,.0f} | {arss/prss:.2f} |")
    rounds = ", ".join(f"{x['tokens_per_s']:,.0f}/{y['tokens_per_s']:,.0f}" for x, y in zip(a, t))
    print(f"|   rounds (attnlab/PyTorch tok/s) | {rounds} ||||||||", file=sys.stderr)
PY
rm -rf "$out"
