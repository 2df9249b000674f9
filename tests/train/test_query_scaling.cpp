// Regression guard for the query-scaling study (experiments/query_scaling): W_q initialised times
// the scale ("init") and q scaled in the forward ("query") train identically under Adafactor with
// parameter-scaled updates, and differently under AdamW.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "testing/temp_dir.h"
#include "train/trainer.h"

using namespace attnlab;

namespace {

// A small but non-trivial text: structured enough that the model learns within 100 steps.
std::string corpus_text() {
  std::string text;
  for (int i = 0; i < 400; ++i) text += "the quick brown fox " + std::to_string(i % 7) + " jumps over the lazy dog; ";
  return text;
}

std::vector<double> run(const testing::TempDir& dir, const std::string& optimizer, const std::string& placement) {
  LoadedConfig cfg = default_config();
  std::vector<std::string> o = {
      "data.path=" + dir.file("corpus.txt"), "run.out_dir=" + dir.file("runs"),
      "run.name=" + optimizer + "_" + placement, "model.n_layer=2", "model.n_head=4", "model.d_model=32",
      "model.context=16", "train.batch_size=4", "train.steps=100", "train.grad_clip=0", "schedule.warmup_steps=10",
      "optimizer.name=" + optimizer, "optimizer.lr=" + std::string(optimizer == "adamw" ? "3e-3" : "3e-2"),
      "attention.query_scaling=" + placement, "adafactor.min_dim_size_to_factor=16", "eval.interval=100",
      "eval.iters=1", "eval.sample_tokens=0", "train.checkpoint_interval=0", "runtime.threads=2"};
  cfg = config_from_yaml_text(cfg.resolved_yaml, "test", o);
  TrainOptions opt;
  opt.quiet = true;
  return train(cfg, opt).losses;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST_CASE("query scaling: init equals query under Adafactor, not under AdamW", "[train][query_scaling]") {
  testing::TempDir dir;
  dir.write("corpus.txt", corpus_text());
  const auto ada_init = run(dir, "adafactor", "init"), ada_query = run(dir, "adafactor", "query");
  const auto adam_init = run(dir, "adamw", "init"), adam_query = run(dir, "adamw", "query");
  REQUIRE(ada_init.size() == 100);
  // Training happened: the loss fell well below its start.
  CHECK(ada_init.back() < ada_init.front() - 0.5);
  CHECK(adam_init.back() < adam_init.front() - 0.5);
  const double ada = max_abs_diff(ada_init, ada_query), adam = max_abs_diff(adam_init, adam_query);
  INFO("max |loss(init) - loss(query)|: adafactor " << ada << ", adamw " << adam);
  CHECK(ada <= 1e-5);
  CHECK(adam >= 1e-3);
}
