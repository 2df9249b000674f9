#include "nn/attention.h"

#include <cmath>

#include "ops/ops.h"
#include "util/check.h"

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

AttentionOptions Attention::options(float* max_logits, const int32_t* docs, int64_t docs_stride) const {
  AttentionOptions opt(spec_.plan.logits);
  opt.softcap = spec_.softcap;
  opt.kernel = spec_.kernel;
  opt.max_logits = max_logits;
  opt.block = spec_.block;
  opt.block.context = spec_.context;
  if (block_scales_) opt.block_scales = block_scales_->tensor();
  if (sinks_) opt.sinks = sinks_->tensor();
  opt.output_scale = spec_.output_scale;
  opt.mask = spec_.mask;
  opt.mask.docs = docs;
  opt.mask.docs_stride = docs_stride;
  return opt;
}

void Attention::add_sinks(const std::string& prefix, ParamStore& store) {
  if (!spec_.sinks) return;
  ATTN_CHECK(spec_.block.mode == BlockSoftmaxMode::exact, "attention: sinks need the block softmax's mode exact");
  sinks_ = store.add(name(prefix, "sinks"), {spec_.n_head}, Role::bias, {Init::zeros});
}

void Attention::add_block_scales(const std::string& prefix, ParamStore& store) {
  const BlockSoftmax& b = spec_.block;
  ATTN_CHECK(b.blocks >= 1 && b.blocks <= spec_.context, "attention: ", b.blocks,
             " softmax blocks must be 1 to the context length ", spec_.context);
  if (b.mode != BlockSoftmaxMode::learned) return;
  Shape shape = spec_.block_per_head ? Shape{spec_.n_head, b.blocks, spec_.context} : Shape{b.blocks, spec_.context};
  block_scales_ = store.add(name(prefix, "softmax_scales"), shape, Role::scale, {Init::normal, 1.f});
}

namespace {

// A [1, S, heads, D] view of S cached positions whose rows are `row` floats apart.
Tensor cache_view(float* base, int64_t S, int64_t heads, int64_t D, int64_t row) {
  Tensor t(base, nullptr, {1, S, heads, D});
  t.strides = {S * row, row, D, 1};
  return t;
}

// MHA, and GQA when n_kv_head < n_head: query head h reads kv head h / (n_head / n_kv_head).
class MultiHeadAttention final : public Attention {
 public:
  MultiHeadAttention(const AttentionSpec& s, const std::string& prefix, ParamStore& store) : Attention(s) {
    ATTN_CHECK(s.n_kv_head > 0 && s.n_head % s.n_kv_head == 0, "attention: n_kv_head ", s.n_kv_head,
               " must divide n_head ", s.n_head);
    ATTN_CHECK(!s.rope || s.d_head % 2 == 0, "attention: rope needs an even d_head");
    const int64_t C = s.d_model, D = s.d_head;
    // nn.Linear's default: weights and bias U(−1/√in, 1/√in); else N(0, std²) weights, zero biases.
    const Init in_c = s.pytorch_init ? Init{Init::uniform, 1.f / std::sqrt(float(C))} : Init{Init::normal, s.init_std};
    const Init in_hd = s.pytorch_init ? Init{Init::uniform, 1.f / std::sqrt(float(s.n_head * D))}
                                      : Init{Init::normal, s.out_init_std};
    const Init q_init{in_c.kind, in_c.std * s.plan.wq_init};
    wq_ = store.add(name(prefix, "wq"), {C, s.n_head * D}, Role::matrix, q_init,
                    {s.n_head, s.d_head, 1, {{"q", 0, s.d_head}}});
    wk_ = store.add(name(prefix, "wk"), {C, s.n_kv_head * D}, Role::matrix, in_c,
                    {s.n_kv_head, s.d_head, 1, {{"k", 0, s.d_head}}});
    wv_ = store.add(name(prefix, "wv"), {C, s.n_kv_head * D}, Role::matrix, in_c, {s.n_kv_head, s.d_head, 1, {}});
    wo_ = store.add(name(prefix, "wo"), {s.n_head * D, C}, Role::matrix, in_hd, {s.n_head, s.d_head, 0, {}});
    if (s.bias) {
      const Init b_c = s.pytorch_init ? in_c : Init{Init::zeros}, b_hd = s.pytorch_init ? in_hd : Init{Init::zeros};
      bq_ = store.add(name(prefix, "bq"), {s.n_head * D}, Role::bias, b_c);
      bk_ = store.add(name(prefix, "bk"), {s.n_kv_head * D}, Role::bias, b_c);
      bv_ = store.add(name(prefix, "bv"), {s.n_kv_head * D}, Role::bias, b_c);
      bo_ = store.add(name(prefix, "bo"), {C}, Role::bias, b_hd);
    }
    for (int h = 0; h < s.n_head; ++h) targets_.push_back({wq_, QkClipTarget::query, h, "q"});
    for (int g = 0; g < s.n_kv_head; ++g) targets_.push_back({wk_, QkClipTarget::key, g, "k"});
    add_block_scales(prefix, store);
    add_sinks(prefix, store);
  }

