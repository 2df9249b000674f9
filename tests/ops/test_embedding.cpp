#include "ops/embedding.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

TEST_CASE("embedding: gradients (scatter-add with repeated ids) and fast path", "[ops][grad]") {
  for (int64_t N : testing::odd_sizes())
    for (int64_t V : {1, 3, 65})
      for (int64_t C : {1, 17, 65}) {
        INFO("N " << N << " V " << V << " C " << C);
        auto ids = std::make_shared<std::vector<int32_t>>(N);
        for (int64_t n = 0; n < N; ++n) (*ids)[n] = int32_t((n * 7 + 3) % V);  // repeats when N > V
        testing::OpCase c;
        c.name = "embedding";
        c.shapes = {{V, C}};
        c.seed = uint64_t(N * 100 + V * 10 + C);
        c.inputs = {testing::randn(V * C, c.seed)};
        c.ref_fwd = [=](const std::vector<Vec>& in) {
          Vec y(N * C);
          ref::embedding_fwd(y.data(), ids->data(), in[0].data(), N, C);
          return y;
        };
        c.ref_bwd = [=](const std::vector<Vec>&, const Vec& dy) {
          std::vector<Vec> g{Vec(V * C)};
          ref::embedding_bwd(g[0].data(), dy.data(), ids->data(), N, C);
          return g;
        };
        c.fast = [=](const std::vector<Tensor>& in) { return embedding(ids->data(), N, in[0]); };
        testing::check_op(c);
      }
}

TEST_CASE("embedding: an id outside the table is an error naming it", "[ops]") {
  Arena a;
  ArenaScope s(a);
  Tensor table = empty({5, 4});
  int32_t ids[3] = {0, 5, 1};
  REQUIRE_THROWS_WITH(embedding(ids, 3, table), Catch::Contains("id 5 at position 1"));
}
