#!/usr/bin/env python3
"""Plot loss curves from attnlab run logs (metrics.h5).

  python3 tools/plot_runs.py runs/a runs/b [--out loss.png] [--val] [--smooth 20] [--labels A B]

Each argument is a run directory or a metrics.h5 file. Train loss per step (optionally smoothed by
a running mean over --smooth steps), and with --val the evaluation points. Needs Debian's
python3-h5py and python3-matplotlib.
"""
import argparse
import os
import sys

import h5py
import numpy as np


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.h5")
    with h5py.File(path, "r") as f:
        return {
            "path": path,
            "status": f.attrs["status"],
            "step": f["train/step"][:],
            "loss": f["train/loss"][:],
            "eval_step": f["eval/step"][:],
            "val_loss": f["eval/val_loss"][:],
        }


def smooth(y, n):
    if n <= 1 or len(y) < n:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = np.empty_like(y)
    out[n - 1:] = (c[n:] - c[:-n]) / n
    out[:n - 1] = c[1:n] / np.arange(1, n)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="loss.png")
    ap.add_argument("--val", action="store_true", help="also plot validation loss")
    ap.add_argument("--smooth", type=int, default=1, help="running mean over this many steps")
    ap.add_argument("--labels", nargs="*")
    ap.add_argument("--title", default="")
    ap.add_argument("--ylim", nargs=2, type=float)
    a = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, r in enumerate(a.runs):
        d = load(r)
        label = a.labels[i] if a.labels and i < len(a.labels) else os.path.basename(os.path.dirname(d["path"]))
        line, = ax.plot(d["step"], smooth(d["loss"], a.smooth), label=f"{label} train", lw=1)
        if a.val and len(d["eval_step"]):
            ax.plot(d["eval_step"], d["val_loss"], "o--", color=line.get_color(), ms=3, label=f"{label} val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if a.ylim:
        ax.set_ylim(*a.ylim)
    ax.set_title(a.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(a.out)


if __name__ == "__main__":
    sys.exit(main())
