// The block softmax of the attention op (ops/attention.h): each mode against the double reference
// (finite differences, the scales' gradient included) in every kernel, exact against the plain
// softmax, and the merge of partial attentions against the full softmax.
#include <cmath>
#include <limits>

#include "autograd/tape.h"
#include "ops/attention.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

namespace {

struct BlockCase {
  int64_t B, T, S, H, Hkv, D;
  bool causal;
  double softcap;
  BlockSoftmaxMode mode;
  int blocks;
  int64_t P;  // context positions the blocks cut (>= S)
  bool per_head = false;
  OutputScale out = {};
  AttentionMask mask = {};
  bool sinks = false;  // a sink logit per head, the last differentiable input
};

const char* mode_name(BlockSoftmaxMode m) {
  return m == BlockSoftmaxMode::exact ? "exact" : m == BlockSoftmaxMode::none ? "none" : "learned";
}

// q, k, v (and the scales, in mode learned) as the op's differentiable inputs.
testing::OpCase block_case(const BlockCase& a, double scale, AttentionKernel kernel) {
  testing::OpCase c;
  c.name = std::string("attention/") + kernel_name(kernel) + "/blocks/" + mode_name(a.mode);
  const bool learned = a.mode == BlockSoftmaxMode::learned;
  const int64_t n_scales = (a.per_head ? a.H : 1) * a.blocks * a.P;
  c.shapes = {{a.B, a.T, a.H, a.D}, {a.B, a.S, a.Hkv, a.D}, {a.B, a.S, a.Hkv, a.D}};
  c.seed = uint64_t(a.T * 1000 + a.S * 100 + a.blocks * 10 + int(a.mode));
  c.inputs = {testing::randn(a.B * a.T * a.H * a.D, c.seed), testing::randn(a.B * a.S * a.Hkv * a.D, c.seed + 1),
              testing::randn(a.B * a.S * a.Hkv * a.D, c.seed + 2)};
  if (learned) {
    c.shapes.push_back(a.per_head ? Shape{a.H, a.blocks, a.P} : Shape{a.blocks, a.P});
    c.inputs.push_back(testing::randn(n_scales, c.seed + 3));
  }
  const size_t sink_input = c.inputs.size();
  if (a.sinks) {
    c.shapes.push_back(Shape{a.H});
    c.inputs.push_back(testing::randn(a.H, c.seed + 4, 1.5));
  }
  auto sinks_of = [=](const std::vector<Vec>& in) { return a.sinks ? in[sink_input].data() : (const double*)nullptr; };
  c.max_coords = 120;
  // A window of 1: every softmax has one key, so the true q and k gradients are exactly 0 and the
  // fast path returns float rounding noise: judge it against a floor (as for one key).
  if (a.mask.window == 1) c.grad_floor = 0.1;
  BlockSoftmax shape{a.mode, a.blocks, a.P};
  auto blocks = [=](const std::vector<Vec>& in, double* ds) {
    ref::Blocks<double> b;
    b.shape = shape;
    b.per_head = a.per_head;
    if (learned) b.scales = in[3].data();
    b.dscales = ds;
    return b;
  };
  c.ref_fwd = [=](const std::vector<Vec>& in) {
    Vec y(a.B * a.T * a.H * a.D);
    ref::attention_fwd(y.data(), in[0].data(), in[1].data(), in[2].data(), a.B, a.T, a.S, a.H, a.Hkv, a.D, a.D, scale,
                       a.softcap, a.causal, (double*)nullptr, blocks(in, nullptr), a.out, a.mask, sinks_of(in));
    return y;
  };
  c.ref_bwd = [=](const std::vector<Vec>& in, const Vec& dy) {
    std::vector<Vec> g;
    for (const Vec& x : in) g.emplace_back(x.size());
    ref::attention_bwd(g[0].data(), g[1].data(), g[2].data(), dy.data(), in[0].data(), in[1].data(), in[2].data(),
                       a.B, a.T, a.S, a.H, a.Hkv, a.D, a.D, scale, a.softcap, a.causal,
                       blocks(in, learned ? g[3].data() : nullptr), a.out, a.mask, sinks_of(in),
                       a.sinks ? g[sink_input].data() : nullptr);
    return g;
  };
  c.fast = [=](const std::vector<Tensor>& in) {
    AttentionOptions o{float(scale)};
    o.softcap = float(a.softcap);
    o.causal = a.causal;
    o.kernel = kernel;
    o.block = shape;
    if (learned) o.block_scales = in[3];
    o.output_scale = a.out;
    o.mask = a.mask;
    if (a.sinks) o.sinks = in[sink_input];
    return attention(in[0], in[1], in[2], o);
  };
  return c;
}

}  // namespace

