// Flash attention on the CPU [Dao et al. 2022, "FlashAttention"; Dao 2023, "FlashAttention-2"]:
// the function of ops/attention.h computed over key blocks with an online softmax, so no T×S
// matrix exists. Forward keeps per query row the running max m, the running sum l and the output
// accumulator; it saves only the log-sum-exp L = m + log l. Backward recomputes each probability
// as exp(s − L). Key blocks entirely above the causal diagonal are skipped.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/tape.h"
#include "ops/attention_internal.h"
#include "util/check.h"

namespace attnlab::attn_detail {
namespace {

constexpr int64_t kQueryBlock = 32;  // query rows sharing one pass over a key block
constexpr int64_t kKeyBlock = 128;   // keys per block: Kᵀ block and V block stay in L1/L2

// Last key index query row i may see.
inline int64_t last_key(int64_t i, const Dims& d, bool causal) { return causal ? i + (d.S - d.T) : d.S - 1; }

}  // namespace

Tensor attention_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d) {
  const float alpha = opt.logit_scale, cap = opt.softcap;
  const bool causal = opt.causal;
  Tensor y = new_output(q.shape, needs_grad(q, k, v));
  float* lse = current_arena().alloc_floats(d.B * d.H * d.T);  // [B, H, T]
  const int nt = omp_get_max_threads();
  // Per thread: Kᵀ of the head [D, S], the row accumulators m, l [Br] and O [Br, D], a logits row.
  const int64_t per_thread = d.D * d.S + 2 * kQueryBlock + kQueryBlock * d.D + kKeyBlock;
  float* scratch = current_arena().alloc_floats(nt * per_thread);
  float* head_max = current_arena().alloc_floats(d.B * d.H);

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t g = 0; g < d.Hkv; ++g) {
      float* kt = scratch + omp_get_thread_num() * per_thread;
      float* m = kt + d.D * d.S;
      float* l = m + kQueryBlock;
      float* acc = l + kQueryBlock;
      float* s = acc + kQueryBlock * d.D;
      gather_transposed(kt, k, b, g, d);
      for (int64_t hh = 0; hh < d.G; ++hh) {
        const int64_t h = g * d.G + hh;
        float hmax = -std::numeric_limits<float>::infinity();
        for (int64_t i0 = 0; i0 < d.T; i0 += kQueryBlock) {
          const int64_t i1 = std::min(d.T, i0 + kQueryBlock);
          std::fill(m, m + (i1 - i0), -std::numeric_limits<float>::infinity());
          std::fill(l, l + (i1 - i0), 0.f);
          std::fill(acc, acc + (i1 - i0) * d.D, 0.f);
          const int64_t block_last = last_key(i1 - 1, d, causal);
          for (int64_t j0 = 0; j0 <= block_last; j0 += kKeyBlock) {  // blocks past the diagonal: skipped
            const int64_t j1 = std::min(d.S, j0 + kKeyBlock);
            for (int64_t i = i0; i < i1; ++i) {
              const int64_t n = std::min(j1, last_key(i, d, causal) + 1) - j0;
              if (n <= 0) continue;
              logits_row(s, row(q, b, i, h), kt + j0, n, d, alpha, cap);
              float mb = s[0];
              for (int64_t j = 1; j < n; ++j) mb = std::max(mb, s[j]);
              const int64_t r = i - i0;
              const float m_new = std::max(m[r], mb);
              const float corr = kernels::fast_exp(m[r] - m_new);  // 0 when m was -inf
              float sum = 0.f;
#pragma omp simd reduction(+ : sum)
              for (int64_t j = 0; j < n; ++j) {
                s[j] = kernels::fast_exp(s[j] - m_new);
                sum += s[j];
              }
              l[r] = l[r] * corr + sum;
              m[r] = m_new;
              float* o = acc + r * d.D;
#pragma omp simd
              for (int64_t e = 0; e < d.D; ++e) o[e] *= corr;
              for (int64_t j = 0; j < n; ++j) {
                const float pj = s[j];
                const float* vj = row(v, b, j0 + j, g);
#pragma omp simd
                for (int64_t e = 0; e < d.D; ++e) o[e] += pj * vj[e];
              }
            }
          }
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t r = i - i0;
            const float inv_l = 1.f / l[r];
            float* yi = y.data + ((b * d.T + i) * d.H + h) * d.D;
            for (int64_t e = 0; e < d.D; ++e) yi[e] = acc[r * d.D + e] * inv_l;
            lse[(b * d.H + h) * d.T + i] = m[r] + std::log(l[r]);
            hmax = std::max(hmax, m[r]);
          }
        }
        head_max[b * d.H + h] = hmax;
      }
    }
  if (opt.max_logits)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) opt.max_logits[h] = std::max(opt.max_logits[h], head_max[b * d.H + h]);
  if (!y.requires_grad()) return y;

  // Backward scratch per thread: Kᵀ and Vᵀ [D, S], and two key-block rows.
  const int64_t bwd_per_thread = 2 * d.D * d.S + 2 * kKeyBlock;
  float* bscratch = current_arena().alloc_floats(nt * bwd_per_thread);
  record("attention", y, [q, k, v, y, lse, bscratch, bwd_per_thread, d, alpha, cap, causal] {
    // fwd: y_i = Σ_j p_ij v_j, p_ij = exp(s_ij − L_i), s = cap(α q·k)  =>
    //   dv_j += p_ij dy_i;  dp_ij = dy_i·v_j;  ds_ij = p_ij (dp_ij − dy_i·y_i) (1 − (s/c)²);
    //   dq_i += α Σ_j ds_ij k_j;  dk_j += α Σ_i ds_ij q_i
    const float* dy = y.grad_in();
    float* qg = q.requires_grad() ? q.grad_accum() : nullptr;
    float* kg = k.requires_grad() ? k.grad_accum() : nullptr;
    float* vg = v.requires_grad() ? v.grad_accum() : nullptr;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t g = 0; g < d.Hkv; ++g) {
        float* kt = bscratch + omp_get_thread_num() * bwd_per_thread;
        float* vt = kt + d.D * d.S;
        float* s = vt + d.D * d.S;
        float* dp = s + kKeyBlock;
        gather_transposed(kt, k, b, g, d);
        gather_transposed(vt, v, b, g, d);
        for (int64_t hh = 0; hh < d.G; ++hh) {
          const int64_t h = g * d.G + hh;
          for (int64_t i = 0; i < d.T; ++i) {
            const float* qi = row(q, b, i, h);
            const float* dyi = dy + ((b * d.T + i) * d.H + h) * d.D;
            const float* yi = y.data + ((b * d.T + i) * d.H + h) * d.D;
            float rowdot = 0.f;  // Σ_j p_ij dp_ij = dy_i · y_i
#pragma omp simd reduction(+ : rowdot)
            for (int64_t e = 0; e < d.D; ++e) rowdot += dyi[e] * yi[e];
            const float L = lse[(b * d.H + h) * d.T + i];
            float* dqi = qg ? grad_row(qg, q, b, i, h) : nullptr;
            const int64_t n_all = last_key(i, d, causal) + 1;
            for (int64_t j0 = 0; j0 < n_all; j0 += kKeyBlock) {
              const int64_t n = std::min(n_all, j0 + kKeyBlock) - j0;
              logits_row(s, qi, kt + j0, n, d, alpha, cap);
              dot_rows(dp, dyi, vt + j0, n, d);  // dp_j = dy_i · v_j
#pragma omp simd
              for (int64_t j = 0; j < n; ++j) {
                const float p = kernels::fast_exp(s[j] - L);
                float ds = p * (dp[j] - rowdot);
                if (cap > 0.f) ds *= 1.f - (s[j] / cap) * (s[j] / cap);
                dp[j] = alpha * ds;  // dp now holds α·ds
                s[j] = p;            // s now holds p
              }
              for (int64_t j = 0; j < n; ++j) {
                const float a = dp[j], pj = s[j];
                const float* kj = row(k, b, j0 + j, g);
                if (dqi) {
#pragma omp simd
                  for (int64_t e = 0; e < d.D; ++e) dqi[e] += a * kj[e];
                }
                if (kg) {
                  float* dkj = grad_row(kg, k, b, j0 + j, g);
#pragma omp simd
                  for (int64_t e = 0; e < d.D; ++e) dkj[e] += a * qi[e];
                }
                if (vg) {
                  float* dvj = grad_row(vg, v, b, j0 + j, g);
#pragma omp simd
                  for (int64_t e = 0; e < d.D; ++e) dvj[e] += pj * dyi[e];
                }
              }
            }
          }
        }
      }
  });
  return y;
}

}  // namespace attnlab::attn_detail
