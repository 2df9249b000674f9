#include "testing/ref_model.h"

#include "ops/ops.h"
#include "util/check.h"

namespace testing {

using namespace attnlab;
using V = std::vector<double>;

ParamValues param_values(const ParamStore& store) {
  ParamValues p;
  for (const Param* q : store.params()) p[q->name] = V(q->data, q->data + q->numel());
  return p;
}

namespace {
V mm(const V& a, const V& b, int64_t M, int64_t K, int64_t N, bool tb = false) {
  V y(M * N);
  ref::matmul_fwd(y.data(), a.data(), b.data(), M, K, N, tb);
  return y;
}
}  // namespace

double ref_model_loss(const ModelSpec& s, const ParamValues& p, const std::vector<int32_t>& ids,
                      const std::vector<int32_t>& targets, int B, int T) {
  auto P = [&](const std::string& n) -> const V& {
    auto it = p.find(n);
    ATTN_CHECK(it != p.end(), "ref model: no parameter ", n);
    return it->second;
  };
  const int64_t N = int64_t(B) * T, C = s.d_model, H = s.n_head, Hkv = s.n_kv_head, D = s.d_head, F = s.d_ff;
  const ScalePlan plan = plan_attention_scale(s.query_scaling, s.attn_scale);
  auto norm = [&](const std::string& pre, const V& x) {
    V y(x.size());
    const bool ln = s.norm == NormKind::layernorm;
    ref::norm_fwd(y.data(), x.data(), P(pre + ".g").data(), ln ? P(pre + ".b").data() : nullptr, N, C,
                  double(s.norm_eps));
    return y;
  };
  // y[n, :] += the bias `name` (model.bias), y with rows of `w` values.
  auto add_bias = [&](V& y, const std::string& name, int64_t w) {
    if (!s.bias) return;
    const V& b = P(name);
    for (int64_t i = 0; i < int64_t(y.size()); ++i) y[i] += b[i % w];
  };
  V x(N * C);
  ref::embedding_fwd(x.data(), ids.data(), P("tok_emb").data(), N, C);
  if (s.positions == Positions::learned)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) x[n * C + c] += P("pos_emb")[(n % T) * C + c];
  if (s.embed_norm) x = norm("emb_norm", x);
  // The block softmax of layer blk: the spec's shape over the context, and its learned scales.
  auto blocks = [&](const std::string& blk) {
    ref::Blocks<double> b;
    b.shape = s.block;
    b.shape.context = s.context;
    if (s.block.mode == BlockSoftmaxMode::learned) {
      b.scales = P(blk + ".attn.softmax_scales").data();
      b.per_head = s.block_per_head;
    }
    return b;
  };
  // Documents: a new one starts after each occurrence of the separator, in every layer.
  std::vector<int32_t> docs(N, 0);
  const size_t L = s.doc_separator.size();
  for (int64_t b = 0; b < B && L > 0; ++b)
    for (int64_t t = 1; t < T; ++t) {
      bool ends = t >= int64_t(L);  // does the separator end at position t − 1?
      for (size_t e = 0; ends && e < L; ++e) ends = ids[b * T + t - int64_t(L) + int64_t(e)] == s.doc_separator[e];
      docs[b * T + t] = ends ? int32_t(t) : docs[b * T + t - 1];
    }
  // Layer l's local mask (attention.layer_pattern repeated over the layers; empty: every layer).
  auto mask = [&](int l) {
    const bool local = s.layer_local.empty() || s.layer_local[size_t(l) % s.layer_local.size()];
    AttentionMask m = local ? s.mask : AttentionMask{};
    if (L > 0) m.docs = docs.data(), m.docs_stride = T;
    return m;
  };
  for (int l = 0; l < s.n_layer; ++l) {
    const std::string blk = "blocks." + std::to_string(l);
    V h = norm(blk + ".norm1", x);
    V a, o;
    if (s.attention == AttentionType::mla) {
      const MlaSizes& m = s.mla;
      const int64_t dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim, r = m.kv_lora_rank,
                    rq = m.q_lora_rank, Dq = dn + dr;
      const double eps = double(s.norm_eps), base = double(s.rope_base);
      auto rms = [&](const V& in, const std::string& gain, int64_t width) {
        V y(in.size());
        ref::norm_fwd(y.data(), in.data(), P(gain).data(), (const double*)nullptr, N, width, eps);
        return y;
      };
      // columns [c0, c0 + w) of each of the `heads` groups of `stride` columns of x [N, heads·stride]
      auto cols = [&](const V& x, int64_t heads, int64_t stride, int64_t c0, int64_t w) {
        V y(N * heads * w);
        for (int64_t n = 0; n < N * heads; ++n)
          for (int64_t e = 0; e < w; ++e) y[n * w + e] = x[n * stride + c0 + e];
        return y;
      };
      V q = rq > 0 ? mm(rms(mm(h, P(blk + ".attn.wq_a"), N, C, rq), blk + ".attn.q_norm.g", rq),
                        P(blk + ".attn.wq_b"), N, rq, H * Dq)
                   : mm(h, P(blk + ".attn.wq"), N, C, H * Dq);
      V qf(N * H * Dq);
      ref::rope_concat_fwd(qf.data(), cols(q, H, Dq, 0, dn).data(), cols(q, H, Dq, dn, dr).data(), B, T, H, H, dn,
                           dr, base);
      V kva = mm(h, P(blk + ".attn.wkv_a"), N, C, r + dr);
      V kv = mm(rms(cols(kva, 1, r + dr, 0, r), blk + ".attn.kv_norm.g", r), P(blk + ".attn.wkv_b"), N, r,
                H * (dn + dv));
      V k(N * H * Dq);
      ref::rope_concat_fwd(k.data(), cols(kv, H, dn + dv, 0, dn).data(), cols(kva, 1, r + dr, r, dr).data(), B, T, H,
                           1, dn, dr, base);
      V v = cols(kv, H, dn + dv, dn, dv);
      for (auto& e : qf) e *= double(plan.query);
      a.assign(N * H * dv, 0.0);
      ref::attention_fwd(a.data(), qf.data(), k.data(), v.data(), B, T, T, H, H, Dq, dv, double(plan.logits),
                         double(s.softcap), true, (double*)nullptr, blocks(blk), s.output_scale, mask(l),
                         s.sinks ? P(blk + ".attn.sinks").data() : (const double*)nullptr);
      o = mm(a, P(blk + ".attn.wo"), N, H * dv, C);
    } else {
      V q = mm(h, P(blk + ".attn.wq"), N, C, H * D), k = mm(h, P(blk + ".attn.wk"), N, C, Hkv * D),
        v = mm(h, P(blk + ".attn.wv"), N, C, Hkv * D);
      add_bias(q, blk + ".attn.bq", H * D);
      add_bias(k, blk + ".attn.bk", Hkv * D);
      add_bias(v, blk + ".attn.bv", Hkv * D);
      if (s.positions == Positions::rope) {
        V q2(q.size()), k2(k.size());
        ref::rope_apply(q2.data(), q.data(), B, T, H, D, double(s.rope_base), 0, false);
        ref::rope_apply(k2.data(), k.data(), B, T, Hkv, D, double(s.rope_base), 0, false);
        q = q2;
        k = k2;
      }
      for (auto& e : q) e *= double(plan.query);
      a.assign(N * H * D, 0.0);
      ref::attention_fwd(a.data(), q.data(), k.data(), v.data(), B, T, T, H, Hkv, D, D, double(plan.logits),
                         double(s.softcap), true, (double*)nullptr, blocks(blk), s.output_scale, mask(l),
                         s.sinks ? P(blk + ".attn.sinks").data() : (const double*)nullptr);
      o = mm(a, P(blk + ".attn.wo"), N, H * D, C);
      add_bias(o, blk + ".attn.bo", C);
    }
    {
      const double skip = s.weighted_residual ? std::sqrt(1.0 - double(s.tau_attn)) : 1.0;
      const double branch = s.weighted_residual ? std::sqrt(double(s.tau_attn)) : 1.0;
      for (int64_t i = 0; i < N * C; ++i) x[i] = skip * x[i] + branch * o[i];
    }
    h = norm(blk + ".norm2", x);
    V u = mm(h, P(blk + ".mlp.w1"), N, C, F);
    add_bias(u, blk + ".mlp.b1", F);
    if (s.mlp == MlpKind::swiglu) {
      V g = mm(h, P(blk + ".mlp.w3"), N, C, F);
      add_bias(g, blk + ".mlp.b3", F);
      for (int64_t i = 0; i < N * F; ++i) u[i] = ref::silu(u[i]) * g[i];
    } else {
      for (auto& e : u) e = ref::gelu(e);
    }
    V m = mm(u, P(blk + ".mlp.w2"), N, F, C);
    add_bias(m, blk + ".mlp.b2", C);
    {
      const double skip = s.weighted_residual ? std::sqrt(1.0 - double(s.tau_mlp)) : 1.0;
      const double branch = s.weighted_residual ? std::sqrt(double(s.tau_mlp)) : 1.0;
      for (int64_t i = 0; i < N * C; ++i) x[i] = skip * x[i] + branch * m[i];
    }
  }
  V hf = norm("norm_f", x);
  V logits = s.tied_head ? mm(hf, P("tok_emb"), N, C, s.vocab, true) : mm(hf, P("head"), N, C, s.vocab);
  if (!s.tied_head) add_bias(logits, "head_bias", s.vocab);
  return ref::cross_entropy_fwd(logits.data(), targets.data(), N, s.vocab, kIgnoreIndex);
}

}  // namespace testing
