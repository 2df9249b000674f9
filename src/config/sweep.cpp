#include "config/sweep.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "config/schema.h"
#include "util/check.h"

namespace attnlab {
namespace {

namespace fs = std::filesystem;

std::string at(const std::string& file, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.is_null()) return file;
  return file + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}

// The flow text of a scalar or a list of scalars, as an override takes it.
std::string flow_text(const YAML::Node& n) {
  if (n.IsScalar()) return n.Scalar();
  YAML::Emitter e;
  e.SetSeqFormat(YAML::Flow);
  e << n;
  return e.c_str();
}

std::vector<SweepValue> values_of(const std::string& file, const std::string& what, const YAML::Node& n) {
  if (!n.IsSequence() || n.size() == 0)
    throw ConfigError(at(file, n) + ": " + what + ": expected a non-empty list of values, got " +
                      config::describe_node(n));
  std::vector<SweepValue> out;
  for (const auto& v : n) {
    if (!v.IsScalar() && !v.IsSequence())
      throw ConfigError(at(file, v) + ": " + what + ": expected a value, got " + config::describe_node(v));
    out.push_back({flow_text(v), at(file, v)});
  }
  return out;
}

std::vector<std::string> all_key_paths() {
  std::vector<std::string> out;
  for (const auto& k : config::schema()) out.push_back(k.path);
  return out;
}

std::vector<SweepAxis> axes_of(const std::string& file, const std::string& section, const YAML::Node& n,
                               std::set<std::string>& seen) {
  if (!n || n.IsNull()) return {};  // absent, or `grid:` with nothing
  if (!n.IsMap())
    throw ConfigError(at(file, n) + ": " + section + ": expected a mapping of config keys to lists, got " +
                      config::describe_node(n));
  std::vector<SweepAxis> out;
  for (const auto& kv : n) {
    const std::string key = kv.first.Scalar();
    if (!config::find_key(key)) {
      const std::string best = config::closest_name(key, all_key_paths());
      throw ConfigError(at(file, kv.first) + ": " + section + ": unknown config key " + key +
                        (best.empty() ? "" : " (did you mean " + best + "?)"));
    }
    if (key == "run.name" || key == "run.out_dir" || key == "run.seed")
      throw ConfigError(at(file, kv.first) + ": " + section + ": " + key +
                        " is set by the sweep (point names, out_dir, seeds:), not an axis");
    if (!seen.insert(key).second)
      throw ConfigError(at(file, kv.first) + ": " + section + ": " + key + " is already an axis");
    out.push_back({key, values_of(file, section + " " + key, kv.second)});
  }
  return out;
}

// Characters a point's directory name keeps; others become '_'.
bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-' || c == '=' || c == ',';
}

std::string hex8(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", h);
  return buf;
}

// "optimizer.name=adafactor,attention.query_scaling=init,seed=1". Long names keep each key's last
// part; names still long, or changed by replacing characters a directory name should not hold,
// end in 8 hex digits of the full name, so two points never share a directory.
std::string point_name(const std::vector<std::pair<std::string, std::string>>& kv) {
  constexpr size_t kMax = 96;
  auto join = [&](bool leaf) {
    std::string s;
    for (const auto& [k, v] : kv) {
      const std::string key = leaf && k.rfind('.') != std::string::npos ? k.substr(k.rfind('.') + 1) : k;
      s += (s.empty() ? "" : ",") + (k == "run.seed" ? std::string("seed") : key) + "=" + v;
    }
    return s;
  };
  const std::string full = join(false);
  if (kv.empty()) return "base";
  std::string name = full.size() <= kMax ? full : join(true);
  bool changed = name != full;
  for (char& c : name)
    if (!name_char(c)) c = '_', changed = true;
  if (name.size() > kMax) name.resize(kMax - 9);
  return changed ? name + "-" + hex8(full) : name;
}

}  // namespace

