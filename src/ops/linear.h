#pragma once
// matmul: y = a · b        (or a · bᵀ with trans_b)
// a: [..., K] (contiguous)   b: [K, N] (or [N, K] with trans_b)   ->   y: [..., N]
// linear(x, w) = x · w, with weights stored [in, out] so that heads are column blocks of w.
// residual_linear(r, x, w) = r + x · w: a residual branch's output projection added to the stream
// in one product (r is copied into the output and the product accumulated onto it), so the
// branch output is never stored; bit-identical to add(r, linear(x, w)). In backward, r's gradient
// takes over dy's storage when it is r's first (Tensor::take_grad_of), instead of a copy.
// Both take residual weights rw = (skip, branch): y = skip·r + branch·f(...) (model.residual:
// weighted, y = √(1−τ)·r + √τ·f). With the default (1, 1) they run exactly as described; otherwise
// the product is written to y and one pass makes y = branch·y + skip·r (in place of the copy of r),
// and backward scales dy by branch for the products and by skip for r's gradient.
// residual_gelu_mlp(r, x, w1, w2) = r + gelu(x · w1) · w2: the GELU MLP with its residual add.
// h = x · w1 is kept for backward; gelu(h), as wide, is not: forward writes it to a scratch buffer
// that every call shares, and backward recomputes it (with bf16 products, in the one pass over h
// that also gives h's gradient). h's gradient exists only as the operand of the two products that
// read it (in bf16 when they run in bf16). Bit-identical to
// residual_linear(r, gelu(linear(x, w1)), w2); x16 as for linear().
#include "tensor/tensor.h"

namespace attnlab {

// a16, when given, is pack_operand(a): the products of forward and backward read it instead of
// converting a again (bf16 products only; the same bytes, so the same results).
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b = false, const uint16_t* a16 = nullptr);
inline Tensor linear(const Tensor& x, const Tensor& w, const uint16_t* x16 = nullptr) {
  return matmul(x, w, false, x16);
}
// A bf16 copy of x (contiguous) in the current arena, for several matmul() calls that read x: x is
// converted once instead of twice per product. Null when products run in f32. (The norms write
// this copy of their output themselves, in the same pass: see ops/norm.h.)
const uint16_t* pack_operand(const Tensor& x);
struct ResidualWeights {
  float skip = 1.f, branch = 1.f;
  bool plain() const { return skip == 1.f && branch == 1.f; }
};
Tensor residual_linear(const Tensor& r, const Tensor& x, const Tensor& w, ResidualWeights rw = {});
Tensor residual_gelu_mlp(const Tensor& r, const Tensor& x, const Tensor& w1, const Tensor& w2,
                         const uint16_t* x16 = nullptr, ResidualWeights rw = {});

namespace ref {
// y[m,n] = Σ_k a[m,k] b[k,n]   (b[n,k] with trans_b)
template <class T>
void matmul_fwd(T* y, const T* a, const T* b, int64_t M, int64_t K, int64_t N, bool trans_b) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      T s = 0;
      for (int64_t k = 0; k < K; ++k) s += a[m * K + k] * (trans_b ? b[n * K + k] : b[k * N + n]);
      y[m * N + n] = s;
    }
}
// fwd: y[m,n] = Σ_k a[m,k] b[k,n]  =>  da[m,k] += Σ_n dy[m,n] b[k,n];  db[k,n] += Σ_m a[m,k] dy[m,n]
template <class T>
void matmul_bwd(T* da, T* db, const T* dy, const T* a, const T* b, int64_t M, int64_t K, int64_t N, bool trans_b) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        T bkn = trans_b ? b[n * K + k] : b[k * N + n];
        if (da) da[m * K + k] += dy[m * N + n] * bkn;
        if (db) (trans_b ? db[n * K + k] : db[k * N + n]) += a[m * K + k] * dy[m * N + n];
      }
}
}  // namespace ref

}  // namespace attnlab
