#include "autograd/tape.h"
#include "ops/rope.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

TEST_CASE("rope: gradients and fast path, contiguous and strided input", "[ops][grad]") {
  for (int64_t T : testing::odd_sizes())
    for (int64_t D : {2, 8, 64})
      for (int64_t offset : {0, 5}) {
        const int64_t B = 2, H = 3;
        INFO("T " << T << " D " << D << " offset " << offset);
        testing::OpCase c;
        c.name = "rope";
        c.shapes = {{B, T, H, D}};
        c.seed = uint64_t(T * 100 + D);
        c.inputs = {testing::randn(B * T * H * D, c.seed)};
        c.ref_fwd = [=](const std::vector<Vec>& in) {
          Vec y(in[0].size());
          ref::rope_apply(y.data(), in[0].data(), B, T, H, D, 10000.0, offset, false);
          return y;
        };
        c.ref_bwd = [=](const std::vector<Vec>&, const Vec& dy) {
          std::vector<Vec> g{Vec(dy.size())};
          ref::rope_apply(g[0].data(), dy.data(), B, T, H, D, 10000.0, offset, true);
          return g;
        };
        c.fast = [=](const std::vector<Tensor>& in) { return rope(in[0], 10000.f, offset); };
        testing::check_op(c);
      }
}

TEST_CASE("rope: a strided view (q inside a fused buffer) gives the same values and grads", "[ops][grad]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  const int64_t B = 2, T = 17, H = 3, D = 8;
  Tensor wide = empty({B, T, 2 * H, D}, true);
  Vec init = testing::randn(wide.numel(), 3);
  for (int64_t i = 0; i < wide.numel(); ++i) wide.data[i] = float(init[i]);
  Tensor view = wide.slice(2, H, H);
  Tensor dense = empty({B, T, H, D}, true);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t e = 0; e < D; ++e)
          dense.data[((b * T + t) * H + h) * D + e] = view.data[b * view.strides[0] + t * view.strides[1] + h * view.strides[2] + e];
  Tensor y1 = rope(view, 10000.f, 2), y2 = rope(dense, 10000.f, 2);
  Vec r = testing::randn(y1.numel(), 4);
  std::vector<float> dy(r.begin(), r.end());
  for (int64_t i = 0; i < y1.numel(); ++i) {
    REQUIRE(y1.data[i] == y2.data[i]);
  }
  tape.seed_grad(y1, dy.data());
  tape.seed_grad(y2, dy.data());
  tape.backward();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < 2 * H; ++h)
        for (int64_t e = 0; e < D; ++e) {
          float g = wide.grad()[((b * T + t) * 2 * H + h) * D + e];
          if (h < H) REQUIRE(g == 0.f);  // the other half of the buffer gets nothing
          else REQUIRE(g == dense.grad()[((b * T + t) * H + (h - H)) * D + e]);
        }
}

TEST_CASE("rope: position 0 is the identity and rotations preserve norms", "[ops]") {
  Arena a;
  ArenaScope s(a);
  Tensor x = empty({1, 4, 1, 8});
  for (int i = 0; i < 32; ++i) x.data[i] = float(i % 5) - 2.f;
  Tensor y = rope(x, 10000.f);
  for (int e = 0; e < 8; ++e) REQUIRE(y.data[e] == x.data[e]);
  for (int t = 1; t < 4; ++t) {
    double nx = 0, ny = 0;
    for (int e = 0; e < 8; ++e) {
      nx += double(x.data[t * 8 + e]) * x.data[t * 8 + e];
      ny += double(y.data[t * 8 + e]) * y.data[t * 8 + e];
    }
    REQUIRE(ny == Approx(nx).epsilon(1e-6));
  }
}
