#pragma once
// exp and tanh written with arithmetic and bit casts only, so that loops calling them
// auto-vectorise (glibc's expf/tanhf are scalar calls). Accuracy: a few ulp over the float range,
// checked against std::exp/std::tanh in tests/kernels/test_vmath.cpp.
#include <bit>
#include <cstdint>

namespace attnlab::kernels {

// e^x: x = n ln2 + r, |r| <= ln2/2; e^r by its degree-6 Taylor polynomial (error < 1e-7 relative).
inline float fast_exp(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.f ? 88.f : x);  // 2^n stays a normal float
  // Round to nearest by the 1.5·2^23 trick (vectorises; roundeven does not, with GCC 12).
  constexpr float kRound = 12582912.f;
  float n = (x * 1.44269504088896341f + kRound) - kRound;
  float r = x - n * 0.693145751953125f;  // ln2 split in a high part exact in float ...
  r = r - n * 1.42860682030941723212e-6f;  // ... and the rest
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  int32_t bits = (int32_t(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

// tanh: an odd Taylor polynomial near 0 (no cancellation), 1 - 2 / (e^{2|x|} + 1) elsewhere.
inline float fast_tanh(float x) {
  float a = x < 0 ? -x : x;
  float x2 = x * x;
  float small = x * (1.f + x2 * (-1.f / 3.f + x2 * (2.f / 15.f + x2 * (-17.f / 315.f))));
  float big = 1.f - 2.f / (fast_exp(2.f * a) + 1.f);
  big = x < 0 ? -big : big;
  return a < 0.2f ? small : big;
}

inline float fast_sigmoid(float x) { return 1.f / (1.f + fast_exp(-x)); }

// GELU, tanh form [Hendrycks & Gimpel 2016]: ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³), computed
// as x·σ(2u), the same function (½(1 + tanh u) = σ(2u)) with one exp, one division and no branch
// or cancellation. Its derivative: σ(2u) + 2x·σ(2u)(1 − σ(2u))·√(2/π)(1 + 3·0.044715x²). One
// definition for every op that applies it, so fused and composed forms compute the same floats.
inline constexpr float kGeluC = 0.7978845608028654f, kGeluK = 0.044715f;
inline float gelu_tanh(float x) { return x / (1.f + fast_exp(-2.f * kGeluC * (x + kGeluK * x * x * x))); }
inline float gelu_tanh_grad(float x) {
  const float s = 1.f / (1.f + fast_exp(-2.f * kGeluC * (x + kGeluK * x * x * x)));
  return s + 2.f * x * s * (1.f - s) * kGeluC * (1.f + 3.f * kGeluK * x * x);
}

}  // namespace attnlab::kernels
