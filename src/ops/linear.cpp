#include "ops/linear.h"

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
  Tensor y = empty(ys, needs_grad(a, b));
  kernels::gemm(false, trans_b, M, N, K, a.data, K, b.data, b.size(1), y.data, N, false);
  if (y.requires_grad()) {
    record("matmul", [a, b, y, M, N, K, trans_b] {
      // fwd: y = a · op(b)   =>   da += dy · op(b)ᵀ,   d op(b) += aᵀ · dy
      if (a.grad) kernels::gemm(false, !trans_b, M, K, N, y.grad, N, b.data, b.size(1), a.grad, K, true);
      if (b.grad) {
        if (trans_b)
          kernels::gemm(true, false, N, K, M, y.grad, N, a.data, K, b.grad, K, true);
        else
          kernels::gemm(true, false, K, N, M, a.data, K, y.grad, N, b.grad, N, true);
      }
    });
  }
  return y;
}

}  // namespace attnlab
