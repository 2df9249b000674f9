#!/usr/bin/env python3
"""Tables and plots of the query-scaling grid (experiments/query_scaling/sweep.yaml, sweep_h8.yaml).

  python3 experiments/query_scaling/analyze.py experiments/query_scaling/runs --out experiments/query_scaling

Writes results.md (the tables the README quotes) and loss_curves.png, delta_init_query.png.
Reads each run's metrics.h5 and, for the W_q scale check, checkpoint.h5.
"""
import argparse
import glob
import os
import re
import sys

import h5py
import numpy as np
import yaml

# Optimizer arms: the default model (4 heads, d_head 32) and the 8-head variant (d_head 16).
# adafactor: step size 5e-2 on the warm-up + cosine schedule; adafactor_rel: the relative step
# min(1e-2, 1/sqrt(t)) of the common implementations.
OPTS = ["adamw", "adafactor", "adafactor_rel", "adamw_h8", "adafactor_h8"]
PLACEMENTS = ["init", "query", "logits", "both"]


def arm_of(cfg):
    """The optimizer arm of a run, from its resolved config: adamw, adafactor or adafactor_rel, with
    _h8 for the 8-head model."""
    arm = cfg["optimizer"]["name"]
    if arm == "adafactor" and cfg["adafactor"]["relative_step"]:
        arm = "adafactor_rel"
    heads = cfg["model"]["n_head"]
    return arm + (f"_h{heads}" if heads != 4 else "")


def load(runs):
    """Every run under `runs` (the sweeps' directories runs/query_scaling*/<point>/), keyed by
    (arm, placement, seed) read from each run's stored config."""
    out = {}
    for d in sorted(glob.glob(os.path.join(runs, "*", "*", "metrics.h5"))):
        d = os.path.dirname(d)
        with h5py.File(os.path.join(d, "metrics.h5"), "r") as f:
            cfg = yaml.safe_load(f.attrs["config"])
            if f.attrs["status"] != "completed":
                print(f"warning: {d} is {f.attrs['status']}, skipped", file=sys.stderr)
                continue
            r = dict(step=f["train/step"][:], loss=f["train/loss"][:], eval_train=f["eval/train_loss"][:],
                     eval_val=f["eval/val_loss"][:], git=f.attrs["git_commit"])
        ck = os.path.join(d, "checkpoint.h5")
        if os.path.exists(ck):
            with h5py.File(ck, "r") as f:
                r["wq_rms"] = min(float(np.sqrt(np.mean(np.square(f["params"][k][:]))))
                                  for k in f["params"] if k.endswith("attn.wq"))
        out[(arm_of(cfg), cfg["attention"]["query_scaling"], int(cfg["run"]["seed"]))] = r
    return out


def mean_spread(xs):
    xs = np.asarray(xs)
    return f"{xs.mean():.4f} ± {xs.std():.4f}" if len(xs) > 1 else f"{xs.mean():.4f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    R = load(a.runs)
    if not R:
        sys.exit(f"no completed runs under {a.runs}")
    seeds = sorted({k[2] for k in R})
    lines = ["# Query-scaling grid: results", "",
             f"Seeds {seeds}; 2000 steps; mean ± standard deviation over seeds. Commit(s): "
             + ", ".join(sorted({r['git'] for r in R.values()})) + ".", "",
             "| optimizer | query_scaling | final train loss | final val loss |", "|---|---|---|---|"]
    for o in OPTS:
        for p in PLACEMENTS:
            rs = [R[(o, p, s)] for s in seeds if (o, p, s) in R]
            if rs:
                lines.append(f"| {o} | {p} | {mean_spread([r['eval_train'][-1] for r in rs])} | "
                             f"{mean_spread([r['eval_val'][-1] for r in rs])} |")
    # query vs logits is the control: the same model in exact arithmetic under both optimizers,
    # so its curves separate by float rounding alone. It measures the noise floor init vs query is
    # judged against.
    lines += ["", "Max over the 2000 steps of |train loss(A) − train loss(B)| (same seed, same batches); "
              "query − logits is the control (the same model, different rounding):", "",
              "| optimizer | A − B | per seed | max over seeds | first step with |Δ| > 1e-4, per seed |",
              "|---|---|---|---|---|"]
    for o in OPTS:
        for p1, p2 in [("init", "query"), ("query", "logits")]:
            pairs = [(R[(o, p1, s)], R[(o, p2, s)]) for s in seeds if (o, p1, s) in R and (o, p2, s) in R]
            if not pairs:
                continue
            ds = [np.abs(a["loss"] - b["loss"]) for a, b in pairs]
            first = [str(int(a["step"][np.argmax(d > 1e-4)])) if (d > 1e-4).any() else "never"
                     for (a, _), d in zip(pairs, ds)]
            lines.append(f"| {o} | {p1} − {p2} | {', '.join(f'{d.max():.3g}' for d in ds)} | "
                         f"{max(d.max() for d in ds):.3g} | {', '.join(first)} |")
    lines += ["", "Final val loss differences, per seed (negative: the first placement is better):", "",
              "| optimizer | comparison | per seed | mean |", "|---|---|---|---|"]
    for o in OPTS:
        for p1, p2 in [("init", "query"), ("init", "logits"), ("query", "logits"), ("both", "logits")]:
            ds = [R[(o, p1, s)]['eval_val'][-1] - R[(o, p2, s)]['eval_val'][-1]
                  for s in seeds if (o, p1, s) in R and (o, p2, s) in R]
            if ds:
                lines.append(f"| {o} | {p1} − {p2} | {', '.join(f'{d:+.4f}' for d in ds)} | {np.mean(ds):+.4f} |")
    for o in ["adafactor", "adafactor_rel", "adafactor_h8"]:
        rms = [R[(o, "init", s)].get("wq_rms") for s in seeds if (o, "init", s) in R]
        rms = [x for x in rms if x is not None]
        if rms:
            lines += ["", f"{o}: smallest RMS(W_q) over layers at the end of the `init` runs: {min(rms):.4g} "
                      f"(eps2 = 1e-3 floor {'not reached' if min(rms) > 1e-3 else 'REACHED'})."]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(text)
    print(text)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(y, n=25):
        c = np.cumsum(np.insert(y, 0, 0.0))
        return np.concatenate([c[1:n] / np.arange(1, n), (c[n:] - c[:-n]) / n])

    s0 = seeds[0]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), sharey=True)
    for ax, o in zip(axes, OPTS[:3]):
        for p, style in zip(PLACEMENTS, ["-", "--", ":", "-."]):
            if (o, p, s0) in R:
                r = R[(o, p, s0)]
                ax.plot(r["step"], smooth(r["loss"]), style, lw=1.2, label=f"{p}")
        ax.set_title(f"{o}: train loss (mean of 25 steps), seed {s0}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(1.4, 3.0)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "loss_curves.png"), dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for o, c in zip(OPTS, ["C0", "C1", "C2", "C3", "C4"]):
        for i, s in enumerate(seeds):
            if (o, "init", s) in R and (o, "query", s) in R:
                d = np.abs(R[(o, "init", s)]["loss"] - R[(o, "query", s)]["loss"])
                ax.semilogy(R[(o, "init", s)]["step"], np.maximum(d, 1e-9), color=c, lw=0.8, alpha=0.8,
                            label=o if i == 0 else None)
    ax.axhline(1e-4, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("|loss(init) − loss(query)| (0 drawn at 1e-9)")
    ax.set_title("init vs query placement, per seed")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "delta_init_query.png"), dpi=110)


if __name__ == "__main__":
    main()
