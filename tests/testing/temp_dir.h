#pragma once
// A fresh directory under the system temp dir, removed with everything in it at scope exit. One
// helper for every test folder (data, io, config, train, cli).
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <string_view>

namespace attnlab::testing {

class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    // pid, counter and a random number: unique across parallel ctest processes and within one.
    path_ = std::filesystem::temp_directory_path() / ("attnlab_test_" + std::to_string(::getpid()) + "_" +
                                                      std::to_string(counter++) + "_" +
                                                      std::to_string(std::random_device{}()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The path of <dir>/<name> (nothing is created).
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Writes `bytes` verbatim to <dir>/<name>, creating subfolders, and returns its path.
  std::string write(const std::string& name, std::string_view bytes) const {
    const std::filesystem::path p = path_ / name;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace attnlab::testing
