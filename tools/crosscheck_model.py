#!/usr/bin/env python3
"""Cross-checks attnlab against docs/model.md with an independent float64 implementation.

  /usr/bin/python3 tools/crosscheck_model.py [--attnlab build/attnlab] [--only NAME ...]

For each variant (norm, MLP, positions, GQA, MLA with and without the query low rank, soft-cap,
every query_scaling, freezing, clipping, schedules, weight decay by role, AdamW, Adafactor and Muon
with their knobs, QK-Clip for MHA, GQA and both MLA query forms) it trains a tiny model for 1 and
for 2 steps, runs `attnlab grads` on the 1-step checkpoint, and recomputes in PyTorch float64,
from docs/model.md and docs/qk_clip.md only:
  - the loss and every parameter's gradient on the stored batch (against `grads`);
  - the second optimizer step from the 1-step checkpoint's parameters and optimizer state and
    attnlab's gradient (against the 2-step checkpoint's parameters and state), then with
    train.qk_clip the rescale from that step's own max logits, which are this forward's (the
    1-step parameters on the same batch); those max logits, the clipped-head count and the
    γ deficit are also checked against step 2 of the 2-step run's metrics.h5;
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
    # Decay on every role but matrix: a name-based or matrix-only rule fails the gains, biases, embeddings.
    "both_clip_accum_roles": ["attention.query_scaling=both", "attention.scale=inv_dhead", "train.grad_clip=0.01",
                              "train.grad_accum=2", "optimizer.weight_decay=0.5",
                              "optimizer.decay_roles=[embedding,gain,bias]"],
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
    # Factors every MLA matrix; weight decay on, so a latent-norm gain taken for a matrix would decay.
    "mla_qlora_both_adafactor": MLA + ["mla.q_lora_rank=8", "attention.query_scaling=both",
                                       "attention.scale=inv_dhead", "optimizer.name=adafactor",
                                       "adafactor.min_dim_size_to_factor=8", "optimizer.weight_decay=0.5",
                                       'train.freeze=["*attn.wq_?"]'],
})
VARIANTS.update({
    # Muon's default knobs. mlp.w2 [128, 32] is taller than wide (the transposed Newton-Schulz),
    # w1 [32, 128] wider, wq/wo square. Transposing changes only the rounding ((XXᵀ)ᵏX = X(XᵀX)ᵏ),
    # so of the orientation only √max(R, C) is checkable. Gains decay too: AdamW's λ on Muon's other roles.
    "muon_nesterov_decay": ["optimizer.name=muon", "optimizer.weight_decay=0.5",
                            "optimizer.decay_roles=[matrix,gain]"],
    # Plain momentum, 3 iterations, GQA's wk/wv [32, 16] and swiglu's w2 [48, 32] tall; the linear
    # schedule's step-2 lr must scale muon.lr as it scales optimizer.lr.
    "muon_plain_gqa_swiglu_linear": ["optimizer.name=muon", "muon.nesterov=false", "muon.momentum=0.8",
                                     "muon.ns_steps=3", "muon.lr=0.05", "attention.n_kv_heads=2",
                                     "model.mlp=swiglu", "model.d_ff=48", "model.positions=rope",
                                     "schedule.kind=linear", "schedule.min_lr=2e-4"],
})
# QK-Clip at τ below the largest max logits the init gives (about 3 to 13 here), with a step large
# enough (lr 0.01, or Muon) that step 2's logits have moved well away from the τ step 1 clipped to.
QKC = ["train.qk_clip.enabled=true", "optimizer.lr=0.01"]
VARIANTS.update({
    # S is the pre-cap logit: the cap at 2 sits below τ, so a post-cap S would clip nothing.
    "qkclip_mha_softcap": QKC + ["train.qk_clip.tau=5", "attention.softcap=2"],
    # Key head 0 serves query heads 0 and 1; τ clips one of them and not the other at step 2.
    # query_scaling=query: S includes the forward's s, and the pass still scales W_q.
    "qkclip_gqa_alpha_query": QKC + ["train.qk_clip.tau=7.5", "train.qk_clip.alpha=0.25", "attention.n_kv_heads=2",
                                     "attention.query_scaling=query"],
    # Heads above τ at step 2, but the pass is off after step 1.
    "qkclip_until_step": QKC + ["train.qk_clip.tau=7", "train.qk_clip.until_step=1"],
    "qkclip_mla_muon_alpha": MLA + ["train.qk_clip.enabled=true", "train.qk_clip.tau=6.8", "train.qk_clip.alpha=0.75",
                                    "optimizer.name=muon"],
    # α = 0: q^C untouched, k^C takes γ, q^R (of wq_b) still all of γ.
    "qkclip_mla_qlora_alpha0": MLA + QKC + ["mla.q_lora_rank=8", "train.qk_clip.tau=2.6", "train.qk_clip.alpha=0"],
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


def model_loss(cfg, P, x, y, max_logits=None):
    """The mean loss; appends each layer's per-head max logit [H] to max_logits if given."""
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
        if max_logits is not None:  # QK-Clip's S_h: before the cap, over batch, queries, unmasked keys
            max_logits.append(logits.detach().masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3)))
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


