#pragma once
// Internal to src/ops: pieces shared by the dense and flash attention kernels.
#include <algorithm>
#include <cstdint>

#include "kernels/transpose.h"
#include "kernels/vmath.h"
#include "ops/attention.h"

namespace attnlab::attn_detail {

struct Dims {
  int64_t B, T, S, H, Hkv, D, G;
};

// Strided [B, T|S, heads, D] element row (b, t, h).
inline const float* row(const Tensor& x, int64_t b, int64_t t, int64_t h) {
  return x.data + b * x.strides[0] + t * x.strides[1] + h * x.strides[2];
}
// Row (b, t, h) of x's gradient, which starts at `grad`.
inline float* grad_row(float* grad, const Tensor& x, int64_t b, int64_t t, int64_t h) {
  return grad + b * x.strides[0] + t * x.strides[1] + h * x.strides[2];
}

// Copies head (b, g) of a strided [B, S, Hkv, D] tensor into dst [D, S] (transposed), so that the
// logits of one query against all keys are a loop vectorised over keys.
inline void gather_transposed(float* dst, const Tensor& x, int64_t b, int64_t g, const Dims& d) {
  kernels::transpose(dst, d.S, row(x, b, 0, g), x.strides[1], d.S, d.D);
}

// out[j] = x · col_j for j in [0, n), given the columns transposed: xt = [D, S] (row stride S).
// Vectorised over j; the attention kernels use it for q·k (through Kᵀ) and dy·v (through Vᵀ).
inline void dot_rows(float* out, const float* x, const float* xt, int64_t n, const Dims& d) {
  std::fill(out, out + n, 0.f);
  for (int64_t e = 0; e < d.D; ++e) {
    const float xe = x[e];
    const float* col = xt + e * d.S;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += xe * col[j];
  }
}

// Raw dot products to logits on [0, n): s = cap(α s), the cap c·tanh(s/c) when softcap = c > 0.
inline void finish_logits(float* s, int64_t n, float alpha, float softcap) {
  if (softcap > 0.f) {
    const float inv = 1.f / softcap;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) s[j] = softcap * kernels::fast_tanh(alpha * s[j] * inv);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) s[j] *= alpha;
  }
}

// Logits of query row qi against keys [0, n): s[j] = cap(α q·k_j), given kt = Kᵀ [D, S].
inline void logits_row(float* s, const float* qi, const float* kt, int64_t n, const Dims& d, float alpha,
                       float softcap) {
  dot_rows(s, qi, kt, n, d);
  finish_logits(s, n, alpha, softcap);
}

// opt.max_logits[h] = max(itself, max over the batch of head_max[b, h]) when recording is asked for:
// each kernel finds its per-(batch, head) maxima in parallel, and this merges them in a fixed order.
inline void record_max_logits(const AttentionOptions& opt, const float* head_max, const Dims& d) {
  if (!opt.max_logits) return;
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) opt.max_logits[h] = std::max(opt.max_logits[h], head_max[b * d.H + h]);
}

// The flash kernel (attention_flash.cpp): same contract as attention().
Tensor attention_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d);

}  // namespace attnlab::attn_detail
