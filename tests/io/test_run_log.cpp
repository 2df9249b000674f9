#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <thread>

#include "io/checkpoint.h"
#include "io/run_log.h"
#include "io_testing.h"

using namespace attnlab;
using Catch::Matchers::Contains;
using io_testing::TempDir;
using io_testing::checkpoint_error;

namespace {

using Shape = std::vector<int64_t>;
constexpr int kLayers = 2, kHeads = 3;
const char* const kSeries[] = {"train/step",   "train/loss", "train/lr",        "train/grad_norm", "train/tokens_per_s",
                               "train/wall_s", "eval/step",  "eval/train_loss", "eval/val_loss",   "attention/step"};

RunLogMeta test_meta() {
  return {"model:\n  n_layer: 2\nrun:\n  name: \"h\xc3\xa9\"\n",
          std::numeric_limits<uint64_t>::max() - 1,
          "0.1.0",
          "0123456789ab",
          kLayers,
          kHeads};
}

// Deterministic, non-round values so a shifted or garbled series cannot match by accident.
TrainPoint train_point(int64_t i) {
  const double x = static_cast<double>(i);
  return {i, 4.0 / (1.0 + 0.01 * x), 3e-4 * std::sqrt(x + 1.0), 1.0 / (x + 3.0), 1000.0 + x / 7.0, 0.013 * x};
}
std::array<float, kLayers * kHeads> logits(int64_t i) {
  std::array<float, kLayers * kHeads> v;
  for (int k = 0; k < kLayers * kHeads; ++k) v[k] = static_cast<float>(i) * 0.25f + static_cast<float>(k) / 3.0f;
  return v;
}
double val_loss(int64_t i) { return 5.0 / (1.0 + 0.02 * static_cast<double>(i)); }

// Train points at steps [from, to), an eval and a max-logits point every `every` steps.
void fill(RunLog& log, int64_t from, int64_t to, int64_t every) {
  for (int64_t s = from; s < to; ++s) {
    log.add_train(train_point(s));
    if (s % every == 0) {
      log.add_eval(s, train_point(s).loss, val_loss(s));
      log.add_max_logits(s, logits(s));
    }
  }
}


template <class T>
std::vector<T> read_1d(const CheckpointReader& rd, const std::string& name) {
  const Shape shape = rd.shape(name);
  REQUIRE(shape.size() == 1);
  std::vector<T> v(static_cast<size_t>(shape[0]));
  if constexpr (std::is_same_v<T, double>)
    rd.read_f64(name, shape, v.data());
  else
    rd.read_i64(name, shape, v.data());
  return v;
}

// Every series of a metrics.h5 written by fill(log, 0, n, every), checked value by value.
void check_series(const std::string& path, int64_t n, int64_t every) {
  CheckpointReader rd(path);
  const std::vector<int64_t> step = read_1d<int64_t>(rd, "train/step");
  REQUIRE(static_cast<int64_t>(step.size()) == n);
  const std::vector<double> loss = read_1d<double>(rd, "train/loss"), lr = read_1d<double>(rd, "train/lr"),
                            gn = read_1d<double>(rd, "train/grad_norm"),
                            tps = read_1d<double>(rd, "train/tokens_per_s"), wall = read_1d<double>(rd, "train/wall_s");
  REQUIRE(loss.size() == step.size());
  REQUIRE(wall.size() == step.size());
  for (int64_t i = 0; i < n; ++i) {
    const TrainPoint p = train_point(i);
    REQUIRE(step[i] == i);
    REQUIRE((loss[i] == p.loss && lr[i] == p.lr && gn[i] == p.grad_norm && tps[i] == p.tokens_per_s &&
             wall[i] == p.wall_s));
  }
  const int64_t ne = (n + every - 1) / every;
  const std::vector<int64_t> estep = read_1d<int64_t>(rd, "eval/step"), astep = read_1d<int64_t>(rd, "attention/step");
  const std::vector<double> etrain = read_1d<double>(rd, "eval/train_loss"),
                            eval = read_1d<double>(rd, "eval/val_loss");
  REQUIRE(static_cast<int64_t>(estep.size()) == ne);
  REQUIRE(etrain.size() == estep.size());
  REQUIRE(eval.size() == estep.size());
  REQUIRE(astep == estep);
  std::vector<float> ml(static_cast<size_t>(ne * kLayers * kHeads));
  rd.read("attention/max_logits", Shape{ne, kLayers, kHeads}, ml.data());
  for (int64_t j = 0; j < ne; ++j) {
    REQUIRE(estep[j] == j * every);
    REQUIRE((etrain[j] == train_point(j * every).loss && eval[j] == val_loss(j * every)));
    const auto want = logits(j * every);
    REQUIRE(std::memcmp(ml.data() + j * kLayers * kHeads, want.data(), sizeof want) == 0);
  }
}

}  // namespace

