// train.init_from and train.trainable: a run that starts from another run's parameters and trains
// only what is named (the learned block softmax's scales), leaving every other parameter
// bit-identical; and the errors when the checkpoint or the patterns do not fit the model.
#include "io/checkpoint.h"
#include "train/session.h"
#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

TEST_CASE("init_from + trainable: only the softmax scales train, every other parameter keeps its bits",
          "[train][blocks]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 6);
  const TrainResult base = train(load_config(cfg, {"run.name=base"}), quiet_options());
  REQUIRE(base.status == TrainResult::completed);
  const std::vector<std::string> tuned_overrides{"run.name=tuned",
                                                 "attention.block_softmax.mode=learned",
                                                 "attention.block_softmax.blocks=2",
                                                 "train.trainable=[\"*.softmax_scales\"]",
                                                 "train.init_from=" + base.checkpoint_path,
                                                 "optimizer.lr=1e-2"};
  const TrainResult tuned = train(load_config(cfg, tuned_overrides), quiet_options());
  REQUIRE(tuned.status == TrainResult::completed);

  const auto base_params = list_datasets(base.checkpoint_path, "params");
  REQUIRE(!base_params.empty());
  for (const auto& n : base_params) {
    INFO("params/" << n);
    CHECK(same_bits(read_f32(base.checkpoint_path, "params/" + n), read_f32(tuned.checkpoint_path, "params/" + n)));
  }
  // The checkpoint names what was frozen: everything but the scales, which alone have optimizer state.
  CHECK(CheckpointReader(tuned.checkpoint_path).strings("frozen") == base_params);
  for (const auto& n : list_datasets(tuned.checkpoint_path, "optim")) {
    INFO("optim/" << n);
    CHECK(contains(n, "softmax_scales"));
  }
  // The scales moved from their init (what a fresh session draws from the same seed).
  auto fresh = Session::from_config(load_config(cfg, tuned_overrides));
  const Param& a0 = fresh->store.at("blocks.0.attn.softmax_scales");
  const std::vector<float> init(a0.data, a0.data + a0.numel());
  CHECK(!same_bits(init, read_f32(tuned.checkpoint_path, "params/blocks.0.attn.softmax_scales")));
  CHECK(tuned.final_train_loss != base.final_train_loss);
  // It logs where it started: eval step 0, the base parameters with the scales at their init.
  const auto eval_steps = read_i64(tuned.metrics_path, "eval/step");
  REQUIRE(!eval_steps.empty());
  CHECK(eval_steps.front() == 0);
}

TEST_CASE("init_from: a stored parameter the model lacks or shapes differently is named", "[train][blocks]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 2);
  const TrainResult base = train(load_config(cfg, {"run.name=base", "model.n_layer=2"}), quiet_options());
  REQUIRE(base.status == TrainResult::completed);
  SECTION("different shape") {
    auto run = [&] {
      train(load_config(cfg, {"run.name=x", "model.n_layer=2", "model.d_model=8", "train.init_from=" + base.checkpoint_path}),
            quiet_options());
    };
    REQUIRE_THROWS_WITH(run(), Catch::Contains("checkpoint.h5: params/") && Catch::Contains("expected float32 [8, 8], found float32 [16, 16]"));
  }
  SECTION("parameter not in the model") {
    auto run = [&] { train(load_config(cfg, {"run.name=x", "train.init_from=" + base.checkpoint_path}), quiet_options()); };
    REQUIRE_THROWS_WITH(run(), Catch::Contains("blocks.1.") && Catch::Contains("not in this model"));
  }
  SECTION("a trainable pattern that matches nothing") {
    auto run = [&] { train(load_config(cfg, {"run.name=x", "train.trainable=[\"*.nothing\"]"}), quiet_options()); };
    REQUIRE_THROWS_WITH(run(), Catch::Contains("train.trainable") && Catch::Contains("*.nothing"));
  }
}