def role(n):
    """docs/model.md item 4: which role decides weight decay (and, under Muon, the optimizer)."""
    if n in ("tok_emb", "pos_emb"):
        return "embedding"
    if n.endswith(".g"):  # norm gains, MLA's latent-norm gains included
        return "gain"
    if n.endswith(".b"):
        return "bias"
    if n.startswith("blocks.") and (".attn." in n or ".mlp." in n):
        return "matrix"
    raise ValueError(f"no documented role for parameter {n}")


def newton_schulz(u, steps):
    """Muon's quintic Newton-Schulz iteration (docs/model.md item 6), on the wide orientation."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = u.shape[0] > u.shape[1]
    X = u / (torch.linalg.norm(u) + 1e-7)
    X = X.T if tall else X
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def optimizer_step(cfg, ck, P, G):
    """The documented step from checkpoint ck's state; returns new params and state by name."""
    o, af, mu = cfg["optimizer"], cfg["adafactor"], cfg["muon"]
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
        lam = o["weight_decay"] if role(n) in o["decay_roles"] else 0.0
        if o["name"] == "muon" and role(n) == "matrix":
            eta = lr * mu["lr"] / o["lr"]
            b = mu["momentum"] * tensor(ck, f"optim/muon/momentum/{n}") + g
            u = g + mu["momentum"] * b if mu["nesterov"] else b
            th = th * (1 - eta * lam) - eta * 0.2 * math.sqrt(max(th.shape)) * newton_schulz(u, mu["ns_steps"])
            state[f"optim/muon/momentum/{n}"] = b
        elif o["name"] in ("adamw", "muon"):  # Muon's other roles take AdamW's step, its state under optim/muon
            slot = f"optim/{o['name']}"
            m = o["beta1"] * tensor(ck, f"{slot}/m/{n}") + (1 - o["beta1"]) * g
            v = o["beta2"] * tensor(ck, f"{slot}/v/{n}") + (1 - o["beta2"]) * g * g
            th = th * (1 - lr * lam)
            th = th - (lr / (1 - o["beta1"] ** t)) * m / (torch.sqrt(v) / math.sqrt(1 - o["beta2"] ** t) + o["eps"])
            state[f"{slot}/m/{n}"], state[f"{slot}/v/{n}"] = m, v
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


