#include "nn/model.h"

#include <cmath>
#include <limits>

#include "autograd/tape.h"
#include "ops/ops.h"
#include "util/check.h"
#include "util/rng.h"

namespace attnlab {

ScalePlan plan_attention_scale(QueryScaling where, float s) {
  switch (where) {
    case QueryScaling::init: return {s, 1.f, 1.f};
    case QueryScaling::query: return {1.f, s, 1.f};
    case QueryScaling::logits: return {1.f, 1.f, s};
    case QueryScaling::none: return {1.f, 1.f, 1.f};
    case QueryScaling::both: return {s, s, 1.f};  // the doubly-scaled proposal: logits scaled by s²
  }
  return {};
}

Transformer::Transformer(const ModelSpec& spec, ParamStore& store) : spec_(spec) {
  const auto& s = spec;
  ATTN_CHECK(s.vocab > 0 && s.context > 0 && s.n_layer > 0 && s.n_head > 0 && s.d_model > 0 && s.d_head > 0 &&
                 s.d_ff > 0,
             "Transformer: every size must be positive");
  ATTN_CHECK(s.n_kv_head > 0 && s.n_head % s.n_kv_head == 0, "Transformer: n_kv_head ", s.n_kv_head,
             " must divide n_head ", s.n_head);
  ATTN_CHECK(s.positions != Positions::rope || s.d_head % 2 == 0, "Transformer: rope needs an even d_head");
  plan_ = plan_attention_scale(s.query_scaling, s.attn_scale);
  const int64_t C = s.d_model, HD = int64_t(s.n_head) * s.d_head, KD = int64_t(s.n_kv_head) * s.d_head;
  const float std = s.init_std, resid_std = s.init_std / std::sqrt(2.f * float(s.n_layer));
  const Init normal{Init::normal, std}, resid{Init::normal, resid_std};
  auto add_norm = [&](const std::string& prefix) {
    Norm n;
    n.g = store.add(name(prefix, "g"), {C}, Role::gain, {Init::ones});
    if (s.norm == NormKind::layernorm) n.b = store.add(name(prefix, "b"), {C}, Role::bias, {Init::zeros});
    return n;
  };
  tok_emb_ = store.add("tok_emb", {s.vocab, C}, Role::embedding, normal);
  if (s.positions == Positions::learned) pos_emb_ = store.add("pos_emb", {s.context, C}, Role::embedding, normal);
  for (int l = 0; l < s.n_layer; ++l) {
    Block b;
    b.norm1 = add_norm(name("blocks", l, "norm1"));
    b.norm2 = add_norm(name("blocks", l, "norm2"));
    b.wq = store.add(name("blocks", l, "attn.wq"), {C, HD}, Role::matrix, {Init::normal, std * plan_.wq_init},
                     {s.n_head, s.d_head, 1});
    b.wk = store.add(name("blocks", l, "attn.wk"), {C, KD}, Role::matrix, normal, {s.n_kv_head, s.d_head, 1});
    b.wv = store.add(name("blocks", l, "attn.wv"), {C, KD}, Role::matrix, normal, {s.n_kv_head, s.d_head, 1});
    b.wo = store.add(name("blocks", l, "attn.wo"), {HD, C}, Role::matrix, resid, {s.n_head, s.d_head, 0});
    b.w1 = store.add(name("blocks", l, "mlp.w1"), {C, s.d_ff}, Role::matrix, normal);
    if (s.mlp == MlpKind::swiglu) b.w3 = store.add(name("blocks", l, "mlp.w3"), {C, s.d_ff}, Role::matrix, normal);
    b.w2 = store.add(name("blocks", l, "mlp.w2"), {s.d_ff, C}, Role::matrix, resid);
    blocks_.push_back(b);
  }
  norm_f_ = add_norm("norm_f");
  max_logits_.assign(size_t(s.n_layer) * s.n_head, 0.f);
}

Tensor Transformer::norm(const Norm& n, const Tensor& x, const uint16_t** y16) const {
  if (n.b) return layer_norm(x, n.g->tensor(), n.b->tensor(), spec_.norm_eps, y16);
  return rms_norm(x, n.g->tensor(), spec_.norm_eps, y16);
}

Tensor Transformer::hidden(const int32_t* ids, int B, int T, uint64_t dropout_seed, uint64_t step) {
  const auto& s = spec_;
  ATTN_CHECK(T >= 1 && T <= s.context, "Transformer: sequence length ", T, " outside [1, ", s.context, "]");
  const int64_t N = int64_t(B) * T, C = s.d_model;
  // Dropout streams: one per site, distinct per step (counter-based masks, see ops/elementwise.h).
  uint64_t site = 0;
  auto drop = [&](const Tensor& x) {
    return dropout(x, s.dropout, dropout_seed, mix64(step * 1024 + site++));
  };
  // A residual branch's output projection, added to the stream in the same product unless dropout
  // sits in between.
  auto residual = [&](const Tensor& stream, const Tensor& branch, Param& w) {
    if (s.dropout > 0.f && grad_enabled()) return add(stream, drop(linear(branch, w.tensor())));
    return residual_linear(stream, branch, w.tensor());
  };
  Tensor x = embedding(ids, N, tok_emb_->tensor());
  if (pos_emb_) x = add(x.reshape({B, T, C}), pos_emb_->tensor().slice(0, 0, T)).reshape({N, C});
  x = drop(x);
  std::fill(max_logits_.begin(), max_logits_.end(), -std::numeric_limits<float>::infinity());
  for (int l = 0; l < s.n_layer; ++l) {
    const Block& b = blocks_[l];
    const uint16_t* h16 = nullptr;  // bf16 products: h converted once, by the norm, for q, k and v
    Tensor h = norm(b.norm1, x, &h16);
    Tensor q = linear(h, b.wq->tensor(), h16).reshape({B, T, int64_t(s.n_head) * s.d_head}).split_last(s.n_head);
    Tensor k = linear(h, b.wk->tensor(), h16).reshape({B, T, int64_t(s.n_kv_head) * s.d_head}).split_last(s.n_kv_head);
    Tensor v = linear(h, b.wv->tensor(), h16).reshape({B, T, int64_t(s.n_kv_head) * s.d_head}).split_last(s.n_kv_head);
    if (s.positions == Positions::rope) {
      q = rope(q, s.rope_base);
      k = rope(k, s.rope_base);
    }
    if (plan_.query != 1.f) q = scale(q, plan_.query);
    AttentionOptions opt(plan_.logits);
    opt.softcap = s.softcap;
    opt.kernel = s.kernel;
    opt.max_logits = max_logits_.data() + size_t(l) * s.n_head;
    Tensor a = attention(q, k, v, opt).reshape({N, int64_t(s.n_head) * s.d_head});
    x = residual(x, a, *b.wo);
    h = norm(b.norm2, x, &h16);  // h16 read forward and by the weight gradient (and by w3's products)
    if (b.w3) {
      x = residual(x, swiglu(linear(h, b.w1->tensor(), h16), linear(h, b.w3->tensor(), h16)), *b.w2);
    } else {
      // Without dropout inside, the MLP is one op: gelu(h·w1) is never stored.
      x = s.dropout > 0.f && grad_enabled() ? residual(x, gelu(linear(h, b.w1->tensor(), h16)), *b.w2)
                                             : residual_gelu_mlp(x, h, b.w1->tensor(), b.w2->tensor(), h16);
    }
  }
  return norm(norm_f_, x);
}

Tensor Transformer::logits(const int32_t* ids, int B, int T, uint64_t dropout_seed, uint64_t step) {
  return matmul(hidden(ids, B, T, dropout_seed, step), tok_emb_->tensor(), /*trans_b=*/true);
}

Tensor Transformer::loss(const int32_t* ids, const int32_t* targets, int B, int T, uint64_t dropout_seed,
                         uint64_t step) {
  return cross_entropy(logits(ids, B, T, dropout_seed, step), targets);
}

}  // namespace attnlab
