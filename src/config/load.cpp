// Loading: YAML files with base_config inheritance, then "key=value" overrides, then the
// cross-key checks. Every user mistake becomes one ConfigError line that starts with where the
// offending value was written (file:line:col, 1-based, or "override KEY=VALUE").
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "config/config.h"
#include "config/schema.h"
#include "util/check.h"

namespace attnlab {
namespace {

namespace fs = std::filesystem;
using config::describe_node;
using config::KeyDef;

std::string at(const std::string& origin, const YAML::Mark& m) {
  if (m.is_null()) return origin;
  return origin + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

// yaml-cpp marks an empty value (`key:`) at the start of the next line; point at the key instead.
YAML::Mark value_mark(const YAML::Node& key, const YAML::Node& value) {
  return value.IsNull() || value.Mark().is_null() ? key.Mark() : value.Mark();
}

std::string suggestion(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best = config::closest_name(name, candidates);
  return best.empty() ? "" : " (did you mean " + best + "?)";
}

std::vector<std::string> all_paths() {
  std::vector<std::string> out;
  for (const auto& k : config::schema()) out.push_back(k.path);
  return out;
}

std::string canonical_name(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(path, ec);
  return ec ? fs::absolute(path).lexically_normal().string() : p.string();
}

std::string fmt(double v) { return config::format_number(v); }

struct Loader {
  // A file in the base_config chain being read: for cycle detection and its message.
  struct Link {
    std::string canonical, name;
  };
  struct SetAt {
    std::string where;
    int seq;  // later assignments win; cross-key errors point at the latest of their keys
  };

  RunConfig cfg;
  std::map<std::string, SetAt> set_at;
  int seq = 0;
  std::vector<std::string> sources;
  std::vector<Link> chain;

  void set(const KeyDef& k, const YAML::Node& value, const std::string& where) {
    if (!k.assign(cfg, value))
      throw ConfigError(where + ": " + k.path + ": expected " + k.expected + ", got " + describe_node(value) +
                        (config::integer_out_of_range(value) ? " (beyond the 32-bit integer range)" : ""));
    set_at[k.path] = {where, ++seq};
  }

  // `included_at` is "file:line:col" of the base_config that names this file, "" for the top.
  void apply_file(const std::string& path, const std::string& included_at) {
    auto fail = [&](const std::string& reason) {
      std::string head = included_at.empty() ? path + ": cannot read config file"
                                             : included_at + ": base_config: cannot read config file " + path;
      throw ConfigError(head + " (" + reason + ")");
    };
    std::error_code ec;
    if (fs::is_directory(path, ec)) fail("is a directory");
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) fail(std::strerror(errno));
    chain.push_back({canonical_name(path), path});
    apply_text(text.str(), path);
    chain.pop_back();
    sources.push_back(path);  // after its bases: base first
  }

  void apply_text(const std::string& text, const std::string& origin) {
    YAML::Node root;
    try {
      const std::vector<YAML::Node> docs = YAML::LoadAll(text);
      if (std::count_if(docs.begin(), docs.end(), [](const YAML::Node& d) { return !d.IsNull(); }) > 1)
        throw ConfigError(origin + ": " + std::to_string(docs.size()) +
                          " YAML documents (separated by ---); a config file is one document");
      root = YAML::Load(text);
    } catch (const YAML::ParserException& e) {
      throw ConfigError(at(origin, e.mark) + ": YAML syntax error: " + e.msg);
    }
    if (root.IsNull()) return;  // an empty file: nothing changes
    if (!root.IsMap())
      throw ConfigError(at(origin, root.Mark()) + ": expected a mapping of sections (run:, model:, ...) at the " +
                        "top level, got " + describe_node(root));

    // Pass 1: names only, so a misspelt section is reported before its bases are read.
    const std::vector<std::string> sections = config::section_names();
    std::vector<std::string> top_names = sections;
    top_names.push_back("base_config");
    std::map<std::string, YAML::Mark> seen;
    YAML::Node base_key, base_value;
    bool has_base = false;  // a default YAML::Node is a defined null, so keep a flag
    for (const auto& kv : root) {
      const YAML::Node& key = kv.first;
      if (!key.IsScalar())
        throw ConfigError(at(origin, key.Mark()) + ": expected a section name, got " + describe_node(key));
      const std::string& name = key.Scalar();
      if (auto it = seen.find(name); it != seen.end())
        throw ConfigError(at(origin, key.Mark()) + ": duplicate section " + name + " (first at line " +
                          std::to_string(it->second.line + 1) + ")");
      seen[name] = key.Mark();
      if (name == "base_config") {
        base_key = key;
        base_value = kv.second;
        has_base = true;
      } else if (std::find(sections.begin(), sections.end(), name) == sections.end()) {
        throw ConfigError(at(origin, key.Mark()) + ": unknown section " + name + suggestion(name, top_names));
      }
    }

    if (has_base) {  // the base's keys first, so this file's keys override them
      std::string where = at(origin, value_mark(base_key, base_value));
      if (!base_value.IsScalar() || base_value.Scalar().empty())
        throw ConfigError(where + ": base_config: expected the path of a YAML file, got " + describe_node(base_value));
      std::string path = (fs::path(origin).parent_path() / base_value.Scalar()).lexically_normal().string();
      std::string canon = canonical_name(path);
      for (size_t i = 0; i < chain.size(); ++i) {
        if (chain[i].canonical != canon) continue;
        std::string cycle;
        for (size_t j = i; j < chain.size(); ++j) cycle += chain[j].name + " -> ";
        throw ConfigError(where + ": base_config cycle: " + cycle + path);
      }
      apply_file(path, where);
    }

    // Pass 2: the values.
    for (const auto& kv : root) {
      const std::string& section = kv.first.Scalar();
      const YAML::Node& body = kv.second;
      if (section == "base_config" || body.IsNull()) continue;  // `model:` alone sets nothing
      if (!body.IsMap())
        throw ConfigError(at(origin, value_mark(kv.first, body)) + ": " + section + ": expected a mapping of " +
                          section + " keys, got " + describe_node(body));
      std::map<std::string, YAML::Mark> seen_keys;
      apply_keys(body, section, origin, seen_keys);
    }
  }

  // The keys of a section's mapping (prefix "train"), or of a group inside it (prefix
  // "train.qk_clip", whose keys may also be written flat as `qk_clip.tau:`).
  void apply_keys(const YAML::Node& body, const std::string& prefix, const std::string& origin,
                  std::map<std::string, YAML::Mark>& seen_keys) {
    for (const auto& entry : body) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar())
        throw ConfigError(at(origin, key.Mark()) + ": " + prefix + ": expected a key name, got " + describe_node(key));
      std::string path = prefix + "." + key.Scalar();
      if (auto it = seen_keys.find(path); it != seen_keys.end())
        throw ConfigError(at(origin, key.Mark()) + ": duplicate key " + path + " (first at line " +
                          std::to_string(it->second.line + 1) + ")");
      seen_keys[path] = key.Mark();
      const KeyDef* def = config::find_key(path);
      if (!def && is_group(path)) {
        if (entry.second.IsNull()) continue;  // `qk_clip:` alone sets nothing
        if (!entry.second.IsMap())
          throw ConfigError(at(origin, value_mark(key, entry.second)) + ": " + path + ": expected a mapping of " +
                            path + " keys, got " + describe_node(entry.second));
        apply_keys(entry.second, path, origin, seen_keys);
        continue;
      }
      if (!def) throw ConfigError(at(origin, key.Mark()) + ": unknown key " + path + suggestion(path, all_paths()));
      set(*def, entry.second, at(origin, value_mark(key, entry.second)));
    }
  }

