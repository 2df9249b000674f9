#include "ops/shape.h"

#include "autograd/tape.h"
#include "util/check.h"

namespace attnlab {
namespace {

// Pads a shape/strides pair to rank 4 (leading size-1 dims).
struct Rank4 {
  int64_t n[4], s[4];
  explicit Rank4(const Tensor& t) {
    int pad = 4 - t.rank();
    for (int i = 0; i < 4; ++i) {
      n[i] = i < pad ? 1 : t.shape.dims[i - pad];
      s[i] = i < pad ? 0 : t.strides[i - pad];
    }
  }
};

// dst (+)= src elementwise over dims n, each side with its own strides.
void strided_copy(float* dst, const int64_t* ds, const float* src, const int64_t* ss, const int64_t* n,
                  bool accumulate) {
#pragma omp parallel for collapse(2) if (n[0] * n[1] * n[2] * n[3] > (1 << 15))
  for (int64_t a = 0; a < n[0]; ++a)
    for (int64_t b = 0; b < n[1]; ++b)
      for (int64_t c = 0; c < n[2]; ++c) {
        float* d = dst + a * ds[0] + b * ds[1] + c * ds[2];
        const float* s = src + a * ss[0] + b * ss[1] + c * ss[2];
        if (accumulate)
          for (int64_t e = 0; e < n[3]; ++e) d[e * ds[3]] += s[e * ss[3]];
        else
          for (int64_t e = 0; e < n[3]; ++e) d[e * ds[3]] = s[e * ss[3]];
      }
}

// dst = src for two tensors of the same shape, any layouts.
void copy_data(const Tensor& dst, const Tensor& src) {
  Rank4 rd(dst), rs(src);
  strided_copy(dst.data, rd.s, src.data, rs.s, rs.n, false);
}

// d(dst) (+)= d(src), in backward.
void copy_grad(const Tensor& dst, const Tensor& src) {
  Rank4 rd(dst), rs(src);
  const GradSink sink = dst.grad_out();
  strided_copy(sink.ptr, rd.s, src.grad_in(), rs.s, rs.n, sink.accumulate);
}

}  // namespace

Tensor contiguous(const Tensor& x) {
  Tensor y = new_output(x.shape, needs_grad(x));
  copy_data(y, x);
  if (y.requires_grad()) {
    record("contiguous", y, [x, y] {
      // fwd: y = x (re-laid out)  =>  dx += dy, in x's layout
      copy_grad(x, y);
    });
  }
  return y;
}

Tensor transpose12(const Tensor& x) {
  ATTN_CHECK(x.rank() == 4, "transpose12: x ", x.shape, " must have rank 4");
  Tensor v = x;  // a view with dims 1 and 2 swapped, then made dense
  std::swap(v.shape.dims[1], v.shape.dims[2]);
  std::swap(v.strides[1], v.strides[2]);
  return contiguous(v);
}

Tensor concat_last(const Tensor& a, const Tensor& b) {
  ATTN_CHECK(a.rank() == b.rank() && a.rank() >= 1, "concat_last: ranks of ", a.shape, " and ", b.shape, " differ");
  for (int i = 0; i < a.rank() - 1; ++i)
    ATTN_CHECK(a.size(i) == b.size(i), "concat_last: ", a.shape, " and ", b.shape, " differ before the last dim");
  Shape ys = a.shape;
  ys[-1] = a.size(-1) + b.size(-1);
  Tensor y = new_output(ys, needs_grad(a, b));
  const int64_t M = a.size(-1);
  Tensor ya = y.slice(-1, 0, M), yb = y.slice(-1, M, b.size(-1));
  copy_data(ya, a);
  copy_data(yb, b);
  if (y.requires_grad()) {
    record("concat_last", y, [a, b, ya, yb] {
      // fwd: y = [a | b]  =>  da += dy[..., :M];  db += dy[..., M:]
      if (a.requires_grad()) copy_grad(a, ya);
      if (b.requires_grad()) copy_grad(b, yb);
    });
  }
  return y;
}

}  // namespace attnlab
