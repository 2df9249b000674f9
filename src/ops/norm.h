#pragma once
// layer_norm: y = g ⊙ (x - μ)·r + b,  μ = mean_c x,  r = 1/√(var_c x + eps)   [Ba et al. 2016]
// rms_norm:   y = g ⊙ x·r,            r = 1/√(mean_c x² + eps)              [Zhang & Sennrich 2019]
// x: [..., C] contiguous   g, b: [C]   ->  y: [..., C]    saved for backward: μ, r per row
#include <cmath>
#include <cstdint>

#include "tensor/tensor.h"

namespace attnlab {

// y16, when given, receives with bf16 products the output's bf16 copy for the products that read
// it, written in the same pass over the rows (the bytes of pack_operand(y), in the current arena),
// and null with f32 products.
Tensor layer_norm(const Tensor& x, const Tensor& g, const Tensor& b, float eps, const uint16_t** y16 = nullptr);
Tensor rms_norm(const Tensor& x, const Tensor& g, float eps, const uint16_t** y16 = nullptr);

namespace ref {
// b == nullptr: RMS norm (no centring, no bias).
template <class T>
void norm_fwd(T* y, const T* x, const T* g, const T* b, int64_t N, int64_t C, T eps) {
  for (int64_t n = 0; n < N; ++n) {
    const T* xr = x + n * C;
    T mu = 0, v = 0;
    if (b) {
      for (int64_t c = 0; c < C; ++c) mu += xr[c];
      mu /= T(C);
    }
    for (int64_t c = 0; c < C; ++c) v += (xr[c] - mu) * (xr[c] - mu);
    T r = T(1) / std::sqrt(v / T(C) + eps);
    for (int64_t c = 0; c < C; ++c) y[n * C + c] = g[c] * (xr[c] - mu) * r + (b ? b[c] : T(0));
  }
}
// fwd: y = g·x̂ + b, x̂ = (x - μ)r  =>  dx = r(g·dy - mean(g·dy) - x̂·mean(g·dy·x̂))  (no mean(g·dy)
// term for RMS);  dg += Σ_n dy·x̂;  db += Σ_n dy
template <class T>
void norm_bwd(T* dx, T* dg, T* db, const T* dy, const T* x, const T* g, bool centred, int64_t N, int64_t C, T eps) {
  for (int64_t n = 0; n < N; ++n) {
    const T *xr = x + n * C, *dyr = dy + n * C;
    T mu = 0, v = 0;
    if (centred) {
      for (int64_t c = 0; c < C; ++c) mu += xr[c];
      mu /= T(C);
    }
    for (int64_t c = 0; c < C; ++c) v += (xr[c] - mu) * (xr[c] - mu);
    T r = T(1) / std::sqrt(v / T(C) + eps);
    T m1 = 0, m2 = 0;
    for (int64_t c = 0; c < C; ++c) {
      T xh = (xr[c] - mu) * r;
      m1 += g[c] * dyr[c];
      m2 += g[c] * dyr[c] * xh;
    }
    m1 = centred ? m1 / T(C) : T(0);
    m2 /= T(C);
    for (int64_t c = 0; c < C; ++c) {
      T xh = (xr[c] - mu) * r;
      if (dx) dx[n * C + c] += r * (g[c] * dyr[c] - m1 - xh * m2);
      if (dg) dg[c] += dyr[c] * xh;
      if (db) db[c] += dyr[c];
    }
  }
}
}  // namespace ref

}  // namespace attnlab