  Tensor forward(const Tensor& h, const uint16_t* h16, int B, int T, float* max_logits,
                 const int32_t* docs) override {
    const AttentionSpec& s = spec_;
    const int64_t HD = int64_t(s.n_head) * s.d_head, KD = int64_t(s.n_kv_head) * s.d_head;
    Tensor q = project(h, *wq_, bq_, h16).reshape({B, T, HD}).split_last(s.n_head);
    Tensor k = project(h, *wk_, bk_, h16).reshape({B, T, KD}).split_last(s.n_kv_head);
    Tensor v = project(h, *wv_, bv_, h16).reshape({B, T, KD}).split_last(s.n_kv_head);
    if (s.rope) {
      q = rope(q, s.rope_base);
      k = rope(k, s.rope_base);
    }
    if (s.plan.query != 1.f) q = scale(q, s.plan.query);
    return attention(q, k, v, options(max_logits, docs, T)).reshape({int64_t(B) * T, HD});
  }

  int64_t cache_floats_per_token() const override { return 2 * int64_t(spec_.n_kv_head) * spec_.d_head; }

  Tensor decode(const Tensor& h, int T, int pos, float* cache, const int32_t* docs) override {
    const AttentionSpec& s = spec_;
    const int64_t HD = int64_t(s.n_head) * s.d_head, KD = int64_t(s.n_kv_head) * s.d_head, row = 2 * KD;
    Tensor q = project(h, *wq_, bq_).reshape({1, T, HD}).split_last(s.n_head);
    Tensor k = project(h, *wk_, bk_).reshape({1, T, KD}).split_last(s.n_kv_head);
    Tensor v = project(h, *wv_, bv_);
    if (s.rope) {
      q = rope(q, s.rope_base, pos);
      k = rope(k, s.rope_base, pos);
    }
    if (s.plan.query != 1.f) q = scale(q, s.plan.query);
    for (int t = 0; t < T; ++t) {  // k and v are contiguous [T, KD]
      std::copy(k.data + t * KD, k.data + (t + 1) * KD, cache + (pos + t) * row);
      std::copy(v.data + t * KD, v.data + (t + 1) * KD, cache + (pos + t) * row + KD);
    }
    const int64_t S = pos + T;
    return attention(q, cache_view(cache, S, s.n_kv_head, s.d_head, row),
                     cache_view(cache + KD, S, s.n_kv_head, s.d_head, row), options(nullptr, docs, S))
        .reshape({T, HD});
  }

