// `attnlab train` as a process: exit codes for interrupts (130) and divergence (3), what the
// run directory holds afterwards, and what goes to stderr with and without --quiet.
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>

#include <csignal>
#include <regex>
#include <thread>

#include "io/run_lock.h"
#include "io/run_log.h"
#include "train/session.h"
#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

namespace {

// Starts a long run, waits until it has logged a few steps, sends `sig` and checks that the
// process stops with exit code 130 after writing a loadable checkpoint and an "interrupted" log.
void check_signal_stops_run(int sig) {
  TempDir dir;
  const int64_t total = 1000000;
  const std::string cfg = write_tiny_config(dir, int(total));
  const std::string out = dir.file("stdout.txt"), err = dir.file("stderr.txt");
  const pid_t pid = spawn_attnlab({"train", cfg, "run.name=sig"}, out, err);
  // The handler is installed when the loop starts; wait for its third progress line.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!contains(read_text(err), "step 3/")) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      wait_child(pid);
      FAIL("no progress line within 30 s; stderr:\n" << read_text(err));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE(::kill(pid, sig) == 0);
  const int code = wait_child(pid, 30);
  const std::string log = read_text(err);
  INFO("stderr tail: " << log.substr(log.size() > 1500 ? log.size() - 1500 : 0));
  REQUIRE(code == kExitInterrupted);
  CHECK(contains(log, "interrupted after step"));
  CHECK(contains(log, "train.resume="));

  const std::string ckpt = dir.file("runs/sig/checkpoint.h5"), metrics = dir.file("runs/sig/metrics.h5");
  REQUIRE(std::filesystem::exists(ckpt));
  const RunSummary s = read_run_summary(metrics);
  CHECK(s.status == "interrupted");
  auto session = Session::from_checkpoint(ckpt, {}, /*load_data=*/true);
  const int64_t step = session->progress.step;
  CHECK(step >= 3);
  CHECK(step < total);
  CHECK(s.last_step == step);
  CHECK(s.train_points == step);
  CHECK(!std::filesystem::exists(ckpt + ".tmp"));

  // The checkpoint continues: two more steps (a shorter schedule), then "completed".
  const RunOutput r = run_attnlab({"-q", "train", cfg, "run.name=sig", "train.resume=" + ckpt,
                                   "train.steps=" + std::to_string(step + 2)});
  INFO(r.all());
  REQUIRE(r.exit_code == 0);
  const RunSummary s2 = read_run_summary(metrics);
  CHECK(s2.status == "completed");
  CHECK(s2.last_step == step + 2);
  CHECK(s2.train_points == step + 2);
}

}  // namespace

TEST_CASE("SIGINT stops `attnlab train` after the step: exit 130, checkpoint, status interrupted", "[cli][interrupt]") {
  check_signal_stops_run(SIGINT);
}

TEST_CASE("SIGTERM stops `attnlab train` like SIGINT", "[cli][interrupt]") { check_signal_stops_run(SIGTERM); }

TEST_CASE("SIGHUP (the terminal closed) stops `attnlab train` like SIGINT", "[cli][interrupt]") {
  check_signal_stops_run(SIGHUP);
}

TEST_CASE("a checkpoint that cannot be written ends the run with status failed, its log readable", "[cli][errors]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 30);
  // A directory where the checkpoint's temporary file goes: the first checkpoint write fails.
  std::filesystem::create_directories(dir.file("runs/cw/checkpoint.h5.tmp"));
  const RunOutput r = run_attnlab({"-q", "train", cfg, "run.name=cw", "train.checkpoint_interval=10"});
  INFO(r.all());
  CHECK(r.exit_code != 0);
  CHECK(contains(r.err, "checkpoint.h5.tmp"));
  const RunSummary sum = read_run_summary(dir.file("runs/cw/metrics.h5"));
  CHECK(sum.status == "failed");
  CHECK(sum.last_step == 10);  // the log was flushed before the checkpoint was attempted
  CHECK(!run_is_live(dir.file("runs/cw")));
}

TEST_CASE("a diverging run exits 3 with one error line naming the step", "[cli][diverge]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 50);
  SECTION("non-finite loss") {
    const RunOutput r = run_attnlab({"-q", "train", cfg, "run.name=dv", "optimizer.lr=1e30", "schedule.kind=constant",
                                     "schedule.warmup_steps=0", "train.grad_clip=0"});
    INFO(r.all());
    CHECK(r.exit_code == kExitDiverged);
    CHECK(r.out.empty());
    const auto lines = lines_of(r.err);
    REQUIRE(lines.size() == 1);
    CHECK(std::regex_search(lines[0], std::regex("^attnlab: error: non-finite loss .* at step [0-9]+ ")));
  }
  SECTION("non-finite gradient") {
    const RunOutput r = run_attnlab(
        {"-q", "train", cfg, "run.name=dv", "optimizer.lr=1e6", "schedule.warmup_steps=0", "train.grad_clip=0"});
    INFO(r.all());
    CHECK(r.exit_code == kExitDiverged);
    const auto lines = lines_of(r.err);
    REQUIRE(lines.size() == 1);
    CHECK(std::regex_search(lines[0], std::regex("^attnlab: error: non-finite .* at step [0-9]+ ")));
  }
  CHECK(read_run_summary(dir.file("runs/dv/metrics.h5")).status == "diverged");
}

