#include "ops/rope.h"

#include <array>
#include <cstring>
#include <utility>

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

// cos and sin of t · base^(-2i/D) for t < T, i < D/2, in the current arena.
std::pair<float*, float*> rope_tables(int64_t T, int64_t D, float base, int64_t pos_offset) {
  float* cos_t = current_arena().alloc_floats(T * D / 2);
  float* sin_t = current_arena().alloc_floats(T * D / 2);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < D / 2; ++i) {
      double th = double(t + pos_offset) * std::pow(double(base), -2.0 * double(i) / double(D));
      cos_t[t * D / 2 + i] = float(std::cos(th));
      sin_t[t * D / 2 + i] = float(std::sin(th));
    }
  return {cos_t, sin_t};
}

}  // namespace

Tensor rope(const Tensor& x, float base, int64_t pos_offset) {
  PhaseScope phase(Phase::norm_act);
  ATTN_CHECK(x.rank() == 4 && x.stride(3) == 1, "rope: x ", x.shape, " must be [B, T, H, D] with dense D");
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  ATTN_CHECK(D % 2 == 0, "rope: head dimension ", D, " must be even");
  const auto [cos_t, sin_t] = rope_tables(T, D, base, pos_offset);
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

Tensor rope_concat(const Tensor& x, const Tensor& r, float base, int64_t pos_offset) {
  PhaseScope phase(Phase::norm_act);
  ATTN_CHECK(x.rank() == 4 && r.rank() == 4 && x.stride(3) == 1 && r.stride(3) == 1, "rope_concat: x ", x.shape,
             " and r ", r.shape, " must be [B, T, heads, D] with dense D");
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), Dx = x.size(3), Hr = r.size(2), Dr = r.size(3);
  ATTN_CHECK(r.size(0) == B && r.size(1) == T && (Hr == H || Hr == 1), "rope_concat: r ", r.shape,
             " must match x ", x.shape, " in batch and positions, with ", H, " heads or one");
  ATTN_CHECK(Dr % 2 == 0, "rope_concat: rotated head size ", Dr, " must be even");
  const auto [cos_t, sin_t] = rope_tables(T, Dr, base, pos_offset);
  Tensor y = new_output({B, T, H, Dx + Dr}, needs_grad(x, r));
  // A shared r is read by every head: head stride 0.
  const std::array<int64_t, 3> rs{r.strides[0], r.strides[1], Hr == 1 ? 0 : r.strides[2]};
#pragma omp parallel for collapse(2) if (B * T * H * (Dx + Dr) > (1 << 15))
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(y.data + ((b * T + t) * H + h) * (Dx + Dr), x.data + b * x.strides[0] + t * x.strides[1] + h * x.strides[2],
                    size_t(Dx) * sizeof(float));
  rotate(y.data + Dx, r.data, rs.data(), cos_t, sin_t, B, T, H, Dr, false, false, y.strides.data());
  if (y.requires_grad()) {
    // A shared r's gradient is summed over heads into this [B, T, Dr] buffer first.
    float* shared = Hr == 1 && r.requires_grad() ? current_arena().alloc_floats(B * T * Dr) : nullptr;
    record("rope_concat", y, [x, r, y, cos_t, sin_t, shared, B, T, H, Dx, Dr] {
      // fwd: y = [x; R(θ) r]  =>  dx += dy[..., :Dx];  dr += R(-θ) dy[..., Dx:] (summed over heads when shared)
      const float* dy = y.grad_in();
      const int64_t Dy = Dx + Dr;
      if (x.requires_grad()) {
        const GradSink dx = x.grad_out();
#pragma omp parallel for collapse(2) if (B * T * H * Dx > (1 << 15))
        for (int64_t b = 0; b < B; ++b)
          for (int64_t t = 0; t < T; ++t)
            for (int64_t h = 0; h < H; ++h) {
              const float* src = dy + ((b * T + t) * H + h) * Dy;
              float* dst = dx.ptr + b * x.strides[0] + t * x.strides[1] + h * x.strides[2];
              if (dx.accumulate) {
#pragma omp simd
                for (int64_t e = 0; e < Dx; ++e) dst[e] += src[e];
              } else {
                std::memcpy(dst, src, size_t(Dx) * sizeof(float));
              }
            }
      }
      if (!r.requires_grad()) return;
      if (!shared) {
        const GradSink dr = r.grad_out();
        rotate(dr.ptr, dy + Dx, y.strides.data(), cos_t, sin_t, B, T, H, Dr, true, dr.accumulate, r.strides.data());
        return;
      }
      // Σ_h R(-θ) dy_h = R(-θ) Σ_h dy_h: sum the heads in order, then rotate once.
#pragma omp parallel for if (B * T * H * Dr > (1 << 15))
      for (int64_t n = 0; n < B * T; ++n) {
        float* acc = shared + n * Dr;
        std::memcpy(acc, dy + n * H * Dy + Dx, size_t(Dr) * sizeof(float));
        for (int64_t h = 1; h < H; ++h) {
          const float* src = dy + (n * H + h) * Dy + Dx;
#pragma omp simd
          for (int64_t e = 0; e < Dr; ++e) acc[e] += src[e];
        }
      }
      const std::array<int64_t, 3> ss{T * Dr, Dr, 0};
      const GradSink dr = r.grad_out();
      rotate(dr.ptr, shared, ss.data(), cos_t, sin_t, B, T, 1, Dr, true, dr.accumulate, r.strides.data());
    });
  }
  return y;
}

}  // namespace attnlab
