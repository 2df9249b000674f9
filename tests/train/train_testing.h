#pragma once
// Helpers for the trainer and CLI tests: a temporary run directory with a tiny corpus and a tiny
// config, the in-process trainer, the `attnlab` binary run as a child process (exit code,
// stdout, stderr), and readers of the HDF5 series the runs write.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "testing/temp_dir.h"
#include "io/checkpoint.h"
#include "train/trainer.h"

extern char** environ;

namespace attnlab::testing {

namespace fs = std::filesystem;


inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Deterministic text of `n` bytes over a 12-symbol alphabet ("abcdefgh", space, newline, '.',
// ','): words of 1-6 letters from a fixed LCG, so every run of the tests sees the same corpus.
inline std::string tiny_corpus(size_t n = 3000) {
  std::string s;
  uint64_t x = 12345;
  auto next = [&x] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(x >> 33);
  };
  while (s.size() < n) {
    const int len = 1 + int(next() % 6);
    for (int i = 0; i < len && s.size() < n; ++i) s += char('a' + next() % 8);
    if (s.size() < n) {
      const uint32_t r = next() % 16;
      s += r == 0 ? '\n' : r == 1 ? '.' : r == 2 ? ',' : ' ';
    }
  }
  return s;
}

// Writes <dir>/corpus.txt and <dir>/tiny.yaml (a 1-layer, d_model 16 model; runs go to
// <dir>/runs/<run.name>) and returns the config's path. Overrides adjust it per test.
inline std::string write_tiny_config(const TempDir& dir, int steps = 6) {
  const std::string corpus = dir.write("corpus.txt", tiny_corpus());
  std::ostringstream y;
  y << "run:\n  name: tiny\n  out_dir: " << dir.file("runs") << "\n  seed: 7\n"
    << "data:\n  path: " << corpus << "\n  val_fraction: 0.2\n"
    << "model:\n  n_layer: 1\n  n_head: 2\n  d_model: 16\n  context: 8\n"
    << "schedule:\n  warmup_steps: 2\n"
    << "train:\n  steps: " << steps << "\n  batch_size: 2\n  log_interval: 1\n  checkpoint_interval: 0\n"
    << "eval:\n  interval: 4\n  iters: 2\n  sample_tokens: 0\n"
    << "runtime:\n  threads: 1\n";
  return dir.write("tiny.yaml", y.str());
}

inline TrainOptions quiet_options(int64_t stop_after = -1) {
  TrainOptions o;
  o.quiet = true;
  o.stop_after = stop_after;
  return o;
}

// ---- HDF5 readers (CheckpointReader opens any HDF5 file, metrics.h5 included) ----

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

inline std::vector<float> read_f32(const std::string& file, const std::string& name) {
  CheckpointReader r(file);
  const auto shape = r.shape(name);
  std::vector<float> v(size_t(numel_of(shape)));
  r.read(name, shape, v.data());
  return v;
}

inline std::vector<double> read_f64(const std::string& file, const std::string& name) {
  CheckpointReader r(file);
  const auto shape = r.shape(name);
  std::vector<double> v(size_t(numel_of(shape)));
  r.read_f64(name, shape, v.data());
  return v;
}

inline std::vector<int64_t> read_i64(const std::string& file, const std::string& name) {
  CheckpointReader r(file);
  const auto shape = r.shape(name);
  std::vector<int64_t> v(size_t(numel_of(shape)));
  r.read_i64(name, shape, v.data());
  return v;
}

inline std::vector<std::string> list_datasets(const std::string& file, const std::string& group) {
  return CheckpointReader(file).list(group);
}

// Bitwise equality: NaN == NaN with the same payload, +0 != -0.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// ---- the attnlab binary ----

// The CLI binary sits next to the test binary (both are targets of the same build directory).
inline std::string attnlab_binary() {
  const fs::path exe = fs::read_symlink("/proc/self/exe");
  const fs::path bin = exe.parent_path() / "attnlab";
  if (!fs::exists(bin)) FAIL("attnlab binary not found at " << bin.string() << " (build the attnlab target)");
  return bin.string();
}

struct RunOutput {
  int exit_code = -1;  // the process's exit status; -signal when a signal ended it
  std::string out, err;
  std::string all() const { return out + err; }
};

// Starts `attnlab args...` with stdout and stderr going to the given files (stdin from
// /dev/null); returns the child's pid.
inline pid_t spawn_attnlab(const std::vector<std::string>& args, const std::string& out_path,
                           const std::string& err_path) {
  const std::string bin = attnlab_binary();
  std::vector<std::string> argv_s{bin};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  // The child starts with default SIGINT/SIGTERM/SIGHUP actions whatever this process inherited,
  // as the leader of its own process group (a test can signal the group, as a terminal's Ctrl-C does).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t def, none;
  sigemptyset(&def);
  sigaddset(&def, SIGINT);
  sigaddset(&def, SIGTERM);
  sigaddset(&def, SIGHUP);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &def);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, bin.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) FAIL("posix_spawn " << bin << " failed: " << rc);
  return pid;
}

// Waits for the child at most `timeout_s` seconds (then kills it and fails the test); returns
// its exit status, or -signal when a signal ended it.
inline int wait_child(pid_t pid, double timeout_s = 60) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0) FAIL("waitpid failed");
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL("attnlab did not finish within " << timeout_s << " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1000;
}

// Runs `attnlab args...` to the end and captures its exit code, stdout and stderr.
inline RunOutput run_attnlab(const std::vector<std::string>& args, double timeout_s = 60) {
  TempDir io;
  const std::string out = io.file("stdout.txt"), err = io.file("stderr.txt");
  RunOutput r;
  r.exit_code = wait_child(spawn_attnlab(args, out, err), timeout_s);
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

// Lines of text, without their '\n'; a last line without '\n' counts too.
inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream s(text);
  for (std::string l; std::getline(s, l);) lines.push_back(l);
  return lines;
}

}  // namespace attnlab::testing
