// `attnlab sweep`: runs a sweep file's points (docs/sweeps.md), each an ordinary `attnlab train` in
// a child process, J at a time, resumably; or writes them out for Slurm or GNU parallel.
// `attnlab report`: one table (Markdown and CSV) and the declared plots over a sweep's runs.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "cli/commands.h"
#include "config/sweep.h"
#include "io/atomic_file.h"
#include "io/plot_svg.h"
#include "io/run_lock.h"
#include "io/run_log.h"
#include "train/signals.h"
#include "train/trainer.h"
#include "util/check.h"
#include "util/log.h"

extern char** environ;

namespace attnlab::cli {
namespace {

namespace fs = std::filesystem;

// What a point's directory holds now.
enum class PointState { fresh, done, resume, failed, live };

struct PointPlan {
  SweepPoint point;
  LoadedConfig config;
  std::string dir;
  PointState state = PointState::fresh;
  std::string note;  // why: "diverged", "interrupted at step 120"
};

// Every key but the ones a rerun may change without changing the run (threads: how fast, resume:
// from where) must match the finished run's config for it to count as this point.
// Returns the first differing key with both values, empty when none differs.
std::string config_difference(const RunConfig& stored, const RunConfig& now) {
  RunConfig x = stored;
  x.runtime = now.runtime;
  x.train.resume = now.train.resume;
  const std::vector<ConfigDifference> d = config_differences(x, now);
  if (d.empty()) return x == now ? "" : "the configs differ";
  return d[0].key + ": " + d[0].a + ", the sweep now gives " + d[0].b;
}

PointPlan plan_point(const SweepFile& s, const SweepPoint& p) {
  PointPlan plan{p, point_config(s, p), (fs::path(sweep_dir(s)) / p.name).string(), PointState::fresh, ""};
  const std::string metrics = plan.dir + "/metrics.h5", ckpt = plan.dir + "/checkpoint.h5";
  std::error_code ec;
  if (!fs::exists(metrics, ec)) return plan;
  if (run_is_live(plan.dir)) {
    plan.state = PointState::live;
    plan.note = "running in another process";
    return plan;
  }
  const RunSummary sum = read_run_summary(metrics);
  const RunConfig old = config_from_yaml_text(sum.config, metrics).cfg;
  const std::string diff = config_difference(old, plan.config.cfg);
  if (!diff.empty())
    throw ConfigError(s.path + ": point " + p.name + " already ran in " + plan.dir + " with a different config (" +
                      diff + "); restore the sweep file or remove that directory");
  const std::string status = effective_status(sum.status, plan.dir);
  if (status == "completed") {
    plan.state = PointState::done;
  } else if (status == "diverged") {
    plan.state = PointState::failed;
    plan.note = "diverged";
  } else if (fs::exists(ckpt, ec)) {
    plan.state = PointState::resume;
    plan.note = status + " at step " + std::to_string(sum.last_step);
  }
  return plan;
}

std::vector<std::string> train_args(const PointPlan& p, int threads) {
  // The point's config is fully resolved in point.yaml: the child needs nothing but that file.
  // Not quiet: the progress lines go to the point's train.log, for reading while or after it runs.
  std::vector<std::string> args{"train", p.dir + "/point.yaml", "runtime.threads=" + std::to_string(threads)};
  if (p.state == PointState::resume) args.push_back("train.resume=" + p.dir + "/checkpoint.h5");
  return args;
}

std::string self_exe() {
  std::error_code ec;
  const fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "attnlab" : p.string();
}

// Starts `attnlab train` for a point with its output in <dir>/train.log; returns the pid. A child
// gets SIGINT when the sweep process dies (even by SIGKILL): it then checkpoints and stops as on
// Ctrl-C, instead of training on unwatched while a rerun of the sweep might start the same point.
// It runs in a process group of its own, so that a Ctrl-C at the terminal reaches the sweep only,
// which passes it on once (the terminal's SIGINT and the sweep's would make two: stop at once).
pid_t spawn_point(const PointPlan& p, int threads) {
  const std::vector<std::string> args = train_args(p, threads);
  // The running binary itself, also after a rebuild replaced the file it was started from.
  const std::string exe = "/proc/self/exe", log_path = p.dir + "/train.log";
  std::vector<char*> argv{const_cast<char*>("attnlab")};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw Error("cannot open " + log_path + " for point " + p.point.name + ": " + std::strerror(errno));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {  // the child: async-signal-safe calls only, up to exec
    if (::prctl(PR_SET_PDEATHSIG, SIGINT) != 0 || ::getppid() != parent) ::_exit(kExitInterrupted);
    if (::setpgid(0, 0) != 0) ::_exit(kExitRuntime);
    if (::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) ::_exit(kExitRuntime);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  const int err = errno;
  ::close(log_fd);
  if (pid < 0) throw Error("cannot start " + exe + " for point " + p.point.name + ": " + std::strerror(err));
  return pid;
}

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const int t = int(s + 0.5);
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%d:%02d", t / 60, t % 60);
  return buf;
}

// Writes each point's resolved config as <dir>/point.yaml (what a child, a Slurm task or a GNU
// parallel line trains from), and the sweep file beside the points as sweep.yaml.
void write_point_files(const SweepFile& s, const std::vector<PointPlan>& plans) {
  fs::create_directories(sweep_dir(s));
  write_file_atomic(sweep_dir(s) + "/sweep.yaml", s.text);
  for (const PointPlan& p : plans) {
    fs::create_directories(p.dir);
    write_file_atomic(p.dir + "/point.yaml", p.config.resolved_yaml);
  }
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n ? int(n) : 1;
}

std::string shell_quote(const std::string& s) {
  std::string r = "'";
  for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return r + "'";
}

// A path as one #SBATCH argument: sbatch reads the line's words as a shell would (quotes group,
// a backslash escapes), and its output file name treats % as a pattern (%% is a literal %).
std::string sbatch_path(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\';
    r += c;
    if (c == '%') r += '%';
  }
  return r + "\"";
}

int emit(const SweepFile& s, const std::vector<PointPlan>& plans, const std::string& kind, int threads) {
  const std::string cwd = fs::current_path().string(), exe = self_exe();
  const std::string sweep_abs = fs::absolute(s.path).lexically_normal().string();
  auto point_cmd = [&](size_t i, const std::string& thread_arg) {
    return shell_quote(exe) + " sweep " + shell_quote(sweep_abs) + " --point " + std::to_string(i) + " --threads " +
           thread_arg;
  };
  if (kind == "parallel") {
    std::string text;
    for (size_t i = 0; i < plans.size(); ++i) text += "cd " + shell_quote(cwd) + " && " + point_cmd(i, std::to_string(threads)) + "\n";
    const std::string path = sweep_dir(s) + "/parallel.txt";
    write_file_atomic(path, text);
    std::printf("%s\n", path.c_str());
    log::info("{} commands, one per point; run them with: parallel -j {} < {}", plans.size(),
              std::max(1, hardware_threads() / threads), path);
    return kExitOk;
  }
  std::string text = "#!/bin/bash\n# attnlab sweep " + s.name + ": one array task per point (" +
                     std::to_string(plans.size()) + "); each resumes its run directory when re-run.\n";
  text += "#SBATCH --job-name=" + s.name + "\n#SBATCH --array=0-" + std::to_string(plans.size() - 1) + "\n";
  text += "#SBATCH --cpus-per-task=" + std::to_string(threads) + "\n#SBATCH --ntasks=1\n";
  text += "#SBATCH --output=" + sbatch_path(fs::absolute(sweep_dir(s)).lexically_normal().string() + "/") +
          "slurm-%A_%a.out\n";
  text += "cd " + shell_quote(cwd) + " || exit 1\n";
  text += "exec " + point_cmd(0, "\"${SLURM_CPUS_PER_TASK:-" + std::to_string(threads) + "}\"") + "\n";
  // the array index replaces point 0
  const std::string zero = " --point 0 ";
  text.replace(text.rfind(zero), zero.size(), " --point \"$SLURM_ARRAY_TASK_ID\" ");
  const std::string path = sweep_dir(s) + "/slurm.sh";
  write_file_atomic(path, text);
  fs::permissions(path, fs::perms::owner_exec | fs::perms::group_exec, fs::perm_options::add);
  std::printf("%s\n", path.c_str());
  log::info("submit with: sbatch {}", path);
  return kExitOk;
}

int run_sweep(const std::string& file, int jobs, int threads, bool dry_run, int point_index, const std::string& emit_kind,
              const Globals& g) {
  const SweepFile s = load_sweep(file);
  const std::vector<SweepPoint> points = sweep_points(s);
  // Every point's config is checked before anything runs or is printed.
  std::vector<PointPlan> plans;
  for (const SweepPoint& p : points) plans.push_back(plan_point(s, p));
  // Two points that train the same config (a value listed twice, 0.001 and 1e-3, a seed twice)
  // would share a directory or repeat a run.
  std::map<std::string, size_t> by_config, by_name;
  for (size_t i = 0; i < plans.size(); ++i) {
    RunConfig c = plans[i].config.cfg;
    c.run.name.clear();
    auto a = by_config.emplace(config_yaml(c), i), b = by_name.emplace(plans[i].point.name, i);
    if (!a.second || !b.second) {
      const size_t j = !a.second ? a.first->second : b.first->second;
      throw ConfigError(s.path + ": points " + std::to_string(j) + " (" + plans[j].point.name + ") and " +
                        std::to_string(i) + " (" + plans[i].point.name +
                        ") train the same config: list each value of an axis and each seed once");
    }
  }
  // Default: one point per core, one thread each: on 2 cores it ran the query-scaling grid faster
  // than one job of 2 threads (docs/sweeps.md has the measurement).
  if (jobs == 0) jobs = hardware_threads();
  if (jobs < 1) throw ConfigError("--jobs " + std::to_string(jobs) + ": expected at least 1 (0: one per core)");
  if (threads <= 0) threads = std::max(1, hardware_threads() / jobs);
  if (dry_run) {
    std::printf("sweep %s: %zu points in %s (base %s)\n", s.name.c_str(), plans.size(), sweep_dir(s).c_str(),
                s.base.c_str());
    static const char* state_name[] = {"new", "completed", "resume", "failed", "running elsewhere"};
    for (const PointPlan& p : plans) {
      std::string ov;
      for (const auto& o : p.point.overrides) ov += (ov.empty() ? "" : " ") + o;
      std::printf("%-48s %-18s %s\n", p.point.name.c_str(), state_name[int(p.state)], ov.c_str());
    }
    return kExitOk;
  }
  write_point_files(s, plans);
  if (!emit_kind.empty()) return emit(s, plans, emit_kind, threads);
  if (point_index >= 0) {
    if (point_index >= int(plans.size()))
      throw ConfigError("--point " + std::to_string(point_index) + ": the sweep has points 0.." +
                        std::to_string(plans.size() - 1));
    PointPlan& p = plans[size_t(point_index)];
    if (p.state == PointState::done || p.state == PointState::failed || p.state == PointState::live) {
      if (!g.quiet) log::info("point {} ({}): {}, nothing to do", point_index, p.point.name,
                              p.state == PointState::done ? "completed" : p.note);
      return p.state == PointState::done ? kExitOk : kExitRuntime;
    }
    std::vector<std::string> ov{"runtime.threads=" + std::to_string(threads)};
    if (p.state == PointState::resume) ov.push_back("train.resume=" + p.dir + "/checkpoint.h5");
    TrainOptions o;
    o.quiet = g.quiet;
    const TrainResult r = train(config_from_yaml_text(p.config.resolved_yaml, p.dir + "/point.yaml", ov), o);
    return r.status == TrainResult::completed ? kExitOk : kExitInterrupted;
  }

  size_t done = 0, failed = 0;
  std::vector<size_t> queue;
  for (size_t i = 0; i < plans.size(); ++i) {
    if (plans[i].state == PointState::done) ++done;
    else if (plans[i].state == PointState::failed || plans[i].state == PointState::live) ++failed;
    else queue.push_back(i);
  }
  if (!g.quiet)
    log::info("sweep {}: {} points ({} completed, {} to run, {} failed or running elsewhere), {} jobs x {} threads "
              "(of {} cores), runs in {}",
              s.name, plans.size(), done, queue.size(), failed, jobs, threads, hardware_threads(), sweep_dir(s));
  const bool tty = isatty(2);
  const auto start = std::chrono::steady_clock::now();
  std::map<pid_t, size_t> running;
  size_t next = 0, finished_here = 0;
  double seconds_here = 0;
  size_t stopped = 0;  // points that stopped on a signal (checkpointed; a rerun resumes them)
  std::map<pid_t, std::chrono::steady_clock::time_point> started;
  auto status_line = [&] {
    if (g.quiet) return;
    const size_t left = queue.size() - next;
    const double per = finished_here ? seconds_here / double(finished_here) : NAN;
    const double eta = per * double(left + running.size()) / double(std::max(1, jobs));
    const std::string stopped_text = stopped ? ", " + std::to_string(stopped) + " interrupted" : "";
    std::fprintf(stderr, "%ssweep %s: %zu done, %zu running, %zu failed%s, %zu left, ETA %s%s", tty ? "\r\033[K" : "",
                 s.name.c_str(), done, running.size(), failed, stopped_text.c_str(), left, fmt_duration(eta).c_str(),
                 tty ? "" : "\n");
  };
  // A first SIGINT, SIGTERM or SIGHUP to the sweep: no new points; each running one gets SIGINT
  // (checkpoint and stop), and the sweep waits for them and sums up. A second signal ends the sweep
  // at once, and the kernel's SIGINT (PR_SET_PDEATHSIG) is then the points' second: they stop at once.
  InterruptGuard interrupt_guard;
  bool interrupted = false, passed_on = false;
  while (next < queue.size() || !running.empty()) {
    if (interrupt_requested() && !passed_on) {
      interrupted = passed_on = true;
      for (const auto& [pid, i] : running) ::kill(pid, SIGINT);
    }
    while (!interrupted && running.size() < size_t(jobs) && next < queue.size()) {
      const size_t i = queue[next++];
      pid_t pid = -1;
      try {
        pid = spawn_point(plans[i], threads);
      } catch (const Error& e) {
        ++failed;
        log::warn("{}", e.what());
        continue;
      }
      running[pid] = i;
      started[pid] = std::chrono::steady_clock::now();
      status_line();
    }
    if (running.empty()) break;  // interrupted before the next point started
    int wstatus = 0;
    const pid_t pid = waitpid(-1, &wstatus, WNOHANG);  // polled: a signal is passed on within 50 ms
    if (pid == 0 || (pid < 0 && errno == EINTR)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (pid < 0) break;
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const size_t i = it->second;
    running.erase(it);
    const int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
    seconds_here += std::chrono::duration<double>(std::chrono::steady_clock::now() - started[pid]).count();
    ++finished_here;
    if (code == kExitOk) {
      ++done;
    } else {
      if (code == kExitInterrupted || (WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGINT)) {
        interrupted = true;
        ++stopped;
      } else {
        ++failed;
      }
      if (tty && !g.quiet) std::fprintf(stderr, "\n");
      log::warn("point {} exited with {} ({}); see {}/train.log", plans[i].point.name, code,
                code == kExitDiverged ? "diverged" : code == kExitInterrupted ? "interrupted" : "failed", plans[i].dir);
    }
    status_line();
  }
  if (tty && !g.quiet) std::fprintf(stderr, "\n");
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!g.quiet)
    log::info("sweep {}: {} of {} points completed, {} failed, {} interrupted; {} here (attnlab report {})", s.name,
              done, plans.size(), failed, stopped, fmt_duration(wall), sweep_dir(s));
  if (interrupted) return kExitInterrupted;
  return done == plans.size() ? kExitOk : kExitRuntime;
}

}  // namespace

