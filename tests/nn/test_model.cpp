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
    // A key bias adds q·b_k to every logit of a row, which the softmax ignores: its true gradient is
    // 0 and both sides are rounding noise, judged against a floor.
    const bool zero_grad = p->name.size() > 8 && p->name.compare(p->name.size() - 8, 8, ".attn.bk") == 0;
    CHECK(testing::rel_err(analytic, numeric, zero_grad ? 1e-3 : 0.0) <= 1e-4);
    if (zero_grad)
      for (double g : analytic) CHECK(std::fabs(g) < 1e-6);
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

ModelSpec tiny_mla_spec(int q_lora_rank) {
  ModelSpec s = tiny_spec();
  s.attention = AttentionType::mla;
  s.n_head = 3;
  s.mla = {q_lora_rank, 6, 4, 2, 5};  // q_lora_rank, kv_lora_rank, qk_nope, qk_rope, v: q/k 6 != v 5
  s.attn_scale = 1.f / std::sqrt(6.f);
  return s;
}

TEST_CASE("model (MLA): every parameter's gradient against finite differences", "[model][grad]") {
  for (int q_lora_rank : {0, 5})
    for (Positions pos : {Positions::learned, Positions::rope})
      for (float cap : {0.f, 2.f}) {
        ModelSpec s = tiny_mla_spec(q_lora_rank);
        s.positions = pos;
        s.softcap = cap;
        INFO("q_lora_rank " << q_lora_rank << " positions " << int(pos) << " softcap " << cap);
        check_model_grads(s);
      }
  // Every query_scaling placement, the dense kernel and rmsnorm/swiglu around it.
  for (QueryScaling qs : {QueryScaling::init, QueryScaling::query, QueryScaling::both}) {
    ModelSpec s = tiny_mla_spec(5);
    s.query_scaling = qs;
    s.kernel = AttentionKernel::dense;
    s.norm = NormKind::rmsnorm;
    s.mlp = MlpKind::swiglu;
    INFO("query_scaling " << int(qs));
    check_model_grads(s);
  }
}

TEST_CASE("model (block softmax, output scale): every parameter's gradient, the softmax scales' included",
          "[model][grad][blocks]") {
  for (AttentionType type : {AttentionType::mha, AttentionType::mla})
    for (BlockSoftmaxMode mode : {BlockSoftmaxMode::exact, BlockSoftmaxMode::none, BlockSoftmaxMode::learned})
      for (bool per_head : {false, true}) {
        if (per_head && mode != BlockSoftmaxMode::learned) continue;
        ModelSpec s = type == AttentionType::mla ? tiny_mla_spec(0) : tiny_spec();
        s.block = {mode, 3, 0};
        s.block_per_head = per_head;
        for (AttentionKernel kernel : kAllAttentionKernels) {
          s.kernel = kernel;
          INFO("type " << int(type) << " mode " << int(mode) << " per_head " << per_head << " kernel "
                       << kernel_name(kernel));
          check_model_grads(s);
        }
      }
  // The output scale, alone and with the learned block softmax.
  for (OutputScale out : {OutputScale{OutputScale::constant, 1.7f}, OutputScale{OutputScale::causal, 1.f}})
    for (BlockSoftmaxMode mode : {BlockSoftmaxMode::exact, BlockSoftmaxMode::learned}) {
      ModelSpec s = tiny_spec();
      s.block = {mode, mode == BlockSoftmaxMode::exact ? 1 : 2, 0};
      s.output_scale = out;
      INFO("output scale " << int(out.kind) << " mode " << int(mode));
      check_model_grads(s);
    }
  // Local masks: a window in every layer, and a chunk in the first of each [local, global] pair.
  {
    ModelSpec s = tiny_spec();
    s.mask = {3, 0};
    check_model_grads(s);
    s.mask = {0, 4};
    s.layer_local = {true, false};
    s.block = {BlockSoftmaxMode::learned, 2, 0};
    check_model_grads(s);
    ModelSpec m = tiny_mla_spec(0);
    m.mask = {4, 3};
    check_model_grads(m);
  }
  // Packed documents (separator [2, 2], frequent among 11 symbols), in MHA with a window and in MLA.
  {
    ModelSpec s = tiny_spec();
    s.vocab = 3;  // random ids from 3 symbols: the separator occurs in every sequence
    s.doc_separator = {2, 2};
    s.mask = {5, 0};
    check_model_grads(s);
    ModelSpec m = tiny_mla_spec(0);
    m.vocab = 3;
    m.doc_separator = {1};
    m.sinks = true;
    check_model_grads(m);
  }
  // Weighted residuals (fused into both residual ops), in MHA with GELU and SwiGLU, and with dropout off.
  {
    ModelSpec s = tiny_spec();
    s.weighted_residual = true;
    s.tau_attn = 0.2f;
    s.tau_mlp = 0.6f;
    check_model_grads(s);
    s.mlp = MlpKind::swiglu;
    check_model_grads(s);
  }
  // The source model's knobs: biases everywhere, PyTorch's init, a norm after the embeddings, an
  // untied head (with its bias), weighted residuals; and each alone.
  {
    ModelSpec s = tiny_spec();
    s.bias = true;
    s.pytorch_init = true;
    s.embed_norm = true;
    s.tied_head = false;
    s.weighted_residual = true;
    check_model_grads(s);
    ModelSpec b = tiny_spec();
    b.bias = true;
    b.mlp = MlpKind::swiglu;
    check_model_grads(b);
    ModelSpec e = tiny_spec();
    e.embed_norm = true;
    e.norm = NormKind::rmsnorm;
    check_model_grads(e);
    ModelSpec u = tiny_spec();
    u.tied_head = false;
    check_model_grads(u);
  }
  // Sinks (their gradient included), in MHA with a window and soft-cap, and in MLA with exact blocks.
  {
    ModelSpec s = tiny_spec();
    s.sinks = true;
    s.mask = {3, 0};
    s.softcap = 2.f;
    check_model_grads(s);
    ModelSpec m = tiny_mla_spec(0);
    m.sinks = true;
    m.block = {BlockSoftmaxMode::exact, 2, 0};
    check_model_grads(m);
  }
  // The scales are one parameter per layer, named, shaped [N, context] or [n_head, N, context].
  ModelSpec s = tiny_spec();
  s.block = {BlockSoftmaxMode::learned, 3, 0};
  for (bool per_head : {false, true}) {
    s.block_per_head = per_head;
    ParamStore store;
    Transformer model(s, store);
    store.finalize(1);
    const Param& a = store.at("blocks.1.attn.softmax_scales");
    CHECK(a.role == Role::scale);
    CHECK(a.shape == (per_head ? Shape{2, 3, 8} : Shape{3, 8}));
  }
}