TEST_CASE("block softmax (every kernel, every mode): gradients, the scales' included, and fast path",
          "[ops][grad][blocks]") {
  for (BlockSoftmaxMode mode : {BlockSoftmaxMode::exact, BlockSoftmaxMode::none, BlockSoftmaxMode::learned})
    for (int N : {1, 2, 3, 5})
      for (bool causal : {true, false})
        for (bool per_head : {false, true}) {
          if (per_head && mode != BlockSoftmaxMode::learned) continue;
          // P > S: the last block(s) lie beyond the keys when not causal; causal rows see fewer blocks.
          const BlockCase a{2, 13, 13, 4, 2, 6, causal, causal ? 0.0 : 3.0, mode, N, causal ? 13 : 16, per_head};
          for (AttentionKernel kernel : kAllAttentionKernels) {
            INFO(kernel_name(kernel) << " mode " << mode_name(mode) << " N " << N << " causal " << causal
                                     << " per_head " << per_head);
            if (kernel == AttentionKernel::dense) testing::check_grad(block_case(a, 0.4, kernel));
            testing::check_fast_vs_ref(block_case(a, 0.4, kernel));
          }
        }
  // Block boundaries inside the flash kernel's key chunks and query tiles, N not dividing S, and
  // fewer queries than keys (the queries are the last T positions).
  for (AttentionKernel kernel : kAllAttentionKernels)
    for (BlockSoftmaxMode mode : {BlockSoftmaxMode::exact, BlockSoftmaxMode::none, BlockSoftmaxMode::learned}) {
      INFO(kernel_name(kernel) << " mode " << mode_name(mode));
      testing::check_fast_vs_ref(block_case({1, 300, 300, 2, 1, 16, true, 0.0, mode, 3, 300}, 0.25, kernel));
      testing::check_fast_vs_ref(block_case({2, 40, 150, 2, 2, 8, true, 2.0, mode, 7, 160, true}, 0.3, kernel));
    }
}

// Runs attention on fixed q, k, v with options o; returns the output and the q, k, v gradients.
static std::pair<Vec, Vec> run(const AttentionOptions& o, int64_t B, int64_t T, int64_t H, int64_t D) {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  Tensor q = empty({B, T, H, D}, true), k = empty({B, T, H, D}, true), v = empty({B, T, H, D}, true);
  Vec x = testing::randn(3 * q.numel(), 99);
  for (int64_t i = 0; i < q.numel(); ++i) {
    q.data[i] = float(x[i]);
    k.data[i] = float(x[q.numel() + i]);
    v.data[i] = float(x[2 * q.numel() + i]);
  }
  Tensor y = attention(q, k, v, o);
  Vec r = testing::randn(y.numel(), 5);
  std::vector<float> dy(r.begin(), r.end());
  backward_from(y, dy.data());
  Vec g;
  for (const Tensor* t : {&q, &k, &v}) g.insert(g.end(), t->grad(), t->grad() + t->numel());
  return {Vec(y.data, y.data + y.numel()), g};
}

