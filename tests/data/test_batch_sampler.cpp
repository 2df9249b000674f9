// BatchSampler: windows, determinism, counter save/restore, check_fits.
#include <catch2/catch.hpp>

#include <numeric>
#include <set>
#include <vector>

#include "data/batch_sampler.h"
#include "util/check.h"

using namespace attnlab;
using Ids = std::vector<int32_t>;

namespace {

// tokens[i] == first + i, so a token's value tells where in the span it came from.
Ids iota_tokens(int n, int first = 0) {
  Ids t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

struct Batch {
  Ids x, y;
  bool operator==(const Batch&) const = default;
};

Batch draw(BatchSampler& s, int B, int T) {
  Batch b{Ids(size_t(B) * T), Ids(size_t(B) * T)};
  s.next(b.x.data(), b.y.data(), B, T);
  return b;
}

}  // namespace

TEST_CASE("windows are contiguous, inside the span, and y is x shifted by one", "[data][sampler]") {
  const Ids corpus = iota_tokens(100);
  const std::span<const int32_t> split = std::span<const int32_t>(corpus).subspan(60);  // values 60..99
  BatchSampler s(split, 1234, "data.train");
  const int B = 16, T = 8;
  std::set<int32_t> starts;
  for (int step = 0; step < 50; ++step) {
    const Batch b = draw(s, B, T);
    for (int r = 0; r < B; ++r) {
      const int32_t start = b.x[r * T];
      REQUIRE(start >= 60);
      REQUIRE(start + T <= 99);  // the last target is tok[start + T] <= 99
      starts.insert(start);
      for (int t = 0; t < T; ++t) {
        REQUIRE(b.x[r * T + t] == start + t);
        REQUIRE(b.y[r * T + t] == start + t + 1);
      }
    }
  }
  CHECK(starts.size() == 40 - T);  // every start in [0, len - T - 1] is drawn, none beyond
  CHECK(*starts.begin() == 60);
  CHECK(*starts.rbegin() == 99 - T);
}

TEST_CASE("a span of exactly T + 1 tokens has one window", "[data][sampler]") {
  const Ids tok = iota_tokens(5, 10);
  BatchSampler s(tok, 7, "data.val");
  const Batch b = draw(s, 3, 4);
  CHECK(b.x == Ids{10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13});
  CHECK(b.y == Ids{11, 12, 13, 14, 11, 12, 13, 14, 11, 12, 13, 14});
}

TEST_CASE("same seed and stream give the same batches", "[data][sampler]") {
  const Ids tok = iota_tokens(1000);
  BatchSampler a(tok, 42, "data.train"), b(tok, 42, "data.train");
  BatchSampler other_seed(tok, 43, "data.train"), other_stream(tok, 42, "data.val");
  const Batch first = draw(a, 4, 16);
  CHECK(first == draw(b, 4, 16));
  CHECK(draw(a, 4, 16) == draw(b, 4, 16));
  CHECK_FALSE(first == draw(other_seed, 4, 16));
  CHECK_FALSE(first == draw(other_stream, 4, 16));
}

TEST_CASE("a batch depends only on the counter: one batch of 8 rows = two of 4", "[data][sampler]") {
  const Ids tok = iota_tokens(500);
  BatchSampler a(tok, 5, "data.train"), b(tok, 5, "data.train");
  const Batch big = draw(a, 8, 6);
  const Batch lo = draw(b, 4, 6), hi = draw(b, 4, 6);
  CHECK(Ids(big.x.begin(), big.x.begin() + 24) == lo.x);
  CHECK(Ids(big.x.begin() + 24, big.x.end()) == hi.x);
  CHECK(a.counter() == 8);
  CHECK(b.counter() == 8);
}

TEST_CASE("counter save and restore reproduces the next batch", "[data][sampler]") {
  const Ids tok = iota_tokens(300);
  BatchSampler s(tok, 99, "data.train");
  CHECK(s.counter() == 0);
  draw(s, 5, 10);
  draw(s, 5, 10);
  const uint64_t saved = s.counter();
  CHECK(saved == 10);
  const Batch next = draw(s, 5, 10);
  const Batch after = draw(s, 5, 10);
  CHECK_FALSE(next == after);

  s.set_counter(saved);
  CHECK(draw(s, 5, 10) == next);

  BatchSampler resumed(tok, 99, "data.train");  // a fresh process resuming from a checkpoint
  resumed.set_counter(saved);
  CHECK(draw(resumed, 5, 10) == next);
  CHECK(draw(resumed, 5, 10) == after);
}

TEST_CASE("check_fits names the split, its size and the window", "[data][sampler]") {
  const Ids tok = iota_tokens(40);
  const BatchSampler s(tok, 1, "data.val");
  CHECK_NOTHROW(s.check_fits(39, "val", "data/x.txt"));  // 40 tokens = one window of 39 + 1
  CHECK_THROWS_MATCHES(s.check_fits(64, "val", "data/x.txt"), DataError,
                       Catch::Matchers::Message("data/x.txt: the val split has 40 tokens, fewer than one window of "
                                                "context + 1 = 65 tokens; use a longer file or a smaller model.context"));
  CHECK_THROWS_AS(s.check_fits(40, "train", "data/x.txt"), DataError);

  const BatchSampler empty(std::span<const int32_t>{}, 1, "data.val");
  CHECK_THROWS_WITH(empty.check_fits(1, "val", "p"), Catch::Matchers::Contains("the val split has 0 tokens"));
}

TEST_CASE("next refuses a span too short for one window", "[data][sampler]") {
  const Ids tok = iota_tokens(8);
  BatchSampler s(tok, 1, "data.train");
  Ids x(8), y(8);
  CHECK_THROWS_AS(s.next(x.data(), y.data(), 1, 8), InternalError);
  CHECK_THROWS_AS(s.next(x.data(), y.data(), 0, 4), InternalError);
  CHECK_NOTHROW(s.next(x.data(), y.data(), 1, 7));
  CHECK(x[0] == 0);
  CHECK(y[6] == 7);
}
