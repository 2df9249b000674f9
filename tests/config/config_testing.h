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

#include "testing/temp_dir.h"
#include "util/check.h"

namespace attnlab::testing {


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
