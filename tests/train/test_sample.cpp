// attnlab sample's window and cache: with and without the cache, the same tokens.
#include <catch2/catch.hpp>
#include <vector>

#include "nn/model.h"
#include "train/sample.h"
#include "util/rng.h"

using namespace attnlab;

namespace {
std::vector<int32_t> random_ids(int n, int V, uint64_t seed) {
  Rng r(seed, 1);
  std::vector<int32_t> ids(n);
  for (auto& x : ids) x = int32_t(r.below(V));
  return ids;
}
}  // namespace

TEST_CASE("sampling with and without the cache gives the same text, through window slides", "[nn][cache]") {
  ModelSpec spec;
  spec.vocab = 13;
  spec.context = 24;
  spec.n_layer = 2;
  spec.n_head = 2;
  spec.n_kv_head = 2;
  spec.d_model = 16;
  spec.d_head = 8;
  spec.d_ff = 24;
  spec.init_std = 0.3f;
  spec.attn_scale = 0.35f;
  spec.positions = Positions::rope;
  spec.mask.window = 9;
  ParamStore store;
  Transformer model(spec, store);
  store.finalize(8);
  SampleOptions opt;
  opt.tokens = 70;  // past the context of 24 several times
  opt.temperature = 0.f;
  opt.shift = 5;
  const std::vector<int32_t> prompt = random_ids(30, spec.vocab, 2);  // longer than the context
  SampleResult cached = sample(model, prompt, opt);
  opt.cache = false;
  SampleResult plain = sample(model, prompt, opt);
  CHECK(cached.ids == plain.ids);
  CHECK(cached.prompt_cut == 6);
  // 24 tokens in the window after the prompt; each slide of 5 makes room for 5 more.
  CHECK(cached.slides == (70 - 1 + 4) / 5);
  CHECK(cached.slides == plain.slides);
  REQUIRE(cached.ids.size() == 100);
  // Temperature sampling draws the same tokens too (same seed, logits equal to rounding).
  opt.temperature = 1.f;
  opt.seed = 4;
  SampleResult a = sample(model, prompt, opt);
  opt.cache = true;
  SampleResult b = sample(model, prompt, opt);
  CHECK(a.ids == b.ids);
}
