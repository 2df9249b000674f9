#!/usr/bin/env python3
"""Tables and plots of the QK-Clip study (experiments/qk_clip/sweep.yaml).

  /usr/bin/python3 experiments/qk_clip/analyze.py experiments/qk_clip/runs/qk_clip --out experiments/qk_clip --tau 30

Writes results.md (the table the README quotes), max_logits.png (every head's max logit over steps,
seed 1, per attention type and arm) and loss_curves.png (train and val loss, mean over seeds).
Reads each run's metrics.h5: attention/max_logits [points, layer, head], attention/clipped_heads,
train/loss, eval/val_loss.
"""
import argparse
import glob
import os
import re
import sys

import h5py
import numpy as np

ARMS = ["adamw", "muon", "muon_clip"]
LABEL = {"adamw": "AdamW (baseline)", "muon": "Muon, no clip", "muon_clip": "Muon + QK-Clip"}


def load(runs):
    out = {}
    for d in sorted(glob.glob(os.path.join(runs, "*"))):
        m = re.match(r"attention\.type=(mla|mha),optimizer\.name=(adamw|muon),train\.qk_clip\.enabled=(true|false),"
                     r"seed=(\d+)$", os.path.basename(d))
        if not m or not os.path.exists(os.path.join(d, "metrics.h5")):
            continue
        arm = "muon_clip" if m.group(3) == "true" else m.group(2)
        with h5py.File(os.path.join(d, "metrics.h5"), "r") as f:
            r = dict(status=f.attrs["status"], git=f.attrs["git_commit"], step=f["train/step"][:],
                     loss=f["train/loss"][:], estep=f["eval/step"][:], eval_train=f["eval/train_loss"][:],
                     eval_val=f["eval/val_loss"][:], astep=f["attention/step"][:],
                     ml=f["attention/max_logits"][:], clipped=f["attention/clipped_heads"][:])
        out[(m.group(1), arm, int(m.group(4)))] = r
    return out


