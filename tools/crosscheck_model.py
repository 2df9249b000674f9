#!/usr/bin/env python3
"""Cross-checks attnlab against docs/model.md with an independent float64 implementation.

  /usr/bin/python3 tools/crosscheck_model.py [--attnlab build/attnlab] [--only NAME ...]

For each variant (norm, MLP, positions, GQA, soft-cap, every query_scaling, freezing, clipping,
schedules, AdamW and Adafactor with their knobs) it trains a tiny model for 1 and for 2 steps,
runs `attnlab grads` on the 1-step checkpoint, and recomputes in PyTorch float64, from the formulas
in docs/model.md only:
  - the loss and every parameter's gradient on the stored batch (against `grads`);
  - the second optimizer step from the 1-step checkpoint's parameters and optimizer state and
    attnlab's gradient (against the 2-step checkpoint's parameters and state).
The corpus has exactly context + 1 training tokens, so every batch is the same window and the
batch `grads` draws is the batch of every training step.
Needs Debian's python3-torch, python3-h5py and python3-yaml. Exit 1 on any mismatch.
"""
import argparse
import fnmatch
import math
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch
import yaml

torch.set_default_dtype(torch.float64)

CONTEXT = 16
# Weights large enough that attention is far from uniform and gelu far from linear, so a wrong
# constant or formula shows in the gradients (at the default 0.02 the model is nearly linear).
INIT_STD = 0.3
VARIANTS = {
    "base": [],
    "rope_rmsnorm_swiglu": ["model.positions=rope", "model.norm=rmsnorm", "model.mlp=swiglu", "model.d_ff=48"],
    "gqa_softcap_query": ["attention.n_kv_heads=2", "model.d_head=12", "attention.softcap=0.5",
                          "attention.query_scaling=query", "attention.scale=0.7"],
    "init_dense_freeze": ["attention.query_scaling=init", "attention.kernel=dense", 'train.freeze=["*wk","tok_emb"]'],
    "both_clip_accum": ["attention.query_scaling=both", "attention.scale=inv_dhead", "train.grad_clip=0.01",
                        "train.grad_accum=2"],
    "none_cosine": ["attention.query_scaling=none", "schedule.kind=cosine", "schedule.min_lr=1e-4"],
    "adafactor_factored": ["optimizer.name=adafactor", "adafactor.min_dim_size_to_factor=16",
                           "schedule.kind=linear", "schedule.min_lr=2e-4"],
    "adafactor_momentum_relstep_decay": ["optimizer.name=adafactor", "adafactor.min_dim_size_to_factor=16",
                                         "adafactor.beta1=0.9", "adafactor.relative_step=true",
                                         "optimizer.weight_decay=0.5"],
    "adafactor_unscaled_clipped": ["optimizer.name=adafactor", "adafactor.multiply_by_parameter_scale=false",
                                   "adafactor.clipping_threshold=0.01"],
}


def yaml_config(text):
    return yaml.safe_load(text)


def scale_value(att, D):
    s = att["scale"]
    return 1 / math.sqrt(D) if s == "rsqrt_dhead" else 1 / D if s == "inv_dhead" else float(s)


