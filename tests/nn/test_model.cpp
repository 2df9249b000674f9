#include <cmath>
#include <cstring>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "nn/model.h"
#include "testing/gradcheck.h"
#include "testing/ref_model.h"
#include "util/rng.h"

using namespace attnlab;

namespace {

ModelSpec tiny_spec() {
  ModelSpec s;
  s.vocab = 11;
  s.context = 8;
  s.n_layer = 2;
  s.n_head = 2;
  s.n_kv_head = 2;
  s.d_model = 16;
  s.d_head = 8;
  s.d_ff = 24;
  s.init_std = 0.3f;  // larger than training's 0.02 so every path carries signal
  s.attn_scale = 1.f / std::sqrt(8.f);
  return s;
}

struct Batch {
  std::vector<int32_t> ids, targets;
};
Batch make_batch(int B, int T, int V, uint64_t seed) {
  Rng r(seed, 3);
  Batch b;
  for (int i = 0; i < B * T; ++i) {
    b.ids.push_back(int32_t(r.below(V)));
    b.targets.push_back(int32_t(r.below(V)));
  }
  return b;
}

// Whole model: the f32 autograd's gradient of every parameter against central differences of the
// double reference model, on sampled coordinates.
void check_model_grads(const ModelSpec& spec) {
  ParamStore store;
  Transformer model(spec, store);
  store.finalize(5);
  // Gains and biases start at 1 and 0; perturb them so their gradients are generic.
  Rng jitter(9, 9);
  for (Param* p : store.params())
    if (p->role == Role::gain || p->role == Role::bias)
      for (int64_t i = 0; i < p->numel(); ++i) p->data[i] += float(0.3 * jitter.normal());
  const int B = 2, T = spec.context;
  Batch batch = make_batch(B, T, spec.vocab, 17);
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  store.zero_grad();
  Tensor loss = model.loss(batch.ids.data(), batch.targets.data(), B, T);
  backward(loss);
  store.settle_grads();

  testing::ParamValues pv = testing::param_values(store);
  const double ref_loss = testing::ref_model_loss(spec, pv, batch.ids, batch.targets, B, T);
  CHECK(double(loss.item()) == Approx(ref_loss).epsilon(1e-5));
  const double h = 1e-5;
  for (Param* p : store.params()) {
    INFO("parameter " << p->name);
    testing::Vec analytic, numeric;
    const int64_t n = p->numel(), step = std::max<int64_t>(1, n / 12);
    for (int64_t i = 0; i < n; i += step) {
      auto& v = pv[p->name];
      const double x0 = v[i];
      v[i] = x0 + h;
      const double lp = testing::ref_model_loss(spec, pv, batch.ids, batch.targets, B, T);
      v[i] = x0 - h;
      const double lm = testing::ref_model_loss(spec, pv, batch.ids, batch.targets, B, T);
      v[i] = x0;
      numeric.push_back((lp - lm) / (2 * h));
      analytic.push_back(p->grad[i]);
    }
    CHECK(testing::rel_err(analytic, numeric) <= 1e-4);
  }
}

}  // namespace

TEST_CASE("model: every parameter's gradient against finite differences (layernorm, gelu, learned)",
          "[model][grad]") {
  check_model_grads(tiny_spec());
}

TEST_CASE("model: every parameter's gradient against finite differences (rmsnorm, swiglu, rope, GQA, cap)",
          "[model][grad]") {
  ModelSpec s = tiny_spec();
  s.norm = NormKind::rmsnorm;
  s.mlp = MlpKind::swiglu;
  s.positions = Positions::rope;
  s.n_head = 4;
  s.n_kv_head = 2;
  s.d_head = 4;
  s.softcap = 3.f;
  s.attn_scale = 0.5f;
  for (QueryScaling qs : {QueryScaling::init, QueryScaling::query, QueryScaling::logits, QueryScaling::both}) {
    s.query_scaling = qs;
    INFO("query_scaling " << int(qs));
    check_model_grads(s);
  }
}

