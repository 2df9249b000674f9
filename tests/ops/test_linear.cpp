#include "ops/linear.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

namespace {
testing::OpCase matmul_case(int64_t M, int64_t K, int64_t N, bool trans_b) {
  Shape bs = trans_b ? Shape{N, K} : Shape{K, N};
  testing::OpCase c;
  c.name = "matmul";
  c.shapes = {{M, K}, bs};
  c.seed = uint64_t(M * 1000 + K * 10 + N);
  c.inputs = {testing::randn(M * K, c.seed), testing::randn(K * N, c.seed + 1)};
  c.ref_fwd = [=](const std::vector<Vec>& in) {
    Vec y(M * N);
    ref::matmul_fwd(y.data(), in[0].data(), in[1].data(), M, K, N, trans_b);
    return y;
  };
  c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
    std::vector<Vec> g{Vec(M * K), Vec(K * N)};
    ref::matmul_bwd(g[0].data(), g[1].data(), dy.data(), in[0].data(), in[1].data(), M, K, N, trans_b);
    return g;
  };
  c.fast = [=](const std::vector<Tensor>& in) { return matmul(in[0], in[1], trans_b); };
  return c;
}
}  // namespace

TEST_CASE("matmul: gradients and fast path, odd shapes, both layouts of b", "[ops][grad]") {
  for (int64_t M : testing::odd_sizes())
    for (int64_t K : {1, 17, 65})
      for (int64_t N : {3, 65})
        for (bool tb : {false, true}) {
          INFO("M " << M << " K " << K << " N " << N << " trans_b " << tb);
          testing::check_op(matmul_case(M, K, N, tb));
        }
}

TEST_CASE("matmul: leading dims flatten into rows", "[ops]") {
  Arena arena;
  ArenaScope scope(arena);
  Tensor a = empty({2, 3, 4}), b = empty({4, 5});
  for (int i = 0; i < 24; ++i) a.data[i] = float(i % 7) - 3.f;
  for (int i = 0; i < 20; ++i) b.data[i] = float(i % 5) * 0.5f;
  Tensor y = matmul(a, b);
  REQUIRE(y.shape == Shape{2, 3, 5});
  std::vector<float> ref(30);
  ref::matmul_fwd(ref.data(), a.data, b.data, 6, 4, 5, false);
  for (int i = 0; i < 30; ++i) REQUIRE(y.data[i] == Approx(ref[i]));
  REQUIRE_THROWS_AS(matmul(a, empty({5, 4})), InternalError);
}
