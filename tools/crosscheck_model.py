#!/usr/bin/env python3
"""Cross-checks attnlab against docs/model.md with an independent float64 implementation.

  /usr/bin/python3 tools/crosscheck_model.py [--attnlab build/attnlab] [--only NAME ...]

For each variant (norm, MLP, positions, GQA, MLA with and without the query low rank, soft-cap,
every query_scaling, freezing, clipping, schedules, weight decay by role, AdamW, Adafactor and Muon
with their knobs, QK-Clip for MHA, GQA and both MLA query forms; attention sinks, documents
(data.packing: separator, overlapping occurrences included), sliding window, chunks and the
layer pattern, both output scales, weighted residuals, model.bias, embed_norm, an untied head,
model.init: pytorch and data.vocab: bytes, in MHA and MLA) it trains a tiny model for 1 and
for 2 steps, runs `attnlab grads` on the 1-step checkpoint, and recomputes in PyTorch float64,
from docs/model.md, docs/attention.md and docs/qk_clip.md only:
  - the data: the checkpoint's vocabulary and the batch's ids (docs/model.md, Data);
  - the loss and every parameter's gradient on the stored batch (against `grads`);
  - the second optimizer step from the 1-step checkpoint's parameters and optimizer state and
    attnlab's gradient (against the 2-step checkpoint's parameters and state), then with
    train.qk_clip the rescale from that step's own max logits, which are this forward's (the
    1-step parameters on the same batch); those max logits, the clipped-head count and the
    γ deficit are also checked against step 2 of the 2-step run's metrics.h5;
  - for query_scaling init/both with frozen weights: that the frozen initial values are those of
    the same run with query_scaling=logits, times s for the query-head projection only (`init`);
  - for AdamW runs without QK-Clip: every parameter's init (the table's init column, or
    model.init: pytorch) from the 1-step parameters, within the first step's bound lr·(1 + λ|θ|).
The corpus has exactly context + 1 training tokens, so every batch is the same window and the
batch `grads` draws is the batch of every training step. Parameters that start at a constant where
a wrong formula would not show (the sinks, at 0) start from a normal draw instead (START, through
train.init_from). CROSSCHECK_DEBUG=1 prints each gradient's size and each QK-Clip run's max logits
(for choosing τ).
Needs Debian's python3-torch, python3-h5py and python3-yaml. Exit 1 on any mismatch.
"""
import argparse
import fnmatch
import math
import os
import shutil
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

