// QK-Clip: right after the pass the same batch's max logits are at most τ, clipped heads scale by
// exactly their γ, heads at or below τ keep their logits, and nothing but the targets moves.
#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "train/qk_clip.h"

using namespace attnlab;

namespace {

struct Variant {
  const char* name;
  AttentionType type;
  int n_kv_head;
  int q_lora_rank;
};

ModelSpec spec_of(const Variant& v, QueryScaling qs, float softcap) {
  ModelSpec s;
  s.vocab = 13;
  s.context = 16;
  s.n_layer = 2;
  s.n_head = 4;
  s.n_kv_head = v.n_kv_head;
  s.d_model = 32;
  s.d_head = 8;
  s.d_ff = 48;
  s.init_std = 0.6f;  // large logits, spread over heads
  s.attention = v.type;
  if (v.type == AttentionType::mla) s.mla = {v.q_lora_rank, 12, 6, 4, 5};
  s.query_scaling = qs;
  s.attn_scale = v.type == AttentionType::mla ? 1.f / std::sqrt(10.f) : 1.f / std::sqrt(8.f);
  s.softcap = softcap;
  s.kernel = AttentionKernel::flash;
  return s;
}

std::vector<float> forward_max_logits(Transformer& model) {
  std::vector<int32_t> ids(2 * 16);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 5 + 1) % 13);
  Arena arena;
  ArenaScope as(arena);
  NoGrad ng;
  model.logits(ids.data(), 2, 16);
  return model.max_logits();
}

std::map<std::string, std::vector<float>> snapshot(const ParamStore& store) {
  std::map<std::string, std::vector<float>> out;
  for (const Param* p : store.params()) out[p->name] = std::vector<float>(p->data, p->data + p->numel());
  return out;
}

bool is_target_part(const Transformer& model, const std::string& name) {
  for (int l = 0; l < model.spec().n_layer; ++l)
    for (const QkClipTarget& t : model.attention(l).qk_clip_targets())
      if (t.param->name == name) return true;
  return false;
}

}  // namespace

TEST_CASE("qk_clip: MHA, GQA and MLA (both query ranks), every placement, with and without the cap, any alpha",
          "[qk_clip]") {
  const Variant variants[] = {{"mha", AttentionType::mha, 4, 0},
                              {"gqa", AttentionType::mha, 2, 0},
                              {"mla", AttentionType::mla, 0, 0},
                              {"mla_q_lora", AttentionType::mla, 0, 7}};
  for (const Variant& v : variants)
    for (QueryScaling qs : {QueryScaling::logits, QueryScaling::query, QueryScaling::init})
      for (float cap : {0.f, 1.5f})
        for (float alpha : {0.5f, 0.25f, 1.f}) {
          INFO(v.name << " query_scaling " << int(qs) << " softcap " << cap << " alpha " << alpha);
          ParamStore store;
          Transformer model(spec_of(v, qs, cap), store);
          store.finalize(21);
          const std::vector<float> before = forward_max_logits(model);
          // τ between the heads of layer 0: its largest head is clipped, its smallest is not.
          std::vector<float> l0(before.begin(), before.begin() + 4);
          std::sort(l0.begin(), l0.end());
          const float tau = 0.5f * (l0[1] + l0[2]);
          REQUIRE(l0[3] > tau);
          if (cap > 0) REQUIRE(l0[3] > cap);  // the pre-cap value is what is clipped
          const auto params_before = snapshot(store);
          const QkClipStats stats = qk_clip(model, before, {tau, alpha});
          const std::vector<float> after = forward_max_logits(model);
          int clipped = 0;
          float min_gamma = 1.f;
          // Layer 0 sees the same input before and after: its heads are exact. Layer 1's input
          // changed with layer 0's clip, so only its own clip's effect is checked through the count.
          for (size_t i = 0; i < before.size(); ++i) {
            if (before[i] > tau) {
              ++clipped;
              min_gamma = std::min(min_gamma, tau / before[i]);
            }
            if (i >= 4) continue;
            INFO("layer 0 head " << i << " before " << before[i] << " after " << after[i]);
            CHECK(after[i] <= tau * (1 + 1e-5f));
            if (before[i] > tau)
              CHECK(after[i] == Approx(tau).epsilon(1e-5));  // scaled by exactly γ = τ / S
            else  // kept, under GQA too: the group's key scale is undone in the query
              CHECK(after[i] == Approx(before[i]).epsilon(1e-5));
          }
          CHECK(stats.clipped_heads == clipped);
          CHECK(stats.gamma_deficit == Approx(1 - min_gamma).epsilon(1e-6));
          // Only the targets' parameters move: V, k^R (wkv_a), wo, the MLP, norms, embeddings stay.
          for (const Param* p : store.params()) {
            if (is_target_part(model, p->name)) continue;
            INFO(p->name);
            CHECK(params_before.at(p->name) == std::vector<float>(p->data, p->data + p->numel()));
          }
          // Inside a target: only the named parts of clipped heads (and their GQA group's).
          if (v.type == AttentionType::mla) {
            const Param& wkv_b = store.at(std::string("blocks.0.attn.wkv_b"));
            for (int h = 0; h < 4; ++h) {
              const MatrixView vh = wkv_b.head_part(h, "v");
              for (int64_t r = 0; r < vh.rows; ++r)
                for (int64_t c = 0; c < vh.cols; ++c)
                  CHECK(vh.data[r * vh.row_stride + c] ==
                        params_before.at("blocks.0.attn.wkv_b")[(vh.data - wkv_b.data) + r * vh.row_stride + c]);
            }
          }
          if (v.n_kv_head == 4 || v.type == AttentionType::mla) {
            // Without GQA a head at or below τ is bit-identical in every target.
            const std::string q = v.type == AttentionType::mha ? "blocks.0.attn.wq"
                                  : v.q_lora_rank              ? "blocks.0.attn.wq_b"
                                                               : "blocks.0.attn.wq";
            const Param& wq = store.at(q);
            for (int h = 0; h < 4; ++h) {
              if (before[h] > tau) continue;
              const MatrixView hv = wq.head(h);
              for (int64_t r = 0; r < hv.rows; ++r)
                for (int64_t c = 0; c < hv.cols; ++c)
                  CHECK(hv.data[r * hv.row_stride + c] == params_before.at(q)[(hv.data - wq.data) + r * hv.row_stride + c]);
            }
          }
        }
}