TEST_CASE("run log: flush writes every series and read_run_summary reads them back", "[io][run_log]") {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunLog log(path, test_meta());
  fill(log, 0, 10, 3);  // evals at 0, 3, 6, 9
  log.set_status("completed");
  log.flush();
  CHECK(std::filesystem::exists(path));
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  check_series(path, 10, 3);

  CheckpointReader rd(path);
  CHECK(rd.attr_i64("format_version") == 1);
  CHECK(rd.attr_u64("seed") == test_meta().seed);
  CHECK(rd.attr_i64("n_layer") == kLayers);
  CHECK(rd.attr_i64("n_head") == kHeads);

  const RunSummary s = read_run_summary(path);
  CHECK(s.config == test_meta().config_yaml);
  CHECK(s.status == "completed");
  CHECK(s.version == "0.1.0");
  CHECK(s.git_commit == "0123456789ab");
  CHECK(s.seed == test_meta().seed);
  CHECK(s.train_points == 10);
  CHECK(s.last_step == 9);
  CHECK(s.last_train_loss == train_point(9).loss);
  CHECK(s.best_train_loss == train_point(9).loss);  // loss decreases
  CHECK(s.last_val_loss == val_loss(9));
  CHECK(s.best_val_loss == val_loss(9));
  CHECK(s.best_val_step == 9);
}

// A run log carries no checksum (a live run rewrites it at each flush); HDF5 trusts its internal
// lengths, and a damaged variable-length heap (here the first object of "GCOL", the config
// string's, claiming 2^40 bytes) crashed the reader. It is read in a child process first.
TEST_CASE("run log: a damaged file that crashes HDF5 is refused by name, not a crash", "[io][run_log]") {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunLog log(path, test_meta());
  fill(log, 0, 4, 2);
  log.flush();
  std::string bytes = io_testing::slurp(path);
  const size_t heap = bytes.find("GCOL");
  REQUIRE(heap != std::string::npos);
  const uint64_t huge = uint64_t(1) << 40;
  std::memcpy(bytes.data() + heap + 16 + 8, &huge, sizeof huge);
  io_testing::spit(path, bytes);
  CHECK_THAT(checkpoint_error([&] { read_run_summary(path); }),
             Contains(path + ": corrupt run log: reading it crashes the HDF5 library"));
  CHECK_THAT(checkpoint_error([&] { RunLog::resume(path, test_meta(), 3); }), Contains("corrupt run log"));
}

TEST_CASE("run log: a diverged run has a NaN last loss and finite best losses", "[io][run_log]") {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunLog log(path, test_meta());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  log.add_train({1, 3.0, 1e-3, 1.0, 10.0, 0.1});
  log.add_train({2, 2.0, 1e-3, 1.0, 10.0, 0.2});
  log.add_train({3, nan, 1e-3, nan, 10.0, 0.3});
  log.add_eval(1, 3.0, 2.9);
  log.add_eval(2, 2.0, 2.4);
  log.add_eval(3, nan, nan);
  log.set_status("diverged");
  log.flush();
  const RunSummary s = read_run_summary(path);
  CHECK(s.status == "diverged");
  CHECK(s.last_step == 3);
  REQUIRE(s.last_train_loss.has_value());
  CHECK(std::isnan(*s.last_train_loss));
  CHECK(s.best_train_loss == 2.0);
  CHECK(std::isnan(s.last_val_loss.value()));
  CHECK(s.best_val_loss == 2.4);
  CHECK(s.best_val_step == 2);
}