TEST_CASE("quiet mode: a successful run writes nothing to stdout or stderr", "[cli][progress]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 4);
  const RunOutput r = run_attnlab({"--quiet", "train", cfg, "eval.sample_tokens=20"});
  INFO(r.all());
  CHECK(r.exit_code == 0);
  CHECK(r.out.empty());
  CHECK(r.err.empty());
  CHECK(read_run_summary(dir.file("runs/tiny/metrics.h5")).status == "completed");
}

TEST_CASE("progress on a non-terminal: plain 'step N/M' lines, no carriage returns", "[cli][progress]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 5);
  const RunOutput r = run_attnlab({"train", cfg, "train.log_interval=2", "eval.sample_tokens=20"});
  INFO(r.all());
  REQUIRE(r.exit_code == 0);
  CHECK(r.err.find('\r') == std::string::npos);
  CHECK(r.err.find("\033[") == std::string::npos);  // no terminal escapes (colours, line erase)
  std::vector<std::string> steps;
  const std::regex step_line("step ([0-9]+)/5 loss [0-9.]+");
  for (const auto& l : lines_of(r.err)) {
    std::smatch m;
    if (std::regex_search(l, m, step_line)) steps.push_back(m[1]);
  }
  // Every log_interval steps, and the last step.
  CHECK(steps == std::vector<std::string>{"2", "4", "5"});
  CHECK(contains(r.err, "eval step 4: train loss"));
  CHECK(contains(r.err, "--- sample ---"));
  CHECK(contains(r.err, "\nmodel:\n  n_layer: 1\n"));  // the resolved config is echoed
}

namespace {

// Runs `attnlab args...` with stderr on a pseudo-terminal (stdout to a file); returns the exit
// code and everything written to the terminal (with the terminal's "\n" -> "\r\n").
RunOutput run_attnlab_on_tty(const std::vector<std::string>& args) {
  TempDir io;
  const int master = ::posix_openpt(O_RDWR | O_NOCTTY);
  REQUIRE(master >= 0);
  REQUIRE(::grantpt(master) == 0);
  REQUIRE(::unlockpt(master) == 0);
  const std::string slave_path = ::ptsname(master);
  const int slave = ::open(slave_path.c_str(), O_RDWR | O_NOCTTY);  // held open: no EIO on read
  REQUIRE(slave >= 0);
  const pid_t pid = spawn_attnlab(args, io.file("stdout.txt"), slave_path);
  RunOutput r;
  char buf[4096];
  auto drain = [&](int timeout_ms) {
    for (;;) {
      pollfd p{master, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0 || !(p.revents & POLLIN)) return;
      const ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) return;
      r.err.append(buf, size_t(n));
    }
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    drain(10);
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
  }
  drain(50);
  ::close(slave);
  ::close(master);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(io.file("stdout.txt"));
  return r;
}

}  // namespace

TEST_CASE("progress on a terminal: one live line rewritten in place", "[cli][progress]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 5);
  const RunOutput r = run_attnlab_on_tty({"train", cfg});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  for (int s = 1; s <= 5; ++s) CHECK(contains(r.err, "\r\033[Kstep " + std::to_string(s) + "/5  loss "));
  CHECK(!std::regex_search(r.err, std::regex("info\\S* step [0-9]+/5 loss")));  // no plain log lines
  CHECK(contains(r.err, "done: 5 steps"));
}

TEST_CASE("warnings: a resume under a changed config and a run replacing an earlier one", "[cli][resume]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 4);
  REQUIRE(run_attnlab({"-q", "train", cfg, "run.name=w"}).exit_code == 0);
  const std::string ckpt = dir.file("runs/w/checkpoint.h5");
  // Same config, more steps: no warning.
  const RunOutput same = run_attnlab({"train", cfg, "run.name=w2", "train.steps=6", "train.resume=" + ckpt});
  INFO(same.all());
  REQUIRE(same.exit_code == 0);
  CHECK(!contains(same.err, "warning"));
  // A changed learning rate and seed are named.
  const RunOutput changed = run_attnlab(
      {"train", cfg, "run.name=w3", "train.steps=6", "optimizer.lr=0.5", "run.seed=9", "train.resume=" + ckpt});
  INFO(changed.all());
  REQUIRE(changed.exit_code == 0);
  CHECK(contains(changed.err, "differs from the one it was saved with (run.seed, optimizer.lr)"));
  // Training again into a directory that holds a run says so, and how to keep it.
  const RunOutput again = run_attnlab({"train", cfg, "run.name=w"});
  INFO(again.all());
  REQUIRE(again.exit_code == 0);
  CHECK(contains(again.err, "holds an earlier run (completed, 4 train points): this run replaces it"));
}