 private:
  Param *wq_, *wk_, *wv_;
  Param *bq_ = nullptr, *bk_ = nullptr, *bv_ = nullptr;
};

// Multi-head latent attention [DeepSeek-V2, 2024, section 2.1], training form (no absorption).
class LatentAttention final : public Attention {
 public:
  LatentAttention(const AttentionSpec& s, const std::string& prefix, ParamStore& store) : Attention(s) {
    const MlaSizes& m = s.mla;
    ATTN_CHECK(!s.bias && !s.pytorch_init, "attention: MLA has no biases and no PyTorch init (model.bias, model.init)");
    ATTN_CHECK(m.kv_lora_rank > 0 && m.q_lora_rank >= 0 && m.qk_nope_head_dim > 0 && m.v_head_dim > 0 &&
                   m.qk_rope_head_dim > 0 && m.qk_rope_head_dim % 2 == 0,
               "attention: MLA sizes must be positive (q_lora_rank >= 0) with an even qk_rope_head_dim");
    const int64_t C = s.d_model, H = s.n_head, dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim,
                  r = m.kv_lora_rank;
    const Init normal{Init::normal, s.init_std}, query_init{Init::normal, s.init_std * s.plan.wq_init};
    const Heads query_heads{s.n_head, int(dn + dr), 1, {{"q_nope", 0, int(dn)}, {"q_rope", int(dn), int(dr)}}};
    if (m.q_lora_rank > 0) {
      wq_a_ = store.add(name(prefix, "wq_a"), {C, m.q_lora_rank}, Role::matrix, normal);
      q_norm_ = store.add(name(prefix, "q_norm.g"), {m.q_lora_rank}, Role::gain, {Init::ones});
      wq_ = store.add(name(prefix, "wq_b"), {m.q_lora_rank, H * (dn + dr)}, Role::matrix, query_init, query_heads);
    } else {
      wq_ = store.add(name(prefix, "wq"), {C, H * (dn + dr)}, Role::matrix, query_init, query_heads);
    }
    wkv_a_ = store.add(name(prefix, "wkv_a"), {C, r + dr}, Role::matrix, normal,
                       {1, int(r + dr), 1, {{"c_kv", 0, int(r)}, {"k_rope", int(r), int(dr)}}});
    kv_norm_ = store.add(name(prefix, "kv_norm.g"), {r}, Role::gain, {Init::ones});
    wkv_b_ = store.add(name(prefix, "wkv_b"), {r, H * (dn + dv)}, Role::matrix, normal,
                       {s.n_head, int(dn + dv), 1, {{"k_nope", 0, int(dn)}, {"v", int(dn), int(dv)}}});
    wo_ = store.add(name(prefix, "wo"), {H * dv, C}, Role::matrix, {Init::normal, s.out_init_std},
                    {s.n_head, int(dv), 0, {}});
    for (int h = 0; h < s.n_head; ++h) {
      targets_.push_back({wq_, QkClipTarget::query, h, "q_nope"});
      targets_.push_back({wq_, QkClipTarget::query_full, h, "q_rope"});  // k^R is shared: never rescaled
      targets_.push_back({wkv_b_, QkClipTarget::key, h, "k_nope"});
    }
    add_block_scales(prefix, store);
    add_sinks(prefix, store);
  }

  Tensor forward(const Tensor& h, const uint16_t* h16, int B, int T, float* max_logits,
                 const int32_t* docs) override {
    const AttentionSpec& s = spec_;
    const MlaSizes& m = s.mla;
    const int64_t H = s.n_head, dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim,
                  r = m.kv_lora_rank;
    Tensor q;
    if (wq_a_) {
      const uint16_t* a16 = nullptr;
      Tensor qa = rms_norm(linear(h, wq_a_->tensor(), h16), q_norm_->tensor(), s.norm_eps, &a16);
      q = linear(qa, wq_->tensor(), a16);
    } else {
      q = linear(h, wq_->tensor(), h16);
    }
    Tensor qh = q.reshape({B, T, H * (dn + dr)}).split_last(H);
    qh = rope_concat(qh.slice(3, 0, dn), qh.slice(3, dn, dr), s.rope_base);  // [q^C; RoPE(q^R)]
    Tensor kva = linear(h, wkv_a_->tensor(), h16);                          // [c | k^R]
    const uint16_t* c16 = nullptr;
    Tensor c = rms_norm(contiguous(kva.slice(1, 0, r)), kv_norm_->tensor(), s.norm_eps, &c16);
    Tensor kv = linear(c, wkv_b_->tensor(), c16).reshape({B, T, H * (dn + dv)}).split_last(H);
    Tensor k_rope = kva.reshape({B, T, r + dr}).slice(2, r, dr).split_last(1);  // [B, T, 1, dr]
    Tensor k = rope_concat(kv.slice(3, 0, dn), k_rope, s.rope_base);           // [k^C; RoPE(k^R)]
    Tensor v = kv.slice(3, dn, dv);
    if (s.plan.query != 1.f) qh = scale(qh, s.plan.query);
    return attention(qh, k, v, options(max_logits, docs, T)).reshape({int64_t(B) * T, H * dv});
  }

  int64_t cache_floats_per_token() const override { return spec_.mla.kv_lora_rank + spec_.mla.qk_rope_head_dim; }

