#pragma once
// embedding: y[n, :] = table[ids[n], :]
// ids: N int32 in [0, V) (caller-owned; must stay valid until backward)   table: [V, C]  ->  y: [N, C]
// Backward scatter-adds rows of dy into dtable (parallel over column blocks: no races, fixed order).
#include <cstdint>

#include "tensor/tensor.h"

namespace attnlab {

Tensor embedding(const int32_t* ids, int64_t N, const Tensor& table);

namespace ref {
template <class T>
void embedding_fwd(T* y, const int32_t* ids, const T* table, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) y[n * C + c] = table[int64_t(ids[n]) * C + c];
}
// fwd: y[n,c] = table[ids[n],c]  =>  dtable[ids[n],c] += dy[n,c]
template <class T>
void embedding_bwd(T* dtable, const T* dy, const int32_t* ids, int64_t N, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) dtable[int64_t(ids[n]) * C + c] += dy[n * C + c];
}
}  // namespace ref

}  // namespace attnlab
