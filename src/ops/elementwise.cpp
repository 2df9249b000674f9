#include "ops/elementwise.h"

#include "autograd/tape.h"
#include "kernels/parallel.h"
#include "kernels/vmath.h"
#include "util/check.h"
#include "util/profile.h"
#include "util/rng.h"

namespace attnlab {

using kernels::kParallelMin;

namespace {
void check_contiguous(const char* op, const Tensor& t) {
  ATTN_CHECK(t.is_contiguous(), op, ": input ", t.shape, " must be contiguous");
}
bool is_suffix(const Shape& b, const Shape& a) {
  if (b.rank > a.rank) return false;
  for (int i = 1; i <= b.rank; ++i)
    if (b[-i] != a[-i]) return false;
  return true;
}

// y = f(x) elementwise; backward writes dx = grad(dy, x), recomputed from the saved input.
template <class F, class Grad>
Tensor pointwise(const char* name, const Tensor& x, F f, Grad grad) {
  PhaseScope phase(Phase::norm_act);
  check_contiguous(name, x);
  const int64_t n = x.numel();
  Tensor y = new_output(x.shape, needs_grad(x));
  float *yd = y.data, *xd = x.data;
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yd[i] = f(xd[i]);
  if (y.requires_grad()) {
    record(name, y, [x, y, n, grad] {
      const float *yg = y.grad_in(), *xd = x.data;
      write_grad(x.grad_out(), n, [yg, xd, grad](int64_t i) { return grad(yg[i], xd[i]); });
    });
  }
  return y;
}
}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  PhaseScope phase(Phase::norm_act);
  check_contiguous("add", a);
  check_contiguous("add", b);
  ATTN_CHECK(is_suffix(b.shape, a.shape), "add: shape ", b.shape, " does not broadcast to ", a.shape);
  const int64_t n = a.numel(), m = b.numel();
  Tensor y = new_output(a.shape, needs_grad(a, b));
  float *yd = y.data, *ad = a.data, *bd = b.data;
#pragma omp parallel for if (n > kParallelMin)
  for (int64_t r = 0; r < n / m; ++r)
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) yd[r * m + i] = ad[r * m + i] + bd[i];
  if (y.requires_grad()) {
    record("add", y, [a, b, y, n, m] {
      // fwd: y[r,i] = a[r,i] + b[i]  =>  da += dy;  db[i] += Σ_r dy[r,i]
      const float* yg = y.grad_in();
      if (a.requires_grad()) write_grad(a.grad_out(), n, [yg](int64_t i) { return yg[i]; });
      if (b.requires_grad()) {  // sequential over rows: a fixed summation order, whatever the thread count
        float* bg = b.grad_accum();
        for (int64_t r = 0; r < n / m; ++r)
#pragma omp simd
          for (int64_t i = 0; i < m; ++i) bg[i] += yg[r * m + i];
      }
    });
  }
  return y;
}

Tensor scale(const Tensor& x, float s) {
  PhaseScope phase(Phase::norm_act);
  check_contiguous("scale", x);
  const int64_t n = x.numel();
  Tensor y = new_output(x.shape, needs_grad(x));
  float *yd = y.data, *xd = x.data;
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yd[i] = s * xd[i];
  if (y.requires_grad()) {
    record("scale", y, [x, y, n, s] {
      // fwd: y = s·x  =>  dx += s·dy
      const float* yg = y.grad_in();
      write_grad(x.grad_out(), n, [yg, s](int64_t i) { return s * yg[i]; });
    });
  }
  return y;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  PhaseScope phase(Phase::norm_act);
  check_contiguous("mul", a);
  check_contiguous("mul", b);
  ATTN_CHECK(a.shape == b.shape, "mul: shapes ", a.shape, " and ", b.shape, " differ");
  const int64_t n = a.numel();
  Tensor y = new_output(a.shape, needs_grad(a, b));
  float *yd = y.data, *ad = a.data, *bd = b.data;
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yd[i] = ad[i] * bd[i];
  if (y.requires_grad()) {
    record("mul", y, [a, b, y, n] {
      // fwd: y = a ⊙ b  =>  da += dy ⊙ b;  db += dy ⊙ a
      const float *yg = y.grad_in(), *ad = a.data, *bd = b.data;
      if (a.requires_grad()) write_grad(a.grad_out(), n, [yg, bd](int64_t i) { return yg[i] * bd[i]; });
      if (b.requires_grad()) write_grad(b.grad_out(), n, [yg, ad](int64_t i) { return yg[i] * ad[i]; });
    });
  }
  return y;
}

