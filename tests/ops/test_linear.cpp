#include "autograd/tape.h"
#include "ops/elementwise.h"
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

using ThreeInputOp = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;

// A fused op and its composed form compute the same floats: y = op(r [33, 24], x [33, 40], w [40, 24])
// and the grads of r, x and (when trained) w, compared bit for bit, with f32 and with bf16 products.
void check_fused_bit_identical(const ThreeInputOp& fused, const ThreeInputOp& composed) {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  const int64_t M = 33, K = 40, N = 24;
  Vec rv = testing::randn(M * N, 1), xv = testing::randn(M * K, 2), wv = testing::randn(K * N, 3),
      dv = testing::randn(M * N, 4);
  for (auto precision : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16})
    for (bool train_w : {true, false}) {
      testing::PrecisionScope ps(precision);
      INFO("bf16 products: " << (precision == kernels::MatmulPrecision::bf16) << ", w trained: " << train_w);
      std::vector<std::vector<float>> outs, grads;
      for (const ThreeInputOp* op : {&fused, &composed}) {
        Tensor r = empty({M, N}, true), x = empty({M, K}, true), w = empty({K, N}, train_w);
        std::copy(rv.begin(), rv.end(), r.data);
        std::copy(xv.begin(), xv.end(), x.data);
        std::copy(wv.begin(), wv.end(), w.data);
        Tensor y = (*op)(r, x, w);
        const std::vector<float> dy(dv.begin(), dv.end());
        backward_from(y, dy.data());
        outs.emplace_back(y.data, y.data + y.numel());
        std::vector<float> g(r.grad(), r.grad() + r.numel());
        g.insert(g.end(), x.grad(), x.grad() + x.numel());
        if (train_w) g.insert(g.end(), w.grad(), w.grad() + w.numel());
        grads.push_back(g);
      }
      REQUIRE(outs[0] == outs[1]);
      REQUIRE(grads[0] == grads[1]);
    }
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

TEST_CASE("residual_linear: gradients and fast path, bit-identical to add(r, linear(x, w))", "[ops][grad]") {
  for (ResidualWeights rw : {ResidualWeights{}, ResidualWeights{0.8f, 0.45f}})
  for (int64_t M : testing::odd_sizes())
    for (auto [K, N] : {std::pair<int64_t, int64_t>{1, 3}, {17, 65}, {65, 17}}) {
      INFO("M " << M << " K " << K << " N " << N << " skip " << rw.skip << " branch " << rw.branch);
      const double sk = rw.skip, br = rw.branch;
      testing::OpCase c;
      c.name = "residual_linear";
      c.shapes = {{M, N}, {M, K}, {K, N}};
      c.seed = uint64_t(M * 1000 + K * 10 + N);
      c.inputs = {testing::randn(M * N, c.seed), testing::randn(M * K, c.seed + 1), testing::randn(K * N, c.seed + 2)};
      c.ref_fwd = [=](const std::vector<Vec>& in) {
        Vec y(M * N);
        ref::matmul_fwd(y.data(), in[1].data(), in[2].data(), M, K, N, false);
        for (int64_t i = 0; i < M * N; ++i) y[i] = sk * in[0][i] + br * y[i];
        return y;
      };
      c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
        Vec dr(dy), dyb(dy);
        for (auto& e : dr) e *= sk;
        for (auto& e : dyb) e *= br;
        std::vector<Vec> g{dr, Vec(M * K), Vec(K * N)};
        ref::matmul_bwd(g[1].data(), g[2].data(), dyb.data(), in[1].data(), in[2].data(), M, K, N, false);
        return g;
      };
      c.fast = [rw](const std::vector<Tensor>& in) { return residual_linear(in[0], in[1], in[2], rw); };
      testing::check_op(c);
    }
  // The fused form computes the same float operations as the composed one.
  check_fused_bit_identical([](const Tensor& r, const Tensor& x, const Tensor& w) { return residual_linear(r, x, w); },
                            [](const Tensor& r, const Tensor& x, const Tensor& w) { return add(r, linear(x, w)); });
}

