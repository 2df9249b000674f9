#include "ops/norm.h"

#include <omp.h>

#include <algorithm>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {
namespace {

// One implementation for both norms: `centred` selects LayerNorm (mean subtracted, bias) or RMSNorm.
Tensor norm_op(const char* op, const Tensor& x, const Tensor& g, const Tensor* b, float eps, const uint16_t** y16) {
  PhaseScope phase(Phase::norm_act);
  ATTN_CHECK(x.is_contiguous(), op, ": x ", x.shape, " must be contiguous");
  ATTN_CHECK(g.numel() == x.cols(), op, ": g ", g.shape, " does not match x ", x.shape);
  ATTN_CHECK(!b || b->numel() == x.cols(), op, ": b ", b->shape, " does not match x ", x.shape);
  const bool centred = b != nullptr;
  const int64_t N = x.rows(), C = x.cols();
  Tensor bias = b ? *b : Tensor();
  Tensor y = new_output(x.shape, needs_grad(x, g) || (b && needs_grad(*b)));
  float* mean = current_arena().alloc_floats(N);
  float* rstd = current_arena().alloc_floats(N);
  const float *xd = x.data, *gd = g.data, *bd = bias.data;
  float* yd = y.data;
  uint16_t* y16d = nullptr;
  if (y16) {
    if (kernels::matmul_precision() == kernels::MatmulPrecision::bf16)
      y16d = static_cast<uint16_t*>(current_arena().alloc_bytes(size_t(N * C) * sizeof(uint16_t)));
    *y16 = y16d;
  }
#pragma omp parallel for if (N * C > (1 << 14))
  for (int64_t n = 0; n < N; ++n) {
    const float* xr = xd + n * C;
    float mu = 0.f, v = 0.f;
    if (centred) {
#pragma omp simd reduction(+ : mu)
      for (int64_t c = 0; c < C; ++c) mu += xr[c];
      mu /= float(C);
    }
#pragma omp simd reduction(+ : v)
    for (int64_t c = 0; c < C; ++c) v += (xr[c] - mu) * (xr[c] - mu);
    float r = 1.f / std::sqrt(v / float(C) + eps);
    mean[n] = mu;
    rstd[n] = r;
    float* yr = yd + n * C;
    if (centred) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = gd[c] * (xr[c] - mu) * r + bd[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = gd[c] * xr[c] * r;
    }
    if (y16d) {
      uint16_t* y16r = y16d + n * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) y16r[c] = kernels::to_bf16(yr[c]);
    }
  }
  if (!y.requires_grad()) return y;
  // Per-thread partial sums for dg/db over fixed row ranges, reduced in thread order: bit-identical
  // for a given thread count.
  const int nt = omp_get_max_threads();
  float* partial = current_arena().alloc_floats(int64_t(nt) * 2 * C);
  record(op, y, [x, g, bias, y, mean, rstd, partial, nt, N, C, centred] {
    // fwd: y = g·x̂ + b, x̂ = (x - μ)r  =>  dx = r(g·dy - mean(g·dy) - x̂·mean(g·dy·x̂))
    const bool want_g = g.requires_grad(), want_b = centred && bias.requires_grad();
    const float* dy = y.grad_in();
    const GradSink dx = x.requires_grad() ? x.grad_out() : GradSink{};
#pragma omp parallel num_threads(nt) if (N * C > (1 << 14))
    {
      const int t = omp_get_thread_num(), team = omp_get_num_threads();
      float* pg = partial + int64_t(t) * 2 * C;
      float* pb = pg + C;
      std::fill(pg, pg + 2 * C, 0.f);
      const int64_t lo = N * t / team, hi = N * (t + 1) / team;
      for (int64_t n = lo; n < hi; ++n) {
        const float *xr = x.data + n * C, *dyr = dy + n * C, *gd = g.data;
        const float mu = mean[n], r = rstd[n];
        float m1 = 0.f, m2 = 0.f;
#pragma omp simd reduction(+ : m1, m2)
        for (int64_t c = 0; c < C; ++c) {
          float gdy = gd[c] * dyr[c];
          m1 += gdy;
          m2 += gdy * (xr[c] - mu) * r;
        }
        m1 = centred ? m1 / float(C) : 0.f;
        m2 /= float(C);
        if (dx.ptr) {
          float* dxr = dx.ptr + n * C;
          if (dx.accumulate) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) dxr[c] += r * (gd[c] * dyr[c] - m1 - (xr[c] - mu) * r * m2);
          } else {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) dxr[c] = r * (gd[c] * dyr[c] - m1 - (xr[c] - mu) * r * m2);
          }
        }
        if (want_g) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) pg[c] += dyr[c] * (xr[c] - mu) * r;
        }
        if (want_b) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) pb[c] += dyr[c];
        }
      }
      if (team < nt && t == 0)  // a team smaller than planned: clear the unused partials
        std::fill(partial + int64_t(team) * 2 * C, partial + int64_t(nt) * 2 * C, 0.f);
    }
    float* gg = g.grad_accum();
    float* bg = bias.grad_accum();  // null for RMSNorm (no bias)
    for (int t = 0; t < nt; ++t) {
      const float* pg = partial + int64_t(t) * 2 * C;
      if (gg)
        for (int64_t c = 0; c < C; ++c) gg[c] += pg[c];
      if (bg)
        for (int64_t c = 0; c < C; ++c) bg[c] += pg[C + c];
    }
  });
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& g, const Tensor& b, float eps, const uint16_t** y16) {
  return norm_op("layer_norm", x, g, &b, eps, y16);
}

Tensor rms_norm(const Tensor& x, const Tensor& g, float eps, const uint16_t** y16) {
  return norm_op("rms_norm", x, g, nullptr, eps, y16);
}

}  // namespace attnlab
