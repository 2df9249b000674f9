// Decoding with a KV cache against the full forward pass: for every attention type, mask,
// position kind and kernel, the logits of each position decoded one at a time (after a prompt
// decoded at once) equal the full forward's row at that position to 1e-5 of the logits' scale.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "nn/model.h"
#include <catch2/catch.hpp>
#include "util/rng.h"

using namespace attnlab;

namespace {

ModelSpec cache_spec() {
  ModelSpec s;
  s.vocab = 13;
  s.context = 24;
  s.n_layer = 3;
  s.n_head = 4;
  s.n_kv_head = 4;
  s.d_model = 32;
  s.d_head = 8;
  s.d_ff = 48;
  s.init_std = 0.3f;  // attention far from uniform, so a wrong key or position shows
  s.attn_scale = 1.f / std::sqrt(8.f);
  s.mla = {0, 12, 8, 4, 6};
  return s;
}

struct Variant {
  std::string name;
  void (*apply)(ModelSpec&);
};

void use_mla(ModelSpec& s) {
  s.attention = AttentionType::mla;
  s.positions = Positions::rope;
  s.attn_scale = 1.f / std::sqrt(12.f);
}

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {"MHA, learned positions", [](ModelSpec&) {}},
      {"MHA, rope", [](ModelSpec& s) { s.positions = Positions::rope; }},
      {"GQA", [](ModelSpec& s) { s.n_kv_head = 2; }},
      {"MQA, rope", [](ModelSpec& s) { s.n_kv_head = 1, s.positions = Positions::rope; }},
      {"MLA", use_mla},
      {"MLA, query rank", [](ModelSpec& s) { use_mla(s), s.mla.q_lora_rank = 10; }},
      {"MLA, learned positions", [](ModelSpec& s) { use_mla(s), s.positions = Positions::learned; }},
      {"window on [local, global]",
       [](ModelSpec& s) { s.mask.window = 5, s.layer_local = {true, false}; }},
      {"chunk, rope", [](ModelSpec& s) { s.mask.chunk = 7, s.positions = Positions::rope; }},
      {"MLA, window and chunk", [](ModelSpec& s) { use_mla(s), s.mask.window = 6, s.mask.chunk = 10; }},
      {"sinks, GQA, window", [](ModelSpec& s) { s.sinks = true, s.n_kv_head = 2, s.mask.window = 6; }},
      {"MLA, sinks", [](ModelSpec& s) { use_mla(s), s.sinks = true; }},
      {"documents", [](ModelSpec& s) { s.doc_separator = {3}; }},
      {"the almost-scaled source model's knobs",
       [](ModelSpec& s) {
         s.bias = s.pytorch_init = s.embed_norm = s.weighted_residual = true, s.tied_head = false;
         s.output_scale = {OutputScale::causal, 1.f};
       }},
      {"MLA, documents, window",
       [](ModelSpec& s) { use_mla(s), s.doc_separator = {3}, s.mask.window = 7; }},
      {"soft-cap, query scaling in q", [](ModelSpec& s) { s.softcap = 2.f, s.query_scaling = QueryScaling::query; }},
      {"MLA, soft-cap, scaled init",
       [](ModelSpec& s) { use_mla(s), s.softcap = 2.f, s.query_scaling = QueryScaling::init; }},
      {"learned block softmax per head",
       [](ModelSpec& s) { s.block = {BlockSoftmaxMode::learned, 3, 0}, s.block_per_head = true; }},
      {"MLA, exact blocks, causal output scale",
       [](ModelSpec& s) {
         use_mla(s), s.block = {BlockSoftmaxMode::exact, 4, 0}, s.output_scale = {OutputScale::causal, 1.f};
       }},
      {"block softmax none, constant output scale",
       [](ModelSpec& s) { s.block = {BlockSoftmaxMode::none, 2, 0}, s.output_scale = {OutputScale::constant, 1.7f}; }},
  };
  return v;
}

