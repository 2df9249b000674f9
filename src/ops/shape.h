#pragma once
// Layout ops that copy (views — reshape, slice, split_last — are Tensor methods and copy nothing):
//   contiguous(x):        a dense copy of a strided view
//   transpose12(x):       [A, B, C, D] -> [A, C, B, D]   (e.g. [B, T, H, D] <-> [B, H, T, D])
//   concat_last(a, b):    [..., M] ++ [..., N] -> [..., M + N]
#include "tensor/tensor.h"

namespace attnlab {

Tensor contiguous(const Tensor& x);
Tensor transpose12(const Tensor& x);
Tensor concat_last(const Tensor& a, const Tensor& b);

}  // namespace attnlab
