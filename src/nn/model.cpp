#include "nn/model.h"

#include <cmath>
#include <limits>

#include "autograd/tape.h"
#include "ops/ops.h"
#include "util/check.h"
#include "util/rng.h"

namespace attnlab {

Transformer::Transformer(const ModelSpec& spec, ParamStore& store) : spec_(spec) {
  const auto& s = spec;
  ATTN_CHECK(s.vocab > 0 && s.context > 0 && s.n_layer > 0 && s.n_head > 0 && s.d_model > 0 && s.d_head > 0 &&
                 s.d_ff > 0,
             "Transformer: every size must be positive");
  plan_ = plan_attention_scale(s.query_scaling, s.attn_scale);
  const int64_t C = s.d_model;
  const float std = s.init_std, resid_std = s.init_std / std::sqrt(2.f * float(s.n_layer));
  const Init normal{Init::normal, std}, resid{Init::normal, resid_std};
  auto add_norm = [&](const std::string& prefix) {
    Norm n;
    n.g = store.add(name(prefix, "g"), {C}, Role::gain, {Init::ones});
    if (s.norm == NormKind::layernorm) n.b = store.add(name(prefix, "b"), {C}, Role::bias, {Init::zeros});
    return n;
  };
  AttentionSpec as;
  as.type = s.attention;
  as.d_model = s.d_model;
  as.n_head = s.n_head;
  as.n_kv_head = s.n_kv_head;
  as.d_head = s.d_head;
  as.mla = s.mla;
  as.rope = s.positions == Positions::rope;
  as.rope_base = s.rope_base;
  as.norm_eps = s.norm_eps;
  as.init_std = std;
  as.out_init_std = resid_std;
  as.pytorch_init = s.pytorch_init;
  as.bias = s.bias;
  as.plan = plan_;
  as.softcap = s.softcap;
  as.sinks = s.sinks;
  as.kernel = s.kernel;
  as.context = s.context;
  as.block = s.block;
  as.block_per_head = s.block_per_head;
  as.output_scale = s.output_scale;
  // nn.Linear's default init for a projection with `in` inputs: weights and bias U(−1/√in, 1/√in).
  auto torch_uniform = [](int64_t in) { return Init{Init::uniform, 1.f / std::sqrt(float(in))}; };
  const Init emb_init = s.pytorch_init ? Init{Init::normal, 1.f} : normal;  // nn.Embedding: N(0, 1)
  tok_emb_ = store.add("tok_emb", {s.vocab, C}, Role::embedding, emb_init);
  if (s.positions == Positions::learned) pos_emb_ = store.add("pos_emb", {s.context, C}, Role::embedding, emb_init);
  if (s.embed_norm) emb_norm_ = add_norm("emb_norm");
  for (int l = 0; l < s.n_layer; ++l) {
    Block b;
    b.norm1 = add_norm(name("blocks", l, "norm1"));
    b.norm2 = add_norm(name("blocks", l, "norm2"));
    const bool local = s.layer_local.empty() || s.layer_local[size_t(l) % s.layer_local.size()];
    as.mask = local ? s.mask : AttentionMask{};
    b.attn = make_attention(as, name("blocks", l, "attn"), store);
    const Init in_c = s.pytorch_init ? torch_uniform(C) : normal, in_f = s.pytorch_init ? torch_uniform(s.d_ff) : resid;
    b.w1 = store.add(name("blocks", l, "mlp.w1"), {C, s.d_ff}, Role::matrix, in_c);
    if (s.mlp == MlpKind::swiglu) b.w3 = store.add(name("blocks", l, "mlp.w3"), {C, s.d_ff}, Role::matrix, in_c);
    b.w2 = store.add(name("blocks", l, "mlp.w2"), {s.d_ff, C}, Role::matrix, in_f);
    if (s.bias) {
      const Init zero{Init::zeros};
      b.b1 = store.add(name("blocks", l, "mlp.b1"), {s.d_ff}, Role::bias, s.pytorch_init ? in_c : zero);
      if (b.w3) b.b3 = store.add(name("blocks", l, "mlp.b3"), {s.d_ff}, Role::bias, s.pytorch_init ? in_c : zero);
      b.b2 = store.add(name("blocks", l, "mlp.b2"), {C}, Role::bias, s.pytorch_init ? in_f : zero);
    }
    blocks_.push_back(std::move(b));
  }
  norm_f_ = add_norm("norm_f");
  if (!s.tied_head) {
    head_ = store.add("head", {C, s.vocab}, Role::embedding, s.pytorch_init ? torch_uniform(C) : normal);
    if (s.bias)
      head_bias_ = store.add("head_bias", {s.vocab}, Role::bias, s.pytorch_init ? torch_uniform(C) : Init{Init::zeros});
  }
  max_logits_.assign(size_t(s.n_layer) * s.n_head, 0.f);
}

Tensor Transformer::norm(const Norm& n, const Tensor& x, const uint16_t** y16) const {
  if (n.b) return layer_norm(x, n.g->tensor(), n.b->tensor(), spec_.norm_eps, y16);
  return rms_norm(x, n.g->tensor(), spec_.norm_eps, y16);
}

Tensor Transformer::hidden(const int32_t* ids, int B, int T, uint64_t dropout_seed, uint64_t step, KvCache* cache) {
  const auto& s = spec_;
  const int pos = cache ? cache->length : 0;  // the first position of these rows
  ATTN_CHECK(T >= 1 && pos + T <= s.context, "Transformer: positions [", pos, ", ", pos + T, ") outside [0, ",
             s.context, ")");
  ATTN_CHECK(!cache || (B == 1 && !grad_enabled() && cache->layers.size() == blocks_.size()),
             "Transformer: decoding takes one sequence, no gradient and a cache from new_cache()");
  const int64_t N = int64_t(B) * T, C = s.d_model;
  // Dropout streams: one per site, distinct per step (counter-based masks, see ops/elementwise.h).
  uint64_t site = 0;
  auto drop = [&](const Tensor& x) {
    return dropout(x, s.dropout, dropout_seed, mix64(step * 1024 + site++));
  };
  // model.residual weighted: √(1−τ)·x + √τ·f(x)
  auto weights = [&](float tau) {
    return s.weighted_residual ? ResidualWeights{std::sqrt(1.f - tau), std::sqrt(tau)} : ResidualWeights{};
  };
  const ResidualWeights attn_rw = weights(s.tau_attn), mlp_rw = weights(s.tau_mlp);
  // A residual branch's output projection added to the stream: one fused op, unless dropout or a
  // bias sits between the product and the sum (then the branch's output is a tensor of its own).
  auto residual = [&](const Tensor& stream, const Tensor& branch, Param& w, Param* b, ResidualWeights rw) {
    if ((s.dropout > 0.f && grad_enabled()) || b) {
      Tensor f = drop(project(branch, w, b));
      return rw.plain() ? add(stream, f) : add(scale(stream, rw.skip), scale(f, rw.branch));
    }
    return residual_linear(stream, branch, w.tensor(), rw);
  };
  // Document starts of every position the attention sees: [B, T], or with a cache [pos + T].
  const int32_t* docs = nullptr;
  if (!s.doc_separator.empty()) {
    if (cache) {
      cache->ids.resize(size_t(pos));
      cache->ids.insert(cache->ids.end(), ids, ids + T);
      cache->docs.resize(cache->ids.size());
      document_starts(cache->docs.data(), cache->ids.data(), pos + T, s.doc_separator);
      docs = cache->docs.data();
    } else {
      int32_t* d = static_cast<int32_t*>(current_arena().alloc_bytes(size_t(N) * sizeof(int32_t)));
      for (int b = 0; b < B; ++b) document_starts(d + int64_t(b) * T, ids + int64_t(b) * T, T, s.doc_separator);
      docs = d;
    }
  }
  Tensor x = embedding(ids, N, tok_emb_->tensor());
  if (pos_emb_) x = add(x.reshape({B, T, C}), pos_emb_->tensor().slice(0, pos, T)).reshape({N, C});
  if (s.embed_norm) x = norm(emb_norm_, x);
  x = drop(x);
  if (!cache) std::fill(max_logits_.begin(), max_logits_.end(), -std::numeric_limits<float>::infinity());
  for (int l = 0; l < s.n_layer; ++l) {
    const Block& b = blocks_[l];
    const uint16_t* h16 = nullptr;  // bf16 products: h converted once, by the norm, for the projections
    Tensor h = norm(b.norm1, x, &h16);
    Tensor a = cache ? b.attn->decode(h, T, pos, cache->layers[l].data(), docs)
                     : b.attn->forward(h, h16, B, T, max_logits_.data() + size_t(l) * s.n_head, docs);
    x = residual(x, a, b.attn->wo(), b.attn->bo(), attn_rw);
    h = norm(b.norm2, x, &h16);  // h16 read forward and by the weight gradient (and by w3's products)
    if (b.w3) {
      x = residual(x, swiglu(project(h, *b.w1, b.b1, h16), project(h, *b.w3, b.b3, h16)), *b.w2, b.b2, mlp_rw);
    } else {
      // Without dropout inside, the MLP is one op: gelu(h·w1) is never stored.
      x = (s.dropout > 0.f && grad_enabled()) || s.bias
              ? residual(x, gelu(project(h, *b.w1, b.b1, h16)), *b.w2, b.b2, mlp_rw)
              : residual_gelu_mlp(x, h, b.w1->tensor(), b.w2->tensor(), h16, mlp_rw);
    }
  }
  if (cache) cache->length += T;
  return norm(norm_f_, x);
}

KvCache Transformer::new_cache() const {
  KvCache c;
  for (const Block& b : blocks_) c.layers.emplace_back(size_t(spec_.context) * b.attn->cache_floats_per_token());
  return c;
}

Tensor Transformer::decode(const int32_t* ids, int T, KvCache& cache) {
  return head_logits(hidden(ids, 1, T, 0, 0, &cache));
}

Tensor Transformer::head_logits(const Tensor& x) const {
  if (!head_) return matmul(x, tok_emb_->tensor(), /*trans_b=*/true);
  Tensor z = linear(x, head_->tensor());
  return head_bias_ ? add(z, head_bias_->tensor()) : z;
}

Tensor Transformer::logits(const int32_t* ids, int B, int T, uint64_t dropout_seed, uint64_t step) {
  return head_logits(hidden(ids, B, T, dropout_seed, step));
}

Tensor Transformer::loss(const int32_t* ids, const int32_t* targets, int B, int T, uint64_t dropout_seed,
                         uint64_t step) {
  return cross_entropy(logits(ids, B, T, dropout_seed, step), targets);
}

}  // namespace attnlab
