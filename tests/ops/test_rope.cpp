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

TEST_CASE("rope_concat: gradients and fast path, per-head and shared rotated part", "[ops][grad]") {
  for (int64_t T : {1, 3, 17})
    for (int64_t Hr : {3, 1})
      for (auto [Dx, Dr] : {std::pair<int64_t, int64_t>{4, 2}, {32, 16}, {1, 6}}) {
        const int64_t B = 2, H = 3;
        INFO("T " << T << " Hr " << Hr << " Dx " << Dx << " Dr " << Dr);
        testing::OpCase c;
        c.name = "rope_concat";
        c.shapes = {{B, T, H, Dx}, {B, T, Hr, Dr}};
        c.seed = uint64_t(T * 100 + Hr * 10 + Dx + Dr);
        c.inputs = {testing::randn(B * T * H * Dx, c.seed), testing::randn(B * T * Hr * Dr, c.seed + 1)};
        c.ref_fwd = [=](const std::vector<Vec>& in) {
          Vec y(B * T * H * (Dx + Dr));
          ref::rope_concat_fwd(y.data(), in[0].data(), in[1].data(), B, T, H, Hr, Dx, Dr, 100.0);
          return y;
        };
        c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
          std::vector<Vec> g{Vec(in[0].size()), Vec(in[1].size())};
          ref::rope_concat_bwd(g[0].data(), g[1].data(), dy.data(), B, T, H, Hr, Dx, Dr, 100.0);
          return g;
        };
        c.fast = [=](const std::vector<Tensor>& in) { return rope_concat(in[0], in[1], 100.f); };
        testing::check_op(c);
      }
}

// MLA's use: q^C and q^R are two column ranges of one projection's heads, k^R a column range of
// another matrix's rows; the gradient reaches each range of the shared buffer, and nothing else.
TEST_CASE("rope_concat: strided parts of one buffer equal dense copies, and rope_concat(x, r) ends in rope(r)",
          "[ops][grad]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  const int64_t B = 2, T = 5, H = 3, Dx = 4, Dr = 6, W = H * (Dx + Dr);
  Tensor q = empty({B, T, W}, true);
  Vec init = testing::randn(q.numel(), 8);
  for (int64_t i = 0; i < q.numel(); ++i) q.data[i] = float(init[i]);
  Tensor heads = q.split_last(H);
  Tensor y = rope_concat(heads.slice(3, 0, Dx), heads.slice(3, Dx, Dr), 10000.f);
  Tensor rot = rope(heads.slice(3, Dx, Dr), 10000.f);
  for (int64_t n = 0; n < B * T * H; ++n)
    for (int64_t e = 0; e < Dr; ++e) REQUIRE(y.data[n * (Dx + Dr) + Dx + e] == rot.data[n * Dr + e]);
  // With dy = 1 on every element the gradient of the copied part is exactly 1, and the rotated part's
  // gradient is R(-θ)·1, as rope's own backward gives it.
  std::vector<float> ones(y.numel(), 1.f);
  tape.seed_grad(y, ones.data());
  tape.backward();
  Arena a2;
  Tape t2;
  ArenaScope as2(a2);
  TapeScope ts2(t2);
  Tensor r2 = empty({B, T, H, Dr}, true);
  for (int64_t n = 0; n < B * T * H; ++n)
    for (int64_t e = 0; e < Dr; ++e) r2.data[n * Dr + e] = q.data[n * (Dx + Dr) + Dx + e];
  Tensor y2 = rope(r2, 10000.f);
  std::vector<float> ones2(y2.numel(), 1.f);
  t2.seed_grad(y2, ones2.data());
  t2.backward();
  for (int64_t n = 0; n < B * T * H; ++n) {
    for (int64_t e = 0; e < Dx; ++e) REQUIRE(q.grad()[n * (Dx + Dr) + e] == 1.f);
    for (int64_t e = 0; e < Dr; ++e) REQUIRE(q.grad()[n * (Dx + Dr) + Dx + e] == r2.grad()[n * Dr + e]);
  }
}
