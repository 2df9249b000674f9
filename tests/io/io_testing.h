#pragma once
// Helpers for tests/io: temporary directories and raw file access.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <catch2/catch.hpp>

#include "testing/temp_dir.h"
#include "util/check.h"

namespace io_testing {

using TempDir = attnlab::testing::TempDir;

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The message of the CheckpointError f throws; fails the test if it throws nothing.
template <class F>
std::string checkpoint_error(F&& f) {
  try {
    f();
  } catch (const attnlab::CheckpointError& e) {
    return e.what();
  }
  FAIL("expected a CheckpointError");
  return {};
}

}  // namespace io_testing