TEST_CASE("run log: an empty log has zero-length series", "[io][run_log]") {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunLog(path, test_meta()).flush();
  CheckpointReader rd(path);
  for (const char* name : kSeries) CHECK(rd.shape(name) == Shape{0});
  CHECK(rd.shape("attention/max_logits") == Shape{0, kLayers, kHeads});
  const RunSummary s = read_run_summary(path);
  CHECK(s.status == "running");
  CHECK(s.train_points == 0);
  CHECK(s.last_step == -1);
  CHECK_FALSE(s.last_train_loss.has_value());
  CHECK_FALSE(s.best_train_loss.has_value());
  CHECK_FALSE(s.last_val_loss.has_value());
  CHECK_FALSE(s.best_val_loss.has_value());
  CHECK(s.best_val_step == -1);
}

TEST_CASE("run log: each flush replaces the file and readers of the old file are undisturbed", "[io][run_log]") {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  RunLog log(path, test_meta());
  fill(log, 0, 5, 2);
  log.flush();
  CheckpointReader old_reader(path);  // like a notebook watching the run
  fill(log, 5, 12, 2);
  log.set_status("interrupted");
  log.flush();
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  CHECK(old_reader.shape("train/step") == Shape{5});
  CHECK(old_reader.attr_string("status") == "running");
  check_series(path, 12, 2);
  CHECK(read_run_summary(path).status == "interrupted");
}

TEST_CASE("run log: resume keeps the points up to the checkpoint step", "[io][run_log]") {
  TempDir dir;
  const std::string path = dir.file("metrics.h5");
  {
    RunLog log(path, test_meta());
    fill(log, 0, 20, 4);  // evals at 0, 4, 8, 12, 16
    log.set_status("interrupted");
    log.flush();
  }
  RunLogMeta meta = test_meta();
  meta.config_yaml = "train:\n  steps: 40\n";
  RunLog log = RunLog::resume(path, meta, 9);
  CHECK(log.train_points() == 10);
  CHECK(log.eval_points() == 3);
  CHECK(log.max_logits_points() == 3);
  fill(log, 10, 15, 4);  // the resumed run goes on from step 10
  log.flush();
  check_series(path, 15, 4);
  const RunSummary s = read_run_summary(path);
  CHECK(s.status == "running");
  CHECK(s.config == meta.config_yaml);

  SECTION("a missing file starts empty") {
    RunLog fresh = RunLog::resume(dir.file("absent.h5"), test_meta(), 100);
    CHECK(fresh.train_points() == 0);
    CHECK(fresh.eval_points() == 0);
  }
  SECTION("resuming before the first point keeps nothing") {
    CHECK(RunLog::resume(path, test_meta(), -1).train_points() == 0);
  }
  SECTION("a different head count is rejected") {
    RunLogMeta other = test_meta();
    other.n_head = 4;
    CHECK_THAT(checkpoint_error([&] { RunLog::resume(path, other, 9); }),
               Contains(path) && Contains("n_head=3") && Contains("n_head=4"));
  }
  SECTION("a corrupt file is rejected") {
    const std::string bytes = io_testing::slurp(path);
    io_testing::spit(path, bytes.substr(0, bytes.size() / 2));
    CHECK_THAT(checkpoint_error([&] { RunLog::resume(path, test_meta(), 9); }),
               Contains(path) && Contains("truncated"));
  }
}

TEST_CASE("run log: misuse is an InternalError", "[io][run_log]") {
  TempDir dir;
  RunLog log(dir.file("metrics.h5"), test_meta());
  CHECK_THROWS_AS(log.set_status("finished"), InternalError);
  const std::array<float, 5> five{};
  CHECK_THROWS_AS(log.add_max_logits(0, five), InternalError);
  RunLogMeta bad = test_meta();
  bad.n_layer = 0;
  CHECK_THROWS_AS(RunLog(dir.file("m.h5"), bad), InternalError);
}

