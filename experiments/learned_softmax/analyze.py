#!/usr/bin/env python3
"""Tables and pictures of the learned-softmax study (README.md beside this file).

  /usr/bin/python3 experiments/learned_softmax/analyze.py --out experiments/learned_softmax

Run from the repository root after baseline.yaml and sweep.yaml. For every seed s of the sweep and
every N it evaluates, with `attnlab eval` on the val batches of seed s (run.seed=s, eval.iters 100,
the batches the seed-s tuned runs evaluate on):
  baseline  the base checkpoint as trained (plain softmax)
  exact     the same with the block softmax in mode exact, N blocks
  none      the same in mode none, N blocks (no training)
and reads from each tuned run's metrics.h5 the val loss at step 0 (learned, scales at their N(0, 1)
init) and at the end (learned, trained). Writes results.md, attention_maps.png (one head's attention
weights under exact / none / learned) and scales.png (the learned |a| per block over positions).
"""
import argparse
import glob
import os
import re
import subprocess
import sys

import h5py
import numpy as np

ROOT = "experiments/learned_softmax/runs"
# The source's Table (WikiText-2 perplexity, OPT models, N = 2): full softmax -> learned scales.
SOURCE = [("OPT-125M", 26.0, 22.36), ("OPT-350M", 16.84, 17.81), ("OPT-1.3B", 11.78, 12.63), ("OPT-2.7B", 11.0, 12.56)]


def attnlab_eval(binary, ckpt, overrides):
    out = subprocess.run([binary, "-q", "eval", "--checkpoint", ckpt, "eval.iters=100"] + overrides,
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"val_loss ([0-9.]+)", out).group(1))


def load_tuned(sweep_dir):
    runs = {}
    for d in sorted(glob.glob(os.path.join(sweep_dir, "*"))):
        m = re.match(r"attention\.block_softmax\.blocks=(\d+),attention\.block_softmax\.per_head=(true|false),"
                     r"seed=(\d+)$", os.path.basename(d))
        if not m or not os.path.exists(os.path.join(d, "metrics.h5")):
            continue
        with h5py.File(os.path.join(d, "metrics.h5"), "r") as f:
            if f.attrs["status"] != "completed":
                sys.exit(f"{d}: status {f.attrs['status']}, not completed")
            runs[(int(m.group(1)), m.group(2) == "true", int(m.group(3)))] = dict(
                step=f["eval/step"][:], val=f["eval/val_loss"][:], ckpt=os.path.join(d, "checkpoint.h5"))
    return runs


def ms(xs, fmt="{:.4f}", std_fmt=None):
    xs = np.asarray(xs, dtype=float)
    if len(xs) < 2:
        return fmt.format(xs.mean())
    return (fmt + " ± " + (std_fmt or fmt)).format(xs.mean(), xs.std())


# ---- a numpy forward of the model (docs/model.md), for the attention pictures ----

def params(ckpt):
    with h5py.File(ckpt, "r") as f:
        return {k: f["params/" + k][:].astype(np.float64) for k in _names(f["params"])}


def _names(g, prefix=""):
    out = []
    for k, v in g.items():
        if isinstance(v, h5py.Dataset):
            out.append(prefix + k)
        else:
            out += _names(v, prefix + k + "/")
    return out


def P(p, name):
    return p[name.replace(".", "/")] if name.replace(".", "/") in p else p[name]


