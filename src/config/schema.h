#pragma once
// Internal to src/config: the schema rows (one per key) and the text helpers the loader and the
// emitter share. Only src/config includes this (it is the only yaml-cpp user).
#include <functional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "config/config.h"

namespace attnlab::config {

// One key: where it lives, what it accepts, and how to move its value in and out of RunConfig.
struct KeyDef {
  std::string path;      // "model.n_layer"
  std::string section;   // "model"
  std::string expected;  // "an integer in 1..1024": errors say "expected <this>, got ..."
  std::string help;      // one line, shown in base.yaml
  std::vector<std::string> choices;  // the allowed words, for keys that take one of a list
  // Parses `node` and stores it if allowed; false (cfg untouched) when not.
  std::function<bool(RunConfig&, const YAML::Node&)> assign;
  std::function<std::string(const RunConfig&)> emit;  // the value as YAML flow text
  std::function<void(RunConfig&)> set_default;
};

// All keys, in the order of base.yaml (sections in RunConfig order).
const std::vector<KeyDef>& schema();
const KeyDef* find_key(const std::string& path);
std::vector<std::string> section_names();  // in schema order, each once

// The YAML text of a config: sections and keys in schema order; with_help adds the
// "# help [allowed]" comments of base.yaml.
std::string emit_yaml(const RunConfig& cfg, bool with_help);

// True for a scalar of decimal digits (optionally signed) that no int can hold.
bool integer_out_of_range(const YAML::Node& n);
// Shortest text that parses back to exactly `v` ("0.001", "1e-8", "10000").
std::string format_number(double v);
// How a found value is shown in errors: "fast" in quotes, or "a mapping", "a list", "an empty value".
std::string describe_node(const YAML::Node& node);
// The closest key path / section name, or "" when nothing is close enough to suggest.
std::string closest_name(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace attnlab::config
