#pragma once
// Reading a damaged HDF5 file can crash the HDF5 library (it trusts the file's internal lengths and
// addresses: seen, a variable-length heap read out of bounds, a metadata entry freed twice) or
// make it loop; no error handler catches that. Where a file may be damaged, a read is first tried
// in a forked child process, and the caller refuses the file if the child crashed or hung.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>

#include "io/h5.h"

namespace attnlab::h5 {

// Runs read() in a child process, then closes HDF5 there (a read that damaged the library's memory
// crashes at close), and returns "" when the child exited, else "reading it crashes the HDF5
// library" or "reading it did not finish in N s". Errors read() throws are left for the caller to
// meet when it reads for real; what read() writes stays in the child's copy of memory. The time
// limit is ten seconds, or one per 50 MB of the file at path (a slow disk).
template <class Read>
std::string try_read_in_child(const std::string& path, Read read) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  const auto limit = std::chrono::seconds(std::max<int64_t>(10, ec ? 0 : int64_t(size / 50'000'000)));
  const pid_t pid = ::fork();
  if (pid < 0) return "";  // cannot tell: the caller reads as it would anyway
  if (pid == 0) {
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, SIG_DFL);  // no handler's report
    if (const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC); null >= 0) ::dup2(null, STDERR_FILENO);
    try {
      read();
    } catch (...) {
    }
    shutdown_library();
    ::_exit(0);
  }
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? "" : "reading it crashes the HDF5 library";
    if (r < 0 && errno != EINTR) return "";
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return "reading it did not finish in " + std::to_string(limit.count()) + " s";
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace attnlab::h5
