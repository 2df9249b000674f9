#pragma once
// Scaled dot-product attention: a dense kernel (the probabilities of every head kept for backward)
// and a tiled flash kernel (online softmax over key blocks, backward recomputed from the saved
// log-sum-exp; memory linear in the sequence length). Both compute exactly this:
//   r[i,j] = α · q_i·k_j                      α = options.logit_scale (NOTE [attention scale])
//   s      = c · tanh(r / c)                  when options.softcap = c > 0   [Gemma 2]; else s = r
//   s[i,j] = -∞ for j > i + (S - T)           when causal (queries are the last T of S positions)
//   p_i    = softmax_j(s[i, :]),   y_i = Σ_j p[i,j] v_j
// q: [B, T, H, Dqk]   k: [B, S, Hkv, Dqk]   v: [B, S, Hkv, Dv] (strided views, last dim dense; H a
// multiple of Hkv: query head h reads kv head h / (H / Hkv), i.e. GQA; Dv may differ from Dqk, as
// in MLA)   ->   y: [B, T, H, Dv] contiguous.
// Max-logit recording (QK-Clip's S_max): when options.max_logits points at H floats, each receives
// max(itself, max over batch, query and unmasked key positions of r), the logit *before* the
// soft-cap (a capped logit never exceeds c, so it could never say a head needs clipping).
//
// NOTE [attention scale]: the multiplier on the logits is never implied by a kernel. It is the
// explicit logit_scale, which the model takes from its ScalePlan (nn/attention.h): the one
// place that decides, for each query_scaling mode, whether the scale goes into W_q's init, into q,
// or into the logits. Every kernel applies logit_scale exactly once and nothing else, and
// tests/nn/test_attention_scale.cpp checks each kernel × placement × attention type.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tensor/tensor.h"

namespace attnlab {

// The attention implementations. Each one computes the function above; the kernel-consistency
// tests iterate over all_attention_kernels().
enum class AttentionKernel { dense, flash };
inline constexpr AttentionKernel kAllAttentionKernels[] = {AttentionKernel::dense, AttentionKernel::flash};
const char* kernel_name(AttentionKernel k);

struct AttentionOptions {
  explicit AttentionOptions(float logit_scale_) : logit_scale(logit_scale_) {}
  float logit_scale;
  AttentionKernel kernel = AttentionKernel::dense;
  float softcap = 0.f;
  bool causal = true;
  float* max_logits = nullptr;
};

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt);

namespace ref {
// s[j] = cap(α q·k_j) for keys j < n (key j at k + j·stride), q·k over D; returns max_j α q·k_j
// (before the cap).
template <class T>
T logits_row(T* s, const T* q, const T* k, int64_t n, int64_t stride, int64_t D, T scale, T softcap) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    T dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += q[d] * k[j * stride + d];
    s[j] = scale * dot;
    m = std::max(m, s[j]);
    if (softcap > 0) s[j] = softcap * std::tanh(s[j] / softcap);
  }
  return m;
}
// Contiguous layouts q [B,T,H,D], k [B,S,Hkv,D], v [B,S,Hkv,Dv], y [B,T,H,Dv].
template <class T>
void attention_fwd(T* y, const T* q, const T* k, const T* v, int64_t B, int64_t Tq, int64_t S, int64_t H,
                   int64_t Hkv, int64_t D, int64_t Dv, T scale, T softcap, bool causal, T* max_logits) {
  const int64_t G = H / Hkv;
  std::vector<T> s(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t last = causal ? i + (S - Tq) : S - 1;
        const T* qi = q + ((b * Tq + i) * H + h) * D;
        const T r = logits_row(s.data(), qi, k + (b * S * Hkv + h / G) * D, last + 1, Hkv * D, D, scale, softcap);
        if (max_logits) max_logits[h] = std::max(max_logits[h], r);
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j <= last; ++j) m = std::max(m, s[j]);
        T l = 0;
        for (int64_t j = 0; j <= last; ++j) l += std::exp(s[j] - m);
        T* yi = y + ((b * Tq + i) * H + h) * Dv;
        for (int64_t d = 0; d < Dv; ++d) yi[d] = 0;
        for (int64_t j = 0; j <= last; ++j) {
          const T* vj = v + ((b * S + j) * Hkv + h / G) * Dv;
          T p = std::exp(s[j] - m) / l;
          for (int64_t d = 0; d < Dv; ++d) yi[d] += p * vj[d];
        }
      }
}
// fwd: y_i = Σ_j p_ij v_j, p_i = softmax(s_i), s = cap(α q·k)  =>
//   dv_j += Σ_i p_ij dy_i;  dp_ij = dy_i·v_j;  ds_ij = p_ij (dp_ij - Σ_j' p_ij' dp_ij');
//   through the cap: ds_raw = ds (1 - (s/c)²);  dq_i += α Σ_j ds_ij k_j;  dk_j += α Σ_i ds_ij q_i
template <class T>
void attention_bwd(T* dq, T* dk, T* dv, const T* dy, const T* q, const T* k, const T* v, int64_t B, int64_t Tq,
                   int64_t S, int64_t H, int64_t Hkv, int64_t D, int64_t Dv, T scale, T softcap, bool causal) {
  const int64_t G = H / Hkv;
  std::vector<T> s(S), p(S), dp(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t last = causal ? i + (S - Tq) : S - 1;
        const T* qi = q + ((b * Tq + i) * H + h) * D;
        const T* dyi = dy + ((b * Tq + i) * H + h) * Dv;
        logits_row(s.data(), qi, k + (b * S * Hkv + h / G) * D, last + 1, Hkv * D, D, scale, softcap);
        T m = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j <= last; ++j) m = std::max(m, s[j]);
        T l = 0;
        for (int64_t j = 0; j <= last; ++j) l += std::exp(s[j] - m);
        T rowdot = 0;
        for (int64_t j = 0; j <= last; ++j) {
          const T* vj = v + ((b * S + j) * Hkv + h / G) * Dv;
          p[j] = std::exp(s[j] - m) / l;
          dp[j] = 0;
          for (int64_t d = 0; d < Dv; ++d) dp[j] += dyi[d] * vj[d];
          rowdot += p[j] * dp[j];
        }
        for (int64_t j = 0; j <= last; ++j) {
          T ds = p[j] * (dp[j] - rowdot);
          if (softcap > 0) ds *= T(1) - (s[j] / softcap) * (s[j] / softcap);
          const int64_t kj = ((b * S + j) * Hkv + h / G) * D, vj = ((b * S + j) * Hkv + h / G) * Dv;
          for (int64_t d = 0; d < D; ++d) {
            if (dq) dq[((b * Tq + i) * H + h) * D + d] += scale * ds * k[kj + d];
            if (dk) dk[kj + d] += scale * ds * qi[d];
          }
          if (dv)
            for (int64_t d = 0; d < Dv; ++d) dv[vj + d] += p[j] * dyi[d];
        }
      }
}
}  // namespace ref

}  // namespace attnlab
