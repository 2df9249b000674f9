#include "ops/embedding.h"

#include <cstring>

#include "autograd/tape.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

Tensor embedding(const int32_t* ids, int64_t N, const Tensor& table) {
  PhaseScope phase(Phase::norm_act);
  ATTN_CHECK(table.rank() == 2 && table.is_contiguous(), "embedding: table ", table.shape, " must be a matrix");
  const int64_t V = table.size(0), C = table.size(1);
  for (int64_t n = 0; n < N; ++n)
    ATTN_CHECK(ids[n] >= 0 && ids[n] < V, "embedding: id ", ids[n], " at position ", n, " is outside [0, ", V, ")");
  Tensor y = new_output({N, C}, needs_grad(table));
#pragma omp parallel for if (N * C > (1 << 15))
  for (int64_t n = 0; n < N; ++n) std::memcpy(y.data + n * C, table.data + int64_t(ids[n]) * C, C * sizeof(float));
  if (y.requires_grad()) {
    record("embedding", y, [ids, N, C, table, y] {
      // fwd: y[n,c] = table[ids[n],c]  =>  dtable[ids[n],c] += dy[n,c]
      constexpr int64_t kBlock = 16;
      float* dtable = table.grad_accum();
      const float* dy = y.grad_in();
#pragma omp parallel for if (N * C > (1 << 15))
      for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
        const int64_t c1 = std::min(C, c0 + kBlock);
        for (int64_t n = 0; n < N; ++n) {
          float* dst = dtable + int64_t(ids[n]) * C;
          const float* src = dy + n * C;
          for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
        }
      }
    });
  }
  return y;
}

}  // namespace attnlab
