// The guard against the double-scaling bug class: for every attention kernel and every
// query_scaling placement, the effective logit multiplier is applied exactly where the config
// says, and equivalent weights give identical logits (NOTE [attention scale]).
#include <cmath>

#include <cstdio>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "ops/loss.h"
#include "util/rng.h"
#include "nn/model.h"
#include "testing/gradcheck.h"

using namespace attnlab;

namespace {

// The attention modules: MHA with GQA, and MLA without and with a query low rank.
enum class Variant { gqa, mla, mla_q_lora };
const char* variant_name(Variant v) { return v == Variant::gqa ? "gqa" : v == Variant::mla ? "mla" : "mla_q_lora"; }

ModelSpec spec_for(QueryScaling qs, float scale, AttentionKernel kernel, Variant variant = Variant::gqa) {
  ModelSpec s;
  s.vocab = 13;
  s.context = 16;
  s.n_layer = 2;
  s.n_head = 4;
  s.n_kv_head = 2;
  s.d_model = 32;
  s.d_head = 8;
  s.d_ff = 64;
  s.init_std = 0.2f;
  s.query_scaling = qs;
  s.attn_scale = scale;
  s.kernel = kernel;
  if (variant != Variant::gqa) {
    s.attention = AttentionType::mla;
    s.mla = {variant == Variant::mla_q_lora ? 12 : 0, 16, 6, 4, 10};
  }
  return s;
}

struct Out {
  std::vector<float> logits, max_logits;
};

// Builds a model; `edit` may change its parameters (to make weights equivalent) before the forward.
template <class Edit>
Out forward(const ModelSpec& spec, Edit edit) {
  ParamStore store;
  Transformer model(spec, store);
  store.finalize(11);
  edit(store);
  std::vector<int32_t> ids(2 * 16);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % 13);
  Arena arena;
  ArenaScope as(arena);
  NoGrad ng;
  Tensor z = model.logits(ids.data(), 2, 16);
  return {std::vector<float>(z.data, z.data + z.numel()), model.max_logits()};
}

// Scales the query projection (wq, or MLA's wq_b after the query norm), so that q scales by k.
void scale_wq(ParamStore& s, float k) {
  auto ends_with = [](const std::string& n, const std::string& e) {
    return n.size() >= e.size() && n.compare(n.size() - e.size(), e.size(), e) == 0;
  };
  for (Param* p : s.params())
    if (ends_with(p->name, ".attn.wq") || ends_with(p->name, ".attn.wq_b"))
      for (int64_t i = 0; i < p->numel(); ++i) p->data[i] *= k;
}

void require_close(const Out& a, const Out& b, double tol) {
  testing::Vec la(a.logits.begin(), a.logits.end()), lb(b.logits.begin(), b.logits.end());
  testing::Vec ma(a.max_logits.begin(), a.max_logits.end()), mb(b.max_logits.begin(), b.max_logits.end());
  CHECK(testing::rel_err(la, lb) <= tol);
  CHECK(testing::rel_err(ma, mb) <= tol);
}

}  // namespace

TEST_CASE("attention scale: the ScalePlan puts the scale in exactly one place per mode", "[attention][scale]") {
  const float s = 0.3f;
  auto eq = [](ScalePlan p, ScalePlan q) { return p.wq_init == q.wq_init && p.query == q.query && p.logits == q.logits; };
  CHECK(eq(plan_attention_scale(QueryScaling::logits, s), {1, 1, s}));
  CHECK(eq(plan_attention_scale(QueryScaling::query, s), {1, s, 1}));
  CHECK(eq(plan_attention_scale(QueryScaling::init, s), {s, 1, 1}));
  CHECK(eq(plan_attention_scale(QueryScaling::none, s), {1, 1, 1}));
  CHECK(eq(plan_attention_scale(QueryScaling::both, s), {s, s, 1}));
}