TEST_CASE("residual_gelu_mlp: gradients and fast path", "[ops][grad]") {
  for (ResidualWeights rw : {ResidualWeights{}, ResidualWeights{0.8f, 0.45f}})
  for (int64_t M : testing::odd_sizes())
    for (auto [C, F, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 3, 2}, {17, 65, 17}, {65, 17, 9}}) {
      INFO("M " << M << " C " << C << " F " << F << " N " << N << " skip " << rw.skip << " branch " << rw.branch);
      const double sk = rw.skip, br = rw.branch;
      testing::OpCase c;
      c.name = "residual_gelu_mlp";
      c.shapes = {{M, N}, {M, C}, {C, F}, {F, N}};
      c.seed = uint64_t(M * 1000 + C * 10 + N);
      c.inputs = {testing::randn(M * N, c.seed), testing::randn(M * C, c.seed + 1), testing::randn(C * F, c.seed + 2),
                  testing::randn(F * N, c.seed + 3)};
      // h = x·w1, g = gelu(h), y = r + g·w2
      auto hidden = [=](const std::vector<Vec>& in, Vec& h, Vec& g) {
        h.assign(size_t(M * F), 0.);
        ref::matmul_fwd(h.data(), in[1].data(), in[2].data(), M, C, F, false);
        g.resize(h.size());
        for (size_t i = 0; i < h.size(); ++i) g[i] = ref::gelu(h[i]);
      };
      c.ref_fwd = [=](const std::vector<Vec>& in) {
        Vec h, g, y(M * N);
        hidden(in, h, g);
        ref::matmul_fwd(y.data(), g.data(), in[3].data(), M, F, N, false);
        for (int64_t i = 0; i < M * N; ++i) y[i] = sk * in[0][i] + br * y[i];
        return y;
      };
      c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
        Vec h, g, dh(M * F), dr(dy), dyb(dy);
        for (auto& e : dr) e *= sk;
        for (auto& e : dyb) e *= br;
        hidden(in, h, g);
        std::vector<Vec> grads{dr, Vec(M * C), Vec(C * F), Vec(F * N)};
        ref::matmul_bwd(dh.data(), grads[3].data(), dyb.data(), g.data(), in[3].data(), M, F, N, false);
        for (int64_t i = 0; i < M * F; ++i) dh[i] *= ref::gelu_grad(h[i]);
        ref::matmul_bwd(grads[1].data(), grads[2].data(), dh.data(), in[1].data(), in[2].data(), M, C, F, false);
        return grads;
      };
      c.fast = [rw](const std::vector<Tensor>& in) { return residual_gelu_mlp(in[0], in[1], in[2], in[3], nullptr, rw); };
      testing::check_op(c);
    }
}

TEST_CASE("residual_gelu_mlp: bit-identical to residual_linear(r, gelu(linear(x, w1)), w2)", "[ops]") {
  // With bf16 products the fused op writes gelu(h) and dh straight to bf16, the composed one
  // converts gelu's output and h's gradient: the same bits either way. Also with a frozen w1 or
  // w2, with x frozen (no dx), with x and w1 frozen (no dh), and with a shared bf16 copy of x.
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  const int64_t M = 33, C = 24, F = 40, N = 24;
  Vec rv = testing::randn(M * N, 1), xv = testing::randn(M * C, 2), w1v = testing::randn(C * F, 3),
      w2v = testing::randn(F * N, 4), dv = testing::randn(M * N, 5);
  for (auto precision : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16})
    for (int frozen = 0; frozen < 5; ++frozen)  // none, w1, w2, x, x and w1
      for (bool shared_x16 : {false, true}) {
        testing::PrecisionScope ps(precision);
        INFO("bf16 products: " << (precision == kernels::MatmulPrecision::bf16) << ", frozen " << frozen
                               << ", shared x16: " << shared_x16);
        std::vector<std::vector<float>> outs, grads;
        for (bool fused : {true, false}) {
          Tensor r = empty({M, N}, true), x = empty({M, C}, frozen != 3 && frozen != 4),
                 w1 = empty({C, F}, frozen != 1 && frozen != 4),
                 w2 = empty({F, N}, frozen != 2);
          std::copy(rv.begin(), rv.end(), r.data);
          std::copy(xv.begin(), xv.end(), x.data);
          std::copy(w1v.begin(), w1v.end(), w1.data);
          std::copy(w2v.begin(), w2v.end(), w2.data);
          const uint16_t* x16 = shared_x16 ? pack_operand(x) : nullptr;
          Tensor y = fused ? residual_gelu_mlp(r, x, w1, w2, x16) : residual_linear(r, gelu(linear(x, w1, x16)), w2);
          const std::vector<float> dy(dv.begin(), dv.end());
          backward_from(y, dy.data());
          outs.emplace_back(y.data, y.data + y.numel());
          std::vector<float> g(r.grad(), r.grad() + r.numel());
          for (const Tensor* t : {&x, &w1, &w2})
            if (t->requires_grad()) g.insert(g.end(), t->grad(), t->grad() + t->numel());
          grads.push_back(g);
        }
        REQUIRE(outs[0] == outs[1]);
        REQUIRE(grads[0] == grads[1]);
      }
}

