// Loading: files, base_config inheritance, override precedence, cycles, cross-key checks.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "config/config.h"
#include "config_testing.h"

using namespace attnlab;
using attnlab::testing::config_error;
using attnlab::testing::TempDir;
using Catch::Contains;

TEST_CASE("config: a file sets its keys, the rest keep their defaults", "[config]") {
  TempDir tmp;
  std::string path = tmp.write("small.yaml",
                               "# a comment\n"
                               "model:\n"
                               "  n_layer: 2\n"
                               "  norm: rmsnorm\n"
                               "  positions: rope\n"
                               "optimizer:\n"
                               "  lr: 3e-4\n"
                               "  decay_roles: [matrix, bias]\n"
                               "train:\n"
                               "  freeze: blocks.0.*   # one pattern without brackets\n"
                               "  resume:\n"
                               "eval:\n");
  LoadedConfig l = load_config(path, {});
  RunConfig want;
  want.model.n_layer = 2;
  want.model.norm = "rmsnorm";
  want.model.positions = "rope";
  want.optimizer.lr = 3e-4;
  want.optimizer.decay_roles = {"matrix", "bias"};
  want.train.freeze = {"blocks.0.*"};
  CHECK(l.cfg == want);
  CHECK(l.sources == std::vector<std::string>{path});
  CHECK(load_config(tmp.write("empty.yaml", ""), {}).cfg == RunConfig{});
  CHECK(load_config(tmp.write("comments.yaml", "# nothing\n"), {}).cfg == RunConfig{});
}

TEST_CASE("config: base_config chains, child keys beat base keys, overrides beat both", "[config]") {
  TempDir tmp;
  std::string root = tmp.write("root.yaml",
                               "model:\n  n_layer: 8\n  d_model: 256\n  norm: rmsnorm\n"
                               "train:\n  steps: 100\n  batch_size: 4\nschedule:\n  warmup_steps: 10\n");
  // base_config is relative to the including file, not to the current directory.
  std::string mid = tmp.write("sub/mid.yaml", "base_config: ../root.yaml\nmodel:\n  n_layer: 6\n");
  std::string leaf = tmp.write("sub/deeper/leaf.yaml",
                               "base_config: ../mid.yaml\n"
                               "model:\n  d_model: 64\n"
                               "train:\n  steps: 50\n");
  LoadedConfig l = load_config(leaf, {"train.steps=70", "run.name=leafy"});
  CHECK(l.cfg.model.n_layer == 6);        // mid beats root
  CHECK(l.cfg.model.d_model == 64);       // leaf beats root
  CHECK(l.cfg.model.norm == "rmsnorm");   // only root sets it
  CHECK(l.cfg.train.batch_size == 4);
  CHECK(l.cfg.train.steps == 70);         // override beats leaf
  CHECK(l.cfg.run.name == "leafy");
  CHECK(l.cfg.model.n_head == 4);         // nobody sets it: default
  REQUIRE(l.sources.size() == 3);
  CHECK(l.sources[0].find("root.yaml") != std::string::npos);  // base first
  CHECK(l.sources[1].find("mid.yaml") != std::string::npos);
  CHECK(l.sources[2] == leaf);

  // Later overrides win over earlier ones; the resolved header records them.
  LoadedConfig o = load_config(leaf, {"model.n_layer=3", "model.n_layer=5"});
  CHECK(o.cfg.model.n_layer == 5);
  CHECK(o.resolved_yaml.find("model.n_layer=3 model.n_layer=5") != std::string::npos);

  // base_config next to the configs of the repository: configs/base.yaml inherits cleanly.
  std::string child = tmp.write("child.yaml", "base_config: " + std::string(ATTNLAB_SOURCE_DIR) +
                                                  "/configs/base.yaml\ntrain:\n  steps: 10\n  "
                                                  "checkpoint_interval: 0\nschedule:\n  warmup_steps: 10\n");
  LoadedConfig c = load_config(child, {});
  CHECK(c.cfg.train.steps == 10);
  CHECK(c.sources.size() == 2);
}