Command add_sweep(CLI::App& app, const Globals& g) {
  CLI::App* sub = app.add_subcommand("sweep", "run a sweep file's points (grid, zip, seeds), resumably");
  auto file = std::make_shared<std::string>();
  auto jobs = std::make_shared<int>(0);
  auto threads = std::make_shared<int>(0);
  auto dry = std::make_shared<bool>(false);
  auto point = std::make_shared<int>(-1);
  auto emit_kind = std::make_shared<std::string>();
  sub->add_option("SWEEP", *file, "sweep file (docs/sweeps.md)")->required();
  sub->add_option("--jobs,-j", *jobs, "points run at once; cores are split between them (default 0: one per core)")
      ->check(integer_in(0, 4096));
  sub->add_option("--threads", *threads, "threads per point (default: cores / jobs)")->check(integer_in(1, 1024));
  sub->add_flag("--dry-run", *dry, "list the points, their overrides and state; run nothing");
  sub->add_option("--point", *point, "run only point I (0-based), in this process (Slurm array tasks, GNU parallel)")
      ->check(integer_in(0, uint64_t(std::numeric_limits<int>::max())));
  sub->add_option("--emit", *emit_kind, "write a Slurm job-array script or a GNU parallel command file instead of running")
      ->check(CLI::IsMember({"slurm", "parallel"}));
  sub->footer("Points go to <out_dir>/<name>/<point>/ (runs/<sweep>/...). Rerunning skips completed points and\n"
              "resumes interrupted ones from their checkpoints. Exit 0 when every point completed.");
  return {sub, [=, &g] { return run_sweep(*file, *jobs, *threads, *dry, *point, *emit_kind, g); }};
}

}  // namespace attnlab::cli