# The corpus's training window is "lj eeabacljm inkj": " " ends at positions 2 and 12, "lj" at 1
# and 10 (and the first occurrence starts at 0), so both separators cut x into three documents.
VARIANTS.update({
    # Sinks enter as they are: logit multiplier 1/√8, cap 0.5 and a sink ~N(0, 1) (START) differ.
    "sinks_softcap": ["attention.sinks=true", "attention.softcap=0.5"],
    # Sinks break the shift invariance that makes a key bias's gradient 0; pytorch init makes every
    # bias nonzero. GQA, swiglu (b3), rmsnorm (emb_norm without b), tied: no head_bias.
    "sinks_bias_gqa_swiglu_embnorm": ["attention.sinks=true", "model.bias=true", "model.init=pytorch",
                                      "attention.n_kv_heads=2", "model.mlp=swiglu", "model.d_ff=48",
                                      "model.norm=rmsnorm", "model.embed_norm=true"],
    # Multi-symbol separator; rotary positions are not reset at a document's start.
    "documents_rope": ["data.packing=separator", "data.separator=lj", "model.positions=rope"],
    # Window 5 and chunk 6 together on layer 0 only, with causal's n_i counting the visible keys.
    "window_chunk_pattern_causal": ["attention.window=5", "attention.chunk=6",
                                    "attention.layer_pattern=[local,global]", "attention.output_scale=causal"],
    # Window only, every layer (empty pattern), dense kernel, √(context/e).
    "window_dense_dseq": ["attention.window=3", "attention.kernel=dense",
                          "attention.output_scale=sqrt_dseq_over_e"],
    # τ_a ≠ τ_m, both far from the defaults, so a swap or √ missing shows.
    "weighted_residual": ["model.residual=weighted", "model.tau_attn=0.3", "model.tau_mlp=0.8"],
    # The almost-scaled source model's knobs together; the init check reads the pytorch init, with
    # fan-ins C = 32, H·D = 48 (wo, bo) and F = 128 (w2, b2).
    "bias_untied_embnorm_pytorch": ["model.bias=true", "model.embed_norm=true", "model.tie_embeddings=false",
                                    "model.init=pytorch", "model.d_head=12"],
    # pytorch init with W_q drawn ×s: frozen wq is the logits twin's ×s, bq and the others as drawn.
    "pytorch_init_qscale_freeze": ["model.init=pytorch", "model.bias=true", "attention.query_scaling=init",
                                   "model.tie_embeddings=false", "model.embed_norm=true",
                                   'train.freeze=["*attn.wq","*attn.bq","*attn.wk","head"]'],
    # 256 byte ids (V = 256 ≠ the corpus's 13), a one-byte separator, documents in n_i.
    "bytes_documents_causal": ["data.vocab=bytes", "data.packing=separator", 'data.separator=" "',
                               "attention.output_scale=causal"],
    # MLA with every new attention feature: sinks, documents, chunk on layer 1, causal output scale.
    "mla_sinks_documents_chunk": MLA + ["attention.sinks=true", "data.packing=separator", "data.separator=lj",
                                        "attention.chunk=4", "attention.layer_pattern=[global,local]",
                                        "attention.output_scale=causal"],
    "mla_weighted_window_dseq": MLA + ["model.residual=weighted", "model.tau_attn=0.3", "model.tau_mlp=0.8",
                                       "attention.window=4", "attention.output_scale=sqrt_dseq_over_e",
                                       "attention.kernel=dense"],
})
# Parameters a variant starts from other values (glob → std of a normal draw), through a 1-step
# run's checkpoint with them overwritten and train.init_from: the sinks start at 0, where their
# multiplier, cap or mask would not show.
VARIANTS.update({
    # S_h over the visible keys only (window and documents) and never the sink; τ between heads.
    "qkclip_sinks_documents_window": QKC + ["train.qk_clip.tau=6.2", "attention.sinks=true", "data.packing=separator",
                                            'data.separator=" "', "attention.window=4"],
})
# Variants with a corpus of their own (2·(context + 1) symbols: the first context + 1 train, as for
# the shared one). "\n\n\n" holds two overlapping occurrences of the default separator "\n\n":
# x = "ab\n\n\ncd\n\nefg\nhij" has documents starting at 4, 5 and 9 (a scan that skips past a
# match would start one at 4 only); the lone "\n" at 12 ends none.
CORPUS = {"documents_overlap_default": "ab\n\n\ncd\n\nefg\nhijk" + "lm\n\nnop qrs\ntuvwx"}
VARIANTS["documents_overlap_default"] = ["data.packing=separator", "attention.output_scale=causal"]
START = {n: {"*.sinks": 1.0} for n in ("sinks_softcap", "sinks_bias_gqa_swiglu_embnorm", "mla_sinks_documents_chunk",
                                       "qkclip_sinks_documents_window")}
START["qkclip_sinks_documents_window"] = {"*.sinks": 8.0}


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


def vocabulary(cfg, text):
    """docs/model.md, Data: the sorted distinct symbols of the corpus (code points of valid UTF-8),
    or with data.vocab: bytes all 256 byte values, id = byte value. Returns (symbols, ids of text)."""
    if cfg["data"]["vocab"] == "bytes":
        return [bytes([i]) for i in range(256)], list(text.encode())
    symbols = sorted(set(text))
    index = {c: i for i, c in enumerate(symbols)}
    return [c.encode() for c in symbols], [index[c] for c in text]


def document_starts(cfg, x, text):
    """docs/attention.md, Masks: d[b, t] = the largest u ≤ t such that the separator (its ids) ends
    at u − 1 within sequence b (every occurrence, overlapping ones too), else 0."""
    B, T = x.shape
    d = torch.zeros(B, T, dtype=torch.long)
    if cfg["data"]["packing"] != "separator":
        return d
    symbols, _ = vocabulary(cfg, text)
    sep = cfg["data"]["separator"]
    if cfg["data"]["vocab"] == "bytes":
        sep = list(sep.encode())
    else:
        sep = [symbols.index(c.encode()) for c in sep]
    L = len(sep)
    for b in range(B):
        ids = x[b].tolist()
        start = 0
        for t in range(T):  # a separator ending at t − 1 (inside the sequence) starts a document at t
            if t >= L and ids[t - L:t] == sep:
                start = t
            d[b, t] = start
    return d