TEST_CASE("config: overrides parse YAML values", "[config]") {
  auto with = [](std::vector<std::string> o) { return config_from_yaml_text("", "t", o).cfg; };
  CHECK(with({"train.freeze=[blocks.0.*, blocks.1.attn.*]"}).train.freeze ==
        std::vector<std::string>{"blocks.0.*", "blocks.1.attn.*"});
  CHECK(with({"train.freeze=[]"}).train.freeze.empty());
  CHECK(with({"optimizer.decay_roles=[]"}).optimizer.decay_roles.empty());
  CHECK(with({"train.resume=runs/x/ckpt.h5", "train.resume="}).train.resume.empty());
  CHECK(with({" model.n_layer =7"}).model.n_layer == 7);  // spaces around the key are ignored
  CHECK(with({"optimizer.lr=1e-2"}).optimizer.lr == 1e-2);
  CHECK(with({"optimizer.lr=1"}).optimizer.lr == 1.0);  // an integer is a fine float
  CHECK(with({"data.path=a=b.txt"}).data.path == "a=b.txt");  // split at the first '='
}

TEST_CASE("config: base_config cycles are reported with the chain", "[config]") {
  TempDir tmp;
  std::string a = tmp.write("a.yaml", "base_config: b.yaml\nmodel:\n  n_layer: 2\n");
  tmp.write("b.yaml", "model:\n  n_layer: 3\nbase_config: c.yaml\n");
  tmp.write("c.yaml", "base_config: ./a.yaml\n");
  std::string msg = config_error([&] { load_config(a, {}); });
  CHECK_THAT(msg, Contains("c.yaml:1:14: base_config cycle: "));
  CHECK_THAT(msg, Contains("a.yaml -> "));
  CHECK_THAT(msg, Contains("b.yaml -> "));
  CHECK_THAT(msg, Contains("c.yaml -> "));

  std::string self = tmp.write("self.yaml", "base_config: self.yaml\n");
  msg = config_error([&] { load_config(self, {}); });
  CHECK_THAT(msg, Contains("self.yaml:1:14: base_config cycle: " + self + " -> "));

  // A plain chain through three files is not a cycle.
  tmp.write("shared.yaml", "model:\n  n_layer: 5\n");
  tmp.write("x.yaml", "base_config: shared.yaml\n");
  std::string y = tmp.write("y.yaml", "base_config: x.yaml\n");
  CHECK(load_config(y, {}).cfg.model.n_layer == 5);
}

TEST_CASE("config: cross-key checks name the key that was set and the other value", "[config]") {
  TempDir tmp;
  auto err = [](std::vector<std::string> o) { return config_error([&] { config_from_yaml_text("", "t", o); }); };

  CHECK(err({"model.n_head=3"}) ==
        "override model.n_head=3: model.d_model (128) must be divisible by model.n_head (3) when model.d_head is 0");
  // With d_head set, any n_head works.
  CHECK(config_from_yaml_text("", "t", {"model.n_head=3", "model.d_head=40"}).cfg.model.n_head == 3);

  std::string f = tmp.write("x.yaml", "model:\n  n_head: 8\nattention:\n  n_kv_heads: 3\n");
  std::string msg = config_error([&] { load_config(f, {}); });
  CHECK_THAT(msg, Contains("x.yaml:4:15: attention.n_kv_heads (3) must divide model.n_head (8)"));
  CHECK_THAT(err({"attention.n_kv_heads=8"}), Contains("override attention.n_kv_heads=8: attention.n_kv_heads (8) "
                                                       "must divide model.n_head (4)"));
  CHECK(config_from_yaml_text("", "t", {"attention.n_kv_heads=2"}).cfg.attention.n_kv_heads == 2);

  CHECK(err({"schedule.min_lr=0.01"}) ==
        "override schedule.min_lr=0.01: schedule.min_lr (0.01) must be <= optimizer.lr (0.001)");
  CHECK(err({"optimizer.lr=1e-5"}) ==
        "override optimizer.lr=1e-5: schedule.min_lr (1e-4) must be <= optimizer.lr (1e-5)");
  CHECK(err({"train.steps=50"}) ==
        "override train.steps=50: schedule.warmup_steps (100) must be <= train.steps (50)");

  CHECK_THAT(err({"model.positions=rope", "model.d_head=31"}),
             Contains("override model.d_head=31: model.positions rope needs an even head size, got 31"));
  CHECK_THAT(err({"model.d_model=132", "model.n_head=4", "model.positions=rope"}),
             Contains("override model.positions=rope: model.positions rope needs an even head size, got 33 "
                      "(model.d_model 132 / model.n_head 4)"));

  // The latest-set key is reported: the file's line when no override touches these keys.
  std::string g = tmp.write("g.yaml", "schedule:\n  warmup_steps: 10\ntrain:\n  steps: 5\n");
  CHECK_THAT(config_error([&] { load_config(g, {}); }),
             Contains("g.yaml:4:10: schedule.warmup_steps (10) must be <= train.steps (5)"));
}

