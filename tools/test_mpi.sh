#!/usr/bin/env bash
# Data-parallel training over MPI, tested: builds attnlab with -DATTNLAB_MPI=ON into build-mpi/
# (installing Debian's Open MPI when missing), trains a small model with `mpirun -n 2`, one thread
# per rank, and the same model in one process with the batch doubled; the two loss curves and
# final evaluations must agree to float tolerance. A data-parallel run stopped by SIGINT and resumed
# over MPI must equal the uninterrupted one bit for bit. Then both setups are timed with `attnlab bench`.
#   tools/test_mpi.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/apt_install.sh" libopenmpi-dev openmpi-bin
cmake -S "$root" -B "$root/build-mpi" -DCMAKE_BUILD_TYPE=Release -DATTNLAB_MPI=ON -DATTNLAB_TESTS=OFF >/dev/null
cmake --build "$root/build-mpi" -j "$(nproc)" --target attnlab
bin="$root/build-mpi/attnlab"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
head -c 200000 "$root/data/tinyshakespeare.txt" > corpus.txt
cat > small.yaml <<YAML
data: {path: corpus.txt}
model: {n_layer: 2, n_head: 4, d_model: 64, context: 64}
schedule: {warmup_steps: 5}
train: {steps: 40, batch_size: 8, log_interval: 1, checkpoint_interval: 0}
eval: {interval: 20, iters: 4, sample_tokens: 0}
runtime: {threads: 1}
YAML
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpirun -n 2 --bind-to none --oversubscribe "$bin" -q train small.yaml run.name=mpi train.batch_size=4
"$bin" -q train small.yaml run.name=single train.batch_size=8
/usr/bin/python3 - <<'PY'
import h5py, numpy as np
a, b = (h5py.File(f"runs/{n}/metrics.h5", "r") for n in ("mpi", "single"))
la, lb = a["train/loss"][:], b["train/loss"][:]
assert len(la) == len(lb) == 40, (len(la), len(lb))
d = np.max(np.abs(la - lb) / np.abs(lb))
va, vb = a["eval/val_loss"][:], b["eval/val_loss"][:]
dv = np.max(np.abs(va - vb) / np.abs(vb))
print(f"mpirun -n 2 (batch 4 each) against one process (batch 8), 40 steps: max relative loss difference {d:.2e}, "
      f"val loss {va[-1]:.6f} against {vb[-1]:.6f}")
assert d < 1e-4 and dv < 1e-4, "the data-parallel run does not follow the single process"
PY
# Resume over MPI: a run whose ranks get SIGINT checkpoints at a step they agree on; `mpirun -n 2`
# with train.resume continues it, and the whole loss curve equals an uninterrupted run's bit for bit.
long="train.steps=1000 train.batch_size=4 eval.interval=100"
mpirun -n 2 --bind-to none --oversubscribe "$bin" -q train small.yaml run.name=straight $long
mpirun -n 2 --bind-to none --oversubscribe "$bin" -q train small.yaml run.name=stopped $long &
launcher=$!
steps_logged() {
  /usr/bin/python3 -c "import h5py; print(len(h5py.File('runs/stopped/metrics.h5', 'r')['train/step']))" 2>/dev/null || echo 0
}
for _ in $(seq 300); do [ "$(steps_logged)" -ge 20 ] && break; sleep 0.1; done
pkill -INT -f "attnlab -q train small.yaml run.name=stopped" || true
wait "$launcher" || true
stopped_at=$(/usr/bin/python3 -c "import h5py; print(int(h5py.File('runs/stopped/checkpoint.h5', 'r').attrs['step']))")
[ "$stopped_at" -gt 0 ] && [ "$stopped_at" -lt 1000 ] || { echo "the interrupted run stopped at step $stopped_at of 1000"; exit 1; }
mpirun -n 2 --bind-to none --oversubscribe "$bin" -q train small.yaml run.name=stopped $long \
  train.resume=runs/stopped/checkpoint.h5
/usr/bin/python3 - "$stopped_at" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(f"runs/{n}/metrics.h5", "r") for n in ("straight", "stopped"))
la, lb = a["train/loss"][:], b["train/loss"][:]
assert len(la) == len(lb) == 1000 and np.array_equal(la.view(np.uint64), lb.view(np.uint64)), \
    "the resumed data-parallel run differs from the straight one"
assert np.array_equal(a["eval/val_loss"][:], b["eval/val_loss"][:])
print(f"mpirun -n 2 stopped by SIGINT at step {sys.argv[1]} and resumed: 1000 losses bit-identical to the straight run")
PY
# Speed: two ranks of one thread against one process of one thread and of all cores' threads.
tok_s() { /usr/bin/python3 -c "import json,sys; print(f'{json.loads(sys.stdin.read())[\"tokens_per_s\"]:.0f}')"; }
bench_args="-q bench small.yaml train.steps=60 --steps 30 --warmup 5 --json"
echo "mpirun -n 2, batch 4 each, 1 thread each: $(mpirun -n 2 --bind-to none --oversubscribe $bin $bench_args train.batch_size=4 | tok_s) tok/s"
echo "one process, batch 8, 1 thread: $($bin $bench_args train.batch_size=8 | tok_s) tok/s"
echo "one process, batch 8, $(nproc --all) threads: $($bin $bench_args train.batch_size=8 runtime.threads=0 | tok_s) tok/s"
