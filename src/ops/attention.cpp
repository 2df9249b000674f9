#include "ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "autograd/tape.h"
#include "ops/attention_internal.h"
#include "kernels/vmath.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

using namespace attn_detail;
const char* kernel_name(AttentionKernel k) {
  switch (k) {
    case AttentionKernel::dense: return "dense";
    case AttentionKernel::flash: return "flash";
  }
  return "?";
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  PhaseScope phase(Phase::attention);
  ATTN_CHECK(q.rank() == 4 && k.rank() == 4 && v.rank() == 4, "attention: q ", q.shape, ", k ", k.shape, ", v ",
             v.shape, " must be [B, T, heads, D]");
  ATTN_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "attention: head dim must be dense");
  const Dims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3), 0};
  ATTN_CHECK(k.size(0) == d.B && k.size(3) == d.D, "attention: q ", q.shape, " and k ", k.shape, " do not match");
  ATTN_CHECK(v.size(0) == d.B && v.size(1) == d.S && v.size(2) == d.Hkv, "attention: k ", k.shape, " and v ", v.shape,
             " differ in batch, positions or heads");
  ATTN_CHECK(d.Hkv > 0 && d.H % d.Hkv == 0, "attention: ", d.H, " query heads are not a multiple of ", d.Hkv,
             " kv heads");
  ATTN_CHECK(!opt.causal || d.S >= d.T, "attention: causal with fewer keys (", d.S, ") than queries (", d.T, ")");
  ATTN_CHECK(opt.softcap >= 0.f, "attention: softcap ", opt.softcap, " must be >= 0");
  Dims dd = d;
  dd.G = d.H / d.Hkv;
  if (opt.kernel == AttentionKernel::flash) return attention_flash(q, k, v, opt, dd);
  const float alpha = opt.logit_scale, cap = opt.softcap;
  const bool causal = opt.causal;

  Tensor y = new_output({d.B, d.T, d.H, d.Dv}, needs_grad(q, k, v));
  const bool save = y.requires_grad();
  // p: [B, H, T, S] softmax probabilities kept for backward (this is the dense kernel).
  float* p = save ? current_arena().alloc_floats(d.B * d.H * d.T * d.S) : nullptr;
  const int nt = omp_get_max_threads();
  // Per thread: Kᵀ [D, S], Vᵀ [Dv, S], and two rows of S.
  const int64_t scratch_per_thread = (d.D + d.Dv) * d.S + 2 * d.S;
  float* scratch = current_arena().alloc_floats(nt * scratch_per_thread);
  float* head_max = current_arena().alloc_floats(d.B * d.H);

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t g = 0; g < d.Hkv; ++g) {
      float* kt = scratch + omp_get_thread_num() * scratch_per_thread;
      float* s = kt + (d.D + d.Dv) * d.S;
      gather_transposed(kt, k, b, g, dd);
      for (int64_t hh = 0; hh < dd.G; ++hh) {
        const int64_t h = g * dd.G + hh;
        float hmax = -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < d.T; ++i) {
          const int64_t n = causal ? i + (d.S - d.T) + 1 : d.S;
          hmax = std::max(hmax, logits_row(s, row(q, b, i, h), kt, n, dd, alpha, cap));
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < n; ++j) m = std::max(m, s[j]);
          float l = 0.f;
#pragma omp simd reduction(+ : l)
          for (int64_t j = 0; j < n; ++j) {
            s[j] = kernels::fast_exp(s[j] - m);
            l += s[j];
          }
          const float inv_l = 1.f / l;
          float* yi = y.data + ((b * d.T + i) * d.H + h) * d.Dv;
          std::fill(yi, yi + d.Dv, 0.f);
          for (int64_t j = 0; j < n; ++j) {
            const float pj = s[j] * inv_l;
            const float* vj = row(v, b, j, g);
#pragma omp simd
            for (int64_t e = 0; e < d.Dv; ++e) yi[e] += pj * vj[e];
            s[j] = pj;
          }
          if (p) std::memcpy(p + ((b * d.H + h) * d.T + i) * d.S, s, n * sizeof(float));
        }
        head_max[b * d.H + h] = hmax;
      }
    }
  record_max_logits(opt, head_max, d);

  if (save) {
    record("attention", y, [q, k, v, y, p, scratch, scratch_per_thread, dd, alpha, cap, causal] {
      // fwd: y_i = Σ_j p_ij v_j, p_i = softmax(s_i), s = cap(α q·k)  =>  see ref::attention_bwd
      const Dims& d = dd;
      const float* dy = y.grad_in();
      float* qg = q.grad_accum();
      float* kg = k.grad_accum();
      float* vg = v.grad_accum();
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t g = 0; g < d.Hkv; ++g) {
          float* kt = scratch + omp_get_thread_num() * scratch_per_thread;
          float* vt = kt + d.D * d.S;
          float* dp = vt + d.Dv * d.S;
          float* s = dp + d.S;
          gather_transposed(kt, k, b, g, d);
          gather_transposed(vt, v, b, g, d);
          for (int64_t hh = 0; hh < d.G; ++hh) {
            const int64_t h = g * d.G + hh;
            for (int64_t i = 0; i < d.T; ++i) {
              const int64_t n = causal ? i + (d.S - d.T) + 1 : d.S;
              const float* pi = p + ((b * d.H + h) * d.T + i) * d.S;
              const float* dyi = dy + ((b * d.T + i) * d.H + h) * d.Dv;
              const float* qi = row(q, b, i, h);
              dot_rows(dp, dyi, vt, n, d.Dv, d);  // dp_j = dy_i · v_j
              float rowdot = 0.f;
#pragma omp simd reduction(+ : rowdot)
              for (int64_t j = 0; j < n; ++j) rowdot += pi[j] * dp[j];
              if (cap > 0.f) logits_row(s, qi, kt, n, d, alpha, cap);  // capped logits, for 1 - (s/c)²
#pragma omp simd
              for (int64_t j = 0; j < n; ++j) {
                float ds = pi[j] * (dp[j] - rowdot);
                if (cap > 0.f) ds *= 1.f - (s[j] / cap) * (s[j] / cap);
                dp[j] = alpha * ds;  // dp now holds α·ds_ij
              }
              float* dqi = qg ? grad_row(qg, q, b, i, h) : nullptr;
              for (int64_t j = 0; j < n; ++j) {
                const float a = dp[j], pij = pi[j];
                const float* kj = row(k, b, j, g);
                if (dqi) {
#pragma omp simd
                  for (int64_t e = 0; e < d.D; ++e) dqi[e] += a * kj[e];
                }
                if (kg) {
                  float* dkj = grad_row(kg, k, b, j, g);
#pragma omp simd
                  for (int64_t e = 0; e < d.D; ++e) dkj[e] += a * qi[e];
                }
                if (vg) {
                  float* dvj = grad_row(vg, v, b, j, g);
#pragma omp simd
                  for (int64_t e = 0; e < d.Dv; ++e) dvj[e] += pij * dyi[e];
                }
              }
            }
          }
        }
    });
  }
  return y;
}

}  // namespace attnlab