  // A group of keys inside a section: some key's path starts with "<path>.".
  static bool is_group(const std::string& path) {
    for (const auto& k : config::schema())
      if (k.path.size() > path.size() && k.path.compare(0, path.size(), path) == 0 && k.path[path.size()] == '.')
        return true;
    return false;
  }

  void apply_override(const std::string& text) {
    const std::string where = "override " + text;
    size_t eq = text.find('=');
    if (eq == std::string::npos)
      throw ConfigError(where + ": expected KEY=VALUE, e.g. optimizer.lr=3e-4");
    std::string key = text.substr(0, eq);
    key.erase(0, key.find_first_not_of(" \t"));
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key.empty()) throw ConfigError(where + ": empty key; expected KEY=VALUE, e.g. optimizer.lr=3e-4");
    if (key == "base_config") throw ConfigError(where + ": base_config can only be set in a config file");
    const KeyDef* def = config::find_key(key);
    if (!def) {
      for (const auto& k : config::schema())  // `model=...`: name a key of the section
        if (k.path.rfind(key + ".", 0) == 0)
          throw ConfigError(where + ": " + key + " is a section, not a key; set one of its keys, e.g. " + k.path +
                            "=" + (eq + 1 < text.size() ? text.substr(eq + 1) : k.emit(RunConfig{})));
      throw ConfigError(where + ": unknown key " + key + suggestion(key, all_paths()));
    }
    YAML::Node value;
    try {
      value = YAML::Load(text.substr(eq + 1));  // a flow node: 0.125, rmsnorm, [blocks.0.*]
    } catch (const YAML::ParserException& e) {
      throw ConfigError(where + ": " + key + ": cannot parse the value as YAML (" + e.msg +
                        "; quote it, e.g. '[\"*norm*\"]')");
    }
    set(*def, value, where);
  }

  // Where the most recently set of `keys` was written: the value the user most likely changed.
  std::string latest_of(std::initializer_list<const char*> keys) const {
    const SetAt* best = nullptr;
    for (const char* k : keys)
      if (auto it = set_at.find(k); it != set_at.end() && (!best || it->second.seq > best->seq)) best = &it->second;
    return best ? best->where : "schema defaults";
  }

  void check_cross() const {
    auto fail = [&](std::initializer_list<const char*> keys, const std::string& msg) {
      throw ConfigError(latest_of(keys) + ": " + msg);
    };
    const ModelSection& m = cfg.model;
    const bool mla = cfg.attention.type == "mla";
    if (mla) {
      if (cfg.attention.n_kv_heads != 0)
        fail({"attention.n_kv_heads", "attention.type"},
             "attention.n_kv_heads (" + std::to_string(cfg.attention.n_kv_heads) +
                 ") is for mha (GQA); mla shares one latent across heads: set attention.n_kv_heads: 0");
      if (m.d_head != 0)
        fail({"model.d_head", "attention.type"}, "model.d_head (" + std::to_string(m.d_head) +
                                                     ") is for mha; mla's head sizes are the mla section's "
                                                     "qk_nope_head_dim, qk_rope_head_dim and v_head_dim: set model.d_head: 0");
    } else {
      const RunConfig defaults;
      for (const auto& k : config::schema())
        if (k.section == "mla" && k.emit(cfg) != k.emit(defaults))
          fail({k.path.c_str(), "attention.type"}, k.path + " is set (" + k.emit(cfg) +
                                                       ") but attention.type is mha; set attention.type: mla, or drop the mla keys");
    }
    if (!mla && m.d_head == 0 && m.d_model % m.n_head != 0)
      fail({"model.d_model", "model.n_head", "model.d_head"},
           "model.d_model (" + std::to_string(m.d_model) + ") must be divisible by model.n_head (" +
               std::to_string(m.n_head) + ") when model.d_head is 0");
    int kv = resolved_n_kv_heads(cfg);
    if (!mla && m.n_head % kv != 0)
      fail({"attention.n_kv_heads", "model.n_head"}, "attention.n_kv_heads (" + std::to_string(kv) +
                                                        ") must divide model.n_head (" + std::to_string(m.n_head) + ")");
    if (mla && (m.bias || m.init == "pytorch"))
      fail({m.bias ? "model.bias" : "model.init", "attention.type"},
           std::string(m.bias ? "model.bias" : "model.init: pytorch") + " is for attention.type mha (MLA has neither)");
    const auto& lp = cfg.attention.layer_pattern;
    if (std::find(lp.begin(), lp.end(), "local") != lp.end() && cfg.attention.window == 0 && cfg.attention.chunk == 0)
      fail({"attention.layer_pattern", "attention.window", "attention.chunk"},
           "attention.layer_pattern has local layers but neither attention.window nor attention.chunk is set");
    const BlockSoftmaxSection& bs = cfg.attention.block_softmax;
    if (bs.blocks > m.context)
      fail({"attention.block_softmax.blocks", "model.context"},
           "attention.block_softmax.blocks (" + std::to_string(bs.blocks) + ") must be <= model.context (" +
               std::to_string(m.context) + "): every block holds at least one position");
    if (cfg.attention.sinks && bs.mode != "exact")
      fail({"attention.sinks", "attention.block_softmax.mode"},
           "attention.sinks needs attention.block_softmax.mode exact (the mode is " + bs.mode +
               "): a sink takes its share of the one softmax over all keys");
    if (bs.per_head && bs.mode != "learned")
      fail({"attention.block_softmax.per_head", "attention.block_softmax.mode"},
           "attention.block_softmax.per_head is for mode learned (the mode is " + bs.mode + ")");
    if (cfg.schedule.min_lr > cfg.optimizer.lr)
      fail({"schedule.min_lr", "optimizer.lr"}, "schedule.min_lr (" + fmt(cfg.schedule.min_lr) +
                                                    ") must be <= optimizer.lr (" + fmt(cfg.optimizer.lr) + ")");
    if (cfg.schedule.warmup_steps > cfg.train.steps)
      fail({"schedule.warmup_steps", "train.steps"}, "schedule.warmup_steps (" +
                                                         std::to_string(cfg.schedule.warmup_steps) +
                                                         ") must be <= train.steps (" + std::to_string(cfg.train.steps) + ")");
    int d_head = resolved_d_head(cfg);
    if (!mla && m.positions == "rope" && d_head % 2 != 0)
      fail({"model.positions", "model.d_head", "model.d_model", "model.n_head"},
           "model.positions rope needs an even head size, got " + std::to_string(d_head) +
               (m.d_head ? " (model.d_head)" : " (model.d_model " + std::to_string(m.d_model) + " / model.n_head " +
                                                   std::to_string(m.n_head) + ")"));
  }

  LoadedConfig finish(const std::string& origin, const std::vector<std::string>& overrides) {
    for (const auto& o : overrides) apply_override(o);
    check_cross();
    std::string header = "# attnlab resolved config, from " + origin;
    for (const auto& o : overrides) header += (&o == &overrides[0] ? " with overrides " : " ") + o;
    for (char& c : header)
      if (c == '\n' || c == '\r') c = ' ';  // an override with a newline must not end the comment
    return {cfg, header + "\n" + config::emit_yaml(cfg, false), sources};
  }
};

}  // namespace

LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  Loader l;
  l.apply_file(path, "");
  return l.finish(path, overrides);
}

LoadedConfig with_absolute_data_path(LoadedConfig c) {
  bool changed = false;
  for (std::string* p : {&c.cfg.data.path, &c.cfg.train.init_from, &c.cfg.train.resume})
    if (!p->empty() && !fs::path(*p).is_absolute()) {
      *p = fs::absolute(*p).lexically_normal().string();
      changed = true;
    }
  if (!changed) return c;
  const size_t header_end = c.resolved_yaml.find('\n');
  const std::string header = c.resolved_yaml.rfind("#", 0) == 0 && header_end != std::string::npos
                                 ? c.resolved_yaml.substr(0, header_end + 1)
                                 : "";
  c.resolved_yaml = header + config::emit_yaml(c.cfg, false);
  return c;
}

LoadedConfig default_config() { return Loader{}.finish("schema defaults", {}); }

LoadedConfig config_from_yaml_text(const std::string& yaml_text, const std::string& origin_name,
                                   const std::vector<std::string>& overrides) {
  Loader l;
  l.chain.push_back({canonical_name(origin_name), origin_name});
  l.apply_text(yaml_text, origin_name);
  return l.finish(origin_name, overrides);
}

std::string config_yaml(const RunConfig& cfg) { return config::emit_yaml(cfg, false); }

