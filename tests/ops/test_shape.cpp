#include "ops/shape.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

TEST_CASE("transpose12: gradients and fast path", "[ops][grad]") {
  for (int64_t T : testing::odd_sizes()) {
    const int64_t A = 2, H = 3, D = 5;
    testing::OpCase c;
    c.name = "transpose12";
    c.shapes = {{A, T, H, D}};
    c.seed = uint64_t(T);
    c.inputs = {testing::randn(A * T * H * D, c.seed)};
    auto idx_in = [=](int64_t a, int64_t t, int64_t h, int64_t d) { return ((a * T + t) * H + h) * D + d; };
    auto idx_out = [=](int64_t a, int64_t t, int64_t h, int64_t d) { return ((a * H + h) * T + t) * D + d; };
    c.ref_fwd = [=](const std::vector<Vec>& in) {
      Vec y(in[0].size());
      for (int64_t a = 0; a < A; ++a)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t d = 0; d < D; ++d) y[idx_out(a, t, h, d)] = in[0][idx_in(a, t, h, d)];
      return y;
    };
    c.ref_bwd = [=](const std::vector<Vec>&, const Vec& dy) {
      std::vector<Vec> g{Vec(dy.size())};
      for (int64_t a = 0; a < A; ++a)
        for (int64_t t = 0; t < T; ++t)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t d = 0; d < D; ++d) g[0][idx_in(a, t, h, d)] += dy[idx_out(a, t, h, d)];
      return g;
    };
    c.fast = [](const std::vector<Tensor>& in) { return transpose12(in[0]); };
    testing::check_op(c);
  }
}

TEST_CASE("concat_last: gradients and fast path, split by slices is its inverse", "[ops][grad]") {
  for (int64_t M : testing::odd_sizes())
    for (int64_t N : {1, 17}) {
      const int64_t R = 6;
      testing::OpCase c;
      c.name = "concat_last";
      c.shapes = {{2, 3, M}, {2, 3, N}};
      c.seed = uint64_t(M * 10 + N);
      c.inputs = {testing::randn(R * M, c.seed), testing::randn(R * N, c.seed + 1)};
      c.ref_fwd = [=](const std::vector<Vec>& in) {
        Vec y(R * (M + N));
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t i = 0; i < M; ++i) y[r * (M + N) + i] = in[0][r * M + i];
          for (int64_t i = 0; i < N; ++i) y[r * (M + N) + M + i] = in[1][r * N + i];
        }
        return y;
      };
      c.ref_bwd = [=](const std::vector<Vec>&, const Vec& dy) {
        std::vector<Vec> g{Vec(R * M), Vec(R * N)};
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t i = 0; i < M; ++i) g[0][r * M + i] = dy[r * (M + N) + i];
          for (int64_t i = 0; i < N; ++i) g[1][r * N + i] = dy[r * (M + N) + M + i];
        }
        return g;
      };
      c.fast = [](const std::vector<Tensor>& in) { return concat_last(in[0], in[1]); };
      testing::check_op(c);
      // contiguous() of a slice of the concatenation gives back the first input.
      c.fast = [=](const std::vector<Tensor>& in) {
        Tensor y = concat_last(in[0], in[1]);
        Tensor back = contiguous(y.slice(-1, 0, M));
        for (int64_t i = 0; i < R * M; ++i) REQUIRE(back.data[i] == in[0].data[i]);
        return y;
      };
      testing::check_fast_vs_ref(c);
    }
}

TEST_CASE("views: reshape, slice and split_last share memory and grads", "[tensor]") {
  Arena a;
  ArenaScope s(a);
  Tensor x = empty({2, 3, 12}, true);
  Tensor heads = x.split_last(4);
  REQUIRE(heads.shape == Shape{2, 3, 4, 3});
  REQUIRE(heads.data == x.data);
  REQUIRE(heads.grad() == x.grad());
  Tensor sl = x.slice(2, 4, 4);
  REQUIRE(sl.data == x.data + 4);
  REQUIRE(sl.grad() == x.grad() + 4);
  REQUIRE_FALSE(sl.is_contiguous());
  REQUIRE_THROWS_AS(sl.reshape({24}), InternalError);
  REQUIRE(x.reshape({6, 12}).rows() == 6);
  REQUIRE_THROWS_AS(x.reshape({5, 12}), InternalError);
}