SweepFile load_sweep(const std::string& path) {
  SweepFile s;
  s.path = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw ConfigError(path + ": cannot read sweep file (is a directory)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read sweep file (" + std::strerror(errno) + ")");
  std::ostringstream text;
  text << in.rdbuf();
  s.text = text.str();
  YAML::Node root;
  try {
    const std::vector<YAML::Node> docs = YAML::LoadAll(s.text);
    if (std::count_if(docs.begin(), docs.end(), [](const YAML::Node& d) { return !d.IsNull(); }) > 1)
      throw ConfigError(path + ": " + std::to_string(docs.size()) +
                        " YAML documents (separated by ---); a sweep file is one document");
    root = YAML::Load(s.text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": YAML syntax error: " + e.msg);
  }
  if (!root.IsMap()) throw ConfigError(path + ": expected a mapping (base:, grid:, seeds:, ...), got " + config::describe_node(root));
  static const std::vector<std::string> known = {"name", "base", "out_dir", "overrides", "grid", "zip", "seeds", "plots"};
  std::map<std::string, int> seen_keys;  // key -> line
  for (const auto& kv : root) {
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (auto it = seen_keys.find(key); it != seen_keys.end())
      throw ConfigError(at(path, kv.first) + ": duplicate key " + key + " (first at line " + std::to_string(it->second) + ")");
    seen_keys[key] = kv.first.Mark().line + 1;
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      const std::string best = config::closest_name(key, known);
      throw ConfigError(at(path, kv.first) + ": unknown sweep key " + key + " (expected one of name, base, out_dir, "
                        "overrides, grid, zip, seeds, plots" + (best.empty() ? "" : "; did you mean " + best + "?") + ")");
    }
  }
  auto scalar = [&](const char* key, const std::string& def) {
    const YAML::Node n = root[key];
    if (!n) return def;
    if (!n.IsScalar() || n.Scalar().empty())
      throw ConfigError(at(path, n) + ": " + key + ": expected a non-empty string, got " + config::describe_node(n));
    return n.Scalar();
  };
  s.name = scalar("name", fs::path(path).stem().string());
  for (char c : s.name)
    if (!name_char(c) || c == '=' || c == ',')
      throw ConfigError(at(path, root["name"]) + ": name: expected letters, digits, '_', '.', '-', got " + s.name);
  if (!root["base"]) throw ConfigError(path + ": base: missing (the config every point starts from)");
  s.base = (fs::path(path).parent_path() / scalar("base", "")).lexically_normal().string();
  s.out_dir = scalar("out_dir", "runs");
  if (const YAML::Node o = root["overrides"]) {
    if (!o.IsSequence())
      throw ConfigError(at(path, o) + ": overrides: expected a list of key=value, got " + config::describe_node(o));
    for (const auto& v : o) {
      if (!v.IsScalar() || v.Scalar().find('=') == std::string::npos)
        throw ConfigError(at(path, v) + ": overrides: expected key=value, got " + config::describe_node(v));
      const std::string key = v.Scalar().substr(0, v.Scalar().find('='));
      if (key == "run.name" || key == "run.out_dir" || (key == "run.seed" && root["seeds"]))
        throw ConfigError(at(path, v) + ": overrides: " + key + " is set by the sweep for every point (" +
                          (key == "run.seed" ? "seeds:" : key == "run.name" ? "point names" : "out_dir:") +
                          "), not an override");
      s.overrides.push_back(v.Scalar());
    }
  }
  std::set<std::string> seen;
  s.grid = axes_of(path, "grid", root["grid"], seen);
  s.zip = axes_of(path, "zip", root["zip"], seen);
  for (const SweepAxis& a : s.zip)
    if (a.values.size() != s.zip.front().values.size())
      throw ConfigError(a.values.front().where + ": zip " + a.key + ": " + std::to_string(a.values.size()) +
                        " values, but zip " + s.zip.front().key + " has " + std::to_string(s.zip.front().values.size()) +
                        " (zip pairs its lists element by element)");
  if (const YAML::Node n = root["seeds"]) s.seeds = values_of(path, "seeds", n);
  if (const YAML::Node n = root["plots"]) {
    if (!n.IsSequence()) throw ConfigError(at(path, n) + ": plots: expected a list, got " + config::describe_node(n));
    for (const auto& p : n) {
      if (!p.IsMap()) throw ConfigError(at(path, p) + ": plots: expected a mapping (kind:, metric:, ...), got " + config::describe_node(p));
      SweepPlot plot;
      for (const auto& kv : p) {
        const std::string k = kv.first.Scalar(), v = kv.second.IsScalar() ? kv.second.Scalar() : "";
        if (k == "kind" && (v == "curves" || v == "final")) plot.kind = v;
        else if (k == "metric" && (v == "train_loss" || v == "val_loss" || v == "max_logit")) plot.metric = v;
        else if (k == "x") plot.x = v;
        else if (k == "log_x" && (v == "true" || v == "false")) plot.log_x = v == "true";
        else
          throw ConfigError(at(path, kv.second) + ": plots: " + k + ": expected kind: curves|final, metric: "
                            "train_loss|val_loss|max_logit, x: an axis key, log_x: true|false; got " +
                            config::describe_node(kv.second));
      }
      if (plot.kind.empty()) throw ConfigError(at(path, p) + ": plots: kind: missing (curves or final)");
      if (plot.metric.empty()) plot.metric = "val_loss";
      if (plot.kind == "final" && !seen.count(plot.x) && plot.x != "seed")
        throw ConfigError(at(path, p) + ": plots: x: expected one of the sweep's axis keys, got \"" + plot.x + "\"");
      s.plots.push_back(plot);
    }
  }
  // The points multiply; past kMaxSweepPoints a sweep is a mistake (a list pasted twice, an axis
  // of every integer), and listing it alone would take minutes.
  uint64_t points = 1;
  std::string factors;
  auto times = [&](size_t n, const std::string& what) {
    points = points > kMaxSweepPoints ? points : points * n;
    factors += (factors.empty() ? "" : " x ") + std::to_string(n) + " (" + what + ")";
  };
  for (const SweepAxis& a : s.grid) times(a.values.size(), a.key);
  if (!s.zip.empty()) times(s.zip.front().values.size(), "zip");
  if (!s.seeds.empty()) times(s.seeds.size(), "seeds");
  if (points > kMaxSweepPoints)
    throw ConfigError(path + ": " + factors + " points: more than " + std::to_string(kMaxSweepPoints) +
                      ", the most one sweep runs; split it into several sweeps");
  return s;
}

