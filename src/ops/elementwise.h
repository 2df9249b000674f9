#pragma once
// Pointwise ops. Inputs are contiguous; outputs are new contiguous tensors.
//   add(a, b):      y = a + b, b's shape a suffix of a's (broadcast over leading dims: bias, positions)
//   scale(x, s):    y = s · x
//   mul(a, b):      y = a ⊙ b (same shape)
//   gelu(x):        y = ½x(1 + tanh(√(2/π)(x + 0.044715x³)))   [Hendrycks & Gimpel 2016, tanh form]
//   silu(x):        y = x·σ(x)
//   swiglu(a, b):   y = silu(a) ⊙ b (same shape: gate a, up b)   [Shazeer 2020]
//   dropout(x, p):  y = x ⊙ m / (1 - p), m_i = [u(seed, stream, i) >= p], counter-based (rng.h)
#include <cmath>
#include <cstdint>

#include "tensor/tensor.h"

namespace attnlab {

Tensor add(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float s);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor gelu(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor swiglu(const Tensor& a, const Tensor& b);
// Identity when p == 0 or grad mode is off (evaluation). `stream` must differ per call site and
// step so masks are independent; the mask is recomputed in backward, not stored.
Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t stream);

namespace ref {
inline constexpr double kGeluC = 0.7978845608028654;  // √(2/π)
template <class T>
T gelu(T x) {
  T u = T(kGeluC) * (x + T(0.044715) * x * x * x);
  return T(0.5) * x * (T(1) + std::tanh(u));
}
// fwd: y = ½x(1 + tanh u), u = c(x + 0.044715x³)  =>  dy/dx = ½(1 + t) + ½x(1 - t²)·c(1 + 3·0.044715x²)
template <class T>
T gelu_grad(T x) {
  T u = T(kGeluC) * (x + T(0.044715) * x * x * x);
  T t = std::tanh(u);
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * T(kGeluC) * (T(1) + T(3 * 0.044715) * x * x);
}
template <class T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
template <class T>
T silu(T x) {
  return x * sigmoid(x);
}
// fwd: y = x·σ(x)  =>  dy/dx = σ(x)(1 + x(1 - σ(x)))
template <class T>
T silu_grad(T x) {
  T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}
}  // namespace ref

}  // namespace attnlab