TEST_CASE("model: parameter names, shapes, roles and head views", "[model]") {
  ModelSpec s = tiny_spec();
  s.mlp = MlpKind::swiglu;
  ParamStore store;
  Transformer model(s, store);
  store.finalize(1);
  std::vector<std::string> names;
  for (const Param* p : store.params()) names.push_back(p->name);
  REQUIRE(std::is_sorted(names.begin(), names.end()));
  REQUIRE(store.at("blocks.1.attn.wq").shape == Shape{16, 16});
  REQUIRE(store.at("blocks.0.mlp.w3").shape == Shape{16, 24});
  REQUIRE(store.at("pos_emb").role == Role::embedding);
  REQUIRE(store.at("norm_f.b").role == Role::bias);
  REQUIRE(store.find("blocks.2.attn.wq") == nullptr);
  REQUIRE_THROWS_WITH(store.at("blocks.9.attn.wq"), Catch::Contains("blocks.9.attn.wq"));
  // Head 1 of wq: columns [8, 16); scaling it in place leaves head 0 alone.
  Param& wq = store.at("blocks.0.attn.wq");
  std::vector<float> before(wq.data, wq.data + wq.numel());
  wq.head(1).scale_(0.5f);
  for (int64_t r = 0; r < 16; ++r)
    for (int64_t c = 0; c < 16; ++c)
      REQUIRE(wq.data[r * 16 + c] == (c >= 8 ? before[r * 16 + c] * 0.5f : before[r * 16 + c]));
  // wo's heads are its rows.
  REQUIRE(store.at("blocks.0.attn.wo").head(1).data == store.at("blocks.0.attn.wo").data + 8 * 16);
  // Freezing by pattern: counts per pattern; frozen params expose no grad.
  auto counts = store.freeze({"blocks.*.attn.*", "nothing*"});
  REQUIRE(counts == std::vector<int>{8, 0});
  REQUIRE_FALSE(store.at("blocks.1.attn.wk").tensor().requires_grad());
  REQUIRE(store.at("blocks.1.mlp.w1").tensor().requires_grad());
}

TEST_CASE("model: init is per-name; query_scaling init draws the same W_q, scaled", "[model]") {
  ModelSpec s = tiny_spec();
  ParamStore a, b;
  Transformer ma(s, a);
  s.query_scaling = QueryScaling::init;
  s.mlp = MlpKind::swiglu;  // an extra parameter must not change the others
  Transformer mb(s, b);
  a.finalize(3);
  b.finalize(3);
  for (const Param* p : a.params()) {
    const Param& q = b.at(p->name);
    const float k = p->name.find("attn.wq") != std::string::npos ? s.attn_scale : 1.f;
    for (int64_t i = 0; i < p->numel(); ++i) REQUIRE(q.data[i] == Approx(p->data[i] * k).epsilon(1e-6));
  }
}

TEST_CASE("model: same inputs, seed and threads give bit-identical loss and gradients", "[model][determinism]") {
  ModelSpec s = tiny_spec();
  s.context = 32;
  s.d_model = 64;
  s.n_head = 4;
  s.d_head = 16;
  s.d_ff = 256;
  s.dropout = 0.1f;
  s.vocab = 65;
  auto run = [&](std::vector<float>& grads) {
    ParamStore store;
    Transformer model(s, store);
    store.finalize(42);
    Batch batch = make_batch(8, 32, 65, 4);
    Arena arena;
    Tape tape;
    ArenaScope as(arena);
    TapeScope ts(tape);
    store.zero_grad();
    Tensor loss = model.loss(batch.ids.data(), batch.targets.data(), 8, 32, 7, 3);
    backward(loss);
    store.settle_grads();
    grads.assign(store.grad(), store.grad() + store.total());
    return loss.item();
  };
  std::vector<float> g1, g2;
  float l1 = run(g1), l2 = run(g2);
  REQUIRE(std::memcmp(&l1, &l2, sizeof(float)) == 0);
  REQUIRE(g1.size() == g2.size());
  REQUIRE(std::memcmp(g1.data(), g2.data(), g1.size() * sizeof(float)) == 0);
}