std::vector<ConfigDifference> config_differences(const RunConfig& a, const RunConfig& b) {
  std::vector<ConfigDifference> diffs;
  if (a == b) return diffs;
  // Both texts have base.yaml's layout: one "section:" line, then one "  key: value" line per key.
  std::istringstream sa(config_yaml(a)), sb(config_yaml(b));
  std::string la, lb, section;
  while (std::getline(sa, la) && std::getline(sb, lb)) {
    if (!la.empty() && la[0] != ' ') section = la.substr(0, la.find(':'));
    if (la == lb) continue;
    const size_t k = la.find_first_not_of(' '), colon = la.find(':', k);
    const auto value = [](const std::string& line, size_t colon) {
      return colon == std::string::npos ? line : line.substr(std::min(line.size(), colon + 2));
    };
    diffs.push_back({section + "." + la.substr(k, colon - k), value(la, colon), value(lb, lb.find(':', k))});
  }
  return diffs;
}

std::string schema_reference_yaml() {
  return "# attnlab base config: every key with its default, meaning and [allowed values].\n"
         "# Generated from the schema in src/config/schema.cpp by schema_reference_yaml(); test_config\n"
         "# checks that this file matches it (ATTNLAB_UPDATE_BASE_YAML=1 test_config rewrites it).\n"
         "# Other configs start with `base_config: base.yaml` and set only what differs.\n\n" +
         config::emit_yaml(RunConfig{}, true);
}

