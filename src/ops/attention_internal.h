#pragma once
// Internal to src/ops: pieces shared by the dense and flash attention kernels.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/transpose.h"
#include "kernels/vmath.h"
#include "ops/attention.h"

namespace attnlab::attn_detail {

// D: the q/k head size, Dv: the v (and output) head size.
struct Dims {
  int64_t B, T, S, H, Hkv, D, Dv, G;
};

// Strided [B, T|S, heads, D] element row (b, t, h).
inline const float* row(const Tensor& x, int64_t b, int64_t t, int64_t h) {
  return x.data + b * x.strides[0] + t * x.strides[1] + h * x.strides[2];
}
// Row (b, t, h) of x's gradient, which starts at `grad`.
inline float* grad_row(float* grad, const Tensor& x, int64_t b, int64_t t, int64_t h) {
  return grad + b * x.strides[0] + t * x.strides[1] + h * x.strides[2];
}

// Copies head (b, g) of a strided [B, S, Hkv, D] tensor (D = the tensor's head size) into dst [D, S]
// (transposed), so that the logits of one query against all keys are a loop vectorised over keys.
inline void gather_transposed(float* dst, const Tensor& x, int64_t b, int64_t g, const Dims& d) {
  kernels::transpose(dst, d.S, row(x, b, 0, g), x.strides[1], d.S, x.size(3));
}

// out[j] = x · col_j for j in [0, n), given the columns transposed: xt = [D, S] (row stride S).
// Vectorised over j; the attention kernels use it for q·k (through Kᵀ, D = Dqk) and dy·v (through
// Vᵀ, D = Dv).
inline void dot_rows(float* out, const float* x, const float* xt, int64_t n, int64_t D, const Dims& d) {
  std::fill(out, out + n, 0.f);
  for (int64_t e = 0; e < D; ++e) {
    const float xe = x[e];
    const float* col = xt + e * d.S;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += xe * col[j];
  }
}

// Raw dot products to logits on [0, n), n >= 1: s = cap(α s), the cap c·tanh(s/c) when softcap = c > 0.
// Returns max_j α s_j, the logit before the cap (QK-Clip's S_max), found in the same pass in 16
// lanes (GCC leaves a max reduction scalar even under omp simd).
inline float finish_logits(float* __restrict s, int64_t n, float alpha, float softcap) {
  constexpr int kL = 16;
  float lanes[kL];
  for (int e = 0; e < kL; ++e) lanes[e] = -std::numeric_limits<float>::infinity();
  const float inv = softcap > 0.f ? 1.f / softcap : 0.f;
  int64_t j = 0;
  if (softcap > 0.f) {
    for (; j + kL <= n; j += kL)
#pragma omp simd
      for (int e = 0; e < kL; ++e) {
        const float r = alpha * s[j + e];
        lanes[e] = lanes[e] > r ? lanes[e] : r;
        s[j + e] = softcap * kernels::fast_tanh(r * inv);
      }
  } else {
    for (; j + kL <= n; j += kL)
#pragma omp simd
      for (int e = 0; e < kL; ++e) {
        const float r = alpha * s[j + e];
        lanes[e] = lanes[e] > r ? lanes[e] : r;
        s[j + e] = r;
      }
  }
  float m = lanes[0];
  for (int e = 1; e < kL; ++e) m = m > lanes[e] ? m : lanes[e];
  for (; j < n; ++j) {
    const float r = alpha * s[j];
    m = m > r ? m : r;
    s[j] = softcap > 0.f ? softcap * kernels::fast_tanh(r * inv) : r;
  }
  return m;
}

// Logits of query row qi against keys [0, n): s[j] = cap(α q·k_j), given kt = Kᵀ [D, S]; returns the
// largest logit before the cap.
inline float logits_row(float* s, const float* qi, const float* kt, int64_t n, const Dims& d, float alpha,
                        float softcap) {
  dot_rows(s, qi, kt, n, d.D, d);
  return finish_logits(s, n, alpha, softcap);
}

// opt.max_logits[h] = max(itself, max over the batch of head_max[b, h]) when recording is asked for:
// each kernel finds its per-(batch, head) maxima in parallel, and this merges them in a fixed order.
inline void record_max_logits(const AttentionOptions& opt, const float* head_max, const Dims& d) {
  if (!opt.max_logits) return;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) opt.max_logits[h] = std::max(opt.max_logits[h], head_max[b * d.H + h]);
}

// The block softmax of one call (ops/attention.h), checked against the shapes.
struct BlockPlan {
  BlockSoftmax shape;
  int64_t P = 0;             // context positions the blocks cut
  const float* a = nullptr;  // learned: the scales [N, P] or [H, N, P]
  bool per_head = false;
  bool plain() const { return shape.plain(); }
  // none/learned: each block's softmax is kept apart (exact merges them into the full softmax).
  bool separate() const { return shape.mode != BlockSoftmaxMode::exact; }
  int blocks() const { return shape.blocks; }
  int64_t start(int b) const { return shape.start(b, P); }
  int64_t index(int64_t h, int b, int64_t t) const { return ((per_head ? h * shape.blocks : 0) + b) * P + t; }
  float weight(int64_t h, int b, int64_t t) const { return a ? std::fabs(a[index(h, b, t)]) : 1.f; }
  float sign(int64_t h, int b, int64_t t) const {
    const float x = a[index(h, b, t)];
    return x > 0.f ? 1.f : x < 0.f ? -1.f : 0.f;
  }
};
BlockPlan block_plan(const AttentionOptions& opt, const Dims& d);

// The scales' gradient from per-(batch, head) partial sums partial[B, H, N, P]: summed over the
// batch (and over heads unless per head) in a fixed order, then written to scales' gradient.
void store_scale_grads(const Tensor& scales, const float* partial, const BlockPlan& bp, const Dims& d);

// The sinks' gradient from per-(batch, head) partial sums [B, H], summed over the batch in order.
void store_sink_grads(const Tensor& sinks, const float* partial, const Dims& d);

// The flash kernel (attention_flash.cpp): same contract as attention().
Tensor attention_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d);

}  // namespace attnlab::attn_detail
