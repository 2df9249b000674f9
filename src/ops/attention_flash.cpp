// Flash attention on the CPU [Dao et al. 2022, "FlashAttention"; Dao 2023, "FlashAttention-2"]:
// the function of ops/attention.h computed over key blocks with an online softmax, so no T×S
// matrix exists. Forward keeps, per query row, the running max m, the running sum l and the
// output accumulator; it saves only the log-sum-exp L = m + log l. Backward recomputes each
// probability as exp(s − L). Key blocks entirely above the causal diagonal are skipped.
//
// Layout for speed: per (batch, kv head) a thread copies K and V into zero-padded scratch (Kᵀ
// [Dp, Sp] for q·k, row-major [Sp, Dp] for P·V; Dp = D rounded up to 16, Sp = S rounded up to
// kKeyTile), and processes kRows query rows at a time. Products are register tiles with
// compile-time sizes (tile_abt, tile_ab_acc, tile_atb_acc), which the compiler keeps in vector
// registers; the zero padding contributes nothing. Backward follows FlashAttention-2: each thread
// owns one kv head's dK and dV accumulators across its query heads and all query rows.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/tape.h"
#include "ops/attention_internal.h"
#include "util/check.h"

namespace attnlab::attn_detail {
namespace {

constexpr int kRows = 8;         // query rows per register tile
constexpr int kKeyTile = 32;     // keys per register tile of logits
constexpr int kLanes = 16;       // head-dim chunk of the output tiles
constexpr int64_t kKeyBlock = 128;  // keys per online-softmax update

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Last key index query row i may see.
inline int64_t last_key(int64_t i, const Dims& d, bool causal) { return causal ? i + (d.S - d.T) : d.S - 1; }

// s[r, j] = Σ_e a[r, e] · bt[e, j] for r < kRows, j < kKeyTile; a is [kRows, Dp], bt has row stride ldb.
inline void tile_abt(float* __restrict s, int64_t lds, const float* __restrict a, int64_t Dp,
                     const float* __restrict bt, int64_t ldb) {
  float acc[kRows][kKeyTile] = {};
  for (int64_t e = 0; e < Dp; ++e) {
    const float* b = bt + e * ldb;
    for (int r = 0; r < kRows; ++r) {
      const float ar = a[r * Dp + e];
#pragma omp simd
      for (int j = 0; j < kKeyTile; ++j) acc[r][j] += ar * b[j];
    }
  }
  for (int r = 0; r < kRows; ++r)
#pragma omp simd
    for (int j = 0; j < kKeyTile; ++j) s[r * lds + j] = acc[r][j];
}

// o[r, :] += Σ_{j<n} p[r, j] · x[j, :] for r < kRows; o is [kRows, Dp], x is [n, Dp], p has row stride ldp.
inline void tile_ab_acc(float* __restrict o, const float* __restrict p, int64_t ldp, const float* __restrict x,
                        int64_t n, int64_t Dp) {
  for (int64_t e0 = 0; e0 < Dp; e0 += kLanes) {
    float acc[kRows][kLanes];
    for (int r = 0; r < kRows; ++r)
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) acc[r][e] = o[r * Dp + e0 + e];
    for (int64_t j = 0; j < n; ++j) {
      const float* xj = x + j * Dp + e0;
      for (int r = 0; r < kRows; ++r) {
        const float pr = p[r * ldp + j];
#pragma omp simd
        for (int e = 0; e < kLanes; ++e) acc[r][e] += pr * xj[e];
      }
    }
    for (int r = 0; r < kRows; ++r)
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) o[r * Dp + e0 + e] = acc[r][e];
  }
}

// o[j, :] += Σ_{r<kRows} p[r, j] · x[r, :] for j < n; o is [n, Dp], x is [kRows, Dp].
inline void tile_atb_acc(float* __restrict o, const float* __restrict p, int64_t ldp, const float* __restrict x,
                         int64_t n, int64_t Dp) {
  for (int64_t e0 = 0; e0 < Dp; e0 += kLanes) {
    float xr[kRows][kLanes];
    for (int r = 0; r < kRows; ++r)
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) xr[r][e] = x[r * Dp + e0 + e];
    for (int64_t j = 0; j < n; ++j) {
      float* oj = o + j * Dp + e0;
      float acc[kLanes];
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) acc[e] = oj[e];
      for (int r = 0; r < kRows; ++r) {
        const float pr = p[r * ldp + j];
#pragma omp simd
        for (int e = 0; e < kLanes; ++e) acc[e] += pr * xr[r][e];
      }
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) oj[e] = acc[e];
    }
  }
}

