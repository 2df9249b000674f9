#pragma once
// NOTE [run liveness]: a training process holds an exclusive lock (flock) on <run dir>/.lock for
// as long as it runs. The kernel releases it when the process ends, however it ends (kill -9
// included), so a run log whose status still says "running" while nobody holds the lock belongs to
// a run that was interrupted. The lock also stops two processes from training into one directory.
#include <string>

namespace attnlab {

class RunLock {
 public:
  // Takes the lock of run_dir (which must exist); Error naming the directory when another process
  // holds it.
  explicit RunLock(const std::string& run_dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// True when a live process holds run_dir's lock.
bool run_is_live(const std::string& run_dir);

// The status a run log's status attribute means now: "running" from a run that holds no lock is
// "interrupted" (NOTE [run liveness]); anything else is itself.
std::string effective_status(const std::string& logged_status, const std::string& run_dir);

}  // namespace attnlab