TEST_CASE("config load: a group of keys inside a section, nested or written flat", "[config]") {
  const RunConfig nested =
      config_from_yaml_text("train:\n  qk_clip:\n    enabled: true\n    tau: 30\n", "t").cfg;
  CHECK(nested.train.qk_clip.enabled);
  CHECK(nested.train.qk_clip.tau == 30.0);
  const RunConfig flat = config_from_yaml_text("train:\n  qk_clip.enabled: true\n  qk_clip.tau: 30\n", "t").cfg;
  CHECK(flat == nested);
  CHECK(config_from_yaml_text("", "t", {"train.qk_clip.alpha=0.25"}).cfg.train.qk_clip.alpha == 0.25);
  CHECK(config_from_yaml_text("train:\n  qk_clip:\n", "t").cfg == RunConfig{});
}

TEST_CASE("config: every YAML file under configs/ and experiments/ loads (a sweep file as its base run)",
          "[config]") {
  int loaded = 0;
  for (const char* dir : {"/configs", "/experiments"})
    for (auto it = std::filesystem::recursive_directory_iterator(std::string(ATTNLAB_SOURCE_DIR) + dir);
         it != std::filesystem::recursive_directory_iterator(); ++it) {
      const auto& e = *it;
      if (e.is_directory() && e.path().filename() == "runs") {  // run outputs, not configs of the repository
        it.disable_recursion_pending();
        continue;
      }
      if (e.path().extension() != ".yaml") continue;
      std::ifstream in(e.path());
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (text.find("\ngrid:") != std::string::npos || text.rfind("grid:", 0) == 0 ||
          text.find("\nbase:") != std::string::npos)
        continue;  // a sweep file (tests/cli/test_sweep.cpp)
      INFO(e.path().string());
      CHECK_NOTHROW(load_config(e.path().string()));
      ++loaded;
    }
  CHECK(loaded >= 12);
}

TEST_CASE("config: config_differences names each differing key with both values, in base.yaml order", "[config]") {
  const RunConfig a = default_config().cfg;
  CHECK(config_differences(a, a).empty());
  RunConfig b = a;
  b.optimizer.lr = 0.25;
  b.model.n_layer = a.model.n_layer + 3;
  const std::vector<ConfigDifference> d = config_differences(a, b);
  REQUIRE(d.size() == 2);
  CHECK(d[0].key == "model.n_layer");
  CHECK(d[0].a == std::to_string(a.model.n_layer));
  CHECK(d[0].b == std::to_string(a.model.n_layer + 3));
  CHECK(d[1].key == "optimizer.lr");
  CHECK(d[1].b == "0.25");
}