TEST_CASE("block softmax: exact equals the plain softmax to float rounding, and none equals learned at |a| = 1",
          "[ops][blocks]") {
  const int64_t B = 2, T = 200, H = 2, D = 16;
  for (AttentionKernel kernel : kAllAttentionKernels) {
    INFO(kernel_name(kernel));
    AttentionOptions plain(0.25f);
    plain.kernel = kernel;
    const auto [y0, g0] = run(plain, B, T, H, D);
    for (int N : {2, 3, 8}) {
      INFO("N " << N);
      AttentionOptions exact = plain;
      exact.block = {BlockSoftmaxMode::exact, N, T};
      const auto [y1, g1] = run(exact, B, T, H, D);
      CHECK(testing::rel_err(y1, y0) < 1e-5);
      CHECK(testing::rel_err(g1, g0) < 1e-5);
      // none is a different function: far from the plain softmax.
      AttentionOptions none = plain;
      none.block = {BlockSoftmaxMode::none, N, T};
      const auto [y2, g2] = run(none, B, T, H, D);
      CHECK(testing::rel_err(y2, y0) > 0.1);
      // learned with every scale ±1 computes what none does, bit for bit.
      Arena arena;
      ArenaScope as(arena);
      Tensor a = empty({N, T}, false);
      for (int64_t i = 0; i < a.numel(); ++i) a.data[i] = i % 3 ? 1.f : -1.f;
      AttentionOptions learned = none;
      learned.block.mode = BlockSoftmaxMode::learned;
      learned.block_scales = a;
      const auto [y3, g3] = run(learned, B, T, H, D);
      CHECK(y3 == y2);
      CHECK(g3 == g2);
    }
  }
}

TEST_CASE("merge_partial_attention: parts over disjoint key sets merge into the full softmax", "[ops][blocks]") {
  const int64_t S = 37, Dv = 5;
  Vec s = testing::randn(S, 3, 3.0), v = testing::randn(S * Dv, 4);
  // (o, L) of the softmax over the keys with mask[j] true, in float.
  auto part = [&](auto mask, std::vector<float>& o, float& L) {
    double m = -std::numeric_limits<double>::infinity(), l = 0;
    for (int64_t j = 0; j < S; ++j)
      if (mask(j)) m = std::max(m, s[j]);
    o.assign(Dv, 0.f);
    if (m == -std::numeric_limits<double>::infinity()) {
      L = -std::numeric_limits<float>::infinity();
      return;
    }
    std::vector<double> acc(Dv, 0.0);
    for (int64_t j = 0; j < S; ++j)
      if (mask(j)) {
        l += std::exp(s[j] - m);
        for (int64_t e = 0; e < Dv; ++e) acc[e] += std::exp(s[j] - m) * v[j * Dv + e];
      }
    for (int64_t e = 0; e < Dv; ++e) o[e] = float(acc[e] / l);
    L = float(m + std::log(l));
  };
  std::vector<float> full, o, o2;
  float L_full, L, L2;
  part([](int64_t) { return true; }, full, L_full);
  // Three interleaved parts and one empty one, merged in turn.
  part([](int64_t j) { return j % 3 == 0; }, o, L);
  for (int r : {1, 2, 7}) {
    part([r](int64_t j) { return r < 3 && j % 3 == r; }, o2, L2);
    merge_partial_attention(o.data(), L, o2.data(), L2, Dv);
  }
  CHECK(L == Approx(L_full).epsilon(1e-6));
  for (int64_t e = 0; e < Dv; ++e) CHECK(o[e] == Approx(full[e]).epsilon(1e-5).margin(1e-6));
  // An empty first part takes the second as it is.
  std::vector<float> e0(Dv, 0.f);
  float Le = -std::numeric_limits<float>::infinity();
  merge_partial_attention(e0.data(), Le, full.data(), L_full, Dv);
  CHECK(Le == L_full);
  CHECK(e0 == full);
}

TEST_CASE("block softmax: flash with bf16 products agrees with f32 within bf16 rounding, every mode",
          "[ops][flash][blocks]") {
  const int64_t B = 2, T = 190, H = 2, D = 32;
  Arena outer;
  ArenaScope as(outer);
  for (BlockSoftmaxMode mode : {BlockSoftmaxMode::exact, BlockSoftmaxMode::none, BlockSoftmaxMode::learned}) {
    INFO("mode " << mode_name(mode));
    Tensor a = empty({3, T}, false);
    Vec av = testing::randn(a.numel(), 8);
    for (int64_t i = 0; i < a.numel(); ++i) a.data[i] = float(av[i]);
    std::vector<Vec> outs, grads;
    for (auto precision : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16}) {
      testing::PrecisionScope ps(precision);
      AttentionOptions o(0.2f);
      o.kernel = AttentionKernel::flash;
      o.block = {mode, 3, T};
      if (mode == BlockSoftmaxMode::learned) o.block_scales = a;
      auto [y, g] = run(o, B, T, H, D);
      outs.push_back(y);
      grads.push_back(g);
    }
    CHECK(testing::rel_err(outs[0], outs[1]) <= 1e-2);
    CHECK(testing::rel_err(grads[0], grads[1]) <= 2e-2);
  }
}