TEST_CASE("attention scale: every kernel x placement x attention type gives identical logits for equivalent weights",
          "[attention][scale]") {
  for (Variant variant : {Variant::gqa, Variant::mla, Variant::mla_q_lora})
  for (AttentionKernel kernel : kAllAttentionKernels)
    for (float s : {1.f / std::sqrt(8.f), 1.f / 8.f, 0.37f}) {
      INFO("attention " << variant_name(variant) << " kernel " << kernel_name(kernel) << " scale " << s);
      auto none = [](ParamStore&) {};
      auto spec_for = [variant](QueryScaling qs, float sc, AttentionKernel k) { return ::spec_for(qs, sc, k, variant); };
      // The reference: the scale on the logits, weights as drawn.
      Out ref = forward(spec_for(QueryScaling::logits, s, kernel), none);
      // query: q scaled instead of the logits, same weights.
      require_close(forward(spec_for(QueryScaling::query, s, kernel), none), ref, 1e-5);
      // init: W_q drawn times s (the same draw), nothing in the forward. Equal at step 0.
      require_close(forward(spec_for(QueryScaling::init, s, kernel), none), ref, 1e-5);
      // none: no scale anywhere; equivalent when W_q is multiplied by s by hand.
      require_close(forward(spec_for(QueryScaling::none, s, kernel), [&](ParamStore& st) { scale_wq(st, s); }), ref,
                    1e-5);
      // both: init and query, i.e. s² on the logits at step 0 (the doubly-scaled case)...
      Out both = forward(spec_for(QueryScaling::both, s, kernel), none);
      require_close(both, forward(spec_for(QueryScaling::logits, s * s, kernel), none), 1e-5);
      // ...which is not the singly-scaled model: the double application is visible.
      testing::Vec a(both.max_logits.begin(), both.max_logits.end()), b(ref.max_logits.begin(), ref.max_logits.end());
      CHECK(testing::rel_err(a, b) > 0.1);
      // And the kernel does not scale on its own: with logit multiplier 1 and no scale in the plan,
      // logits equal the raw q·k model (none) exactly.
      Out raw = forward(spec_for(QueryScaling::none, s, kernel), none);
      require_close(raw, forward(spec_for(QueryScaling::logits, 1.f, kernel), none), 0.0);
    }
}

TEST_CASE("attention scale: max-logit recording sees the scaled logits in every placement", "[attention][scale]") {
  const float s = 0.25f;
  Out ref = forward(spec_for(QueryScaling::logits, s, AttentionKernel::dense), [](ParamStore&) {});
  Out unscaled = forward(spec_for(QueryScaling::logits, 1.f, AttentionKernel::dense), [](ParamStore&) {});
  // Layer 0 sees the same inputs in both models: its max logits (positive here) scale by s.
  for (size_t i = 0; i < 4; ++i) {
    REQUIRE(unscaled.max_logits[i] > 0);
    CHECK(ref.max_logits[i] == Approx(s * unscaled.max_logits[i]).epsilon(1e-5));
  }
}

namespace {

// One combination of the kernel-consistency matrix.
struct Combo {
  int type;       // 0 MHA, 1 GQA, 2 MQA, 3 MLA
  int mask;       // 0 causal, 1 window, 2 chunk, 3 documents
  bool cap, sinks;
  QueryScaling placement;
};

std::string describe(const Combo& c) {
  static const char* types[] = {"MHA", "GQA", "MQA", "MLA"};
  static const char* masks[] = {"causal", "window", "chunk", "documents"};
  static const char* places[] = {"init", "query", "logits", "none", "both"};
  return std::string(types[c.type]) + " " + masks[c.mask] + (c.cap ? " cap" : "") + (c.sinks ? " sinks" : "") + " " +
         places[int(c.placement)];
}

ModelSpec combo_spec(const Combo& c, QueryScaling placement, float scale, AttentionKernel kernel) {
  ModelSpec s = spec_for(placement, scale, kernel, c.type == 3 ? Variant::mla : Variant::gqa);
  s.n_kv_head = c.type == 0 ? 4 : c.type == 1 ? 2 : 1;
  if (c.mask == 1) s.mask.window = 5;
  if (c.mask == 2) s.mask.chunk = 6;
  if (c.mask == 3) s.doc_separator = {3};
  s.softcap = c.cap ? 2.5f : 0.f;
  s.sinks = c.sinks;
  return s;
}

struct Run {
  std::vector<float> logits, max_logits;
  std::vector<std::vector<float>> grads;  // every parameter's, in registration order
};

// Loss, logits and every gradient of a model whose parameters `edit` may change first.
template <class Edit>
Run run_model(const ModelSpec& spec, Edit edit) {
  ParamStore store;
  Transformer model(spec, store);
  store.finalize(11);
  Rng jitter(2, 2);  // sinks, gains and biases away from their init
  for (Param* p : store.params())
    if (p->role == Role::gain || p->role == Role::bias)
      for (int64_t i = 0; i < p->numel(); ++i) p->data[i] += float(0.5 * jitter.normal());
  edit(store);
  std::vector<int32_t> ids(2 * 16), targets(2 * 16);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 3) % 13), targets[i] = int32_t((i * 5 + 1) % 13);
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  store.zero_grad();
  Run r;
  Tensor z = model.logits(ids.data(), 2, 16);
  r.logits.assign(z.data, z.data + z.numel());
  r.max_logits = model.max_logits();
  backward(cross_entropy(z, targets.data()));
  store.settle_grads();
  for (Param* p : store.params()) r.grads.emplace_back(p->grad, p->grad + p->numel());
  return r;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  return testing::rel_err(testing::Vec(a.begin(), a.end()), testing::Vec(b.begin(), b.end()));
}