// dst[0, n) = src, or += src when accumulating into a gradient written before.
inline void store_row(float* __restrict dst, const float* __restrict src, int64_t n, bool accumulate) {
  if (accumulate) {
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) dst[e] += src[e];
  } else {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  }
}

// Padded copies of kv head (b, g): rows [Sp, Dp] and/or transposed [Dp, Sp]; padding is zero.
void gather_padded(float* rows, float* cols, const Tensor& x, int64_t b, int64_t g, const Dims& d, int64_t Dp,
                   int64_t Sp) {
  const bool padded = Sp > d.S || Dp > d.D;
  if (rows) {
    if (padded) std::memset(rows, 0, size_t(Sp * Dp) * sizeof(float));
    for (int64_t j = 0; j < d.S; ++j) std::memcpy(rows + j * Dp, row(x, b, j, g), size_t(d.D) * sizeof(float));
  }
  if (cols) {
    if (padded) std::memset(cols, 0, size_t(Sp * Dp) * sizeof(float));
    kernels::transpose(cols, Sp, row(x, b, 0, g), x.strides[1], d.S, d.D);
  }
}

// kRows query rows [i0, i0 + n) of head (b, h) into a zero-padded [kRows, Dp] tile.
void gather_query_rows(float* dst, const float* base, const Tensor& x, int64_t b, int64_t i0, int64_t n, int64_t h,
                       const Dims& d, int64_t Dp) {
  if (n < kRows || Dp > d.D) std::memset(dst, 0, size_t(kRows * Dp) * sizeof(float));
  for (int64_t r = 0; r < n; ++r)
    std::memcpy(dst + r * Dp, base + b * x.strides[0] + (i0 + r) * x.strides[1] + h * x.strides[2],
                size_t(d.D) * sizeof(float));
}

// Logit tiles of query tile a against keys [j0, j0 + nb): s [kRows, kKeyBlock].
inline void block_logits(float* s, const float* a, const float* bt, int64_t j0, int64_t nb, int64_t Dp, int64_t Sp) {
  for (int64_t jt = 0; jt < nb; jt += kKeyTile) tile_abt(s + jt, kKeyBlock, a, Dp, bt + j0 + jt, Sp);
}

}  // namespace

