#include "ops/linear.h"

#include <algorithm>
#include <cstring>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include "kernels/vmath.h"
#include "tensor/tensor.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

namespace {
// dst = src over n floats, split across the team (the residual stream copied into an output).
void copy_parallel(float* __restrict dst, const float* __restrict src, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for if (n > kernels::kParallelMin)
  for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c)
    std::memcpy(dst + c * kChunk, src + c * kChunk, size_t(std::min(kChunk, n - c * kChunk)) * sizeof(float));
}

// bf16 copy of the output gradient of the op whose backward runs: both its products read it.
// One buffer serves every op (backward runs one op at a time).
const uint16_t* packed_output_grad(const float* dy, int64_t M, int64_t N) {
  thread_local kernels::Bf16Copy copy;
  return copy.pack(dy, M, N, N);
}
// The backward products of y = x · w (x [M, K], w [K, N], dy [M, N]): dx += dy · wᵀ, dw += xᵀ · dy,
// for whichever of x and w wants a gradient. dy16 and x16: bf16 copies of dy and x, or null.
void linear_backward(const Tensor& x, const Tensor& w, const float* dy, const uint16_t* dy16, const uint16_t* x16,
                     int64_t M, int64_t K, int64_t N) {
  if (x.requires_grad()) {
    const GradSink dx = x.grad_out();
    kernels::gemm(false, true, M, K, N, dy, N, w.data, N, dx.ptr, K, dx.accumulate, {dy16, nullptr});
  }
  if (w.requires_grad()) {
    const GradSink dw = w.grad_out();
    kernels::gemm(true, false, K, N, M, x.data, K, dy, N, dw.ptr, N, dw.accumulate, {x16, dy16});
  }
}

// dr += skip·dy for y = skip·r + branch·f(...), after the op's last read of dy: r takes over dy's
// storage when it can (its first gradient, a whole buffer; scaled there in place), else skip·dy is
// written through r's sink.
void pass_residual_grad(const Tensor& r, const Tensor& y, const float* dy, int64_t n, float skip = 1.f) {
  if (!r.requires_grad()) return;
  if (r.take_grad_of(y)) {
    if (skip != 1.f) {
      float* g = r.grad();
#pragma omp parallel for simd if (n > kernels::kParallelMin)
      for (int64_t i = 0; i < n; ++i) g[i] *= skip;
    }
    return;
  }
  write_grad(r.grad_out(), n, [dy, skip](int64_t i) { return skip * dy[i]; });
}

// y = branch·y + skip·r: the weighted residual's one pass, after the product wrote y.
void weigh_residual(float* __restrict y, const float* __restrict r, int64_t n, ResidualWeights rw) {
#pragma omp parallel for simd if (n > kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = rw.branch * y[i] + rw.skip * r[i];
}

// The products' dy for a weighted residual: branch·dy in the arena (dy itself when branch is 1).
const float* branch_grad(const float* dy, int64_t n, float branch) {
  if (branch == 1.f) return dy;
  float* d = current_arena().alloc_floats(n);
#pragma omp parallel for simd if (n > kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) d[i] = branch * dy[i];
  return d;
}
}  // namespace

const uint16_t* pack_operand(const Tensor& x) {
  if (kernels::matmul_precision() != kernels::MatmulPrecision::bf16) return nullptr;
  PhaseScope phase(Phase::matmul);
  ATTN_CHECK(x.is_contiguous() && x.rank() >= 1, "pack_operand: x ", x.shape, " must be contiguous");
  auto* x16 = static_cast<uint16_t*>(current_arena().alloc_bytes(size_t(x.numel()) * sizeof(uint16_t)));
  kernels::pack_bf16(x16, x.data, x.rows(), x.cols(), x.cols());
  return x16;
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b, const uint16_t* a16) {
  PhaseScope phase(Phase::matmul);
  ATTN_CHECK(a.is_contiguous() && a.rank() >= 1, "matmul: a ", a.shape, " must be contiguous");
  ATTN_CHECK(b.rank() == 2 && b.is_contiguous(), "matmul: b ", b.shape, " must be a contiguous matrix");
  const int64_t M = a.rows(), K = a.cols();
  const int64_t N = trans_b ? b.size(0) : b.size(1);
  ATTN_CHECK((trans_b ? b.size(1) : b.size(0)) == K, "matmul: a ", a.shape, " and b ", b.shape,
             trans_b ? " (transposed)" : "", " do not match");
  Shape ys = a.shape;
  ys[-1] = N;
  Tensor y = new_output(ys, needs_grad(a, b));
  if (kernels::matmul_precision() != kernels::MatmulPrecision::bf16) a16 = nullptr;
  kernels::gemm(false, trans_b, M, N, K, a.data, K, b.data, b.size(1), y.data, N, false, {a16, nullptr});
  if (y.requires_grad()) {
    record("matmul", y, [a, b, y, M, N, K, trans_b, a16] {
      // fwd: y = a · op(b)   =>   da += dy · op(b)ᵀ,   d op(b) += aᵀ · dy
      const float* dy = y.grad_in();
      const uint16_t* dy16 = a.requires_grad() && b.requires_grad() ? packed_output_grad(dy, M, N) : nullptr;
      if (a.requires_grad()) {
        const GradSink da = a.grad_out();
        kernels::gemm(false, !trans_b, M, K, N, dy, N, b.data, b.size(1), da.ptr, K, da.accumulate, {dy16, nullptr});
      }
      if (b.requires_grad()) {
        const GradSink db = b.grad_out();
        if (trans_b)
          kernels::gemm(true, false, N, K, M, dy, N, a.data, K, db.ptr, K, db.accumulate, {dy16, a16});
        else
          kernels::gemm(true, false, K, N, M, a.data, K, dy, N, db.ptr, N, db.accumulate, {a16, dy16});
      }
    });
  }
  return y;
}

