// Each class of user mistake gives one ConfigError line naming where (file:line:col, 1-based,
// or the override), the key, what is allowed and what was found.
#include <catch2/catch.hpp>

#include <cmath>

#include "config/config.h"
#include "config_testing.h"

using namespace attnlab;
using attnlab::testing::config_error;
using attnlab::testing::TempDir;
using Catch::Contains;

namespace {
// The error from loading `text` as a file named x.yaml in a fresh temp dir; the path prefix is
// replaced by "x.yaml" so the expectations read like the messages users see.
std::string file_error(const std::string& text, std::vector<std::string> overrides = {}) {
  TempDir tmp;
  std::string path = tmp.write("x.yaml", text);
  std::string msg = config_error([&] { load_config(path, overrides); });
  INFO(msg);
  REQUIRE(msg.rfind(path, 0) == 0);
  return "x.yaml" + msg.substr(path.size());
}
std::string override_error(const std::string& o) {
  return config_error([&] { config_from_yaml_text("", "t", {o}); });
}
}  // namespace

TEST_CASE("config errors: a wrong value names line, column, key, allowed and found", "[config][errors]") {
  std::string lines(8, '\n');  // push the value down to line 12
  CHECK(file_error("model:\n  n_layer: 2\n" + lines + "optimizer:\n  lr: fast\n") ==
        "x.yaml:12:7: optimizer.lr: expected a positive number, got \"fast\"");
  CHECK(file_error("run:\n  seed: 1\n\nmodel:\n  norm:   batchnorm\n") ==
        "x.yaml:5:11: model.norm: expected one of layernorm, rmsnorm, got \"batchnorm\"");
  CHECK(file_error("attention:\n  query_scaling: QUERY\n") ==
        "x.yaml:2:18: attention.query_scaling: expected one of init, query, logits, none, both, got \"QUERY\"");
  CHECK(file_error("run:\n  name: my/run\n") ==
        "x.yaml:2:9: run.name: expected a non-empty name of at most 200 letters, digits, '_', '.', '-', '=', ',', got \"my/run\"");
  CHECK(file_error("data:\n  val_fraction: 1\n") == "x.yaml:2:17: data.val_fraction: expected a number in (0, 1), got \"1\"");
  CHECK(file_error("optimizer:\n  beta2: 1.0\n") == "x.yaml:2:10: optimizer.beta2: expected a number in [0, 1), got \"1.0\"");
  CHECK(file_error("train:\n  freeze: [a, '']\n") ==
        "x.yaml:2:11: train.freeze: expected a list of non-empty glob patterns (* and ?), got the list [\"a\", \"\"]");
  CHECK(file_error("optimizer:\n  decay_roles: [matrix, norm]\n") ==
        "x.yaml:2:16: optimizer.decay_roles: expected a list of parameter roles from matrix, embedding, gain, bias, scale, "
        "got the list [\"matrix\", \"norm\"]");
  // An empty value is pointed at by its key's position.
  CHECK(file_error("optimizer:\n  lr:\n") == "x.yaml:2:3: optimizer.lr: expected a positive number, got an empty value");
}

TEST_CASE("config errors: integers are strict", "[config][errors]") {
  const std::string n_layer = "expected an integer in 1..1024, got ";
  CHECK(file_error("model:\n  n_layer: 2.5\n") == "x.yaml:2:12: model.n_layer: " + n_layer + "\"2.5\"");
  CHECK(file_error("model:\n  n_layer: 1e3\n") == "x.yaml:2:12: model.n_layer: " + n_layer + "\"1e3\"");
  CHECK(file_error("model:\n  n_layer: true\n") == "x.yaml:2:12: model.n_layer: " + n_layer + "\"true\"");
  CHECK(file_error("model:\n  n_layer: 5000\n") == "x.yaml:2:12: model.n_layer: " + n_layer + "\"5000\"");
  CHECK(file_error("model:\n  n_layer: 0\n") == "x.yaml:2:12: model.n_layer: " + n_layer + "\"0\"");
  CHECK(file_error("model:\n  n_head: 99999999999\n") ==
        "x.yaml:2:11: model.n_head: expected an integer in 1..65536, got \"99999999999\" (beyond the 32-bit integer range)");
  CHECK(file_error("run:\n  seed: -1\n") == "x.yaml:2:9: run.seed: expected an integer >= 0, got \"-1\"");
  // More threads than libgomp can start crashed the process; the key is bounded instead.
  CHECK(override_error("runtime.threads=100000") ==
        "override runtime.threads=100000: runtime.threads: expected an integer in 0..1024, got \"100000\"");
  CHECK(override_error("train.steps=ten") == "override train.steps=ten: train.steps: expected an integer >= 1, got \"ten\"");
  CHECK(config_from_yaml_text("", "t", {"train.steps=+300"}).cfg.train.steps == 300);
}