std::vector<SweepPoint> sweep_points(const SweepFile& s) {
  // Rows of (axis, value): every row times each of n choices, choice i appending its values.
  using Row = std::vector<std::pair<const SweepAxis*, const SweepValue*>>;
  std::vector<Row> rows{{}};
  auto extend = [&rows](size_t n, const auto& append) {
    std::vector<Row> next;
    for (const Row& r : rows)
      for (size_t i = 0; i < n; ++i) {
        next.push_back(r);
        append(i, next.back());
      }
    rows = std::move(next);
  };
  for (const SweepAxis& a : s.grid) extend(a.values.size(), [&](size_t i, Row& r) { r.push_back({&a, &a.values[i]}); });
  if (!s.zip.empty())
    extend(s.zip.front().values.size(), [&](size_t i, Row& r) {
      for (const SweepAxis& a : s.zip) r.push_back({&a, &a.values[i]});
    });
  static const SweepAxis seed_axis{"run.seed", {}};
  if (!s.seeds.empty()) extend(s.seeds.size(), [&](size_t i, Row& r) { r.push_back({&seed_axis, &s.seeds[i]}); });
  std::vector<SweepPoint> out;
  for (const auto& r : rows) {
    SweepPoint p;
    std::vector<std::pair<std::string, std::string>> kv;
    for (const auto& [axis, value] : r) {
      p.overrides.push_back(axis->key + "=" + value->text);
      p.where.push_back(value->where);
      kv.push_back({axis->key, value->text});
    }
    p.name = point_name(kv);
    out.push_back(std::move(p));
  }
  return out;
}

std::string sweep_dir(const SweepFile& s) { return (fs::path(s.out_dir) / s.name).string(); }

LoadedConfig point_config(const SweepFile& s, const SweepPoint& p) {
  std::vector<std::string> overrides = s.overrides;
  overrides.insert(overrides.end(), p.overrides.begin(), p.overrides.end());
  overrides.push_back("run.name=" + p.name);
  overrides.push_back("run.out_dir=" + sweep_dir(s));
  try {
    return with_absolute_data_path(load_config(s.base, overrides));
  } catch (const ConfigError& e) {
    // An override's error names the override: point at the sweep file's line instead.
    const std::string msg = e.what();
    for (size_t i = 0; i < p.overrides.size(); ++i) {
      const std::string head = "override " + p.overrides[i] + ": ";
      if (msg.rfind(head, 0) == 0)
        throw ConfigError(p.where[i] + ": " + msg.substr(head.size()) + " (point " + p.name + ")");
    }
    for (const std::string& o : s.overrides)
      if (msg.rfind("override " + o + ": ", 0) == 0)
        throw ConfigError(s.path + ": overrides: " + msg.substr(std::string("override ").size()));
    throw ConfigError(s.path + ": point " + p.name + ": " + msg);
  }
}

}  // namespace attnlab