std::vector<int32_t> random_ids(int n, int V, uint64_t seed) {
  Rng r(seed, 1);
  std::vector<int32_t> ids(n);
  for (auto& x : ids) x = int32_t(r.below(V));
  return ids;
}

// Largest |decoded − full| over every position, relative to the largest |full logit|.
double decode_error(const ModelSpec& spec, int prompt) {
  ParamStore store;
  Transformer model(spec, store);
  store.finalize(3);
  Rng jitter(4, 4);  // gains away from 1, so a norm applied to the wrong rows shows
  for (Param* p : store.params())
    if (p->role == Role::gain || p->role == Role::bias)
      for (int64_t i = 0; i < p->numel(); ++i) p->data[i] += float(0.3 * jitter.normal());
  const int T = spec.context, V = spec.vocab;
  const std::vector<int32_t> ids = random_ids(T, V, 11);
  NoGrad no_grad;
  Arena arena;
  ArenaScope as(arena);
  Tensor full = model.logits(ids.data(), 1, T);
  const std::vector<float> want(full.data, full.data + int64_t(T) * V);
  KvCache cache = model.new_cache();
  std::vector<float> got;
  Tensor z = model.decode(ids.data(), prompt, cache);
  got.assign(z.data, z.data + int64_t(prompt) * V);
  for (int t = prompt; t < T; ++t) {
    z = model.decode(ids.data() + t, 1, cache);
    got.insert(got.end(), z.data, z.data + V);
  }
  REQUIRE(cache.length == T);
  double scale = 0, err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, double(std::fabs(want[i])));
    err = std::max(err, double(std::fabs(got[i] - want[i])));
  }
  return err / scale;
}

}  // namespace

TEST_CASE("decoding with a KV cache gives the full forward's logits at every position", "[nn][cache]") {
  for (AttentionKernel kernel : kAllAttentionKernels)
    for (const Variant& v : variants())
      for (int prompt : {1, 5}) {
        ModelSpec spec = cache_spec();
        spec.kernel = kernel;
        v.apply(spec);
        INFO(v.name << ", " << kernel_name(kernel) << " kernel, prompt of " << prompt);
        CHECK(decode_error(spec, prompt) <= 1e-5);
      }
}

TEST_CASE("decoding with a KV cache at bf16 products stays within bf16 rounding of the full forward", "[nn][cache]") {
  // (On a build without AVX-512 BF16 the products stay f32 and the bound holds trivially.)
  kernels::set_matmul_precision(kernels::MatmulPrecision::bf16);
  for (const Variant& v : variants()) {
    ModelSpec spec = cache_spec();
    spec.kernel = AttentionKernel::flash;
    v.apply(spec);
    INFO(v.name);
    CHECK(decode_error(spec, 5) <= 3e-2);
  }
  kernels::set_matmul_precision(kernels::MatmulPrecision::f32);
}

TEST_CASE("the cache holds k and v per kv head, or MLA's latent and rotary key", "[nn][cache]") {
  ModelSpec spec = cache_spec();
  spec.n_kv_head = 2;
  ParamStore store;
  Transformer gqa(spec, store);
  CHECK(gqa.cache_floats_per_token(0) == 2 * 2 * 8);
  use_mla(spec);
  ParamStore store2;
  Transformer mla(spec, store2);
  CHECK(mla.cache_floats_per_token(0) == 12 + 4);
}

TEST_CASE("decoding MLA with a cache longer than 256 (the keys split among threads) gives the full forward's logits",
          "[nn][cache]") {
  for (bool sinks : {false, true}) {
    ModelSpec spec = cache_spec();
    use_mla(spec);
    spec.context = 280;
    spec.n_layer = 2;
    spec.sinks = sinks;
    spec.mask.window = sinks ? 200 : 0;
    spec.kernel = AttentionKernel::flash;
    INFO("sinks " << sinks);
    CHECK(decode_error(spec, 3) <= 1e-5);
  }
}