TEST_CASE("config errors: floats must be finite numbers", "[config][errors]") {
  for (std::string bad : {"nan", ".nan", "NaN", "inf", ".inf", "-.inf", "1e999", "true", "0x10", "1,5", "--1"}) {
    INFO(bad);
    CHECK(override_error("model.init_std=" + bad) ==
          "override model.init_std=" + bad + ": model.init_std: expected a positive number, got \"" + bad + "\"");
  }
  CHECK(file_error("model:\n  dropout: .nan\n") ==
        "x.yaml:2:12: model.dropout: expected a number in [0, 1), got \".nan\"");
  CHECK(config_from_yaml_text("", "t", {"model.init_std=.5"}).cfg.model.init_std == 0.5);
}

TEST_CASE("config errors: unknown keys and sections suggest the closest name", "[config][errors]") {
  CHECK(file_error("run:\n  seed: 1\nmodel:\n  n_layers: 2\n") ==
        "x.yaml:4:3: unknown key model.n_layers (did you mean model.n_layer?)");
  CHECK(file_error("modle:\n  n_layer: 2\n") == "x.yaml:1:1: unknown section modle (did you mean model?)");
  CHECK(file_error("base_conifg: a.yaml\n") == "x.yaml:1:1: unknown section base_conifg (did you mean base_config?)");
  // The right key in the wrong section.
  CHECK(file_error("model:\n  lr: 0.1\n") == "x.yaml:2:3: unknown key model.lr (did you mean optimizer.lr?)");
  CHECK(file_error("model:\n  zzzzzzzzzzzz: 1\n") == "x.yaml:2:3: unknown key model.zzzzzzzzzzzz");
  CHECK(override_error("optimiser.lr=0.1") ==
        "override optimiser.lr=0.1: unknown key optimiser.lr (did you mean optimizer.lr?)");
  CHECK(override_error("model=3") == "override model=3: model is a section, not a key; set one of its keys, e.g. model.n_layer=3");
  CHECK(override_error("optimizer=") ==
        "override optimizer=: optimizer is a section, not a key; set one of its keys, e.g. optimizer.name=adamw");
  CHECK(override_error("train.warmup_steps=3") ==
        "override train.warmup_steps=3: unknown key train.warmup_steps (did you mean schedule.warmup_steps?)");
}

TEST_CASE("config errors: file problems", "[config][errors]") {
  TempDir tmp;
  std::string missing = (tmp.path() / "nope.yaml").string();
  CHECK(config_error([&] { load_config(missing, {}); }) == missing + ": cannot read config file (No such file or directory)");
  CHECK(config_error([&] { load_config(tmp.path().string(), {}); }) ==
        tmp.path().string() + ": cannot read config file (is a directory)");

  std::string child = tmp.write("child.yaml", "\nbase_config: gone.yaml\n");
  CHECK(config_error([&] { load_config(child, {}); }) ==
        child + ":2:14: base_config: cannot read config file " + (tmp.path() / "gone.yaml").string() +
            " (No such file or directory)");
  CHECK(file_error("base_config: [a.yaml]\n") == "x.yaml:1:14: base_config: expected the path of a YAML file, got the list [\"a.yaml\"]");
  CHECK(file_error("base_config:\n") == "x.yaml:1:1: base_config: expected the path of a YAML file, got an empty value");

  // A syntax error in a base file names the base file.
  tmp.write("broken.yaml", "model:\n  n_layer: [1\n");
  std::string uses_broken = tmp.write("uses.yaml", "base_config: broken.yaml\n");
  std::string msg = config_error([&] { load_config(uses_broken, {}); });
  CHECK_THAT(msg, Contains((tmp.path() / "broken.yaml").string() + ":3:1: YAML syntax error: "));
}