std::vector<std::string> config_choices(const std::string& key) {
  const config::KeyDef* k = config::find_key(key);
  return k ? k->choices : std::vector<std::string>{};
}

std::vector<std::string> choice_keys() {
  std::vector<std::string> out;
  for (const auto& k : config::schema())
    if (!k.choices.empty()) out.push_back(k.path);
  return out;
}

double attention_scale_value(const RunConfig& c) {
  const AttentionScale& s = c.attention.scale;
  double d = resolved_qk_head_dim(c);
  if (s.name.empty()) return s.value;
  if (s.name == "rsqrt_dhead") return 1.0 / std::sqrt(d);
  if (s.name == "inv_dhead") return 1.0 / d;
  ATTN_CHECK(false, "attention.scale: unknown rule \"", s.name, "\"");
  return 0;
}

int resolved_d_head(const RunConfig& c) { return c.model.d_head ? c.model.d_head : c.model.d_model / c.model.n_head; }
int resolved_qk_head_dim(const RunConfig& c) {
  return c.attention.type == "mla" ? c.mla.qk_nope_head_dim + c.mla.qk_rope_head_dim : resolved_d_head(c);
}
int resolved_d_ff(const RunConfig& c) { return c.model.d_ff ? c.model.d_ff : 4 * c.model.d_model; }
int resolved_n_kv_heads(const RunConfig& c) { return c.attention.n_kv_heads ? c.attention.n_kv_heads : c.model.n_head; }
int resolved_threads(const RunConfig& c) {
  if (c.runtime.threads) return c.runtime.threads;
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;  // 0 when the count is unknown
}

}  // namespace attnlab
