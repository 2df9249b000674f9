// Defaults, derived values, configs/base.yaml and the resolved-YAML round trip.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "config/schema.h"
#include "config_testing.h"

using namespace attnlab;
using attnlab::testing::config_error;
using attnlab::testing::TempDir;

namespace {
std::string base_yaml_path() { return std::string(ATTNLAB_SOURCE_DIR) + "/configs/base.yaml"; }
std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

TEST_CASE("config: defaults are the documented ones", "[config]") {
  RunConfig c;
  CHECK(c.run.name == "shakespeare_char");
  CHECK(c.run.out_dir == "runs");
  CHECK(c.run.seed == 1337);
  CHECK(c.data.path == "data/tinyshakespeare.txt");
  CHECK(c.data.val_fraction == 0.1);
  CHECK(c.model.n_layer == 4);
  CHECK(c.model.n_head == 4);
  CHECK(c.model.d_model == 128);
  CHECK(c.model.d_head == 0);
  CHECK(c.model.d_ff == 0);
  CHECK(c.model.context == 64);
  CHECK(c.model.norm == "layernorm");
  CHECK(c.model.norm_eps == 1e-5);
  CHECK(c.model.mlp == "gelu");
  CHECK(c.model.positions == "learned");
  CHECK(c.model.rope_base == 10000.0);
  CHECK(c.model.dropout == 0.0);
  CHECK(c.model.init_std == 0.02);
  CHECK(c.attention.kernel == "flash");
  CHECK(c.attention.query_scaling == "logits");
  CHECK(c.attention.scale == AttentionScale{"rsqrt_dhead", 0.0});
  CHECK(c.attention.n_kv_heads == 0);
  CHECK(c.attention.softcap == 0.0);
  CHECK(c.optimizer.name == "adamw");
  CHECK(c.optimizer.lr == 1e-3);
  CHECK(c.optimizer.beta1 == 0.9);
  CHECK(c.optimizer.beta2 == 0.99);
  CHECK(c.optimizer.eps == 1e-8);
  CHECK(c.optimizer.weight_decay == 0.1);
  CHECK(c.optimizer.decay_roles == std::vector<std::string>{"matrix"});
  CHECK(c.schedule.kind == "cosine");
  CHECK(c.schedule.warmup_steps == 100);
  CHECK(c.schedule.min_lr == 1e-4);
  CHECK(c.train.steps == 2000);
  CHECK(c.train.batch_size == 12);
  CHECK(c.train.grad_accum == 1);
  CHECK(c.train.grad_clip == 1.0);
  CHECK(c.train.resume.empty());
  CHECK(c.train.log_interval == 10);
  CHECK(c.train.checkpoint_interval == 500);
  CHECK(c.train.freeze.empty());
  CHECK(c.eval.interval == 250);
  CHECK(c.eval.iters == 20);
  CHECK(c.eval.sample_tokens == 200);
  CHECK(c.precision.matmul == "f32");
  CHECK(c.runtime.threads == 0);

  LoadedConfig d = default_config();
  CHECK(d.cfg == c);
  CHECK(d.sources.empty());
}

TEST_CASE("config: derived values resolve the 0-means rules", "[config]") {
  RunConfig c;
  CHECK(resolved_d_head(c) == 32);
  CHECK(resolved_d_ff(c) == 512);
  CHECK(resolved_n_kv_heads(c) == 4);
  CHECK(resolved_threads(c) == static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  CHECK(attention_scale_value(c) == Approx(1.0 / std::sqrt(32.0)));

  c.model.d_head = 16;
  c.model.d_ff = 300;
  c.attention.n_kv_heads = 2;
  c.runtime.threads = 3;
  CHECK(resolved_d_head(c) == 16);
  CHECK(resolved_d_ff(c) == 300);
  CHECK(resolved_n_kv_heads(c) == 2);
  CHECK(resolved_threads(c) == 3);
  CHECK(attention_scale_value(c) == Approx(0.25));
}

TEST_CASE("config: attention.scale takes a rule name or a number", "[config]") {
  auto with = [](const std::string& v) { return config_from_yaml_text("", "test", {"attention.scale=" + v}).cfg; };
  RunConfig c = with("inv_dhead");
  CHECK(c.attention.scale == AttentionScale{"inv_dhead", 0.0});
  CHECK(attention_scale_value(c) == Approx(1.0 / 32));
  c = with("0.125");
  CHECK(c.attention.scale == AttentionScale{"", 0.125});  // kept as a number
  CHECK(attention_scale_value(c) == 0.125);
  CHECK(with("1").attention.scale == AttentionScale{"", 1.0});
  CHECK(with("2e-1").attention.scale.value == 0.2);

  // In a file, a YAML float stays a number; names and numbers round-trip through resolved YAML.
  LoadedConfig l = config_from_yaml_text("attention:\n  scale: 0.0625\n", "x.yaml");
  CHECK(l.cfg.attention.scale == AttentionScale{"", 0.0625});
  CHECK(l.resolved_yaml.find("  scale: 0.0625\n") != std::string::npos);
  CHECK(config_from_yaml_text(l.resolved_yaml, "r").cfg == l.cfg);

  for (std::string bad : {"0", "-0.5", "fast", "sqrt", "nan", ".inf", "[1]"}) {
    INFO(bad);
    std::string msg = config_error([&] { with(bad); });
    CHECK_THAT(msg, Catch::Contains("override attention.scale=" + bad + ": attention.scale: expected "
                                    "rsqrt_dhead, inv_dhead or a positive number, got "));
  }
}

TEST_CASE("config: configs/base.yaml is the schema reference and parses to the defaults", "[config]") {
  const std::string ref = schema_reference_yaml();
  if (std::getenv("ATTNLAB_UPDATE_BASE_YAML")) std::ofstream(base_yaml_path(), std::ios::binary) << ref;
  const std::string text = read(base_yaml_path());
  REQUIRE(!text.empty());
  CHECK(text == ref);  // on failure: ATTNLAB_UPDATE_BASE_YAML=1 test_config

  LoadedConfig l = load_config(base_yaml_path(), {});
  CHECK(l.cfg == RunConfig{});
  CHECK(l.sources == std::vector<std::string>{base_yaml_path()});
  CHECK(config_from_yaml_text(ref, "reference").cfg == RunConfig{});

  // Every key appears under its section, with a help comment.
  std::istringstream resolved(default_config().resolved_yaml);
  std::string line, section;
  int keys = 0;
  while (std::getline(resolved, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] != ' ') {
      section = line;
      REQUIRE(text.find("\n" + section + "\n") != std::string::npos);
      continue;
    }
    if (line.back() == ':') continue;  // a group of keys inside the section (train.qk_clip)
    ++keys;
    std::string key_line = line.substr(0, line.find(':') + 1);
    size_t sec = text.find("\n" + section + "\n");
    size_t pos = text.find("\n" + key_line + " ", sec);
    INFO(section << key_line);
    REQUIRE(pos != std::string::npos);
    size_t next_section = text.find("\n\n", sec + 1);
    CHECK(pos < next_section);
    CHECK(text.find("# ", pos) < text.find('\n', pos + 1));
  }
  CHECK(keys == int(config::schema().size()));
}

TEST_CASE("config: resolved YAML round-trips exactly", "[config]") {
  TempDir tmp;
  // Values chosen to be awkward: floats without short decimal forms, strings that need quoting
  // or look like other YAML types, glob lists starting with '*', and a number scale.
  std::vector<std::string> overrides = {
      "run.name='null'",
      "run.out_dir=\"my runs/#1: \\\"x\\\"\"",
      "run.seed=0",
      "data.path=true",
      "data.val_fraction=0.30000000000000004",
      "model.n_layer=1024",
      "model.d_head=7",
      "model.d_model=96",
      "model.n_head=6",
      "model.norm=rmsnorm",
      "model.norm_eps=1.2345678901234567e-7",
      "model.rope_base=500000",
      "model.dropout=0.1",
      "attention.scale=0.3333333333333333",
      "attention.n_kv_heads=3",
      "attention.softcap=30",
      "optimizer.lr=3e-4",
      "optimizer.decay_roles=[matrix, gain]",
      "optimizer.beta2=0.95",
      "schedule.min_lr=0",
      "train.resume=runs/a/ckpt.h5",
      "train.freeze=[blocks.0.*, tok_emb]",
      "runtime.threads=2",
  };
  LoadedConfig a = load_config(tmp.write("a.yaml", "model:\n  mlp: swiglu\n"), overrides);
  CHECK(a.cfg.run.name == "null");
  CHECK(a.cfg.run.out_dir == "my runs/#1: \"x\"");
  CHECK(a.cfg.data.path == "true");
  CHECK(a.cfg.model.mlp == "swiglu");
  CHECK(a.cfg.train.freeze == std::vector<std::string>{"blocks.0.*", "tok_emb"});
  LoadedConfig b = config_from_yaml_text(a.resolved_yaml, "checkpoint");
  CHECK(b.cfg == a.cfg);
  CHECK(b.cfg.data.val_fraction == 0.30000000000000004);
  CHECK(b.cfg.model.norm_eps == 1.2345678901234567e-7);
  // Resolved text is stable: resolving again gives the same keys and values.
  auto body = [](const std::string& y) { return y.substr(y.find('\n') + 1); };
  CHECK(body(b.resolved_yaml) == body(a.resolved_yaml));
  CHECK(body(default_config().resolved_yaml) == body(load_config(base_yaml_path(), {}).resolved_yaml));
  // Shortest digits, in the form YAML 1.1 readers (PyYAML) also take as a float: a '.' and a signed exponent.
  CHECK(a.resolved_yaml.find("  lr: 3.0e-4\n") != std::string::npos);
  CHECK(a.resolved_yaml.find("  rope_base: 5.0e+5\n") != std::string::npos);
  CHECK(default_config().resolved_yaml.find("  eps: 1.0e-8\n") != std::string::npos);
  CHECK(b.resolved_yaml.find("  norm_eps: 1.2345678901234566e-7\n") != std::string::npos);
  CHECK(b.resolved_yaml.find("  val_fraction: 0.30000000000000004\n") != std::string::npos);
  CHECK(default_config().resolved_yaml.find("  grad_clip: 1.0\n") != std::string::npos);  // floats look like floats
}
