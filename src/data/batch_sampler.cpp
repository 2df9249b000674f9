#include "data/batch_sampler.h"

#include <algorithm>

#include "util/check.h"

namespace attnlab {

BatchSampler::BatchSampler(std::span<const int32_t> tokens, uint64_t seed, std::string_view stream_name)
    : tokens_(tokens), rng_(seed, stream_name) {}

void BatchSampler::check_fits(int T, std::string_view split_name, const std::string& path) const {
  const int64_t need = static_cast<int64_t>(T) + 1;
  if (size() < need)
    throw DataError(detail::concat(path, ": the ", split_name, " split has ", size(),
                                   " tokens, fewer than one window of context + 1 = ", need,
                                   " tokens; use a longer file or a smaller model.context"));
}

void BatchSampler::next(int32_t* x, int32_t* y, int B, int T) {
  ATTN_CHECK(B > 0 && T > 0, "BatchSampler::next: B ", B, " and T ", T, " must be positive");
  ATTN_CHECK(size() >= static_cast<int64_t>(T) + 1, "BatchSampler::next: ", size(),
             " tokens cannot hold a window of T + 1 = ", static_cast<int64_t>(T) + 1, " (call check_fits first)");
  const uint64_t n_starts = static_cast<uint64_t>(size() - T);
  for (int b = 0; b < B; ++b) {
    const auto start = static_cast<size_t>(rng_.below(n_starts));
    const int32_t* src = tokens_.data() + start;
    std::copy(src, src + T, x + static_cast<size_t>(b) * T);
    std::copy(src + 1, src + 1 + T, y + static_cast<size_t>(b) * T);
  }
}

}  // namespace attnlab
