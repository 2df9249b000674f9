#include "ops/linear.h"
#include "ops/norm.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

TEST_CASE("layer_norm and rms_norm: gradients and fast path", "[ops][grad]") {
  for (int64_t N : testing::odd_sizes())
    for (int64_t C : {3, 17, 65, 128}) {
      for (bool centred : {true, false}) {
        INFO((centred ? "layer_norm" : "rms_norm") << " N " << N << " C " << C);
        const double eps = 1e-5;
        testing::OpCase c;
        c.name = centred ? "layer_norm" : "rms_norm";
        c.shapes = {{N, C}, {C}};
        if (centred) c.shapes.push_back({C});
        c.seed = uint64_t(N * 1000 + C);
        c.inputs = {testing::randn(N * C, c.seed, 1.5), testing::randn(C, c.seed + 1)};
        for (auto& v : c.inputs[0]) v += 0.7;  // a non-zero mean to remove
        if (centred) c.inputs.push_back(testing::randn(C, c.seed + 2));
        c.ref_fwd = [=](const std::vector<Vec>& in) {
          Vec y(N * C);
          ref::norm_fwd(y.data(), in[0].data(), in[1].data(), centred ? in[2].data() : nullptr, N, C, eps);
          return y;
        };
        c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
          std::vector<Vec> g{Vec(N * C), Vec(C)};
          if (centred) g.push_back(Vec(C));
          ref::norm_bwd(g[0].data(), g[1].data(), centred ? g[2].data() : nullptr, dy.data(), in[0].data(),
                        in[1].data(), centred, N, C, eps);
          return g;
        };
        c.fast = [=](const std::vector<Tensor>& in) {
          return centred ? layer_norm(in[0], in[1], in[2], float(eps)) : rms_norm(in[0], in[1], float(eps));
        };
        testing::check_op(c);
      }
    }
}

TEST_CASE("norms reject mismatched gains", "[ops]") {
  Arena a;
  ArenaScope s(a);
  Tensor x = empty({4, 8}), g = empty({7}), b = empty({8});
  REQUIRE_THROWS_AS(layer_norm(x, g, b, 1e-5f), InternalError);
  REQUIRE_THROWS_AS(rms_norm(x, g, 1e-5f), InternalError);
}

TEST_CASE("norms: the bf16 copy written with the output is pack_operand's, and none in f32", "[ops]") {
  Arena arena;
  ArenaScope as(arena);
  const int64_t N = 37, C = 65;
  Vec xv = testing::randn(N * C, 7, 1.5), gv = testing::randn(C, 8), bv = testing::randn(C, 9);
  Tensor x = empty({N, C}), g = empty({C}), b = empty({C});
  std::copy(xv.begin(), xv.end(), x.data);
  std::copy(gv.begin(), gv.end(), g.data);
  std::copy(bv.begin(), bv.end(), b.data);
  for (bool centred : {true, false}) {
    INFO((centred ? "layer_norm" : "rms_norm"));
    {
      testing::PrecisionScope ps(kernels::MatmulPrecision::f32);
      const uint16_t* y16 = reinterpret_cast<const uint16_t*>(&x);  // must be overwritten with null
      centred ? layer_norm(x, g, b, 1e-5f, &y16) : rms_norm(x, g, 1e-5f, &y16);
      CHECK(y16 == nullptr);
    }
    testing::PrecisionScope ps(kernels::MatmulPrecision::bf16);
    const uint16_t* y16 = nullptr;
    Tensor y = centred ? layer_norm(x, g, b, 1e-5f, &y16) : rms_norm(x, g, 1e-5f, &y16);
    const Tensor plain = centred ? layer_norm(x, g, b, 1e-5f) : rms_norm(x, g, 1e-5f);
    REQUIRE(y16 != nullptr);
    const uint16_t* packed = pack_operand(y);
    CHECK(std::equal(y16, y16 + N * C, packed));
    CHECK(std::equal(y.data, y.data + N * C, plain.data));  // the f32 output is unchanged
  }
}
