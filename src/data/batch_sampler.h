#pragma once
// Random training windows from a token span, drawn with a counter-based Rng (util/rng.h).
// Batch b's rows use draws counter .. counter + B - 1, so the batches depend only on
// (seed, stream name, counter): not on thread count, and a checkpoint stores just the counter.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "util/rng.h"

namespace attnlab {

class BatchSampler {
 public:
  // `tokens` must outlive the sampler. `stream_name` (e.g. "data.train") picks the Rng stream.
  BatchSampler(std::span<const int32_t> tokens, uint64_t seed, std::string_view stream_name);

  // DataError "<path>: the <split_name> split has N tokens, fewer than one window of context + 1
  // = T+1 tokens; ..." when the span cannot hold one window of T inputs plus its shifted target.
  void check_fits(int T, std::string_view split_name, const std::string& path) const;

  // Fills x, y [B, T] (row-major): row b takes start = rng.below(len - T), i.e. a start in
  // [0, len - T - 1], and x[b, t] = tok[start + t], y[b, t] = tok[start + t + 1].
  // Advances the counter by B. Needs len >= T + 1 (InternalError otherwise; call check_fits).
  void next(int32_t* x, int32_t* y, int B, int T);

  uint64_t counter() const { return rng_.counter; }
  void set_counter(uint64_t counter) { rng_.counter = counter; }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  std::span<const int32_t> tokens() const { return tokens_; }

 private:
  std::span<const int32_t> tokens_;
  Rng rng_;
};

}  // namespace attnlab