Tensor attention_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d) {
  const float alpha = opt.logit_scale, cap = opt.softcap;
  const bool causal = opt.causal;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  Tensor y = new_output(q.shape, needs_grad(q, k, v));
  float* lse = current_arena().alloc_floats(d.B * d.H * d.T);  // [B, H, T]
  const int nt = omp_get_max_threads();
  const int64_t Dp = round_up(d.D, kLanes), Sp = round_up(d.S, kKeyTile);
  // Per thread: Kᵀ [Dp, Sp], V [Sp, Dp], the query tile and accumulator [kRows, Dp], a logits
  // block [kRows, kKeyBlock], and m, l [kRows].
  const int64_t per_thread = 2 * Sp * Dp + 2 * kRows * Dp + kRows * kKeyBlock + 2 * kRows;
  float* scratch = current_arena().alloc_floats(nt * per_thread);
  float* head_max = current_arena().alloc_floats(d.B * d.H);

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t g = 0; g < d.Hkv; ++g) {
      float* kt = scratch + omp_get_thread_num() * per_thread;
      float* vr = kt + Sp * Dp;
      float* qb = vr + Sp * Dp;
      float* acc = qb + kRows * Dp;
      float* s = acc + kRows * Dp;
      float* m = s + kRows * kKeyBlock;
      float* l = m + kRows;
      gather_padded(nullptr, kt, k, b, g, d, Dp, Sp);
      gather_padded(vr, nullptr, v, b, g, d, Dp, Sp);
      for (int64_t hh = 0; hh < d.G; ++hh) {
        const int64_t h = g * d.G + hh;
        float hmax = kNegInf;
        for (int64_t i0 = 0; i0 < d.T; i0 += kRows) {
          const int64_t rows = std::min<int64_t>(kRows, d.T - i0);
          gather_query_rows(qb, q.data, q, b, i0, rows, h, d, Dp);
          std::fill(m, m + kRows, kNegInf);
          std::fill(l, l + kRows, 0.f);
          std::fill(acc, acc + kRows * Dp, 0.f);
          const int64_t keys = last_key(i0 + rows - 1, d, causal) + 1;  // blocks past the diagonal: skipped
          for (int64_t j0 = 0; j0 < keys; j0 += kKeyBlock) {
            const int64_t nb = std::min(keys, j0 + kKeyBlock) - j0;
            block_logits(s, qb, kt, j0, nb, Dp, Sp);
            for (int64_t r = 0; r < kRows; ++r) {
              float* sr = s + r * kKeyBlock;
              const int64_t n = r < rows ? std::min(nb, last_key(i0 + r, d, causal) + 1 - j0) : 0;
              if (n <= 0) {  // no key of this block is visible to row r: it adds nothing
                std::fill(sr, sr + nb, 0.f);
                continue;
              }
              finish_logits(sr, n, alpha, cap);
              float mb = sr[0];
              for (int64_t j = 1; j < n; ++j) mb = std::max(mb, sr[j]);
              const float m_new = std::max(m[r], mb);
              const float corr = kernels::fast_exp(m[r] - m_new);  // 0 when m was -inf
              float sum = 0.f;
#pragma omp simd reduction(+ : sum)
              for (int64_t j = 0; j < n; ++j) {
                sr[j] = kernels::fast_exp(sr[j] - m_new);
                sum += sr[j];
              }
              std::fill(sr + n, sr + nb, 0.f);
              l[r] = l[r] * corr + sum;
              m[r] = m_new;
              float* o = acc + r * Dp;
#pragma omp simd
              for (int64_t e = 0; e < Dp; ++e) o[e] *= corr;
            }
            tile_ab_acc(acc, s, kKeyBlock, vr + j0 * Dp, nb, Dp);
          }
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            const float inv_l = 1.f / l[r];
            float* yi = y.data + ((b * d.T + i) * d.H + h) * d.D;
            for (int64_t e = 0; e < d.D; ++e) yi[e] = acc[r * Dp + e] * inv_l;
            lse[(b * d.H + h) * d.T + i] = m[r] + std::log(l[r]);
            hmax = std::max(hmax, m[r]);
          }
        }
        head_max[b * d.H + h] = hmax;
      }
    }
  record_max_logits(opt, head_max, d);
  if (!y.requires_grad()) return y;

  // Backward scratch per thread: Kᵀ and Vᵀ [Dp, Sp], K [Sp, Dp], the dK and dV accumulators
  // [Sp, Dp], the q, dy and dq tiles [kRows, Dp], and the p and ds blocks [kRows, kKeyBlock].
  const int64_t bwd_per_thread = 5 * Sp * Dp + 3 * kRows * Dp + 2 * kRows * kKeyBlock;
  float* bscratch = current_arena().alloc_floats(nt * bwd_per_thread);
  record("attention", y, [q, k, v, y, lse, bscratch, bwd_per_thread, d, Dp, Sp, alpha, cap, causal] {
    // fwd: y_i = Σ_j p_ij v_j, p_ij = exp(s_ij − L_i), s = cap(α q·k)  =>
    //   dv_j += p_ij dy_i;  dp_ij = dy_i·v_j;  ds_ij = p_ij (dp_ij − dy_i·y_i) (1 − (s/c)²);
    //   dq_i += α Σ_j ds_ij k_j;  dk_j += α Σ_i ds_ij q_i
    const float* dy = y.grad_in();
    // Each element of dq, dk and dv is stored exactly once below, so a first write overwrites
    // (no zero-fill, no read of the old values).
    const GradSink qg = q.requires_grad() ? q.grad_out() : GradSink{};
    const GradSink kg = k.requires_grad() ? k.grad_out() : GradSink{};
    const GradSink vg = v.requires_grad() ? v.grad_out() : GradSink{};
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t g = 0; g < d.Hkv; ++g) {
        float* kt = bscratch + omp_get_thread_num() * bwd_per_thread;
        float* vt = kt + Sp * Dp;
        float* kr = vt + Sp * Dp;
        float* dk = kr + Sp * Dp;
        float* dv = dk + Sp * Dp;
        float* qb = dv + Sp * Dp;
        float* dyb = qb + kRows * Dp;
        float* dq = dyb + kRows * Dp;
        float* p = dq + kRows * Dp;
        float* ds = p + kRows * kKeyBlock;
        gather_padded(kr, kt, k, b, g, d, Dp, Sp);
        gather_padded(nullptr, vt, v, b, g, d, Dp, Sp);
        std::fill(dk, dk + Sp * Dp, 0.f);
        std::fill(dv, dv + Sp * Dp, 0.f);
        for (int64_t hh = 0; hh < d.G; ++hh) {
          const int64_t h = g * d.G + hh;
          for (int64_t i0 = 0; i0 < d.T; i0 += kRows) {
            const int64_t rows = std::min<int64_t>(kRows, d.T - i0);
            gather_query_rows(qb, q.data, q, b, i0, rows, h, d, Dp);
            gather_query_rows(dyb, dy, y, b, i0, rows, h, d, Dp);
            float rowdot[kRows] = {}, L[kRows] = {};  // Σ_j p_ij dp_ij = dy_i · y_i
            for (int64_t r = 0; r < rows; ++r) {
              const float* yi = y.data + ((b * d.T + i0 + r) * d.H + h) * d.D;
              float dot = 0.f;
#pragma omp simd reduction(+ : dot)
              for (int64_t e = 0; e < d.D; ++e) dot += dyb[r * Dp + e] * yi[e];
              rowdot[r] = dot;
              L[r] = lse[(b * d.H + h) * d.T + i0 + r];
            }
            std::fill(dq, dq + kRows * Dp, 0.f);
            const int64_t keys = last_key(i0 + rows - 1, d, causal) + 1;
            for (int64_t j0 = 0; j0 < keys; j0 += kKeyBlock) {
              const int64_t nb = std::min(keys, j0 + kKeyBlock) - j0;
              block_logits(p, qb, kt, j0, nb, Dp, Sp);    // s, turned into p below
              block_logits(ds, dyb, vt, j0, nb, Dp, Sp);  // dp_ij = dy_i · v_j, turned into α·ds
              for (int64_t r = 0; r < kRows; ++r) {
                float *pr = p + r * kKeyBlock, *dsr = ds + r * kKeyBlock;
                const int64_t n = r < rows ? std::max<int64_t>(0, std::min(nb, last_key(i0 + r, d, causal) + 1 - j0)) : 0;
                finish_logits(pr, n, alpha, cap);
                const float Lr = L[r], rd = rowdot[r];
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) {
                  const float pj = kernels::fast_exp(pr[j] - Lr);
                  float dsj = pj * (dsr[j] - rd);
                  if (cap > 0.f) dsj *= 1.f - (pr[j] / cap) * (pr[j] / cap);
                  dsr[j] = alpha * dsj;
                  pr[j] = pj;
                }
                std::fill(pr + n, pr + nb, 0.f);
                std::fill(dsr + n, dsr + nb, 0.f);
              }
              tile_ab_acc(dq, ds, kKeyBlock, kr + j0 * Dp, nb, Dp);   // dq_i += α Σ_j ds_ij k_j
              tile_atb_acc(dk + j0 * Dp, ds, kKeyBlock, qb, nb, Dp);  // dk_j += α Σ_i ds_ij q_i
              tile_atb_acc(dv + j0 * Dp, p, kKeyBlock, dyb, nb, Dp);  // dv_j += Σ_i p_ij dy_i
            }
            if (qg.ptr)
              for (int64_t r = 0; r < rows; ++r) store_row(grad_row(qg.ptr, q, b, i0 + r, h), dq + r * Dp, d.D, qg.accumulate);
          }
        }
        for (int64_t j = 0; j < d.S; ++j) {
          if (kg.ptr) store_row(grad_row(kg.ptr, k, b, j, g), dk + j * Dp, d.D, kg.accumulate);
          if (vg.ptr) store_row(grad_row(vg.ptr, v, b, j, g), dv + j * Dp, d.D, vg.accumulate);
        }
      }
  });
  return y;
}

}  // namespace attnlab::attn_detail