TEST_CASE("matmul: a shared pack_operand copy gives the same bits as converting per product", "[ops]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  const int64_t M = 37, K = 24, N = 19;
  Vec av = testing::randn(M * K, 21), bv = testing::randn(K * N, 22), dv = testing::randn(M * N, 23);
  for (auto precision : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16})
    for (bool tb : {false, true}) {
      testing::PrecisionScope ps(precision);
      const bool bf16 = precision == kernels::MatmulPrecision::bf16;
      INFO("bf16 products: " << bf16 << ", trans_b: " << tb);
      std::vector<std::vector<float>> res;
      for (bool shared : {false, true}) {
        Tensor a = empty({M, K}, true), b = empty(tb ? Shape{N, K} : Shape{K, N}, true);
        std::copy(av.begin(), av.end(), a.data);
        std::copy(bv.begin(), bv.end(), b.data);
        const uint16_t* a16 = shared ? pack_operand(a) : nullptr;
        REQUIRE((a16 != nullptr) == (shared && bf16));
        Tensor y = matmul(a, b, tb, a16);
        const std::vector<float> dy(dv.begin(), dv.end());
        backward_from(y, dy.data());
        std::vector<float> r(y.data, y.data + y.numel());
        r.insert(r.end(), a.grad(), a.grad() + a.numel());
        r.insert(r.end(), b.grad(), b.grad() + b.numel());
        res.push_back(r);
      }
      REQUIRE(res[0] == res[1]);
    }
  // The copy is what the bf16 products read: a copy of zeros gives a zero product.
  testing::PrecisionScope ps(kernels::MatmulPrecision::bf16);
  Tensor a = empty({M, K}), b = empty({K, N}), z = zeros({M, K});
  std::copy(av.begin(), av.end(), a.data);
  std::copy(bv.begin(), bv.end(), b.data);
  const Tensor y = matmul(a, b, false, pack_operand(z));
  for (int64_t i = 0; i < y.numel(); ++i) REQUIRE(y.data[i] == 0.f);
}

TEST_CASE("residual ops: the stream takes over dy's storage, with the same gradients as copying it", "[ops][grad]") {
  // r is an op output (its gradient a pooled, unwritten buffer when the residual op's backward
  // runs), as in the model. Compared bit for bit with add(r, linear(x, w)), which copies dy; also
  // with x = r, where the product writes r's buffer first and no hand-over may happen.
  const int64_t M = 32, C = 16;
  Vec r0v = testing::randn(M * C, 31), xv = testing::randn(M * C, 32), wv = testing::randn(C * C, 33),
      dv = testing::randn(M * C, 34);
  using Fwd = std::function<Tensor(const Tensor& r, const Tensor& x, const Tensor& w)>;
  const Fwd fused_forms[] = {[](const Tensor& r, const Tensor& x, const Tensor& w) { return residual_linear(r, x, w); },
                             [](const Tensor& r, const Tensor& x, const Tensor& w) {
                               return residual_gelu_mlp(r, x, w, w);
                             }};
  const Fwd composed_forms[] = {[](const Tensor& r, const Tensor& x, const Tensor& w) { return add(r, linear(x, w)); },
                                [](const Tensor& r, const Tensor& x, const Tensor& w) {
                                  return add(r, linear(gelu(linear(x, w)), w));
                                }};
  for (int form = 0; form < 2; ++form)
    for (bool alias : {false, true}) {
      INFO("form " << form << ", x = r: " << alias);
      std::vector<std::vector<float>> grads;
      std::vector<size_t> high_water;
      for (const Fwd* f : {&fused_forms[form], &composed_forms[form]}) {
        Arena arena;
        Tape tape;
        ArenaScope as(arena);
        TapeScope ts(tape);
        Tensor r0 = empty({M, C}, true), x = empty({M, C}, true), w = empty({C, C}, true);
        std::copy(r0v.begin(), r0v.end(), r0.data);
        std::copy(xv.begin(), xv.end(), x.data);
        std::copy(wv.begin(), wv.end(), w.data);
        const Tensor r = scale(r0, 3.f);
        const Tensor y = (*f)(r, alias ? r : x, w);
        const std::vector<float> dy(dv.begin(), dv.end());
        backward_from(y, dy.data());
        std::vector<float> g(r0.grad(), r0.grad() + r0.numel());
        if (!alias) g.insert(g.end(), x.grad(), x.grad() + x.numel());
        g.insert(g.end(), w.grad(), w.grad() + w.numel());
        grads.push_back(g);
        high_water.push_back(tape.grad_high_water());
      }
      if (!alias) {
        REQUIRE(grads[0] == grads[1]);
      } else {  // r's two contributions come in another order (and may contract into an FMA)
        REQUIRE(grads[0].size() == grads[1].size());
        for (size_t i = 0; i < grads[0].size(); ++i) REQUIRE(grads[0][i] == Approx(grads[1][i]).epsilon(1e-5));
      }
      // Handed over, r's gradient needs no storage of its own: dy's buffer is the only one of
      // [M, C] in flight (the composed form has dy and r's copy; gelu adds its own output grad).
      if (!alias && form == 0) REQUIRE(high_water[0] < 2 * M * C * sizeof(float));
    }
}