def ms(xs, fmt="{:.4f}"):
    xs = np.asarray(xs, dtype=float)
    if len(xs) == 0:
        return "—"
    return (fmt + " ± " + fmt).format(xs.mean(), xs.std()) if len(xs) > 1 else fmt.format(xs.mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("--out", default=".")
    ap.add_argument("--tau", type=float, required=True)
    ap.add_argument("--muon-lr", type=float, default=0.05)
    a = ap.parse_args()
    R = load(a.runs)
    if not R:
        sys.exit(f"no runs under {a.runs}")
    tau = a.tau
    attns = [x for x in ("mla", "mha") if any(k[0] == x for k in R)]
    lines = ["# QK-Clip study: results", "",
             f"τ = {tau:g}; Muon lr {a.muon_lr:g} (its AdamW group and the baseline at optimizer.lr 1e-3); "
             "2000 steps; mean ± std over seeds (population std).", "",
             "Max logit: the largest pre-cap attention logit of any head and layer in a step's forward pass. "
             "Peak: over the whole run. Final: the last logged step. Overshoot: the largest logged max logit "
             "after the first clip, over τ (clipped arms).", "",
             "| attention | arm | seeds | final train loss | final val loss | peak max logit | final max logit "
             "| peak / τ | steps with a clip | commit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for attn in attns:
        for arm in ARMS:
            rs = [R[k] for k in sorted(R) if k[0] == attn and k[1] == arm]
            if not rs:
                continue
            done = [r for r in rs if r["status"] == "completed"]
            peak = [float(np.nanmax(r["ml"])) for r in rs]
            final = [float(np.nanmax(r["ml"][-1])) for r in rs]
            clipped = [int((r["clipped"] > 0).sum()) for r in rs]
            statuses = "" if len(done) == len(rs) else f" ({len(rs) - len(done)} not completed)"
            # final train loss: mean of the last 20 logged steps (the per-step loss is one batch)
            lines.append(
                f"| {attn} | {LABEL[arm]} | {len(rs)}{statuses} | {ms([r['loss'][-20:].mean() for r in done])} "
                f"| {ms([r['eval_val'][-1] for r in done])} | {ms(peak, '{:.1f}')} | {ms(final, '{:.1f}')} "
                f"| {ms([p / tau for p in peak], '{:.2f}')} | {ms(clipped, '{:.0f}')} | {rs[0]['git']} |")
    # The overshoot of τ with the clip on: the logged max logit is the step's forward pass, before
    # that step's clip, one optimizer update after the last one.
    rows = []
    for k, r in sorted(R.items()):
        if k[1] != "muon_clip" or not (r["clipped"] > 0).any():
            continue
        ml = r["ml"].reshape(len(r["astep"]), -1).max(axis=1) / tau
        first = int(np.argmax(r["clipped"] > 0))
        after, late = ml[first + 1:], ml[r["astep"] > 1000]
        rows.append(f"| {k[0]} | {k[2]} | {int(r['astep'][first])} | {after.max():.3f} | {np.percentile(after, 99):.3f} | "
                    f"{np.median(after):.3f} | {late.max():.3f} | {(after > 1.1).mean() * 100:.1f}% |")
    if rows:
        lines += ["", "With the clip: the largest max logit of each step (any head and layer) over τ, from the first "
                  "clip on:", "",
                  "| attention | seed | first clip at step | max | 99th percentile | median | max over steps 1001–2000 "
                  "| steps above 1.1 τ |", "|---|---|---|---|---|---|---|---|"] + rows
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = [arm for arm in ARMS if any(k[1] == arm for k in R)]
    fig, axes = plt.subplots(len(attns), len(arms), figsize=(5 * len(arms), 3.6 * len(attns)), squeeze=False,
                             sharey=True)
    for i, attn in enumerate(attns):
        for j, arm in enumerate(arms):
            ax = axes[i][j]
            r = R.get((attn, arm, 1))
            if r is None:
                ax.set_visible(False)
                continue
            ml = r["ml"].reshape(len(r["astep"]), -1)
            for h in range(ml.shape[1]):
                ax.plot(r["astep"], ml[:, h], lw=0.7)
            ax.axhline(tau, color="k", ls="--", lw=1)
            ax.axhline(10 * tau, color="r", ls=":", lw=1)
            ax.set_yscale("log")
            ax.set_title(f"{attn.upper()}: {LABEL[arm]} (seed 1)", fontsize=10)
            ax.set_xlabel("step")
            if j == 0:
                ax.set_ylabel("max logit per head (all layers)")
    fig.suptitle(f"Per-head max attention logit; dashed τ = {tau:g}, dotted 10τ")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "max_logits.png"), dpi=110)

    fig, axes = plt.subplots(1, len(attns), figsize=(6.5 * len(attns), 4), squeeze=False)
    for i, attn in enumerate(attns):
        ax = axes[0][i]
        for arm in arms:
            rs = [R[k] for k in sorted(R) if k[0] == attn and k[1] == arm and R[k]["status"] == "completed"]
            if not rs:
                continue
            n = min(len(r["loss"]) for r in rs)
            loss = np.mean([r["loss"][:n] for r in rs], axis=0)
            kernel = np.ones(50) / 50
            smooth = np.convolve(loss, kernel, mode="valid")
            line, = ax.plot(rs[0]["step"][49:n], smooth, lw=1, label=f"{LABEL[arm]} train")
            ne = min(len(r["eval_val"]) for r in rs)
            ax.plot(rs[0]["estep"][:ne], np.mean([r["eval_val"][:ne] for r in rs], axis=0), "o--",
                    color=line.get_color(), ms=3, lw=1, label=f"{LABEL[arm]} val")
        ax.set_title(f"{attn.upper()}: loss, mean over seeds (train: 50-step average)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(1.3, 3.0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "loss_curves.png"), dpi=110)


if __name__ == "__main__":
    main()