def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return g * (x - mu) / np.sqrt(var + eps) + b


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def attention_weights(s, mode, N, scales):
    """Effective weights [T, T] of one head from its logits s [T, T] (causal): the full softmax
    (exact), the blocks' own softmaxes (none), or those times |a[block, i]| (learned)."""
    T = s.shape[0]
    mask = np.tril(np.ones((T, T), dtype=bool))
    s = np.where(mask, s, -np.inf)
    if mode == "exact":
        e = np.exp(s - s.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    w = np.zeros_like(s)
    starts = [-(-b * T // N) for b in range(N + 1)]
    for b in range(N):
        blk = s[:, starts[b]:starts[b + 1]]
        m = blk.max(1, keepdims=True)
        ok = np.isfinite(m[:, 0])
        e = np.where(ok[:, None], np.exp(blk - np.where(ok[:, None], m, 0)), 0)
        p = np.where(ok[:, None], e / np.maximum(e.sum(1, keepdims=True), 1e-300), 0)
        if mode == "learned":
            p = p * np.abs(scales[b, :T])[:, None]
        w[:, starts[b]:starts[b + 1]] = p
    return w


def head_weights(p, ids, layer, head, mode, N, H=4, scale_key=None):
    """Forward one window through layers 0..layer; returns head `head`'s weights in `layer`."""
    T = len(ids)
    x = P(p, "tok_emb")[ids] + P(p, "pos_emb")[:T]
    for l in range(layer + 1):
        blk = f"blocks.{l}"
        h = layer_norm(x, P(p, blk + ".norm1.g"), P(p, blk + ".norm1.b"))
        q, k, v = (h @ P(p, blk + ".attn." + w) for w in ("wq", "wk", "wv"))
        D = q.shape[1] // H
        a = np.zeros_like(q)
        a_scales = P(p, blk + ".attn.softmax_scales") if mode == "learned" else None
        for hh in range(H):
            sl = slice(hh * D, (hh + 1) * D)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(D)
            sc = None if a_scales is None else (a_scales[hh] if a_scales.ndim == 3 else a_scales)
            w = attention_weights(s, mode, N, sc)
            if l == layer and hh == head:
                return w
            a[:, sl] = w @ v[:, sl]
        x = x + a @ P(p, blk + ".attn.wo")
        h = layer_norm(x, P(p, blk + ".norm2.g"), P(p, blk + ".norm2.b"))
        x = x + gelu(h @ P(p, blk + ".mlp.w1")) @ P(p, blk + ".mlp.w2")
    raise AssertionError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="experiments/learned_softmax")
    ap.add_argument("--binary", default="./build/attnlab")
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--head", type=int, default=0)
    a = ap.parse_args()
    base = os.path.join(ROOT, "baseline", "checkpoint.h5")
    if not os.path.exists(base):
        sys.exit(f"no {base}: run baseline.yaml first")
    tuned = load_tuned(os.path.join(ROOT, "learned_softmax"))
    if not tuned:
        sys.exit("no completed runs of sweep.yaml")
    seeds = sorted({k[2] for k in tuned})
    Ns = sorted({k[0] for k in tuned})

    ev = {}  # (arm, N, seed) -> val loss on seed's batches
    for s in seeds:
        ev[("baseline", 0, s)] = attnlab_eval(a.binary, base, [f"run.seed={s}"])
        for N in Ns:
            for mode in ("exact", "none"):
                ev[(mode, N, s)] = attnlab_eval(a.binary, base, [f"run.seed={s}", f"attention.block_softmax.mode={mode}",
                                                                 f"attention.block_softmax.blocks={N}"])
    for (N, per_head, s), r in tuned.items():
        arm = "learned_head" if per_head else "learned"
        assert r["step"][0] == 0
        ev[(arm + "_init", N, s)] = float(r["val"][0])
        ev[(arm, N, s)] = float(r["val"][-1])

    L = ["# Learned softmax statistics: results", "",
         "Generated by `analyze.py` from the runs of `baseline.yaml` and `sweep.yaml`. Val loss (nats per",
         "character) on 100 val batches of 12 × 64 characters; for each seed every arm is evaluated on",
         "the same batches (run.seed = that seed); mean ± std over seeds " + ", ".join(map(str, seeds)) +
         ". Perplexity = e^loss (per character).", "",
         "| arm | N | val loss | perplexity | gap to baseline | gap closed |", "|---|---|---|---|---|---|"]
    arms = [("baseline", "full softmax (the base model)"), ("exact", "exact: blocks merged by max/sum"),
            ("none", "none: blocks not merged, no training"),
            ("learned_init", "learned, scales at init N(0, 1)"), ("learned_head_init", "learned per head, at init"),
            ("learned", "learned, trained (shared by heads)"), ("learned_head", "learned per head, trained")]
    summary = {}
    for N in Ns:
        for arm, label in arms:
            if arm == "baseline" and N != Ns[0]:
                continue
            n = 0 if arm == "baseline" else N
            xs = np.array([ev[(arm, n, s)] for s in seeds])
            gap = np.array([ev[(arm, n, s)] - ev[("baseline", 0, s)] for s in seeds])
            closed = np.array([(ev[("none", N, s)] - ev[(arm, n, s)]) / (ev[("none", N, s)] - ev[("baseline", 0, s)])
                               for s in seeds])
            summary[(arm, N)] = (xs, gap, closed)
            L.append(f"| {label} | {N if n else '—'} | {ms(xs)} | {ms(np.exp(xs), '{:.3f}')} | "
                     f"{ms(gap, '{:+.4f}', '{:.4f}') if n else '—'} | "
                     f"{ms(100 * closed, '{:.1f}') + ' %' if arm.startswith('learned') else '—'} |")
    exact_dev = max(abs(ev[("exact", N, s)] - ev[("baseline", 0, s)]) / ev[("baseline", 0, s)] for N in Ns for s in seeds)
    L += ["", f"Largest relative difference between exact and the baseline over every N and seed: {exact_dev:.1e} "
          "(`attnlab eval` prints 6 decimals, so 0 means below about 5e-7).",
          "`gap closed` = (none − arm) / (none − baseline) per seed: the share of the loss that cutting the",
          "softmax into blocks costs which the learned scales win back.", "",
          "The source's table (WikiText-2 perplexity per token, OPT models, N = 2; full softmax → learned",
          "scales), for comparison of direction only (a different model size, data, tokenisation and metric):",
          "", "| model | full softmax | learned scales |", "|---|---|---|"]
    L += [f"| {m} | {a_} | {b} |" for m, a_, b in SOURCE]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # One head's attention weights on the first val window, three ways (N = 2; learned: seed 1's).
    with h5py.File(base, "r") as f:
        vocab_n = f["params/tok_emb"].shape[0]
    del vocab_n
    text = open(os.path.join("data", "tinyshakespeare.txt"), encoding="utf-8").read()
    symbols = sorted(set(text))
    val = text[int(len(text) * 0.9):][:64]
    ids = np.array([symbols.index(c) for c in val])
    pb = params(base)
    N = Ns[0]
    pl = params(tuned[(N, False, seeds[0])]["ckpt"])
    maps = [("exact", head_weights(pb, ids, a.layer, a.head, "exact", N)),
            ("none", head_weights(pb, ids, a.layer, a.head, "none", N)),
            ("learned (trained)", head_weights(pl, ids, a.layer, a.head, "learned", N))]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    vmax = max(m.max() for _, m in maps)
    for ax, (name, m) in zip(axes, maps):
        im = ax.imshow(m, cmap="viridis", vmin=0, vmax=min(vmax, 1.0))
        ax.set_title(f"{name}, N = {N}")
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        ax.axvline(-(-64 // N) - 0.5, color="w", lw=0.6, ls="--")
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle(f"layer {a.layer}, head {a.head}: the first 64 characters of the val split")
    fig.savefig(os.path.join(a.out, "attention_maps.png"), dpi=110)
    # The learned |a| per block over query positions, each layer (shared scales, seed 1).
    fig, axes = plt.subplots(1, len(Ns), figsize=(6 * len(Ns), 4), squeeze=False)
    for ax, N in zip(axes[0], Ns):
        p = params(tuned[(N, False, seeds[0])]["ckpt"])
        for l in range(4):
            sc = np.abs(P(p, f"blocks.{l}.attn.softmax_scales"))
            T = sc.shape[1]
            for b in range(N):
                start = -(-b * T // N)  # positions before the block's start never see it: not drawn
                ax.plot(np.arange(start, T), sc[b, start:], color=f"C{l}", ls=["-", "--", ":", "-."][b % 4], lw=1,
                        label=f"layer {l}, block {b}")
        ax.set_title(f"N = {N}: learned |a[block, position]| (shared, seed {seeds[0]}), where the block is visible")
        ax.set_xlabel("query position")
        ax.set_yscale("log")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "scales.png"), dpi=110)


if __name__ == "__main__":
    main()