TEST_CASE("model (MLA): parameter names, shapes, head parts and QK-Clip targets", "[model]") {
  for (int q_lora_rank : {0, 5}) {
    ModelSpec s = tiny_mla_spec(q_lora_rank);
    ParamStore store;
    Transformer model(s, store);
    store.finalize(1);
    const std::string a = "blocks.1.attn.";
    const Param& wq = store.at(a + (q_lora_rank ? "wq_b" : "wq"));
    REQUIRE(wq.shape == Shape{q_lora_rank ? 5 : 16, 3 * 6});
    if (q_lora_rank) {
      REQUIRE(store.at(a + "wq_a").shape == Shape{16, 5});
      REQUIRE(store.at(a + "q_norm.g").role == Role::gain);
      REQUIRE(store.find(a + "wq") == nullptr);
    } else {
      REQUIRE(store.find(a + "wq_a") == nullptr);
    }
    REQUIRE(store.at(a + "wkv_a").shape == Shape{16, 6 + 2});
    REQUIRE(store.at(a + "kv_norm.g").shape == Shape{6});
    REQUIRE(store.at(a + "wkv_b").shape == Shape{6, 3 * (4 + 5)});
    REQUIRE(store.at(a + "wo").shape == Shape{3 * 5, 16});
    REQUIRE(store.find(a + "wk") == nullptr);
    // Head 2's parts: q = [q_nope (4) | q_rope (2)] at columns 12.., k^C and v in wkv_b at 18.. and 22..
    REQUIRE(wq.head_part(2, "q_nope").data == wq.data + 12);
    REQUIRE(wq.head_part(2, "q_nope").cols == 4);
    REQUIRE(wq.head_part(2, "q_rope").data == wq.data + 16);
    REQUIRE(wq.head_part(2, "q_rope").cols == 2);
    const Param& wkv_b = store.at(a + "wkv_b");
    REQUIRE(wkv_b.head_part(2, "k_nope").data == wkv_b.data + 18);
    REQUIRE(wkv_b.head_part(2, "v").data == wkv_b.data + 22);
    REQUIRE(wkv_b.head_part(2, "v").cols == 5);
    REQUIRE(store.at(a + "wkv_a").head_part(0, "k_rope").data == store.at(a + "wkv_a").data + 6);
    REQUIRE_THROWS_WITH(wq.head_part(0, "k_rope"), Catch::Contains("has no head part k_rope"));
    // QK-Clip: per head q^C (γ^α), q^R (all of γ: k^R is shared), k^C (γ^(1−α)); never v or k^R.
    const auto& targets = model.attention(1).qk_clip_targets();
    REQUIRE(targets.size() == 9);
    for (const QkClipTarget& t : targets) {
      if (t.part == "q_rope") REQUIRE(t.share == QkClipTarget::query_full);
      else if (t.part == "q_nope") REQUIRE(t.share == QkClipTarget::query);
      else REQUIRE((t.part == "k_nope" && t.share == QkClipTarget::key && t.param == &wkv_b));
      if (t.part != "k_nope") REQUIRE(t.param == &wq);
    }
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

TEST_CASE("model: init is per-name, query_scaling init draws the same W_q, scaled", "[model]") {
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