void check_runs(const Run& a, const Run& b, double tol, double grad_tol) {
  CHECK(rel(a.logits, b.logits) <= tol);
  CHECK(rel(a.max_logits, b.max_logits) <= tol);
  REQUIRE(a.grads.size() == b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    INFO("gradient of parameter " << i);
    CHECK(rel(a.grads[i], b.grads[i]) <= grad_tol);
  }
}

}  // namespace

// Every kernel × {MHA, GQA, MQA, MLA} × {causal, window, chunk, documents} × {cap} × {sinks} × every
// placement: 320 combinations, all run (about 2 s): the flash kernel against the dense one (outputs, max logits, every gradient) at f32
// (1e-4) and at bf16 products (flash's products in bf16, dense's attention in f32: 3e-2 on outputs,
// 1e-1 on gradients, bf16's 2^-9 per operand through two layers and back), and the placement
// against the scale on the logits with equivalent weights (1e-5; both: against s² on the logits).
TEST_CASE("attention consistency matrix: kernels, types, masks, cap, sinks and placements agree",
          "[attention][scale][matrix]") {
  std::vector<Combo> all;
  for (int type = 0; type < 4; ++type)
    for (int mask = 0; mask < 4; ++mask)
      for (bool cap : {false, true})
        for (bool sinks : {false, true})
          for (QueryScaling pl : {QueryScaling::init, QueryScaling::query, QueryScaling::logits, QueryScaling::none,
                                  QueryScaling::both})
            all.push_back({type, mask, cap, sinks, pl});
  std::printf("attention consistency matrix: all %zu combinations\n", all.size());
  const float s = 0.3f;
  auto none = [](ParamStore&) {};
  for (const Combo& c : all) {
    INFO(describe(c));
    const QueryScaling pl = c.placement;
    for (auto precision : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16}) {
      testing::PrecisionScope ps(precision);
      const bool bf16 = precision == kernels::MatmulPrecision::bf16;
      INFO("bf16 products " << bf16);
      check_runs(run_model(combo_spec(c, pl, s, AttentionKernel::flash), none),
                 run_model(combo_spec(c, pl, s, AttentionKernel::dense), none), bf16 ? 3e-2 : 1e-4, bf16 ? 1e-1 : 1e-4);
    }
    for (AttentionKernel kernel : kAllAttentionKernels) {
      INFO(kernel_name(kernel));
      const Run ref = run_model(combo_spec(c, QueryScaling::logits, pl == QueryScaling::both ? s * s : s, kernel), none);
      const Run got = pl == QueryScaling::none
                          ? run_model(combo_spec(c, pl, s, kernel), [&](ParamStore& st) { scale_wq(st, s); })
                          : run_model(combo_spec(c, pl, s, kernel), none);
      // Forward only: equivalent weights differ in W_q by the scale, so W_q's gradient does too.
      CHECK(rel(got.logits, ref.logits) <= 1e-5);
      CHECK(rel(got.max_logits, ref.max_logits) <= 1e-5);
    }
  }
}
