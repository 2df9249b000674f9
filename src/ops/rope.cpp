#include "ops/rope.h"

#include "autograd/tape.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {
namespace {

// y = R(±θ) x over strided input, contiguous output; accumulate adds into y instead (backward).
void rotate(float* y, const float* x, const int64_t* xs, const float* cos_t, const float* sin_t, int64_t B,
            int64_t T, int64_t H, int64_t D, bool inverse, bool accumulate, const int64_t* ys) {
#pragma omp parallel for collapse(2) if (B * T * H * D > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const float* xr = x + b * xs[0] + t * xs[1] + h * xs[2];
        float* yr = y + b * ys[0] + t * ys[1] + h * ys[2];
        const float *c = cos_t + t * (D / 2), *s = sin_t + t * (D / 2);
        const float sign = inverse ? -1.f : 1.f;
#pragma omp simd
        for (int64_t i = 0; i < D / 2; ++i) {
          float x0 = xr[2 * i], x1 = xr[2 * i + 1], si = sign * s[i];
          float y0 = x0 * c[i] - x1 * si, y1 = x0 * si + x1 * c[i];
          if (accumulate) {
            yr[2 * i] += y0;
            yr[2 * i + 1] += y1;
          } else {
            yr[2 * i] = y0;
            yr[2 * i + 1] = y1;
          }
        }
      }
}

}  // namespace

Tensor rope(const Tensor& x, float base, int64_t pos_offset) {
  PhaseScope phase(Phase::norm_act);
  ATTN_CHECK(x.rank() == 4 && x.stride(3) == 1, "rope: x ", x.shape, " must be [B, T, H, D] with dense D");
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  ATTN_CHECK(D % 2 == 0, "rope: head dimension ", D, " must be even");
  float* cos_t = current_arena().alloc_floats(T * D / 2);
  float* sin_t = current_arena().alloc_floats(T * D / 2);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D / 2; ++i) {
      double th = double(t + pos_offset) * std::pow(double(base), -2.0 * double(i) / double(D));
      cos_t[t * D / 2 + i] = float(std::cos(th));
      sin_t[t * D / 2 + i] = float(std::sin(th));
    }
  Tensor y = new_output(x.shape, needs_grad(x));
  rotate(y.data, x.data, x.strides.data(), cos_t, sin_t, B, T, H, D, false, false, y.strides.data());
  if (y.requires_grad()) {
    record("rope", y, [x, y, cos_t, sin_t, B, T, H, D] {
      // fwd: y = R(θ) x  =>  dx += R(θ)ᵀ dy = R(-θ) dy
      const GradSink dx = x.grad_out();
      rotate(dx.ptr, y.grad_in(), y.strides.data(), cos_t, sin_t, B, T, H, D, true, dx.accumulate, x.strides.data());
    });
  }
  return y;
}

}  // namespace attnlab
