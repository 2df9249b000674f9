#include <catch2/catch.hpp>

#include <vector>

#include "kernels/transpose.h"

using attnlab::kernels::transpose;

TEST_CASE("transpose: every element lands at its transposed place, ragged edges and strides included", "[kernels]") {
  // Sizes around the 16×16 block (full blocks, ragged edges, below one block) and strides wider
  // than the rows, as when a head's keys are read out of a [B, S, heads, D] tensor.
  for (int64_t rows : {1, 7, 16, 17, 64, 70})
    for (int64_t cols : {1, 15, 16, 32, 33}) {
      const int64_t lds = cols + 5, ldd = rows + 3;
      std::vector<float> src(rows * lds), dst(cols * ldd, -1.f);
      for (size_t i = 0; i < src.size(); ++i) src[i] = float(i);
      transpose(dst.data(), ldd, src.data(), lds, rows, cols);
      int64_t wrong = 0, touched_padding = 0;
      for (int64_t c = 0; c < cols; ++c)
        for (int64_t r = 0; r < ldd; ++r) {
          if (r < rows) wrong += dst[c * ldd + r] != src[r * lds + c];
          else touched_padding += dst[c * ldd + r] != -1.f;
        }
      INFO(rows << "×" << cols);
      CHECK(wrong == 0);
      CHECK(touched_padding == 0);
    }
}