TEST_CASE("run log: read_run_summary and flush report bad files by name", "[io][run_log]") {
  TempDir dir;
  CHECK_THAT(checkpoint_error([&] { read_run_summary(dir.file("absent.h5")); }), Contains("absent.h5: no such file"));
  CHECK_THAT(checkpoint_error([&] { read_run_summary(dir.path().string()); }), Contains("is a directory"));
  io_testing::spit(dir.file("text.h5"), "step,loss\n1,2.5\n");
  CHECK_THAT(checkpoint_error([&] { read_run_summary(dir.file("text.h5")); }),
             Contains("text.h5: is not an HDF5 file"));

  // Valid HDF5 files that are not (complete) run logs, built with the checkpoint writer.
  const auto metrics_like = [&](const std::string& name, int64_t format, int64_t n_loss) {
    const std::string p = dir.file(name);
    CheckpointWriter w(p);
    w.attr("format_version", format);
    for (const char* key : {"config", "version", "git_commit", "status"}) w.attr(key, std::string_view("x"));
    w.attr_u64("seed", 1);
    w.attr("n_layer", int64_t{1});
    w.attr("n_head", int64_t{1});
    const std::vector<int64_t> steps = {1, 2, 3, 4};
    const std::vector<double> vals = {1, 2, 3, 4};
    w.tensor_i64("train/step", Shape{4}, steps.data());
    if (n_loss >= 0) w.tensor_f64("train/loss", Shape{n_loss}, vals.data());
    w.commit();
    return p;
  };
  CHECK_THAT(checkpoint_error([&] { read_run_summary(metrics_like("no_loss.h5", 1, -1)); }),
             Contains("no_loss.h5: train/loss: missing dataset"));
  CHECK_THAT(checkpoint_error([&] { read_run_summary(metrics_like("short.h5", 1, 3)); }),
             Contains("short.h5: train/loss: has 3 points but train/step has 4"));
  CHECK_THAT(checkpoint_error([&] { read_run_summary(metrics_like("future.h5", 2, 4)); }),
             Contains("future.h5: attribute format_version: file format 2 is newer"));
  {
    CheckpointWriter w(dir.file("ckpt.h5"));
    w.attr("step", int64_t{3});
    w.commit();
  }
  CHECK_THAT(checkpoint_error([&] { read_run_summary(dir.file("ckpt.h5")); }),
             Contains("ckpt.h5: attribute format_version: missing"));

  const std::string nowhere = dir.file("gone/metrics.h5");
  RunLog log(nowhere, test_meta());
  CHECK_THAT(checkpoint_error([&] { log.flush(); }), Contains(nowhere + ".tmp: cannot create"));
}