TEST_CASE("config errors: YAML structure", "[config][errors]") {
  CHECK_THAT(file_error("model:\n  n_layer: 2\n norm: x\n"), Contains("x.yaml:3:"));
  CHECK_THAT(file_error("model:\n  n_layer: 2\n norm: x\n"), Contains("YAML syntax error: "));
  CHECK(file_error("model: 5\n") == "x.yaml:1:8: model: expected a mapping of model keys, got \"5\"");
  CHECK(file_error("model:\n  - n_layer\n") == "x.yaml:2:3: model: expected a mapping of model keys, got the list [\"n_layer\"]");
  CHECK(file_error("model:\n  n_layer:\n    value: 3\n") ==
        "x.yaml:3:5: model.n_layer: expected an integer in 1..1024, got a mapping");
  CHECK(file_error("model:\n  norm: [rmsnorm]\n") ==
        "x.yaml:2:9: model.norm: expected one of layernorm, rmsnorm, got the list [\"rmsnorm\"]");
  CHECK(file_error("- model\n") ==
        "x.yaml:1:1: expected a mapping of sections (run:, model:, ...) at the top level, got the list [\"model\"]");
  CHECK(file_error("just text\n") ==
        "x.yaml:1:1: expected a mapping of sections (run:, model:, ...) at the top level, got \"just text\"");
  CHECK(file_error("model:\n  n_layer: 2\n  norm: rmsnorm\n  n_layer: 3\n") ==
        "x.yaml:4:3: duplicate key model.n_layer (first at line 2)");
  CHECK(file_error("model:\n  n_layer: 2\ntrain:\n  steps: 5\nmodel:\n  norm: rmsnorm\n") ==
        "x.yaml:5:1: duplicate section model (first at line 1)");
  CHECK(file_error("model:\n  [a]: 1\n") == "x.yaml:2:3: model: expected a key name, got the list [\"a\"]");
  // The same checks hold for YAML text (a checkpoint's stored config).
  CHECK(config_error([] { config_from_yaml_text("model:\n  n_layers: 2\n", "ckpt.h5"); }) ==
        "ckpt.h5:2:3: unknown key model.n_layers (did you mean model.n_layer?)");
}

TEST_CASE("config errors: malformed overrides", "[config][errors]") {
  CHECK(override_error("model.n_layer") == "override model.n_layer: expected KEY=VALUE, e.g. optimizer.lr=3e-4");
  CHECK(override_error("=5") == "override =5: empty key; expected KEY=VALUE, e.g. optimizer.lr=3e-4");
  CHECK(override_error("base_config=a.yaml") == "override base_config=a.yaml: base_config can only be set in a config file");
  CHECK_THAT(override_error("train.freeze=[*norm*]"),
             Contains("override train.freeze=[*norm*]: train.freeze: cannot parse the value as YAML ("));
  CHECK(override_error("model.norm=") == "override model.norm=: model.norm: expected one of layernorm, rmsnorm, got an empty value");
  CHECK(override_error("run.name=a: b") == "override run.name=a: b: run.name: expected a non-empty name of at most 200 letters, "
                                           "digits, '_', '.', '-', '=', ',', got a mapping");
  // Overrides are checked after the file, so a bad file value is reported first.
  CHECK(file_error("model:\n  n_layer: x\n", {"model.n_layer=2"}) ==
        "x.yaml:2:12: model.n_layer: expected an integer in 1..1024, got \"x\"");
}

TEST_CASE("config errors: inconsistent MLA sizes stop with one line naming file, line and key", "[config][errors]") {
  CHECK(file_error("attention:\n  type: mla\nmla:\n  qk_rope_head_dim: 15\n") ==
        "x.yaml:4:21: mla.qk_rope_head_dim: expected an even integer >= 2, got \"15\"");
  CHECK(file_error("attention:\n  type: mla\nmla:\n  kv_lora_rank: 0\n") ==
        "x.yaml:4:17: mla.kv_lora_rank: expected an integer >= 1, got \"0\"");
  CHECK(file_error("attention:\n  type: mla\nmla:\n  q_lora_rank: -1\n") ==
        "x.yaml:4:16: mla.q_lora_rank: expected an integer >= 0, got \"-1\"");
  CHECK(file_error("attention:\n  type: latent\n") ==
        "x.yaml:2:9: attention.type: expected one of mha, mla, got \"latent\"");
  // MLA keys with type mha (the default): the mla key is named where it was written.
  CHECK(file_error("mla:\n  kv_lora_rank: 32\n") ==
        "x.yaml:2:17: mla.kv_lora_rank is set (32) but attention.type is mha; set attention.type: mla, or drop the "
        "mla keys");
  // MLA with n_kv_heads, and with model.d_head: both are MHA's.
  CHECK(file_error("attention:\n  type: mla\n  n_kv_heads: 2\n") ==
        "x.yaml:3:15: attention.n_kv_heads (2) is for mha (GQA); mla shares one latent across heads: set "
        "attention.n_kv_heads: 0");
  CHECK(file_error("model:\n  d_head: 16\nattention:\n  type: mla\n") ==
        "x.yaml:4:9: model.d_head (16) is for mha; mla's head sizes are the mla section's qk_nope_head_dim, "
        "qk_rope_head_dim and v_head_dim: set model.d_head: 0");
  // An override that makes a file's MLA keys inconsistent is named as the override.
  CHECK(config_error([] { config_from_yaml_text("attention:\n  type: mla\nmla:\n  kv_lora_rank: 32\n", "t",
                                                {"attention.type=mha"}); }) ==
        "override attention.type=mha: mla.kv_lora_rank is set (32) but attention.type is mha; set attention.type: "
        "mla, or drop the mla keys");
}

