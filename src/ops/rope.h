#pragma once
// rope: rotary position embedding [Su et al. 2021, RoFormer], pairs (2i, 2i+1) of each head
// rotated by angle θ = (t + pos_offset) · base^(-2i/D):
//   y[2i] = x[2i] cos θ - x[2i+1] sin θ,   y[2i+1] = x[2i] sin θ + x[2i+1] cos θ
// x: [B, T, H, D] (any strides, last dim dense; D even)   ->   y: [B, T, H, D] contiguous
#include <cmath>
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace attnlab {

Tensor rope(const Tensor& x, float base, int64_t pos_offset = 0);

// rope_concat: per head, x's features followed by rope(r)'s, r rotated exactly as rope() does with
// its own head size Dr (MLA's decoupled RoPE [DeepSeek-V2, 2024]: q = [q^C; RoPE(q^R)] per head, and
// k = [k^C; RoPE(k^R)] with one k^R shared by every head):
//   y[b, t, h] = [x[b, t, h, :];  rope(r)[b, t, h', :]],   h' = h, or 0 when r has a single head
// x: [B, T, H, Dx]   r: [B, T, H or 1, Dr] (strided views, last dim dense; Dr even)
//   ->   y: [B, T, H, Dx + Dr] contiguous.  A shared r's gradient is the sum over the heads.
// pos_offset: the position of row t is t + pos_offset (decoding with a cache).
Tensor rope_concat(const Tensor& x, const Tensor& r, float base, int64_t pos_offset = 0);

namespace ref {
// Contiguous [B, T, H, D]. inverse = true applies the rotation by -θ (the backward).
template <class T>
void rope_apply(T* y, const T* x, int64_t B, int64_t Tn, int64_t H, int64_t D, double base, int64_t pos_offset,
                bool inverse) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < Tn; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          double th = double(t + pos_offset) * std::pow(base, -2.0 * double(i) / double(D));
          T c = T(std::cos(th)), s = T(inverse ? -std::sin(th) : std::sin(th));
          const T* xr = x + ((b * Tn + t) * H + h) * D;
          T* yr = y + ((b * Tn + t) * H + h) * D;
          T x0 = xr[2 * i], x1 = xr[2 * i + 1];
          yr[2 * i] = x0 * c - x1 * s;
          yr[2 * i + 1] = x0 * s + x1 * c;
        }
}
// Contiguous x [B, T, H, Dx], r [B, T, Hr, Dr] with Hr = H or 1, y [B, T, H, Dx + Dr].
template <class T>
void rope_concat_fwd(T* y, const T* x, const T* r, int64_t B, int64_t Tn, int64_t H, int64_t Hr, int64_t Dx,
                     int64_t Dr, double base) {
  std::vector<T> rot(B * Tn * Hr * Dr);
  rope_apply(rot.data(), r, B, Tn, Hr, Dr, base, 0, false);
  const int64_t Dy = Dx + Dr;
  for (int64_t n = 0; n < B * Tn; ++n)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t e = 0; e < Dx; ++e) y[(n * H + h) * Dy + e] = x[(n * H + h) * Dx + e];
      for (int64_t e = 0; e < Dr; ++e) y[(n * H + h) * Dy + Dx + e] = rot[(n * Hr + (Hr == 1 ? 0 : h)) * Dr + e];
    }
}
// fwd: y = [x; R(θ) r]  =>  dx += dy[..., :Dx];  dr += R(-θ) dy[..., Dx:] (summed over heads when shared)
template <class T>
void rope_concat_bwd(T* dx, T* dr, const T* dy, int64_t B, int64_t Tn, int64_t H, int64_t Hr, int64_t Dx, int64_t Dr,
                     double base) {
  const int64_t Dy = Dx + Dr;
  std::vector<T> tail(B * Tn * H * Dr), back(B * Tn * H * Dr);
  for (int64_t n = 0; n < B * Tn; ++n)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t e = 0; e < Dx; ++e) dx[(n * H + h) * Dx + e] += dy[(n * H + h) * Dy + e];
      for (int64_t e = 0; e < Dr; ++e) tail[(n * H + h) * Dr + e] = dy[(n * H + h) * Dy + Dx + e];
    }
  rope_apply(back.data(), tail.data(), B, Tn, H, Dr, base, 0, true);
  for (int64_t n = 0; n < B * Tn; ++n)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t e = 0; e < Dr; ++e) dr[(n * Hr + (Hr == 1 ? 0 : h)) * Dr + e] += back[(n * H + h) * Dr + e];
}
}  // namespace ref

}  // namespace attnlab
