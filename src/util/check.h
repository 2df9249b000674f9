#pragma once
// Error types and ATTN_CHECK. Errors are thrown below src/cli and caught only there, which maps
// each type to an exit code (NOTE [exit codes]): no exit()/abort() in library code.
#include <sstream>
#include <stdexcept>
#include <string>

namespace attnlab {

// NOTE [exit codes]: 0 done, 1 runtime error, 2 bad usage/config/data/checkpoint, 3 diverged,
// 130 interrupted.
enum ExitCode : int { kExitOk = 0, kExitRuntime = 1, kExitUsage = 2, kExitDiverged = 3, kExitInterrupted = 130 };

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, int exit_code = kExitRuntime)
      : std::runtime_error(what), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Bad user input: config files, overrides, command-line usage.
struct ConfigError : Error {
  explicit ConfigError(const std::string& w) : Error(w, kExitUsage) {}
};
// Bad data files (corpus, token files).
struct DataError : Error {
  explicit DataError(const std::string& w) : Error(w, kExitUsage) {}
};
// Missing, corrupt or mismatched checkpoint or run-log files.
struct CheckpointError : Error {
  explicit CheckpointError(const std::string& w) : Error(w, kExitUsage) {}
};
// A broken invariant inside attnlab (a bug, or an API misuse by calling code).
struct InternalError : Error {
  explicit InternalError(const std::string& w) : Error(w, kExitRuntime) {}
};
// Non-finite loss or gradient during training.
struct DivergedError : Error {
  explicit DivergedError(const std::string& w) : Error(w, kExitDiverged) {}
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_check(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace detail

}  // namespace attnlab

// Always on (also in Release): op entry checks are cheap next to the kernels they guard.
#define ATTN_CHECK(cond, ...)                                                                   \
  do {                                                                                        \
    if (!(cond)) [[unlikely]]                                                                 \
      ::attnlab::detail::throw_check(__FILE__, __LINE__, #cond, ::attnlab::detail::concat(__VA_ARGS__)); \
  } while (0)
