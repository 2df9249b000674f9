#pragma once
// Helpers for the config tests: a temporary directory of YAML files, and the message of the
// ConfigError an expression throws.
#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include <unistd.h>

#include "util/check.h"

namespace attnlab::testing {

// A fresh directory under the system temp dir, removed with everything in it at scope end.
struct TempDir {
  std::filesystem::path dir;
  TempDir() {
    static std::atomic<int> counter{0};
    dir = std::filesystem::temp_directory_path() /
          ("attnlab_config_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
           std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `text` to dir/name (creating subfolders) and returns the full path.
  std::string write(const std::string& name, const std::string& text) const {
    auto p = dir / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
};

// The ConfigError message thrown by f; fails the test if f returns or throws something else.
// Also checks the "one line" promise of every config error.
inline std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find('\n') == std::string::npos);
    CHECK(e.exit_code() == kExitUsage);
    return msg;
  }
  FAIL("expected a ConfigError");
  return "";
}

}  // namespace attnlab::testing
