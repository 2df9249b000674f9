#include "ops/loss.h"

#include <algorithm>

#include "autograd/tape.h"
#include "kernels/vmath.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

Tensor cross_entropy(const Tensor& logits, const int32_t* targets, int32_t ignore_index) {
  PhaseScope phase(Phase::loss);
  ATTN_CHECK(logits.is_contiguous() && logits.rank() >= 1, "cross_entropy: logits ", logits.shape,
             " must be contiguous");
  const int64_t N = logits.rows(), V = logits.cols();
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) {
    ATTN_CHECK(targets[i] == ignore_index || (targets[i] >= 0 && targets[i] < V), "cross_entropy: target ",
               targets[i], " at row ", i, " is outside [0, ", V, ")");
    count += targets[i] != ignore_index;
  }
  float* lse = current_arena().alloc_floats(N);
  float* row_loss = current_arena().alloc_floats(N);
  const float* z = logits.data;
#pragma omp parallel for if (N * V > (1 << 15))
  for (int64_t i = 0; i < N; ++i) {
    const float* zr = z + i * V;
    int64_t arg = 0;
    for (int64_t v = 1; v < V; ++v) arg = zr[v] > zr[arg] ? v : arg;
    const float m = zr[arg];
    // lse = m + log1p(Σ_{v≠argmax} e^(z_v - m)): no cancellation when one class dominates.
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t v = 0; v < V; ++v) s += v == arg ? 0.f : kernels::fast_exp(zr[v] - m);
    const float log_sum = std::log1p(s);
    lse[i] = m + log_sum;
    row_loss[i] = targets[i] == ignore_index ? 0.f : (m - zr[targets[i]]) + log_sum;
  }
  double total = 0;  // sequential sum in double: the same value whatever the thread count
  for (int64_t i = 0; i < N; ++i) total += row_loss[i];
  Tensor loss = new_output({1}, count > 0 && needs_grad(logits));
  loss.data[0] = count ? float(total / double(count)) : 0.f;
  if (loss.requires_grad()) {
    record("cross_entropy", loss, [logits, targets, loss, lse, N, V, count, ignore_index] {
      // fwd: L = mean_i (lse_i - z[i,t_i])  =>  dz[i,v] += dL·(e^(z[i,v] - lse_i) - [v = t_i]) / n
      const float k = loss.grad_in()[0] / float(count);
      const GradSink sink = logits.grad_out();
#pragma omp parallel for if (N * V > (1 << 15))
      for (int64_t i = 0; i < N; ++i) {
        float* dz = sink.ptr + i * V;
        if (!sink.accumulate) std::fill(dz, dz + V, 0.f);  // first write: start each row from zero
        if (targets[i] == ignore_index) continue;
        const float* zr = logits.data + i * V;
        const float l = lse[i];
        const int32_t t = targets[i];
        // dz_t = p_t - 1 = -Σ_{v≠t} p_v, summed rather than subtracted (p_t ≈ 1 cancels).
        float others = 0.f;
#pragma omp simd reduction(+ : others)
        for (int64_t v = 0; v < V; ++v) {
          const float pv = v == t ? 0.f : kernels::fast_exp(zr[v] - l);
          dz[v] += k * pv;
          others += pv;
        }
        dz[t] -= k * others;
      }
    });
  }
  return loss;
}

}  // namespace attnlab
