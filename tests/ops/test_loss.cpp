#include <cmath>

#include "ops/loss.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

TEST_CASE("cross_entropy: gradients and fast path, with ignored rows", "[ops][grad]") {
  for (int64_t N : testing::odd_sizes())
    for (int64_t V : {1, 3, 65, 130}) {
      for (bool with_ignore : {false, true}) {
        INFO("N " << N << " V " << V << " ignore " << with_ignore);
        auto t = std::make_shared<std::vector<int32_t>>(N);
        for (int64_t i = 0; i < N; ++i) (*t)[i] = int32_t((i * 5 + 1) % V);
        if (with_ignore && N > 1) (*t)[1] = kIgnoreIndex;
        testing::OpCase c;
        c.name = "cross_entropy";
        c.shapes = {{N, V}};
        c.seed = uint64_t(N * 1000 + V);
        c.inputs = {testing::randn(N * V, c.seed, 3.0)};
        c.ref_fwd = [=](const std::vector<Vec>& in) {
          return Vec{ref::cross_entropy_fwd(in[0].data(), t->data(), N, V, kIgnoreIndex)};
        };
        c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
          std::vector<Vec> g{Vec(N * V)};
          ref::cross_entropy_bwd(g[0].data(), dy[0], in[0].data(), t->data(), N, V, kIgnoreIndex);
          return g;
        };
        c.fast = [=](const std::vector<Tensor>& in) { return cross_entropy(in[0], t->data()); };
        if (V == 1) {  // one class: loss 0, gradient 0; only the fast path is meaningful
          testing::check_fast_vs_ref(c);
          continue;
        }
        testing::check_op(c);
      }
    }
}

TEST_CASE("cross_entropy: uniform logits give log V, bad targets are errors", "[ops]") {
  Arena a;
  ArenaScope s(a);
  Tensor z = zeros({4, 65});
  int32_t t[4] = {0, 1, 64, kIgnoreIndex};
  REQUIRE(cross_entropy(z, t).item() == Approx(std::log(65.0)));
  int32_t bad[4] = {0, 65, 1, 2};
  REQUIRE_THROWS_WITH(cross_entropy(z, bad), Catch::Contains("target 65 at row 1"));
  int32_t none[4] = {kIgnoreIndex, kIgnoreIndex, kIgnoreIndex, kIgnoreIndex};
  REQUIRE(cross_entropy(z, none).item() == 0.f);
}