TEST_CASE("output scale (every kernel): constant and causal multipliers, alone and with block softmax",
          "[ops][grad][output_scale]") {
  for (OutputScale out : {OutputScale{OutputScale::constant, 3.5f}, OutputScale{OutputScale::causal, 1.f}})
    for (BlockSoftmaxMode mode : {BlockSoftmaxMode::exact, BlockSoftmaxMode::learned})
      for (bool causal : {true, false}) {
        BlockCase a{2, 11, causal ? 11 : 14, 4, 2, 6, causal, causal ? 0.0 : 2.0, mode, mode == BlockSoftmaxMode::exact ? 1 : 3,
                    causal ? 11 : 14};
        a.out = out;
        for (AttentionKernel kernel : kAllAttentionKernels) {
          INFO(kernel_name(kernel) << " kind " << int(out.kind) << " mode " << mode_name(mode) << " causal " << causal);
          if (kernel == AttentionKernel::dense) testing::check_grad(block_case(a, 0.4, kernel));
          testing::check_fast_vs_ref(block_case(a, 0.4, kernel));
        }
      }
  for (AttentionKernel kernel : kAllAttentionKernels) {
    BlockCase a{1, 300, 300, 2, 1, 16, true, 0.0, BlockSoftmaxMode::exact, 1, 300};
    a.out = {OutputScale::causal, 1.f};
    testing::check_fast_vs_ref(block_case(a, 0.25, kernel));
  }
}

TEST_CASE("output scale: causal multiplies row i by sqrt(n_i / e), n_i = i + 1 keys", "[ops][output_scale]") {
  // q = k = 0: every row averages its visible values uniformly; the scaled output is the plain one
  // times sqrt((i + 1) / e).
  Arena arena;
  ArenaScope as(arena);
  const int64_t B = 1, T = 50, H = 1, D = 4;
  Tensor q = empty({B, T, H, D}), k = empty({B, T, H, D}), v = empty({B, T, H, D});
  for (int64_t i = 0; i < q.numel(); ++i) {
    q.data[i] = 0.f;
    k.data[i] = 0.f;
    v.data[i] = float(i % 7) - 3.f;
  }
  for (AttentionKernel kernel : kAllAttentionKernels) {
    AttentionOptions plain(1.f), scaled(1.f);
    plain.kernel = scaled.kernel = kernel;
    scaled.output_scale = {OutputScale::causal, 1.f};
    Tensor y0 = attention(q, k, v, plain), y1 = attention(q, k, v, scaled);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t e = 0; e < D; ++e)
        CHECK(y1.data[i * D + e] == Approx(y0.data[i * D + e] * std::sqrt((i + 1) / std::exp(1.0))).margin(1e-6));
  }
}

