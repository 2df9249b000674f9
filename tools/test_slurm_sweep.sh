#!/usr/bin/env bash
# `attnlab sweep --emit slurm` for real: a one-node Slurm cluster on this machine
# (tools/slurm_local.sh), a 4-point sweep of a tiny model submitted as a job array, every point
# completed, and `attnlab report` over the result. Then the same array again: every task finds its
# point completed and does nothing. The runs go to a folder whose name has a space and a % (sbatch
# reads #SBATCH words as a shell would, and % starts its file name patterns). Exit 0 when all of
# that holds.
#   tools/test_slurm_sweep.sh [BUILD_DIR]       (default build/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
attnlab=$(cd "${1:-$root/build}" && pwd)/attnlab
work=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'bash "$root/tools/slurm_local.sh" stop "$work/slurm" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
eval "$(bash "$root/tools/slurm_local.sh" start "$work/slurm")"
cd "$work"
head -c 30000 "$root/data/tinyshakespeare.txt" > corpus.txt
cat > tiny.yaml <<YAML
data: {path: corpus.txt}
model: {n_layer: 1, n_head: 2, d_model: 16, context: 16}
schedule: {warmup_steps: 2}
train: {steps: 20, batch_size: 4, log_interval: 5, checkpoint_interval: 0}
eval: {interval: 10, iters: 2, sample_tokens: 0}
YAML
cat > sweep.yaml <<YAML
name: slurm_test
base: tiny.yaml
out_dir: "runs 100%"
grid:
  model.norm: [layernorm, rmsnorm]
seeds: [1, 2]
YAML
script=$("$attnlab" -q sweep sweep.yaml --emit slurm --threads 1)
sbatch --wait --quiet "$script"
[ "$(ls "runs 100%/slurm_test/"slurm-*_*.out | wc -l)" = 4 ]  # each task's output where the script says
"$attnlab" report "runs 100%/slurm_test" > report.txt
cat report.txt
grep -q "| layernorm | 2 |.*2 completed" report.txt
grep -q "| rmsnorm | 2 |.*2 completed" report.txt
# A second submission: every task finds its point completed.
sbatch --wait --quiet "$script"
[ "$(grep -c . "runs 100%/slurm_test/report.csv")" = 5 ]
echo "slurm sweep: 4 points completed as a job array; report ok"