def model_loss(cfg, P, x, y):
    m, att = cfg["model"], cfg["attention"]
    C, H = m["d_model"], m["n_head"]
    Hkv = att["n_kv_heads"] or H
    D = m["d_head"] or C // H
    B, T = x.shape

    def norm(h, name):
        if m["norm"] == "layernorm":
            mu = h.mean(-1, keepdim=True)
            var = ((h - mu) ** 2).mean(-1, keepdim=True)
            return P[name + ".g"] * (h - mu) / torch.sqrt(var + m["norm_eps"]) + P[name + ".b"]
        return P[name + ".g"] * h / torch.sqrt((h * h).mean(-1, keepdim=True) + m["norm_eps"])

    def gelu(u):
        return 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))

    def rope(u):  # [B, T, heads, D], interleaved pairs (2i, 2i+1)
        t = torch.arange(T, dtype=torch.float64)[:, None]
        i = torch.arange(D // 2, dtype=torch.float64)[None, :]
        angle = t * m["rope_base"] ** (-2 * i / D)
        c, s = torch.cos(angle)[None, :, None, :], torch.sin(angle)[None, :, None, :]
        out = torch.empty_like(u)
        out[..., 0::2] = u[..., 0::2] * c - u[..., 1::2] * s
        out[..., 1::2] = u[..., 0::2] * s + u[..., 1::2] * c
        return out

    s = scale_value(att, D)
    q_mult = s if att["query_scaling"] in ("query", "both") else 1.0
    logit_mult = s if att["query_scaling"] == "logits" else 1.0
    h = P["tok_emb"][x]
    if m["positions"] == "learned":
        h = h + P["pos_emb"][:T][None]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for layer in range(m["n_layer"]):
        p = f"blocks.{layer}."
        a_in = norm(h, p + "norm1")
        q = (a_in @ P[p + "attn.wq"]).view(B, T, H, D)
        k = (a_in @ P[p + "attn.wk"]).view(B, T, Hkv, D)
        v = (a_in @ P[p + "attn.wv"]).view(B, T, Hkv, D)
        if m["positions"] == "rope":
            q, k = rope(q), rope(k)
        q = q * q_mult
        k = k.repeat_interleave(H // Hkv, dim=2)  # query head h uses kv head h / (H / Hkv)
        v = v.repeat_interleave(H // Hkv, dim=2)
        logits = logit_mult * torch.einsum("bihd,bjhd->bhij", q, k)
        if att["softcap"] > 0:
            logits = att["softcap"] * torch.tanh(logits / att["softcap"])
        probs = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)
        a = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(B, T, H * D)
        h = h + a @ P[p + "attn.wo"]
        m_in = norm(h, p + "norm2")
        if m["mlp"] == "gelu":
            hidden = gelu(m_in @ P[p + "mlp.w1"])
        else:
            gate = m_in @ P[p + "mlp.w1"]
            hidden = gate * torch.sigmoid(gate) * (m_in @ P[p + "mlp.w3"])
        h = h + hidden @ P[p + "mlp.w2"]
    logits = norm(h, "norm_f") @ P["tok_emb"].T
    return (torch.logsumexp(logits, -1) - logits.gather(-1, y[..., None])[..., 0]).mean()


def learning_rate(cfg, s):
    o, sch = cfg["optimizer"], cfg["schedule"]
    w, lr, mn = sch["warmup_steps"], o["lr"], sch["min_lr"]
    if s < w:
        return lr * (s + 1) / w
    r = min(1.0, (s - w) / max(1, cfg["train"]["steps"] - w))
    if sch["kind"] == "cosine":
        return mn + 0.5 * (1 + math.cos(math.pi * r)) * (lr - mn)
    if sch["kind"] == "linear":
        return mn + (1 - r) * (lr - mn)
    return lr


def tensor(f, name):
    return torch.tensor(f[name][()].astype(np.float64))


def optimizer_step(cfg, ck, P, G):
    """The documented step from checkpoint ck's state; returns new params and state by name."""
    o, af = cfg["optimizer"], cfg["adafactor"]
    trainable = [n for n in P if not any(fnmatch.fnmatchcase(n, g) for g in cfg["train"]["freeze"])]
    G = {n: G[n] for n in trainable}
    clip = cfg["train"]["grad_clip"]
    if clip > 0:
        norm = math.sqrt(sum(float((g * g).sum()) for g in G.values()))
        if clip / (norm + 1e-6) < 1:
            G = {n: g * (clip / (norm + 1e-6)) for n, g in G.items()}
    t = int(ck.attrs["optimizer_t"]) + 1
    lr = learning_rate(cfg, t - 1)
    rms = lambda z: math.sqrt(float((z * z).mean()))
    params, state = {}, {}
    for n in trainable:
        th, g = P[n].detach().clone(), G[n]
        lam = 0.0 if any(fnmatch.fnmatchcase(n, pat) for pat in o["no_decay"]) else o["weight_decay"]
        if o["name"] == "adamw":
            m = o["beta1"] * tensor(ck, f"optim/adamw/m/{n}") + (1 - o["beta1"]) * g
            v = o["beta2"] * tensor(ck, f"optim/adamw/v/{n}") + (1 - o["beta2"]) * g * g
            th = th * (1 - lr * lam)
            th = th - (lr / (1 - o["beta1"] ** t)) * m / (torch.sqrt(v) / math.sqrt(1 - o["beta2"] ** t) + o["eps"])
            state[f"optim/adamw/m/{n}"], state[f"optim/adamw/v/{n}"] = m, v
        else:
            rho = min(1e-2, 1 / math.sqrt(t)) if af["relative_step"] else lr
            beta2 = 1 - t ** (-af["decay_rate"])
            alpha = rho * max(af["eps2"], rms(th)) if af["multiply_by_parameter_scale"] else rho
            G2 = g * g + af["eps1"]
            md = af["min_dim_size_to_factor"]
            if th.dim() >= 2 and th.shape[-1] >= md and th.shape[-2] >= md:
                r = beta2 * tensor(ck, f"optim/adafactor/vr/{n}") + (1 - beta2) * G2.mean(-1)
                c = beta2 * tensor(ck, f"optim/adafactor/vc/{n}") + (1 - beta2) * G2.mean(-2)
                u = g / torch.sqrt(r[:, None] * c[None, :] / r.mean())
                state[f"optim/adafactor/vr/{n}"], state[f"optim/adafactor/vc/{n}"] = r, c
            else:
                v = beta2 * tensor(ck, f"optim/adafactor/v/{n}") + (1 - beta2) * G2
                u = g / torch.sqrt(v)
                state[f"optim/adafactor/v/{n}"] = v
            u = alpha * (u / max(1.0, rms(u) / af["clipping_threshold"]))
            if af["beta1"] > 0:
                u = af["beta1"] * tensor(ck, f"optim/adafactor/m/{n}") + (1 - af["beta1"]) * u
                state[f"optim/adafactor/m/{n}"] = u
            th = th * (1 - rho * lam) - u
        params[n] = th
    return params, state


def check_variant(attnlab, work, name, overrides):
    d = os.path.join(work, name)
    base = [f"run.out_dir={d}", "eval.sample_tokens=0", "eval.interval=1000", "eval.iters=1",
            "schedule.kind=constant", "schedule.warmup_steps=0"]
    ckpt = {}
    for steps in (1, 2):
        subprocess.run([attnlab, "-q", "train", os.path.join(work, "tiny.yaml"), *base, *overrides,
                        f"run.name=s{steps}", f"train.steps={steps}"], check=True, stdout=subprocess.DEVNULL)
        ckpt[steps] = os.path.join(d, f"s{steps}", "checkpoint.h5")
    gfile = os.path.join(d, "grads.h5")
    subprocess.run([attnlab, "-q", "grads", "--checkpoint", ckpt[1], "--out", gfile], check=True,
                   stdout=subprocess.DEVNULL)
    failures = []
    with h5py.File(gfile, "r") as g, h5py.File(ckpt[1], "r") as c1, h5py.File(ckpt[2], "r") as c2:
        x, y = torch.tensor(g["x"][()]), torch.tensor(g["y"][()])
        P = {n: tensor(g, f"params/{n}").requires_grad_() for n in g["params"]}
        loss = model_loss(yaml_config(g.attrs["config"]), P, x, y)
        loss.backward()
        loss_err = abs(float(g["loss"][()]) - loss.item())
        grad_err = max(float((tensor(g, f"grads/{n}") - P[n].grad).abs().max() / (P[n].grad.abs().max() + 1e-30))
                       for n in P)
        # The step: the 2-step run's config (its schedule), the 1-step checkpoint's state, and
        # attnlab's own gradient (checked above). With the float64 gradient instead, its float32
        # rounding, which AdamW's normalisation amplifies on elements far below the largest, would
        # count against the optimizer.
        cfg = yaml_config(c2.attrs["config"])
        new, state = optimizer_step(cfg, c1, P, {n: tensor(g, f"grads/{n}") for n in P})
        step_err = 0.0
        for n in c2["params"]:
            got = tensor(c2, f"params/{n}")
            before = tensor(c1, f"params/{n}")
            want = new.get(n, before)
            # float32 rounding of θ itself, plus a small fraction of the update
            bound = 1e-3 * float((want - before).abs().max()) + 2.0 ** -22 * float(before.abs().max())
            step_err = max(step_err, float((got - want).abs().max()) / bound)
        state_err = max((float((tensor(c2, k) - v).abs().max() / (v.abs().max() + 1e-30)) for k, v in state.items()),
                        default=0.0)
    # Float32 against float64 on this model measured at most: loss 3.6e-7, grads 5.4e-6, step 0.24
    # of the bound, state 8.4e-7. A gelu constant off by 0.6% gives loss 4.6e-5 and grads 3e-4.
    for what, err, tol in [("loss |Δ|", loss_err, 1e-5), ("grad max rel", grad_err, 2e-5),
                           ("step err / bound", step_err, 1.0), ("state max rel", state_err, 2e-4)]:
        if not err <= tol:
            failures.append(f"{what} {err:.3g} > {tol:g}")
    print(f"{name:36s} loss {loss_err:.1e}  grads {grad_err:.1e}  step {step_err:.2f}  state {state_err:.1e}  "
          + ("OK" if not failures else "FAIL: " + "; ".join(failures)))
    return not failures


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attnlab", default=os.path.join(root, "build", "attnlab"))
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rng = np.random.default_rng(0)
        corpus = "".join(rng.choice(list("abcdefgh ijk\nlmn"), size=2 * (CONTEXT + 1)))
        with open(os.path.join(work, "tiny.txt"), "w") as f:
            f.write(corpus)
        with open(os.path.join(work, "tiny.yaml"), "w") as f:
            f.write(f"base_config: {os.path.join(root, 'configs', 'base.yaml')}\n"
                    f"data: {{path: {os.path.join(work, 'tiny.txt')}, val_fraction: 0.5}}\n"
                    f"model: {{n_layer: 2, n_head: 4, d_model: 32, context: {CONTEXT}, init_std: {INIT_STD}}}\n"
                    "train: {batch_size: 3}\nruntime: {threads: 1}\n")
        ok = [check_variant(a.attnlab, work, n, VARIANTS[n]) for n in (a.only or VARIANTS)]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
