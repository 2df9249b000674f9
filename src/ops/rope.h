#pragma once
// rope: rotary position embedding [Su et al. 2021, RoFormer], pairs (2i, 2i+1) of each head
// rotated by angle θ = (t + pos_offset) · base^(-2i/D):
//   y[2i] = x[2i] cos θ - x[2i+1] sin θ,   y[2i+1] = x[2i] sin θ + x[2i+1] cos θ
// x: [B, T, H, D] (any strides, last dim dense; D even)   ->   y: [B, T, H, D] contiguous
#include <cmath>
#include <cstdint>

#include "tensor/tensor.h"

namespace attnlab {

Tensor rope(const Tensor& x, float base, int64_t pos_offset = 0);

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
}  // namespace ref

}  // namespace attnlab
