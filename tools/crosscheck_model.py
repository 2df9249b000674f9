#!/usr/bin/env python3
"""Cross-checks attnlab against docs/model.md with an independent float64 implementation.

  /usr/bin/python3 tools/crosscheck_model.py [--attnlab build/attnlab] [--only NAME ...]

For each variant (norm, MLP, positions, GQA, MLA with and without the query low rank, soft-cap,
every query_scaling, freezing, clipping, schedules, AdamW and Adafactor with their knobs) it trains
a tiny model for 1 and for 2 steps, runs `attnlab grads` on the 1-step checkpoint, and recomputes in
PyTorch float64, from the formulas in docs/model.md only:
  - the loss and every parameter's gradient on the stored batch (against `grads`);
  - the second optimizer step from the 1-step checkpoint's parameters and optimizer state and
    attnlab's gradient (against the 2-step checkpoint's parameters and state);
  - for query_scaling init/both with frozen weights: that the frozen initial values are those of
    the same run with query_scaling=logits, times s for the query-head projection only (`init`).
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
# MLA at sizes where d_qk = 12, d_v = 6, r + d_r = 16 and d_n = 8 differ, so a swapped size or
# column range fails a reshape or the gradients; C / H = 8 ≠ d_qk, so 1/√(C/H) for 1/√d_qk shows too.
MLA = ["attention.type=mla", "mla.kv_lora_rank=12", "mla.qk_nope_head_dim=8", "mla.qk_rope_head_dim=4",
       "mla.v_head_dim=6"]
VARIANTS.update({
    # MLA rotates with model.rope_base even when positions is learned (base.yaml's comment on
    # rope_base says "used when positions is rope"; docs/model.md says MLA always rotates).
    "mla_learned": MLA + ["model.rope_base=100"],
    # rope_base 100 so that base^(-2i/d_r) and base^(-2i/D) give clearly different angles.
    "mla_qlora_rope_softcap_query": MLA + ["mla.q_lora_rank=8", "model.positions=rope", "model.rope_base=100",
                                           "attention.softcap=0.5", "attention.query_scaling=query"],
    # Freezing wq keeps its initial values in the 1-step checkpoint for the init check.
    "mla_init_dense_rmsnorm_swiglu": MLA + ["attention.query_scaling=init", "attention.kernel=dense",
                                            "model.norm=rmsnorm", "model.mlp=swiglu", "model.d_ff=48",
                                            'train.freeze=["*attn.wq"]'],
    # Factors every MLA matrix; weight decay on, so a gain that missed `*norm*` would decay.
    "mla_qlora_both_adafactor": MLA + ["mla.q_lora_rank=8", "attention.query_scaling=both",
                                       "attention.scale=inv_dhead", "optimizer.name=adafactor",
                                       "adafactor.min_dim_size_to_factor=8", "optimizer.weight_decay=0.5",
                                       'train.freeze=["*attn.wq_?"]'],
})


def yaml_config(text):
    return yaml.safe_load(text)


def head_dim(cfg):
    """The q/k size the scale refers to: D, or d_qk = d_n + d_r for MLA."""
    m, mla = cfg["model"], cfg["mla"]
    if cfg["attention"]["type"] == "mla":
        return mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]
    return m["d_head"] or m["d_model"] // m["n_head"]


def scale_value(cfg):
    s, D = cfg["attention"]["scale"], head_dim(cfg)
    return 1 / math.sqrt(D) if s == "rsqrt_dhead" else 1 / D if s == "inv_dhead" else float(s)


def query_projection(cfg):
    """The parameter (suffix) whose columns are the query heads, which `init` scales."""
    return "attn.wq_b" if cfg["attention"]["type"] == "mla" and cfg["mla"]["q_lora_rank"] > 0 else "attn.wq"


def model_loss(cfg, P, x, y):
    m, att, mla = cfg["model"], cfg["attention"], cfg["mla"]
    C, H = m["d_model"], m["n_head"]
    Hkv = att["n_kv_heads"] or H
    D = head_dim(cfg)
    d_n, d_r, r = mla["qk_nope_head_dim"], mla["qk_rope_head_dim"], mla["kv_lora_rank"]
    B, T = x.shape

    def norm(h, name):
        if m["norm"] == "layernorm":
            mu = h.mean(-1, keepdim=True)
            var = ((h - mu) ** 2).mean(-1, keepdim=True)
            return P[name + ".g"] * (h - mu) / torch.sqrt(var + m["norm_eps"]) + P[name + ".b"]
        return rms_norm(h, name)

    def rms_norm(h, name):  # also MLA's latent norms, whatever model.norm is
        return P[name + ".g"] * h / torch.sqrt((h * h).mean(-1, keepdim=True) + m["norm_eps"])

    def gelu(u):
        return 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))

    def rope(u):  # [B, T, heads, n], interleaved pairs (2i, 2i+1); n = D, or d_r for MLA
        n = u.shape[-1]
        t = torch.arange(T, dtype=torch.float64)[:, None]
        i = torch.arange(n // 2, dtype=torch.float64)[None, :]
        angle = t * m["rope_base"] ** (-2 * i / n)
        c, s = torch.cos(angle)[None, :, None, :], torch.sin(angle)[None, :, None, :]
        out = torch.empty_like(u)
        out[..., 0::2] = u[..., 0::2] * c - u[..., 1::2] * s
        out[..., 1::2] = u[..., 0::2] * s + u[..., 1::2] * c
        return out

    def mla_qkv(a_in, p):
        if mla["q_lora_rank"] > 0:
            q = rms_norm(a_in @ P[p + "attn.wq_a"], p + "attn.q_norm") @ P[p + "attn.wq_b"]
        else:
            q = a_in @ P[p + "attn.wq"]
        q = q.view(B, T, H, D)  # head h: [q^C (d_n) | q^R (d_r)]
        kva = a_in @ P[p + "attn.wkv_a"]  # [c (r) | k^R (d_r)]
        kv = (rms_norm(kva[..., :r], p + "attn.kv_norm") @ P[p + "attn.wkv_b"]).view(B, T, H, -1)
        # Rotated regardless of model.positions; the one k^R (a single "head") serves every head.
        k_rope = rope(kva[..., r:].reshape(B, T, 1, d_r)).expand(B, T, H, d_r)
        q = torch.cat([q[..., :d_n], rope(q[..., d_n:])], -1)
        k = torch.cat([kv[..., :d_n], k_rope], -1)  # head h of kv: [k^C (d_n) | v (d_v)]
        return q, k, kv[..., d_n:]

    s = scale_value(cfg)
    q_mult = s if att["query_scaling"] in ("query", "both") else 1.0
    logit_mult = s if att["query_scaling"] == "logits" else 1.0
    h = P["tok_emb"][x]
    if m["positions"] == "learned":
        h = h + P["pos_emb"][:T][None]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for layer in range(m["n_layer"]):
        p = f"blocks.{layer}."
        a_in = norm(h, p + "norm1")
        if att["type"] == "mla":
            q, k, v = mla_qkv(a_in, p)
        else:
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
        a = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(B, T, -1)  # H·D, or H·d_v for MLA
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
    # Twin of an init/both run with query_scaling=logits: same seed, so the same draws (docs: "runs
    # that differ only in query_scaling get the same W_q (then scaled, for init)"). Its frozen
    # parameters are still their initial values after one step.
    twin = None
    if any(o in ("attention.query_scaling=init", "attention.query_scaling=both") for o in overrides) \
            and any(o.startswith("train.freeze=") for o in overrides):
        subprocess.run([attnlab, "-q", "train", os.path.join(work, "tiny.yaml"), *base, *overrides,
                        "attention.query_scaling=logits", "run.name=twin", "train.steps=1"], check=True,
                       stdout=subprocess.DEVNULL)
        twin = os.path.join(d, "twin", "checkpoint.h5")
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
        init_err, init_names = None, []
        if twin:
            c1cfg = yaml_config(c1.attrs["config"])
            qproj, s = query_projection(c1cfg), scale_value(c1cfg)
            frozen = [n for n in c1["params"] if any(fnmatch.fnmatchcase(n, pat) for pat in c1cfg["train"]["freeze"])]
            with h5py.File(twin, "r") as ct:
                init_err = 0.0
                for n in frozen:
                    want = tensor(ct, f"params/{n}") * (s if n.endswith("." + qproj) else 1.0)
                    init_err = max(init_err, float((tensor(c1, f"params/{n}") - want).abs().max() / want.abs().max()))
                    init_names.append(n)
            if not init_names:  # a freeze glob that matches nothing would make the check vacuous
                failures.append("init: no frozen parameter to compare")
    # Float32 against float64 on this model measured at most: loss 3.6e-7, grads 5.4e-6, step 0.24
    # of the bound, state 8.4e-7. A gelu constant off by 0.6% gives loss 4.6e-5 and grads 3e-4.
    # Init: the same float32 draw times s, rounded once more (and the multiplier rounded to float32).
    for what, err, tol in [("loss |Δ|", loss_err, 1e-5), ("grad max rel", grad_err, 2e-5),
                           ("step err / bound", step_err, 1.0), ("state max rel", state_err, 2e-4),
                           ("init max rel", init_err, 1e-6)]:
        if err is not None and not err <= tol:
            failures.append(f"{what} {err:.3g} > {tol:g}")
    print(f"{name:36s} loss {loss_err:.1e}  grads {grad_err:.1e}  step {step_err:.2f}  state {state_err:.1e}  "
          + (f"init {init_err:.1e}  " if init_err is not None else "")
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
