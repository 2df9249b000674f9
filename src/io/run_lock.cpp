#include "io/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/check.h"

namespace attnlab {

namespace {
std::string lock_path(const std::string& run_dir) { return run_dir + "/.lock"; }
}  // namespace

RunLock::RunLock(const std::string& run_dir) {
  fd_ = ::open(lock_path(run_dir).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error("cannot open " + lock_path(run_dir) + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw Error("run directory " + run_dir + " is in use by another attnlab process (it holds " +
                  lock_path(run_dir) + ")");
    throw Error("cannot lock " + lock_path(run_dir) + ": " + std::strerror(err));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the lock
}

bool run_is_live(const std::string& run_dir) {
  const int fd = ::open(lock_path(run_dir).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // no lock file: no process ever trained here with liveness
  const bool live = ::flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);
  return live;
}

std::string effective_status(const std::string& logged_status, const std::string& run_dir) {
  return logged_status == "running" && !run_is_live(run_dir) ? "interrupted" : logged_status;
}

}  // namespace attnlab
