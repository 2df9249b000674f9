// From config to engine objects: every word the schema allows for a choice key maps to a value in
// setup's tables (a choice added to the schema without a table row fails here, not silently).
#include <catch2/catch.hpp>

#include <cmath>

#include "config/config.h"
#include "kernels/amx.h"
#include "kernels/gemm.h"
#include "train/setup.h"

using namespace attnlab;

TEST_CASE("setup: every allowed word of every choice key builds the model, optimizer and schedule", "[setup]") {
  const auto precision = kernels::matmul_precision();
  const auto tiles = kernels::flash_bf16_path();
  const int threads = resolved_threads(RunConfig{});
  const std::vector<std::string> keys = choice_keys();
  REQUIRE(keys.size() >= 9);
  for (const std::string& key : keys)
    for (const std::string& word : config_choices(key)) {
      INFO(key << "=" << word);
      const RunConfig cfg = config_from_yaml_text("", "t", {key + "=" + word}).cfg;
      const ModelSpec spec = model_spec(cfg, 11);
      ParamStore store;
      Transformer model(spec, store);
      store.finalize(1);
      CHECK(make_optimizer(cfg, store) != nullptr);
      CHECK(make_schedule(cfg).lr == cfg.optimizer.lr);
      if (key == "runtime.attention_tiles" && word == "amx" && !kernels::amx_bf16_usable()) {
        CHECK_THROWS_WITH(apply_runtime(cfg), Catch::Contains("runtime.attention_tiles: amx, but this CPU has no AMX"));
        continue;
      }
      CHECK(apply_runtime(cfg) == threads);
    }
  // runtime.attention_tiles reaches the flash kernel: auto is AMX exactly where the CPU has it.
  apply_runtime(config_from_yaml_text("", "t", {"runtime.attention_tiles=avx512"}).cfg);
  CHECK(kernels::flash_bf16_path() == kernels::FlashBf16Path::avx512);
  apply_runtime(config_from_yaml_text("", "t", {}).cfg);
  CHECK(kernels::flash_bf16_path() ==
        (kernels::amx_bf16_usable() ? kernels::FlashBf16Path::amx : kernels::FlashBf16Path::avx512));
  kernels::set_matmul_precision(precision);
  kernels::set_flash_bf16_path(tiles);
  // The words reach the spec: a few spot checks of the tables' rows.
  CHECK(model_spec(config_from_yaml_text("", "t", {"attention.type=mla"}).cfg, 11).attention == AttentionType::mla);
  CHECK(model_spec(config_from_yaml_text("", "t", {"attention.kernel=dense"}).cfg, 11).kernel == AttentionKernel::dense);
  CHECK(model_spec(config_from_yaml_text("", "t", {"attention.query_scaling=both"}).cfg, 11).query_scaling ==
        QueryScaling::both);
  CHECK(model_spec(config_from_yaml_text("", "t", {"model.norm=rmsnorm"}).cfg, 11).norm == NormKind::rmsnorm);
}

TEST_CASE("setup: attention.output_scale's rules and numbers reach the model spec", "[setup][output_scale]") {
  auto spec_of = [](const std::string& v) {
    return model_spec(config_from_yaml_text("", "t", {"attention.output_scale=" + v, "model.context=64"}).cfg, 11)
        .output_scale;
  };
  CHECK(spec_of("none").kind == OutputScale::none);
  const OutputScale c = spec_of("sqrt_dseq_over_e");
  CHECK(c.kind == OutputScale::constant);
  CHECK(c.value == Approx(std::sqrt(64.0 / std::exp(1.0))));
  CHECK(spec_of("causal").kind == OutputScale::causal);
  const OutputScale n = spec_of("2.5");
  CHECK(n.kind == OutputScale::constant);
  CHECK(n.value == 2.5f);
  CHECK_THROWS_WITH(spec_of("huge"), Catch::Contains("expected none, sqrt_dseq_over_e, causal or a positive number"));
  CHECK_THROWS_WITH(spec_of("0"), Catch::Contains("attention.output_scale"));
}