TEST_CASE("masks (every kernel): sliding window and chunks, alone, together and with block softmax and output scale",
          "[ops][grad][masks]") {
  for (AttentionMask mask : {AttentionMask{3, 0}, AttentionMask{0, 4}, AttentionMask{5, 3}, AttentionMask{1, 0}})
    for (BlockSoftmaxMode mode : {BlockSoftmaxMode::exact, BlockSoftmaxMode::none, BlockSoftmaxMode::learned})
      for (int64_t S : {13, 17}) {  // S = 17: the 13 queries are the last positions
        BlockCase a{2, 13, S, 4, 2, 6, true, mode == BlockSoftmaxMode::none ? 2.0 : 0.0, mode,
                    mode == BlockSoftmaxMode::exact ? 1 : 3, S};
        a.mask = mask;
        if (mode == BlockSoftmaxMode::learned) a.out = {OutputScale::causal, 1.f};
        for (AttentionKernel kernel : kAllAttentionKernels) {
          INFO(kernel_name(kernel) << " window " << mask.window << " chunk " << mask.chunk << " mode "
                                   << mode_name(mode) << " S " << S);
          if (kernel == AttentionKernel::dense) testing::check_grad(block_case(a, 0.4, kernel));
          testing::check_fast_vs_ref(block_case(a, 0.4, kernel));
        }
      }
  // Long rows: key blocks wholly before a tile's window are skipped; chunk edges inside key blocks.
  for (AttentionKernel kernel : kAllAttentionKernels)
    for (AttentionMask mask : {AttentionMask{50, 0}, AttentionMask{0, 96}, AttentionMask{200, 70}}) {
      INFO(kernel_name(kernel) << " window " << mask.window << " chunk " << mask.chunk);
      BlockCase a{1, 300, 300, 2, 1, 16, true, 0.0, BlockSoftmaxMode::exact, 1, 300};
      a.mask = mask;
      testing::check_fast_vs_ref(block_case(a, 0.25, kernel));
      BlockCase c{1, 260, 300, 2, 2, 8, true, 1.5, BlockSoftmaxMode::learned, 3, 300, true};
      c.mask = mask;
      testing::check_fast_vs_ref(block_case(c, 0.3, kernel));
    }
}

TEST_CASE("masks: a window as long as the context is the causal mask, and max logits skip masked keys",
          "[ops][masks]") {
  const int64_t B = 2, T = 150, H = 2, D = 16;
  for (AttentionKernel kernel : kAllAttentionKernels) {
    AttentionOptions plain(0.25f), wide(0.25f);
    plain.kernel = wide.kernel = kernel;
    wide.mask.window = T;
    const auto [y0, g0] = run(plain, B, T, H, D);
    const auto [y1, g1] = run(wide, B, T, H, D);
    CHECK(y1 == y0);
    CHECK(g1 == g0);
  }
  // Key 0 of head 0 made huge: with a window of 4 only rows 0..3 see it.
  Arena arena;
  ArenaScope as(arena);
  Tensor q = empty({1, 10, 1, 2}), k = empty({1, 10, 1, 2}), v = empty({1, 10, 1, 2});
  for (int64_t i = 0; i < q.numel(); ++i) {
    q.data[i] = 1.f;
    k.data[i] = 0.f;
    v.data[i] = 1.f;
  }
  k.data[0] = k.data[1] = 100.f;
  for (AttentionKernel kernel : kAllAttentionKernels) {
    float with_key0 = -1e30f, without = -1e30f;
    AttentionOptions o(1.f);
    o.kernel = kernel;
    o.max_logits = &with_key0;
    attention(q, k, v, o);
    CHECK(with_key0 == 200.f);
    o.max_logits = &without;
    o.mask.chunk = 5;  // rows 5..9 do not see key 0, but rows 0..4 do
    attention(q.slice(1, 5, 5), k, v, o);  // the last 5 queries: positions 5..9
    CHECK(without == 0.f);
  }
}

TEST_CASE("sinks (every kernel): gradients of q, k, v and the sinks, with masks, cap, exact blocks, output scale",
          "[ops][grad][sinks]") {
  for (bool causal : {true, false})
    for (int64_t S : {13, 17})
      for (int variant = 0; variant < 4; ++variant) {
        BlockCase a{2, 13, S, 4, 2, 6, causal, variant == 1 ? 2.0 : 0.0, BlockSoftmaxMode::exact,
                    variant == 2 ? 3 : 1, S};
        a.sinks = true;
        if (causal && variant == 3) a.mask = {5, 4};
        if (variant == 2) a.out = {OutputScale::causal, 1.f};
        for (AttentionKernel kernel : kAllAttentionKernels) {
          INFO(kernel_name(kernel) << " causal " << causal << " S " << S << " variant " << variant);
          if (kernel == AttentionKernel::dense) testing::check_grad(block_case(a, 0.4, kernel));
          testing::check_fast_vs_ref(block_case(a, 0.4, kernel));
        }
      }
  for (AttentionKernel kernel : kAllAttentionKernels) {  // long rows: the sink merged once per row
    INFO(kernel_name(kernel));
    BlockCase a{1, 300, 300, 2, 1, 16, true, 0.0, BlockSoftmaxMode::exact, 3, 300};
    a.sinks = true;
    a.mask = {100, 0};
    testing::check_fast_vs_ref(block_case(a, 0.25, kernel));
  }
}

