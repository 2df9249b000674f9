#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "util/check.h"

namespace attnlab {

void fsync_and_rename(const std::string& tmp, const std::string& path) {
  const int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    throw CheckpointError(tmp + ": cannot fsync: " + std::strerror(err));
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw CheckpointError(path + ": cannot rename " + tmp + " over it: " + std::strerror(errno));
  // Make the rename itself durable. Some file systems refuse fsync on directories: not an error.
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, const std::string& text) {
  // Per process: concurrent writers of one file (a sweep's Slurm array tasks) never share a tmp file.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot write " + tmp + ": " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    remove_quietly(tmp);
    throw Error("cannot write " + tmp + ": " + std::strerror(ok ? errno : err));
  }
  fsync_and_rename(tmp, path);
}

void remove_quietly(const std::string& path) noexcept {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

}  // namespace attnlab