Tensor residual_linear(const Tensor& r, const Tensor& x, const Tensor& w, ResidualWeights rw) {
  PhaseScope phase(Phase::matmul);
  ATTN_CHECK(x.is_contiguous() && r.is_contiguous(), "residual_linear: r ", r.shape, " and x ", x.shape,
             " must be contiguous");
  ATTN_CHECK(w.rank() == 2 && w.is_contiguous() && w.size(0) == x.cols(), "residual_linear: x ", x.shape,
             " and w ", w.shape, " do not match");
  ATTN_CHECK(r.rows() == x.rows() && r.cols() == w.size(1), "residual_linear: r ", r.shape, " is not x·w's shape [",
             x.rows(), ", ", w.size(1), "]");
  const int64_t M = x.rows(), K = x.cols(), N = w.size(1);
  Tensor y = new_output(r.shape, needs_grad(r, x, w));
  if (rw.plain()) {
    copy_parallel(y.data, r.data, M * N);
    kernels::gemm(false, false, M, N, K, x.data, K, w.data, N, y.data, N, true);
  } else {
    kernels::gemm(false, false, M, N, K, x.data, K, w.data, N, y.data, N, false);
    weigh_residual(y.data, r.data, M * N, rw);
  }
  if (y.requires_grad()) {
    record("residual_linear", y, [r, x, w, y, M, N, K, rw] {
      // fwd: y = s r + b x · w   =>   dr += s dy,   dx += (b dy) · wᵀ,   dw += xᵀ · (b dy)
      const float* dy = y.grad_in();
      const float* dyb = branch_grad(dy, M * N, rw.branch);
      const uint16_t* dy16 = x.requires_grad() && w.requires_grad() ? packed_output_grad(dyb, M, N) : nullptr;
      linear_backward(x, w, dyb, dy16, nullptr, M, K, N);
      pass_residual_grad(r, y, dy, M * N, rw.skip);
    });
  }
  return y;
}

namespace {
// gelu(h) of the current residual_gelu_mlp, forward or backward: one buffer for all layers, as
// each product consumes it before the next op runs. Grown to the largest size seen, then reused.
float* gelu_scratch(int64_t n) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { aligned_free(data); }
  };
  thread_local Buffer buf;
  if (n > buf.size) {
    aligned_free(buf.data);
    buf.data = static_cast<float*>(aligned_alloc_bytes(size_t(n) * sizeof(float)));
    buf.size = n;
  }
  return buf.data;
}

void gelu_into(float* __restrict g, const float* __restrict h, int64_t n) {
  PhaseScope phase(Phase::norm_act);
#pragma omp parallel for simd if (n > kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) g[i] = kernels::gelu_tanh(h[i]);
}

// bf16 products: gelu(h) written straight to bf16, the operand the product reads (the same bytes
// as gelu_into followed by conversion), so no f32 copy is written and read again. Null in f32.
uint16_t* gelu_bf16_buffer(int64_t n) {
  thread_local kernels::Bf16Copy copy;
  return copy.reserve(n);
}
const uint16_t* gelu_bf16(const float* __restrict h, int64_t n) {
  uint16_t* __restrict g = gelu_bf16_buffer(n);
  if (!g) return nullptr;
  PhaseScope phase(Phase::norm_act);
#pragma omp parallel for simd if (n > kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) g[i] = kernels::to_bf16(kernels::gelu_tanh(h[i]));
  return g;
}

// f32 products: dh = dg ⊙ gelu'(h), over dg in place.
void gelu_backward(float* __restrict dg, const float* __restrict h, int64_t n) {
  PhaseScope phase(Phase::norm_act);
#pragma omp parallel for simd if (n > kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) dg[i] = dg[i] * kernels::gelu_tanh_grad(h[i]);
}

// bf16 products: one pass over h gives both of backward's bf16 operands, g = gelu(h) again (for
// dw2) and dh = dg ⊙ gelu'(h) (for dx and dw1), each the bytes that converting its f32 value gives.
struct GeluOperands {
  const uint16_t* g16;
  const uint16_t* dh16;
};
GeluOperands gelu_backward_bf16(const float* __restrict dg, const float* __restrict h, int64_t n) {
  PhaseScope phase(Phase::norm_act);
  thread_local kernels::Bf16Copy copy;
  uint16_t* __restrict dh16 = copy.reserve(n);
  uint16_t* __restrict g16 = gelu_bf16_buffer(n);
#pragma omp parallel for simd if (n > kernels::kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    g16[i] = kernels::to_bf16(kernels::gelu_tanh(h[i]));
    dh16[i] = kernels::to_bf16(dg[i] * kernels::gelu_tanh_grad(h[i]));
  }
  return {g16, dh16};
}
}  // namespace