TEST_CASE("rows that see no key (fewer keys than queries, causal): zero output, zero gradient, with and without sinks",
          "[ops][grad][sinks]") {
  const int64_t B = 1, T = 7, S = 4, H = 2, D = 8;  // rows 0..2 precede every key
  for (bool with_sinks : {false, true})
    for (AttentionKernel kernel : kAllAttentionKernels) {
      INFO(kernel_name(kernel) << " sinks " << with_sinks);
      BlockCase a{B, T, S, H, H, D, true, 0.0, BlockSoftmaxMode::exact, 1, S};
      a.sinks = with_sinks;
      a.out = {OutputScale::causal, 1.f};  // c = sqrt(0 / e) = 0 must not turn into NaN
      if (kernel == AttentionKernel::dense) testing::check_grad(block_case(a, 0.4, kernel));
      testing::check_fast_vs_ref(block_case(a, 0.4, kernel));
      Arena arena;
      Tape tape;
      ArenaScope as(arena);
      TapeScope ts(tape);
      auto filled = [](const Shape& shape, uint64_t seed, bool grad) {
        Tensor t = empty(shape, grad);
        Vec x = testing::randn(t.numel(), seed);
        for (int64_t j = 0; j < t.numel(); ++j) t.data[j] = float(x[j]);
        return t;
      };
      Tensor q = filled({B, T, H, D}, 1, true), k = filled({B, S, H, D}, 2, false), v = filled({B, S, H, D}, 3, false);
      AttentionOptions o(0.4f);
      o.kernel = kernel;
      if (with_sinks) o.sinks = filled({H}, 4, true);
      Tensor y = attention(q, k, v, o);
      std::vector<float> ones(size_t(y.numel()), 1.f);
      backward_from(y, ones.data());
      for (int64_t x = 0; x < 3 * H * D; ++x) {
        CHECK(y.data[x] == 0.f);
        CHECK(q.grad()[x] == 0.f);
      }
      CHECK(std::isfinite(y.data[T * H * D - 1]));
      CHECK(y.data[T * H * D - 1] != 0.f);
    }
}

TEST_CASE("document_starts: a document ends with each occurrence of the separator", "[ops][masks]") {
  const std::vector<int32_t> ids{5, 1, 1, 2, 1, 1, 1, 3, 1};
  std::vector<int32_t> out(ids.size());
  document_starts(out.data(), ids.data(), int64_t(ids.size()), {1, 1});
  CHECK(out == std::vector<int32_t>{0, 0, 0, 3, 3, 3, 6, 7, 7});  // "1 1" ends at 2, at 5 and at 6
  document_starts(out.data(), ids.data(), int64_t(ids.size()), {3});
  CHECK(out == std::vector<int32_t>{0, 0, 0, 0, 0, 0, 0, 0, 8});
  document_starts(out.data(), ids.data(), int64_t(ids.size()), {});
  CHECK(out == std::vector<int32_t>(ids.size(), 0));
}