def qk_clip(cfg, W, S):
    """docs/qk_clip.md: rescales W's query/key head columns in place from the step's max logits
    S [n_layer, H]; returns the number of heads with γ < 1 and 1 − min γ."""
    m, mla, qc = cfg["model"], cfg["mla"], cfg["train"]["qk_clip"]
    tau, al, H = qc["tau"], qc["alpha"], m["n_head"]
    gammas = [[tau / float(x) if x > tau else 1.0 for x in row] for row in S]
    for layer, gam in enumerate(gammas):
        p = f"blocks.{layer}."
        wq = W[p + query_projection(cfg)]
        if cfg["attention"]["type"] == "mla":
            d_n, d_qk, d_kv = mla["qk_nope_head_dim"], head_dim(cfg), mla["qk_nope_head_dim"] + mla["v_head_dim"]
            for h, g in enumerate(gam):
                wq[:, h * d_qk:h * d_qk + d_n] *= g ** al      # q^C
                wq[:, h * d_qk + d_n:(h + 1) * d_qk] *= g      # q^R takes all of γ: k^R is shared
                W[p + "attn.wkv_b"][:, h * d_kv:h * d_kv + d_n] *= g ** (1 - al)  # k^C, not v
        else:
            Hkv, D = cfg["attention"]["n_kv_heads"] or H, head_dim(cfg)
            group = H // Hkv
            for kv in range(Hkv):
                gg = min(gam[kv * group:(kv + 1) * group])
                W[p + "attn.wk"][:, kv * D:(kv + 1) * D] *= gg ** (1 - al)
                for h in range(kv * group, (kv + 1) * group):
                    wq[:, h * D:(h + 1) * D] *= gam[h] / gg ** (1 - al)
    flat = [g for row in gammas for g in row]
    return sum(g < 1 for g in flat), 1 - min(flat)


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
        S = []  # the max logits of step 2's forward: the 1-step parameters on the same batch
        loss = model_loss(yaml_config(g.attrs["config"]), P, x, y, S)
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
        new = {n: new[n] if n in new else tensor(c1, f"params/{n}") for n in c2["params"]}
        qc, smax_err, clipped = cfg["train"]["qk_clip"], None, 0
        if qc["enabled"]:
            S = torch.stack(S)
            active = qc["until_step"] == 0 or qc["until_step"] >= 2  # until_step N: steps 1..N only
            clipped, deficit = qk_clip(cfg, new, S) if active else (0, 0.0)
            with h5py.File(os.path.join(d, "s2", "metrics.h5"), "r") as mf:
                i = list(mf["attention/step"][()]).index(2)
                logged = torch.tensor(mf["attention/max_logits"][i].astype(np.float64))
                smax_err = float((logged - S).abs().max() / S.abs().max())
                log_clipped, log_deficit = int(mf["attention/clipped_heads"][i]), float(mf["attention/gamma_deficit"][i])
            if log_clipped != clipped:
                failures.append(f"clipped_heads logged {log_clipped}, want {clipped}")
            if not abs(log_deficit - deficit) <= 1e-5:
                failures.append(f"gamma_deficit logged {log_deficit:.6g}, want {deficit:.6g}")
            # float32 S within ~1e-6 of ours: a head this close to τ could clip on one side only
            if float((S / qc["tau"] - 1).abs().min()) < 1e-4:
                failures.append("tau within 1e-4 of a head's max logit: pick another tau")
            if clipped == 0 and active:
                failures.append("qk_clip: no head clipped at step 2, the check is vacuous")
        step_err = 0.0
        for n in c2["params"]:
            got = tensor(c2, f"params/{n}")
            before = tensor(c1, f"params/{n}")
            want = new[n]
            # float32 rounding of θ itself, plus a small fraction of the update. The update includes
            # the QK-Clip rescale. Muon's float32 Newton-Schulz differs from float64 by ~1e-5 of the
            # update (measured; the quintic's slope 3.4445 at small singular values amplifies
            # rounding at most 3.4445^5 ≈ 500×, still < 1e-4), so the same 1e-3 holds it; a wrong
            # knob moves the step by 200× the bound or more. QK-Clip's γ comes from our float64 S,
            # within ~3e-7 of attnlab's float32 S (checked), far below 1e-3 of any clip's change.
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
    # of the bound, state 1.1e-6, max logits 3.1e-7. A gelu constant off by 0.6% gives loss 4.6e-5
    # and grads 3e-4; S over the masked keys too gives max logits 0.27.
    # Init: the same float32 draw times s, rounded once more (and the multiplier rounded to float32).
    for what, err, tol in [("loss |Δ|", loss_err, 1e-5), ("grad max rel", grad_err, 2e-5),
                           ("step err / bound", step_err, 1.0), ("state max rel", state_err, 2e-4),
                           ("init max rel", init_err, 1e-6), ("max logit rel", smax_err, 1e-5)]:
        if err is not None and not err <= tol:
            failures.append(f"{what} {err:.3g} > {tol:g}")
    print(f"{name:36s} loss {loss_err:.1e}  grads {grad_err:.1e}  step {step_err:.2f}  state {state_err:.1e}  "
          + (f"init {init_err:.1e}  " if init_err is not None else "")
          + (f"S {smax_err:.1e} clipped {clipped}  " if smax_err is not None else "")
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
