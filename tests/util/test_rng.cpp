#include <catch2/catch.hpp>

#include <cmath>

#include "util/rng.h"

using namespace attnlab;

TEST_CASE("rng: counter-based streams are reproducible and independent", "[util]") {
  Rng a(7, "blocks.0.attn.wq"), b(7, "blocks.0.attn.wq"), c(7, "blocks.0.attn.wk");
  for (int i = 0; i < 100; ++i) {
    uint64_t va = a.next_u64();
    REQUIRE(va == b.next_u64());
    REQUIRE(va != c.next_u64());
  }
  Rng d(7, "blocks.0.attn.wq");
  d.counter = 50;
  Rng e(7, "blocks.0.attn.wq");
  for (int i = 0; i < 50; ++i) e.next_u64();
  REQUIRE(d.next_u64() == e.next_u64());
}

TEST_CASE("rng: normal draws have mean 0 and variance 1", "[util]") {
  Rng r(1, 2);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double x = r.normal();
    s += x;
    s2 += x * x;
  }
  REQUIRE(std::abs(s / n) < 0.01);
  REQUIRE(std::abs(s2 / n - 1.0) < 0.01);
  uint64_t counts[10] = {};
  for (int i = 0; i < n; ++i) counts[r.below(10)]++;
  for (auto c : counts) REQUIRE(std::abs(double(c) / n - 0.1) < 0.005);
}
