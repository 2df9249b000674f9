#pragma once
// cross_entropy: L = (1/n) Σ_{i: t_i ≠ ignore} (logsumexp_v z[i,v] - z[i,t_i]),  n = #counted rows
// z: [N, V] logits (contiguous)   targets: N int32 (caller-owned until backward)   ->   L: scalar
// Fused: forward keeps only the row log-sum-exp; backward writes (softmax(z) - onehot(t)) · dL/n.
// No counted rows: L = 0 and no gradient.
#include <cmath>
#include <cstdint>

#include "tensor/tensor.h"

namespace attnlab {

inline constexpr int32_t kIgnoreIndex = -1;

Tensor cross_entropy(const Tensor& logits, const int32_t* targets, int32_t ignore_index = kIgnoreIndex);

namespace ref {
template <class T>
T logsumexp(const T* z, int64_t V) {
  T m = z[0];
  for (int64_t v = 1; v < V; ++v) m = std::max(m, z[v]);
  T s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - m);
  return m + std::log(s);
}
template <class T>
T cross_entropy_fwd(const T* z, const int32_t* t, int64_t N, int64_t V, int32_t ignore) {
  T total = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (t[i] == ignore) continue;
    total += logsumexp(z + i * V, V) - z[i * V + t[i]];
    count++;
  }
  return count ? total / T(count) : T(0);
}
// fwd: L = mean_i (lse_i - z[i,t_i])  =>  dz[i,v] += dL·(softmax_i(v) - [v = t_i]) / n
template <class T>
void cross_entropy_bwd(T* dz, T dL, const T* z, const int32_t* t, int64_t N, int64_t V, int32_t ignore) {
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) count += t[i] != ignore;
  for (int64_t i = 0; i < N; ++i) {
    if (t[i] == ignore) continue;
    const T lse = logsumexp(z + i * V, V);
    for (int64_t v = 0; v < V; ++v) dz[i * V + v] += dL * (std::exp(z[i * V + v] - lse) - T(v == t[i])) / T(count);
  }
}
}  // namespace ref

}  // namespace attnlab