TEST_CASE("qk_clip: a head at 2 tau gets its logits exactly halved, nothing above tau, nothing moves", "[qk_clip]") {
  for (AttentionType type : {AttentionType::mha, AttentionType::mla}) {
    ParamStore store;
    Transformer model(spec_of({"", type, 4, 0}, QueryScaling::logits, 0.f), store);
    store.finalize(5);
    const std::vector<float> before = forward_max_logits(model);
    const float tau = before[2] / 2;  // layer 0, head 2 at exactly 2τ
    qk_clip(model, before, {tau, 0.5f});
    const std::vector<float> after = forward_max_logits(model);
    CHECK(after[2] == Approx(before[2] / 2).epsilon(1e-5));
    // τ above every head: the pass changes nothing at all.
    const auto params = snapshot(store);
    const std::vector<float> now = forward_max_logits(model);
    const QkClipStats none = qk_clip(model, now, {1e6f, 0.5f});
    CHECK(none.clipped_heads == 0);
    CHECK(none.gamma_deficit == 0.f);
    CHECK(snapshot(store) == params);
  }
}

TEST_CASE("qk_clip: frozen parameters are never changed", "[qk_clip]") {
  ParamStore store;
  Transformer model(spec_of({"mha", AttentionType::mha, 4, 0}, QueryScaling::logits, 0.f), store);
  store.finalize(5);
  store.freeze({"*.wk"});
  const std::vector<float> before = forward_max_logits(model);
  const auto params = snapshot(store);
  const QkClipStats stats = qk_clip(model, before, {before[0] / 2, 0.5f});
  CHECK(stats.clipped_heads > 0);
  CHECK(snapshot(store).at("blocks.0.attn.wk") == params.at("blocks.0.attn.wk"));
  CHECK(snapshot(store).at("blocks.0.attn.wq") != params.at("blocks.0.attn.wq"));
  // Only W_q's share: the head's logits scale by γ^α = √(1/2).
  CHECK(forward_max_logits(model)[0] == Approx(before[0] * std::sqrt(0.5f)).epsilon(1e-5));
}