Tensor residual_gelu_mlp(const Tensor& r, const Tensor& x, const Tensor& w1, const Tensor& w2, const uint16_t* x16,
                         ResidualWeights rw) {
  ATTN_CHECK(x.is_contiguous() && r.is_contiguous(), "residual_gelu_mlp: r ", r.shape, " and x ", x.shape,
             " must be contiguous");
  ATTN_CHECK(w1.rank() == 2 && w1.is_contiguous() && w1.size(0) == x.cols(), "residual_gelu_mlp: x ", x.shape,
             " and w1 ", w1.shape, " do not match");
  ATTN_CHECK(w2.rank() == 2 && w2.is_contiguous() && w2.size(0) == w1.size(1), "residual_gelu_mlp: w1 ", w1.shape,
             " and w2 ", w2.shape, " do not match");
  ATTN_CHECK(r.rows() == x.rows() && r.cols() == w2.size(1), "residual_gelu_mlp: r ", r.shape,
             " is not the output's shape [", x.rows(), ", ", w2.size(1), "]");
  const int64_t M = x.rows(), C = x.cols(), F = w1.size(1), N = w2.size(1);
  if (kernels::matmul_precision() != kernels::MatmulPrecision::bf16) x16 = nullptr;
  Tensor h = empty({M, F});  // kept for backward; gelu(h) is not
  {
    PhaseScope phase(Phase::matmul);
    kernels::gemm(false, false, M, F, C, x.data, C, w1.data, F, h.data, F, false, {x16, nullptr});
  }
  float* g = gelu_scratch(M * F);
  const uint16_t* g16 = gelu_bf16(h.data, M * F);
  if (!g16) gelu_into(g, h.data, M * F);
  PhaseScope phase(Phase::matmul);
  Tensor y = new_output(r.shape, needs_grad(r, x, w1, w2));
  if (rw.plain()) {
    copy_parallel(y.data, r.data, M * N);
    kernels::gemm(false, false, M, N, F, g, F, w2.data, N, y.data, N, true, {g16, nullptr});
  } else {
    kernels::gemm(false, false, M, N, F, g, F, w2.data, N, y.data, N, false, {g16, nullptr});
    weigh_residual(y.data, r.data, M * N, rw);
  }
  if (y.requires_grad()) {
    record("residual_gelu_mlp", y, [r, x, w1, w2, x16, h, y, M, C, F, N, rw] {
      // fwd: y = s r + b g · w2, g = gelu(h), h = x · w1   =>   dr += s dy, and with dy' = b dy:
      //   dw2 += gᵀ · dy',   dh = (dy' · w2ᵀ) ⊙ gelu'(h),   dx += dh · w1ᵀ,   dw1 += xᵀ · dh
      const float* dy_out = y.grad_in();
      const float* dy = branch_grad(dy_out, M * N, rw.branch);
      const bool want_h = x.requires_grad() || w1.requires_grad();
      float* scratch = gelu_scratch(M * F);
      const uint16_t* dy16 = w2.requires_grad() && want_h ? packed_output_grad(dy, M, N) : nullptr;
      if (kernels::matmul_precision() == kernels::MatmulPrecision::bf16) {
        // dg first, so that one pass over h gives both g (for dw2) and dh; dh exists only as the
        // products' bf16 operand.
        if (want_h) kernels::gemm(false, true, M, F, N, dy, N, w2.data, N, scratch, F, false, {dy16, nullptr});
        const GeluOperands ops = want_h ? gelu_backward_bf16(scratch, h.data, M * F)
                                        : GeluOperands{gelu_bf16(h.data, M * F), nullptr};
        if (w2.requires_grad()) {
          const GradSink dw = w2.grad_out();
          kernels::gemm(true, false, F, N, M, nullptr, F, dy, N, dw.ptr, N, dw.accumulate, {ops.g16, dy16});  // g: g16 only
        }
        if (want_h) linear_backward(x, w1, scratch, ops.dh16, x16, M, C, F);
      } else {
        if (w2.requires_grad()) {  // g in the scratch buffer, then dg over it
          gelu_into(scratch, h.data, M * F);
          const GradSink dw = w2.grad_out();
          kernels::gemm(true, false, F, N, M, scratch, F, dy, N, dw.ptr, N, dw.accumulate);
        }
        if (want_h) {
          kernels::gemm(false, true, M, F, N, dy, N, w2.data, N, scratch, F, false);
          gelu_backward(scratch, h.data, M * F);
          linear_backward(x, w1, scratch, nullptr, nullptr, M, C, F);
        }
      }
      pass_residual_grad(r, y, dy_out, M * N, rw.skip);
    });
  }
  return y;
}

}  // namespace attnlab