TEST_CASE("document masks (every kernel): packed sequences, alone and with a window, sinks and block softmax",
          "[ops][grad][masks]") {
  // Two sequences of S positions with their own document boundaries; the T queries are the last.
  for (int64_t S : {13, 17}) {
    static std::vector<int32_t> docs;
    docs.assign(size_t(2 * S), 0);
    const std::vector<int64_t> starts0{4, 5, 11}, starts1{7};  // 5: a one-position document
    for (int64_t t = 0; t < S; ++t) {
      for (int64_t x : starts0) if (t >= x) docs[t] = int32_t(x);
      for (int64_t x : starts1) if (t >= x) docs[S + t] = int32_t(x);
    }
    for (int variant = 0; variant < 3; ++variant) {
      BlockCase a{2, 13, S, 4, 2, 6, true, 0.0, variant == 2 ? BlockSoftmaxMode::learned : BlockSoftmaxMode::exact,
                  variant == 2 ? 3 : 1, S};
      a.mask.docs = docs.data();
      a.mask.docs_stride = S;
      if (variant == 1) a.mask.window = 4, a.sinks = true;
      for (AttentionKernel kernel : kAllAttentionKernels) {
        INFO(kernel_name(kernel) << " S " << S << " variant " << variant);
        if (kernel == AttentionKernel::dense) testing::check_grad(block_case(a, 0.4, kernel));
        testing::check_fast_vs_ref(block_case(a, 0.4, kernel));
      }
    }
  }
  // Long rows: key tiles before a document's start are skipped.
  static std::vector<int32_t> long_docs(300);
  for (int64_t t = 0; t < 300; ++t) long_docs[t] = int32_t(t < 70 ? 0 : t < 200 ? 70 : 200);
  for (AttentionKernel kernel : kAllAttentionKernels) {
    INFO(kernel_name(kernel));
    BlockCase a{1, 300, 300, 2, 1, 16, true, 0.0, BlockSoftmaxMode::exact, 1, 300};
    a.mask.docs = long_docs.data();
    a.mask.docs_stride = 300;
    testing::check_fast_vs_ref(block_case(a, 0.25, kernel));
  }
}

TEST_CASE("decoding with the keys split among threads (one kv head, long cache) equals the reference",
          "[ops][masks][sinks]") {
  // T = 1 or 2 query rows, one kv head (MLA's absorbed form), S >= 256 keys: the split-key path.
  for (int64_t T : {1, 2})
    for (int variant = 0; variant < 4; ++variant) {
      const int64_t B = 1, S = 300, H = 4, D = 24, Dv = 16;
      INFO("T " << T << " variant " << variant);
      const Vec qv = testing::randn(B * T * H * D, 1), kv = testing::randn(B * S * D, 2), vv = testing::randn(B * S * Dv, 3);
      std::vector<float> qf(qv.begin(), qv.end()), kf(kv.begin(), kv.end()), vf(vv.begin(), vv.end());
      std::vector<float> sinks{0.5f, -1.f, 2.f, 0.f};
      static std::vector<int32_t> docs(S);
      for (int64_t t = 0; t < S; ++t) docs[t] = int32_t(t < 120 ? 0 : 120);
      AttentionOptions o(0.3f);
      o.kernel = AttentionKernel::flash;
      if (variant == 1) o.softcap = 2.f, o.mask.window = 100;
      if (variant == 2) o.sinks = Tensor(sinks.data(), nullptr, {H}), o.output_scale = {OutputScale::causal, 1.f};
      if (variant == 3) o.mask.docs = docs.data(), o.mask.docs_stride = S, o.mask.chunk = 256;
      std::vector<float> max_fast(H, -1e30f);
      o.max_logits = max_fast.data();
      Arena arena;
      ArenaScope as(arena);
      NoGrad ng;
      const Tensor q(qf.data(), nullptr, {B, T, H, D}), k(kf.data(), nullptr, {B, S, 1, D}), v(vf.data(), nullptr, {B, S, 1, Dv});
      const Tensor y = attention(q, k, v, o);
      std::vector<double> qd(qf.begin(), qf.end()), kd(kf.begin(), kf.end()), vd(vf.begin(), vf.end()), sd(sinks.begin(), sinks.end());
      Vec want(B * T * H * Dv), max_ref(H, -1e30);
      ref::attention_fwd(want.data(), qd.data(), kd.data(), vd.data(), B, T, S, H, int64_t(1), D, Dv, 0.3, double(o.softcap),
                         true, max_ref.data(), {}, o.output_scale, o.mask, variant == 2 ? sd.data() : nullptr);
      CHECK(testing::rel_err(Vec(y.data, y.data + y.numel()), want) <= 1e-5);
      CHECK(testing::rel_err(Vec(max_fast.begin(), max_fast.end()), max_ref) <= 1e-5);
    }
}