def visible_keys(cfg, layer, x, text):
    """[B, T, T] bool: query i sees key j (causal, window/chunk on local layers, documents)."""
    att = cfg["attention"]
    B, T = x.shape
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    first = torch.zeros(T, 1, dtype=torch.long)
    pattern = att["layer_pattern"]
    if not pattern or pattern[layer % len(pattern)] == "local":
        if att["window"] > 0:
            first = torch.maximum(first, i - att["window"] + 1)
        if att["chunk"] > 0:
            first = torch.maximum(first, (i // att["chunk"]) * att["chunk"])
    first = torch.maximum(first[None].expand(B, T, 1), document_starts(cfg, x, text)[..., None])
    return (j <= i)[None] & (j[None] >= first)


def model_loss(cfg, P, x, y, max_logits=None, text=""):
    """The mean loss; appends each layer's per-head max logit [H] to max_logits if given. text is
    the corpus (for the separator's ids)."""
    m, att, mla = cfg["model"], cfg["attention"], cfg["mla"]
    C, H = m["d_model"], m["n_head"]
    Hkv = att["n_kv_heads"] or H
    D = head_dim(cfg)
    d_n, d_r, r = mla["qk_nope_head_dim"], mla["qk_rope_head_dim"], mla["kv_lora_rank"]
    B, T = x.shape

    def lin(u, w, b):  # x · W (+ b with model.bias; the biases are MHA-only)
        out = u @ P[w]
        return out + P[b] if m["bias"] and b is not None else out

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

    def residual(x_, branch, tau):  # model.residual: sum, or weighted √(1−τ)·x + √τ·f(x)
        if m["residual"] == "weighted":
            return math.sqrt(1 - tau) * x_ + math.sqrt(tau) * branch
        return x_ + branch

    s = scale_value(cfg)
    q_mult = s if att["query_scaling"] in ("query", "both") else 1.0
    logit_mult = s if att["query_scaling"] == "logits" else 1.0
    h = P["tok_emb"][x]
    if m["positions"] == "learned":
        h = h + P["pos_emb"][:T][None]
    if m["embed_norm"]:
        h = norm(h, "emb_norm")
    for layer in range(m["n_layer"]):
        p = f"blocks.{layer}."
        visible = visible_keys(cfg, layer, x, text)[:, None]  # [B, 1, T, T]
        a_in = norm(h, p + "norm1")
        if att["type"] == "mla":
            q, k, v = mla_qkv(a_in, p)
        else:
            q = lin(a_in, p + "attn.wq", p + "attn.bq").view(B, T, H, D)
            k = lin(a_in, p + "attn.wk", p + "attn.bk").view(B, T, Hkv, D)
            v = lin(a_in, p + "attn.wv", p + "attn.bv").view(B, T, Hkv, D)
            if m["positions"] == "rope":
                q, k = rope(q), rope(k)
        q = q * q_mult
        k = k.repeat_interleave(H // Hkv, dim=2)  # query head h uses kv head h / (H / Hkv)
        v = v.repeat_interleave(H // Hkv, dim=2)
        logits = logit_mult * torch.einsum("bihd,bjhd->bhij", q, k)
        if max_logits is not None:  # QK-Clip's S_h: before the cap, over batch, queries, unmasked keys
            max_logits.append(logits.detach().masked_fill(~visible, float("-inf")).amax(dim=(0, 2, 3)))
        if att["softcap"] > 0:
            logits = att["softcap"] * torch.tanh(logits / att["softcap"])
        logits = logits.masked_fill(~visible, float("-inf"))
        if att["sinks"]:  # one more term e^{σ_h} in the sum (no multiplier, cap or mask), no value
            sink = P[p + "attn.sinks"].view(1, H, 1, 1).expand(B, H, T, 1)
            probs = torch.softmax(torch.cat([logits, sink], -1), -1)[..., :T]
        else:
            probs = torch.softmax(logits, -1)
        a = torch.einsum("bhij,bjhd->bihd", probs, v)  # [B, T, H, D], or d_v for MLA
        osc = att["output_scale"]
        if osc == "sqrt_dseq_over_e":
            a = a * math.sqrt(m["context"] / math.e)
        elif osc == "causal":  # n_i = the keys row i sees (the masks included, the sink not)
            n_i = visible[:, 0].sum(-1).to(torch.float64)  # [B, T]
            a = a * torch.sqrt(n_i / math.e)[..., None, None]
        elif osc != "none":
            a = a * float(osc)
        h = residual(h, lin(a.reshape(B, T, -1), p + "attn.wo", p + "attn.bo"), m["tau_attn"])
        m_in = norm(h, p + "norm2")
        if m["mlp"] == "gelu":
            hidden = gelu(lin(m_in, p + "mlp.w1", p + "mlp.b1"))
        else:
            gate = lin(m_in, p + "mlp.w1", p + "mlp.b1")
            hidden = gate * torch.sigmoid(gate) * lin(m_in, p + "mlp.w3", p + "mlp.b3")
        h = residual(h, lin(hidden, p + "mlp.w2", p + "mlp.b2"), m["tau_mlp"])
    if m["tie_embeddings"]:
        logits = norm(h, "norm_f") @ P["tok_emb"].T
    else:
        logits = lin(norm(h, "norm_f"), "head", "head_bias")
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
    if n in ("tok_emb", "pos_emb", "head"):
        return "embedding"
    if n.endswith(".g"):  # norm gains, MLA's latent-norm gains included
        return "gain"
    if n.endswith(".b") or n == "head_bias" or n.endswith(".sinks") \
            or fnmatch.fnmatchcase(n, "blocks.*.attn.b[qkvo]") or fnmatch.fnmatchcase(n, "blocks.*.mlp.b[123]"):
        return "bias"
    if n.endswith(".softmax_scales"):
        return "scale"
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


def init_check(cfg, P1, frozen):
    """docs/model.md's init column (and model.init: pytorch) against the 1-step parameters P1 of an
    AdamW run: its first step moves an element by at most lr·(1 + λ|θ|) (m̂/√v̂ = ±1), which the
    bounds allow. Returns the failures."""
    m, att, o = cfg["model"], cfg["attention"], cfg["optimizer"]
    C, H, L = m["d_model"], m["n_head"], m["n_layer"]
    D = head_dim(cfg)
    F = m["d_ff"] or 4 * C
    v_width = cfg["mla"]["v_head_dim"] if att["type"] == "mla" else D  # wo's input is H·D, or H·d_v
    qmult = scale_value(cfg) if att["query_scaling"] in ("init", "both") else 1.0
    sd = m["init_std"]
    fails = []
    for n, w in P1.items():
        w = w.detach()
        lam = o["weight_decay"] if role(n) in o["decay_roles"] else 0.0
        drift = 0.0 if n in frozen else 1.01 * o["lr"] * (1 + lam * float(w.abs().max()))
        leaf = n.split(".")[-1]
        # (kind, scale): ("const", c), ("normal", std) or ("uniform", bound)
        if leaf == "g":
            want = ("const", 1.0)
        elif leaf in ("b", "sinks"):
            want = ("const", 0.0)
        elif leaf == "softmax_scales":
            want = ("normal", 1.0)
        elif m["init"] == "pytorch":
            fan_in = {"wo": H * v_width, "bo": H * v_width, "w2": F, "b2": F}.get(leaf, C)
            if n in ("tok_emb", "pos_emb"):
                want = ("normal", 1.0)
            else:  # wq, wk, wv, w1, w3, head and their biases (head_bias: leaf "head_bias")
                want = ("uniform", (qmult if leaf == "wq" else 1.0) / math.sqrt(fan_in))
        elif leaf in ("bq", "bk", "bv", "bo", "b1", "b2", "b3", "head_bias"):
            want = ("const", 0.0)
        elif leaf in ("wo", "w2"):
            want = ("normal", sd / math.sqrt(2 * L))
        elif n.endswith("." + query_projection(cfg)):
            want = ("normal", sd * qmult)
        else:
            want = ("normal", sd)
        kind, a = want
        k = w.numel()
        rms, top = float(w.pow(2).mean().sqrt()), float(w.abs().max())
        if kind == "const":
            ok = float((w - a).abs().max()) <= drift
        elif kind == "normal":  # the sample RMS: relative sd ½√(2/k); 5 sd
            ok = abs(rms - a) <= 2.5 * math.sqrt(2 / k) * a + drift
        else:  # U(−a, a): RMS a/√3 (relative sd ½√(0.8/k)), max |w| ≤ a and > a(1 − 10/k) w.p. 1 − e^−10
            ok = abs(rms - a / math.sqrt(3)) <= 2.5 * math.sqrt(0.8 / k) * a / math.sqrt(3) + drift \
                and a * (1 - 10 / k) - drift <= top <= a + drift
        if not ok:
            fails.append(f"init {n}: want {kind} {a:.4g}, got rms {rms:.4g} max|w| {top:.4g}")
    return fails


def check_variant(attnlab, work, name, overrides, text):
    d = os.path.join(work, name)
    base = [f"run.out_dir={d}", "eval.sample_tokens=0", "eval.interval=1000", "eval.iters=1",
            "schedule.kind=constant", "schedule.warmup_steps=0"]
    if name in CORPUS:
        text = CORPUS[name]
        assert len(text) == 2 * (CONTEXT + 1), len(text)
        with open(os.path.join(work, name + ".txt"), "w") as f:
            f.write(text)
        base.append(f"data.path={os.path.join(work, name + '.txt')}")
    if name in START:  # parameters that start at 0 or 1, given other values through train.init_from
        subprocess.run([attnlab, "-q", "train", os.path.join(work, "tiny.yaml"), *base, *overrides,
                        "run.name=pre", "train.steps=1"], check=True, stdout=subprocess.DEVNULL)
        start = os.path.join(d, "start.h5")
        shutil.copyfile(os.path.join(d, "pre", "checkpoint.h5"), start)
        rng = np.random.default_rng(1)
        with h5py.File(start, "r+") as f:
            names = [n for n in f["params"] if any(fnmatch.fnmatchcase(n, g) for g in START[name])]
            if not names:
                raise ValueError(f"{name}: START matches no parameter")
            for n in names:
                std = next(v for g, v in START[name].items() if fnmatch.fnmatchcase(n, g))
                f[f"params/{n}"][...] = rng.normal(0, std, f[f"params/{n}"].shape).astype(np.float32)
        # edited in place: record it in the checkpoint's header (docs/run_files.md, Header)
        subprocess.run([attnlab, "-q", "seal", start], check=True, stdout=subprocess.DEVNULL)
        base.append(f"train.init_from={start}")
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
        gcfg = yaml_config(g.attrs["config"])
        # The data (docs/model.md, Data): n_train = context + 1 tokens, so every window starts at 0.
        symbols, ids = vocabulary(gcfg, text)
        T = gcfg["model"]["context"]
        if [bytes(np.asarray(e, dtype=np.uint8)) for e in c1["vocab"][()]] != symbols:  # vlen uint8 rows
            failures.append(f"checkpoint vocab ({len(c1['vocab'])} symbols) is not the documented one ({len(symbols)})")
        if not (bool((x == torch.tensor(ids[:T])).all()) and bool((y == torch.tensor(ids[1:T + 1])).all())):
            failures.append("x, y are not the corpus's first context + 1 token ids")
        if gcfg["data"]["packing"] == "separator" and not bool(document_starts(gcfg, x, text).any()):
            failures.append("no document starts inside x: the separator check is vacuous")
        P = {n: tensor(g, f"params/{n}").requires_grad_() for n in g["params"]}
        S = []  # the max logits of step 2's forward: the 1-step parameters on the same batch
        loss = model_loss(gcfg, P, x, y, S, text)
        loss.backward()
        loss_err = abs(float(g["loss"][()]) - loss.item())
        # Relative to the parameter's largest gradient element, or, for a gradient that is 0 in
        # exact arithmetic (a key bias without sinks: the softmax ignores a row's shift), to the
        # largest of all, since float32 leaves rounding noise there.
        top = max(float(P[n].grad.abs().max()) for n in P)
        zero_grads = [n for n in P if float(P[n].grad.abs().max()) < 1e-9 * top]
        grad_err = max(float((tensor(g, f"grads/{n}") - P[n].grad).abs().max()
                             / (top if n in zero_grads else float(P[n].grad.abs().max()))) for n in P)
        if os.environ.get("CROSSCHECK_DEBUG"):
            for n in P:
                print(f"  {n:28s} |g| {float(P[n].grad.abs().max()):.3e}  attnlab |g| {float(tensor(g, f'grads/{n}').abs().max()):.3e}"
                      f"  |Δ| {float((tensor(g, f'grads/{n}') - P[n].grad).abs().max()):.3e}")
        c1cfg = yaml_config(c1.attrs["config"])
        if c1cfg["optimizer"]["name"] == "adamw" and not c1cfg["train"]["qk_clip"]["enabled"] and name not in START:
            frozen = {n for n in P if any(fnmatch.fnmatchcase(n, pat) for pat in c1cfg["train"]["freeze"])}
            failures += init_check(c1cfg, P, frozen)
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
            if os.environ.get("CROSSCHECK_DEBUG"):
                print("  S =", S.tolist())
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
          + (f"zero grads {len(zero_grads)}  " if zero_grads else "")
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
        ok = [check_variant(a.attnlab, work, n, VARIANTS[n], corpus) for n in (a.only or VARIANTS)]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
