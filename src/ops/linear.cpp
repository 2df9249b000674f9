#include "ops/linear.h"

#include <cstring>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) {
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
  kernels::gemm(false, trans_b, M, N, K, a.data, K, b.data, b.size(1), y.data, N, false);
  if (y.requires_grad()) {
    record("matmul", y, [a, b, y, M, N, K, trans_b] {
      // fwd: y = a · op(b)   =>   da += dy · op(b)ᵀ,   d op(b) += aᵀ · dy
      const float* dy = y.grad_in();
      if (a.requires_grad()) {
        const GradSink da = a.grad_out();
        kernels::gemm(false, !trans_b, M, K, N, dy, N, b.data, b.size(1), da.ptr, K, da.accumulate);
      }
      if (b.requires_grad()) {
        const GradSink db = b.grad_out();
        if (trans_b)
          kernels::gemm(true, false, N, K, M, dy, N, a.data, K, db.ptr, K, db.accumulate);
        else
          kernels::gemm(true, false, K, N, M, a.data, K, dy, N, db.ptr, N, db.accumulate);
      }
    });
  }
  return y;
}

Tensor residual_linear(const Tensor& r, const Tensor& x, const Tensor& w) {
  PhaseScope phase(Phase::matmul);
  ATTN_CHECK(x.is_contiguous() && r.is_contiguous(), "residual_linear: r ", r.shape, " and x ", x.shape,
             " must be contiguous");
  ATTN_CHECK(w.rank() == 2 && w.is_contiguous() && w.size(0) == x.cols(), "residual_linear: x ", x.shape,
             " and w ", w.shape, " do not match");
  ATTN_CHECK(r.rows() == x.rows() && r.cols() == w.size(1), "residual_linear: r ", r.shape, " is not x·w's shape [",
             x.rows(), ", ", w.size(1), "]");
  const int64_t M = x.rows(), K = x.cols(), N = w.size(1);
  Tensor y = new_output(r.shape, needs_grad(r, x, w));
  std::memcpy(y.data, r.data, size_t(M * N) * sizeof(float));
  kernels::gemm(false, false, M, N, K, x.data, K, w.data, N, y.data, N, true);
  if (y.requires_grad()) {
    record("residual_linear", y, [r, x, w, y, M, N, K] {
      // fwd: y = r + x · w   =>   dr += dy,   dx += dy · wᵀ,   dw += xᵀ · dy
      const float* dy = y.grad_in();
      if (r.requires_grad()) write_grad(r.grad_out(), M * N, [dy](int64_t i) { return dy[i]; });
      if (x.requires_grad()) {
        const GradSink dx = x.grad_out();
        kernels::gemm(false, true, M, K, N, dy, N, w.data, N, dx.ptr, K, dx.accumulate);
      }
      if (w.requires_grad()) {
        const GradSink dw = w.grad_out();
        kernels::gemm(true, false, K, N, M, x.data, K, dy, N, dw.ptr, N, dw.accumulate);
      }
    });
  }
  return y;
}

}  // namespace attnlab