TEST_CASE("config errors: local masks and the layer pattern", "[config][errors][masks]") {
  CHECK(file_error("attention:\n  window: -2\n") ==
        "x.yaml:2:11: attention.window: expected an integer >= 0, got \"-2\"");
  CHECK(file_error("attention:\n  layer_pattern: [local, sliding]\n") ==
        "x.yaml:2:18: attention.layer_pattern: expected a list of local, global, got the list [\"local\", \"sliding\"]");
  CHECK(file_error("attention:\n  layer_pattern: [local, global]\n") ==
        "x.yaml:2:18: attention.layer_pattern has local layers but neither attention.window nor attention.chunk is set");
  CHECK(file_error("model:\n  bias: true\nattention:\n  type: mla\n").find(
            "model.bias is for attention.type mha") != std::string::npos);
  CHECK(file_error("model:\n  init: xavier\n").find("model.init: expected one of normal, pytorch") !=
        std::string::npos);
  CHECK(file_error("attention:\n  sinks: yes please\n") ==
        "x.yaml:2:10: attention.sinks: expected true or false, got \"yes please\"");
  CHECK(file_error("attention:\n  sinks: true\n  block_softmax:\n    mode: none\n    blocks: 2\n").find(
            "attention.sinks needs attention.block_softmax.mode exact") != std::string::npos);
  TempDir tmp;
  const RunConfig c = load_config(tmp.write("x.yaml", "attention:\n  window: 16\n  layer_pattern: [local, global]\n")).cfg;
  CHECK(c.attention.layer_pattern == std::vector<std::string>{"local", "global"});
}

TEST_CASE("config errors: block softmax keys name file, line and key", "[config][errors][blocks]") {
  CHECK(file_error("attention:\n  block_softmax:\n    mode: flash\n") ==
        "x.yaml:3:11: attention.block_softmax.mode: expected one of exact, none, learned, got \"flash\"");
  CHECK(file_error("attention:\n  block_softmax:\n    blocks: 0\n") ==
        "x.yaml:3:13: attention.block_softmax.blocks: expected an integer >= 1, got \"0\"");
  CHECK(file_error("model:\n  context: 8\nattention:\n  block_softmax:\n    blocks: 9\n") ==
        "x.yaml:5:13: attention.block_softmax.blocks (9) must be <= model.context (8): every block holds at least "
        "one position");
  CHECK(file_error("attention:\n  block_softmax:\n    per_head: true\n") ==
        "x.yaml:3:15: attention.block_softmax.per_head is for mode learned (the mode is exact)");
  CHECK(file_error("attention:\n  block_softmax:\n    mdoe: none\n").find("unknown key attention.block_softmax.mdoe") !=
        std::string::npos);
}

TEST_CASE("config: MLA's scale rule uses the q/k head size, qk_nope + qk_rope", "[config]") {
  RunConfig c;
  c.attention.type = "mla";
  c.mla.qk_nope_head_dim = 32;
  c.mla.qk_rope_head_dim = 16;
  CHECK(resolved_qk_head_dim(c) == 48);
  CHECK(attention_scale_value(c) == Approx(1.0 / std::sqrt(48.0)));
  c.attention.type = "mha";
  CHECK(attention_scale_value(c) == Approx(1.0 / std::sqrt(32.0)));
}

TEST_CASE("config errors: keys inside a group name the whole path", "[config][errors]") {
  CHECK(file_error("train:\n  qk_clip:\n    tau: -1\n") ==
        "x.yaml:3:10: train.qk_clip.tau: expected a positive number, got \"-1\"");
  CHECK(file_error("train:\n  qk_clip:\n    tua: 5\n") ==
        "x.yaml:3:5: unknown key train.qk_clip.tua (did you mean train.qk_clip.tau?)");
  CHECK(file_error("train:\n  qk_clip: 5\n") ==
        "x.yaml:2:12: train.qk_clip: expected a mapping of train.qk_clip keys, got \"5\"");
  CHECK(file_error("train:\n  qk_clip:\n    alpha: 1.5\n") ==
        "x.yaml:3:12: train.qk_clip.alpha: expected a number in [0, 1], got \"1.5\"");
}