namespace {

// Appends a point of every series and flushes, forever; after each flush reports the number of
// train points now on disk through fd. Runs in a forked child until SIGKILL arrives.
[[noreturn]] void flush_forever(const std::string& path, int fd) {
  try {
    RunLog log(path, test_meta());
    constexpr int64_t kPreload = 3000;  // makes each flush long enough to be hit mid-write
    fill(log, 0, kPreload, 1);
    for (int64_t n = kPreload;; ++n) {
      log.flush();
      if (::write(fd, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) ::_exit(3);
      fill(log, n, n + 1, 1);
      if (n > 10'000'000) ::_exit(4);  // the parent never killed us
    }
  } catch (...) {
    ::_exit(2);
  }
}

bool read_i64(int fd, int64_t* v) {
  size_t got = 0;
  while (got < sizeof *v) {
    const ssize_t r = ::read(fd, reinterpret_cast<char*>(v) + got, sizeof *v - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

}  // namespace

TEST_CASE("run log: kill -9 at any moment leaves a complete metrics.h5", "[io][run_log][crash]") {
  TempDir dir;
  std::mt19937 rng(20240611);
  int killed_mid_flush = 0;
  for (int trial = 0; trial < 20; ++trial) {
    const std::string path = dir.file("metrics_" + std::to_string(trial) + ".h5");
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      flush_forever(path, fds[1]);
    }
    ::close(fds[1]);
    int64_t done = 0;
    const bool started = read_i64(fds[0], &done);  // the first flush has finished
    if (started) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 12000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    for (int64_t n; read_i64(fds[0], &n);) done = n;  // the last flush the child saw finish
    ::close(fds[0]);
    INFO("trial " << trial << ", last finished flush had " << done << " train points");
    REQUIRE(started);
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WTERMSIG(status) == SIGKILL);
    killed_mid_flush += std::filesystem::exists(path + ".tmp");

    // metrics.h5 opens, all series have one length n >= done (a flush may have completed its
    // rename but not its report), and every value is the one the child logged.
    const int64_t n = CheckpointReader(path).shape("train/step").at(0);
    CHECK(n >= done);
    CHECK(n <= done + 1);
    CheckpointReader rd(path);
    for (const char* name : kSeries) REQUIRE(rd.shape(name) == Shape{n});
    REQUIRE(rd.shape("attention/max_logits") == Shape{n, kLayers, kHeads});
    check_series(path, n, 1);
    CHECK(read_run_summary(path).train_points == n);
    CHECK(RunLog::resume(path, test_meta(), n).train_points() == static_cast<size_t>(n));
  }
  // The test only has teeth if some kills land inside a flush (they leave metrics.h5.tmp behind);
  // flushing is nearly all the child does, so most do (typically 15-20 of 20).
  CHECK(killed_mid_flush > 0);
}

namespace {

std::string hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

}  // namespace

TEST_CASE("run log: h5py reads metrics.h5 and a checkpoint", "[io][run_log][python]") {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0) {
    WARN("skipped: /usr/bin/python3 with h5py is not available");
    return;
  }
  TempDir dir;
  const std::string metrics = dir.file("metrics.h5"), ckpt = dir.file("checkpoint.h5");
  RunLog log(metrics, test_meta());
  fill(log, 0, 7, 3);  // 7 train points, evals and max-logits at 0, 3, 6
  log.set_status("completed");
  log.flush();
  const std::vector<std::string> vocab = {"", "\n", std::string("a\0b", 3), "\xff"};
  const float w[4] = {0.5f, -1.25f, 2.0f, 3.0f};
  {
    CheckpointWriter wr(ckpt);
    wr.tensor("params/blocks.0.attn.wq", Shape{2, 2}, w);
    wr.strings("vocab", vocab);
    wr.attr("step", int64_t{42});
    wr.commit();
  }
  const std::string script =
      "import sys, h5py\n"
      "f = h5py.File(sys.argv[1], \"r\")\n"
      "names = [\"train/step\", \"train/loss\", \"train/lr\", \"train/grad_norm\", \"train/tokens_per_s\",\n"
      "         \"train/wall_s\", \"eval/step\", \"eval/train_loss\", \"eval/val_loss\", \"attention/step\"]\n"
      "m = f[\"attention/max_logits\"]\n"
      "out = [len(f[n]) for n in names]\n"
      "out += [list(m.shape), str(m.dtype), str(f[\"train/step\"].dtype), str(f[\"train/loss\"].dtype)]\n"
      "out += [all(f[n].maxshape[0] is None and f[n].chunks is not None for n in names + [\"attention/max_logits\"])]\n"
      "a = f.attrs\n"
      "out += [a[\"status\"], int(a[\"seed\"]), int(a[\"n_layer\"]), int(a[\"n_head\"]), "
      "a[\"config\"].encode().hex()]\n"
      "out += [float(f[\"train/step\"][-1]), float(m[1, 1, 2])]\n"
      "c = h5py.File(sys.argv[2], \"r\")\n"
      "out += [[bytes(x).hex() for x in c[\"vocab\"][()]], c[\"params/blocks.0.attn.wq\"][()].tolist(), "
      "int(c.attrs[\"step\"])]\n"
      "print(repr(out))\n";
  io_testing::spit(dir.file("check.py"), script);
  const std::string cmd = "/usr/bin/python3 '" + dir.file("check.py") + "' '" + metrics + "' '" + ckpt + "' 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buf[4096];
  for (size_t r; (r = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, r);
  const int rc = ::pclose(pipe);
  INFO(output);
  REQUIRE(rc == 0);
  const std::string expected =
      "[7, 7, 7, 7, 7, 7, 3, 3, 3, 3, [3, 2, 3], 'float32', 'int64', 'float64', True, 'completed', " +
      std::to_string(test_meta().seed) + ", 2, 3, '" + hex(test_meta().config_yaml) + "', 6.0, " +
      "2.4166665077209473, ['', '0a', '610062', 'ff'], [[0.5, -1.25], [2.0, 3.0]], 42]\n";
  CHECK(output == expected);
}