  // The absorbed form [DeepSeek-V2, 2024, section 2.1.2]: q^C_h·k^C_h(j) = (q^C_h·W^Kᵀ_h)·c_j and
  // o_h = Σ_j p_hj v_h(j) = (Σ_j p_hj c_j)·W^V_h, so the cache holds c_kv and RoPE(k^R) only.
  Tensor decode(const Tensor& h, int T, int pos, float* cache, const int32_t* docs) override {
    const AttentionSpec& s = spec_;
    const MlaSizes& m = s.mla;
    const int64_t H = s.n_head, dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim, dv = m.v_head_dim,
                  r = m.kv_lora_rank, row = r + dr;
    Tensor q = wq_a_ ? linear(rms_norm(linear(h, wq_a_->tensor()), q_norm_->tensor(), s.norm_eps), wq_->tensor())
                     : linear(h, wq_->tensor());
    Tensor qh = q.reshape({1, T, H * (dn + dr)}).split_last(H);
    qh = rope_concat(qh.slice(3, 0, dn), qh.slice(3, dn, dr), s.rope_base, pos);
    if (s.plan.query != 1.f) qh = scale(qh, s.plan.query);
    Tensor kva = linear(h, wkv_a_->tensor());
    Tensor c = rms_norm(contiguous(kva.slice(1, 0, r)), kv_norm_->tensor(), s.norm_eps);
    Tensor k_rope = rope(kva.reshape({1, T, r + dr}).slice(2, r, dr).split_last(1), s.rope_base, pos);
    for (int t = 0; t < T; ++t) {
      std::copy(c.data + t * r, c.data + (t + 1) * r, cache + (pos + t) * row);
      std::copy(k_rope.data + t * dr, k_rope.data + (t + 1) * dr, cache + (pos + t) * row + r);
    }
    const float* w = wkv_b_->data;  // [r, H·(dn + dv)]: head h's k_nope columns, then its v columns
    const int64_t ld = H * (dn + dv);
    Tensor qa = new_output({1, T, H, row}, false);
#pragma omp parallel for collapse(2) if (T * H * r * dn > (1 << 16))
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < H; ++hh) {
        const float* qc = qh.data + (t * H + hh) * (dn + dr);
        float* out = qa.data + (t * H + hh) * row;
        for (int64_t e = 0; e < r; ++e) {  // q^C_h · W^Kᵀ_h
          const float* we = w + e * ld + hh * (dn + dv);
          float dot = 0.f;
#pragma omp simd reduction(+ : dot)
          for (int64_t x = 0; x < dn; ++x) dot += qc[x] * we[x];
          out[e] = dot;
        }
        std::copy(qc + dn, qc + dn + dr, out + r);  // RoPE(q^R_h)
      }
    const int64_t S = pos + T;
    Tensor o = attention(qa, cache_view(cache, S, 1, row, row), cache_view(cache, S, 1, r, row), options(nullptr, docs, S));
    Tensor y = new_output({T, H * dv}, false);
#pragma omp parallel for collapse(2) if (T * H * r * dv > (1 << 16))
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < H; ++hh) {
        const float* oh = o.data + (t * H + hh) * r;
        float* yh = y.data + t * H * dv + hh * dv;
        std::fill(yh, yh + dv, 0.f);
        for (int64_t e = 0; e < r; ++e) {  // o_h · W^V_h
          const float* we = w + e * ld + hh * (dn + dv) + dn;
#pragma omp simd
          for (int64_t x = 0; x < dv; ++x) yh[x] += oh[e] * we[x];
        }
      }
    return y;
  }

 private:
  Param* wq_ = nullptr;  // wq, or wq_b with a query low rank: the projection whose columns are heads
  Param* wq_a_ = nullptr;
  Param* q_norm_ = nullptr;
  Param *wkv_a_ = nullptr, *kv_norm_ = nullptr, *wkv_b_ = nullptr;
};

}  // namespace

std::unique_ptr<Attention> make_attention(const AttentionSpec& spec, const std::string& prefix, ParamStore& store) {
  switch (spec.type) {
    case AttentionType::mha: return std::make_unique<MultiHeadAttention>(spec, prefix, store);
    case AttentionType::mla: return std::make_unique<LatentAttention>(spec, prefix, store);
  }
  ATTN_CHECK(false, "make_attention: unknown attention type ", int(spec.type));
  return nullptr;
}

}  // namespace attnlab