Tensor gelu(const Tensor& x) {
  // fwd: y = gelu(x)  =>  dx += dy · gelu'(x)
  return pointwise("gelu", x, [](float v) { return kernels::gelu_tanh(v); },
                   [](float dy, float v) { return dy * kernels::gelu_tanh_grad(v); });
}

Tensor silu(const Tensor& x) {
  // fwd: y = x·σ(x)  =>  dx += dy·σ(x)(1 + x(1 - σ(x)))
  return pointwise("silu", x, [](float v) { return v * kernels::fast_sigmoid(v); },
                   [](float dy, float v) {
                     const float s = kernels::fast_sigmoid(v);
                     return dy * s * (1.f + v * (1.f - s));
                   });
}

Tensor swiglu(const Tensor& a, const Tensor& b) {
  PhaseScope phase(Phase::norm_act);
  check_contiguous("swiglu", a);
  check_contiguous("swiglu", b);
  ATTN_CHECK(a.shape == b.shape, "swiglu: gate ", a.shape, " and up ", b.shape, " differ");
  const int64_t n = a.numel();
  Tensor y = new_output(a.shape, needs_grad(a, b));
  float *yd = y.data, *ad = a.data, *bd = b.data;
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yd[i] = ad[i] * kernels::fast_sigmoid(ad[i]) * bd[i];
  if (y.requires_grad()) {
    record("swiglu", y, [a, b, y, n] {
      // fwd: y = silu(a)·b  =>  da += dy·b·σ(a)(1 + a(1 - σ(a)));  db += dy·silu(a)
      const float *yg = y.grad_in(), *ad = a.data, *bd = b.data;
      if (a.requires_grad())
        write_grad(a.grad_out(), n, [yg, ad, bd](int64_t i) {
          const float s = kernels::fast_sigmoid(ad[i]);
          return yg[i] * bd[i] * s * (1.f + ad[i] * (1.f - s));
        });
      if (b.requires_grad())
        write_grad(b.grad_out(), n, [yg, ad](int64_t i) { return yg[i] * ad[i] * kernels::fast_sigmoid(ad[i]); });
    });
  }
  return y;
}

Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t stream) {
  ATTN_CHECK(p >= 0.f && p < 1.f, "dropout: p = ", p, " must be in [0, 1)");
  if (p == 0.f || !grad_enabled()) return x;
  PhaseScope phase(Phase::norm_act);
  check_contiguous("dropout", x);
  const int64_t n = x.numel();
  const float keep_scale = 1.f / (1.f - p);
  Tensor y = new_output(x.shape, needs_grad(x));
  float *yd = y.data, *xd = x.data;
#pragma omp parallel for simd if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) yd[i] = u01f(hash3(seed, stream, uint64_t(i))) >= p ? xd[i] * keep_scale : 0.f;
  if (y.requires_grad()) {
    record("dropout", y, [x, y, n, p, keep_scale, seed, stream] {
      // fwd: y = x·m/(1-p)  =>  dx += dy·m/(1-p), the same mask drawn again
      const float* yg = y.grad_in();
      write_grad(x.grad_out(), n, [=](int64_t i) {
        return u01f(hash3(seed, stream, uint64_t(i))) >= p ? yg[i] * keep_scale : 0.f;
      });
    });
  }
  return y;
}

}  // namespace attnlab
