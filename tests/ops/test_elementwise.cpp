#include <cmath>

#include "autograd/tape.h"
#include "ops/elementwise.h"
#include "testing/gradcheck.h"
#include "util/rng.h"

using namespace attnlab;
using testing::Vec;

namespace {
// A pointwise op y = f(x) with derivative f'.
template <class F, class DF, class Fast>
testing::OpCase pointwise(const char* name, Shape s, F f, DF df, Fast fast) {
  testing::OpCase c;
  c.name = name;
  c.shapes = {s};
  c.seed = uint64_t(s.numel());
  c.inputs = {testing::randn(s.numel(), c.seed, 2.0)};
  c.ref_fwd = [=](const std::vector<Vec>& in) {
    Vec y(in[0].size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = f(in[0][i]);
    return y;
  };
  c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
    std::vector<Vec> g{Vec(in[0].size())};
    for (size_t i = 0; i < dy.size(); ++i) g[0][i] = dy[i] * df(in[0][i]);
    return g;
  };
  c.fast = [=](const std::vector<Tensor>& in) { return fast(in[0]); };
  return c;
}
}  // namespace

TEST_CASE("gelu, silu, scale: gradients and fast path", "[ops][grad]") {
  for (int64_t n : testing::odd_sizes())
    for (Shape s : {Shape{n}, Shape{3, n}, Shape{n, 65}}) {
      INFO("shape " << s);
      testing::check_op(pointwise(
          "gelu", s, [](double x) { return ref::gelu(x); }, [](double x) { return ref::gelu_grad(x); },
          [](const Tensor& x) { return gelu(x); }));
      testing::check_op(pointwise(
          "silu", s, [](double x) { return ref::silu(x); }, [](double x) { return ref::silu_grad(x); },
          [](const Tensor& x) { return silu(x); }));
      testing::check_op(pointwise(
          "scale", s, [](double x) { return -0.37 * x; }, [](double) { return -0.37; },
          [](const Tensor& x) { return scale(x, -0.37f); }));
    }
}

TEST_CASE("add (with broadcast) and mul: gradients and fast path", "[ops][grad]") {
  for (int64_t n : testing::odd_sizes())
    for (auto [as, bs] : {std::pair{Shape{3, n}, Shape{3, n}}, std::pair{Shape{5, 3, n}, Shape{n}},
                          std::pair{Shape{2, 17, n}, Shape{17, n}}}) {
      INFO("a " << as << " b " << bs);
      const int64_t na = as.numel(), nb = bs.numel();
      testing::OpCase c;
      c.name = "add";
      c.shapes = {as, bs};
      c.seed = uint64_t(na + nb);
      c.inputs = {testing::randn(na, 1), testing::randn(nb, 2)};
      c.ref_fwd = [=](const std::vector<Vec>& in) {
        Vec y(na);
        for (int64_t i = 0; i < na; ++i) y[i] = in[0][i] + in[1][i % nb];
        return y;
      };
      c.ref_bwd = [=](const std::vector<Vec>&, const Vec& dy) {
        std::vector<Vec> g{Vec(na), Vec(nb)};
        for (int64_t i = 0; i < na; ++i) {
          g[0][i] += dy[i];
          g[1][i % nb] += dy[i];
        }
        return g;
      };
      c.fast = [](const std::vector<Tensor>& in) { return add(in[0], in[1]); };
      testing::check_op(c);
      if (as == bs) {
        c.name = "mul";
        c.ref_fwd = [=](const std::vector<Vec>& in) {
          Vec y(na);
          for (int64_t i = 0; i < na; ++i) y[i] = in[0][i] * in[1][i];
          return y;
        };
        c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
          std::vector<Vec> g{Vec(na), Vec(na)};
          for (int64_t i = 0; i < na; ++i) {
            g[0][i] = dy[i] * in[1][i];
            g[1][i] = dy[i] * in[0][i];
          }
          return g;
        };
        c.fast = [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); };
        testing::check_op(c);
      }
    }
}

TEST_CASE("swiglu: gradients, fast path, and equal to silu(a)*b composed", "[ops][grad]") {
  for (int64_t N : testing::odd_sizes())
    for (int64_t F : {1, 3, 17, 65}) {
      INFO("N " << N << " F " << F);
      testing::OpCase c;
      c.name = "swiglu";
      c.shapes = {{N, F}, {N, F}};
      c.seed = uint64_t(N * 100 + F);
      c.inputs = {testing::randn(N * F, c.seed, 2.0), testing::randn(N * F, c.seed + 1, 2.0)};
      c.ref_fwd = [=](const std::vector<Vec>& in) {
        Vec y(N * F);
        for (int64_t i = 0; i < N * F; ++i) y[i] = ref::silu(in[0][i]) * in[1][i];
        return y;
      };
      c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
        std::vector<Vec> g{Vec(N * F), Vec(N * F)};
        for (int64_t i = 0; i < N * F; ++i) {
          g[0][i] = dy[i] * in[1][i] * ref::silu_grad(in[0][i]);
          g[1][i] = dy[i] * ref::silu(in[0][i]);
        }
        return g;
      };
      c.fast = [](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); };
      testing::check_op(c);
      // The same function composed from primitives: values and grads.
      c.fast = [](const std::vector<Tensor>& in) { return mul(silu(in[0]), in[1]); };
      testing::check_fast_vs_ref(c);
    }
}

TEST_CASE("dropout: counter-based mask, rescaled, same mask in backward, identity at p=0 and no-grad",
          "[ops][grad]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  const int64_t n = 10000;
  const float p = 0.3f;
  Tensor x = empty({n}, true);
  for (int64_t i = 0; i < n; ++i) x.data[i] = 1.f + float(i % 5);
  Tensor y = dropout(x, p, 42, 7);
  Tensor y2 = dropout(x, p, 42, 7);
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    REQUIRE(y.data[i] == y2.data[i]);  // same (seed, stream): same mask
    if (y.data[i] != 0.f) {
      kept++;
      REQUIRE(y.data[i] == Approx(x.data[i] / (1 - p)));
    }
  }
  REQUIRE(std::abs(double(kept) / n - (1 - p)) < 0.02);
  std::vector<float> dy(n, 1.f);
  tape.clear();
  Tensor y3 = dropout(x, p, 42, 7);
  backward_from(y3, dy.data());
  for (int64_t i = 0; i < n; ++i) REQUIRE(x.grad()[i] == Approx(y3.data[i] == 0.f ? 0.f : 1.f / (1 - p)));
  Tensor other = dropout(x, p, 42, 8);
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += (other.data[i] == 0.f) != (y.data[i] == 0.f);
  REQUIRE(differ > n / 10);
  REQUIRE(dropout(x, 0.f, 42, 7).data == x.data);
  NoGrad ng;
  REQUIRE(dropout(x, p, 42, 7).data == x.data);
}
