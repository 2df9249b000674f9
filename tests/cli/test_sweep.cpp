// `attnlab sweep` and `attnlab report`: points from grid × zip × seeds with readable names, every
// point validated before anything runs, parallel jobs, resumable after kill -9 (bit-identical to an
// uninterrupted run), refusal of a changed finished point, reports, and the Slurm / GNU parallel files.
#include <csignal>
#include <functional>
#include <fstream>
#include <thread>

#include "config/sweep.h"
#include "io/run_lock.h"
#include "io/run_log.h"
#include "train/session.h"
#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

namespace {

std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    CHECK(msg.find('\n') == std::string::npos);
    return msg;
  }
  FAIL("expected a ConfigError");
  return "";
}

// A sweep over the tiny config: 2 grid values × 2 zip rows × 2 seeds = 8 points of `steps` steps.
std::string write_sweep(const TempDir& dir, int steps, const std::string& extra = "") {
  write_tiny_config(dir, steps);
  std::ostringstream y;
  y << "name: tiny_sweep\nbase: tiny.yaml\nout_dir: " << dir.file("runs") << "\n"
    << "overrides: [train.log_interval=2, eval.interval=3]\n"
    << "grid:\n  model.norm: [layernorm, rmsnorm]\n"
    << "zip:\n  optimizer.lr: [0.001, 0.003]\n  schedule.warmup_steps: [1, 2]\n"
    << "seeds: [1, 2]\n"
    << "plots:\n  - {kind: curves, metric: val_loss}\n  - {kind: final, x: optimizer.lr, metric: train_loss, log_x: true}\n"
    << extra;
  return dir.write("sweep.yaml", y.str());
}

// A sweep of seeds only over the tiny config of `steps` steps, checkpointing every 50 steps.
std::string write_seeds_sweep(const TempDir& dir, const std::string& name, int steps, int eval_interval,
                              const std::string& seeds) {
  write_tiny_config(dir, steps);
  return dir.write(name + ".yaml", "base: tiny.yaml\nout_dir: " + dir.file("runs") +
                                       "\noverrides: [train.checkpoint_interval=50, eval.interval=" +
                                       std::to_string(eval_interval) + "]\nseeds: " + seeds + "\n");
}

std::vector<pid_t> spawned;  // by spawn_until_checkpoint, reaped by wait_all_children

// Starts attnlab with args (output in dir/out.txt, err.txt) and returns its pid once
// run_dir/checkpoint.h5 exists; fails (killing it) after 60 s without one.
pid_t spawn_until_checkpoint(const std::vector<std::string>& args, const TempDir& dir, const std::string& run_dir) {
  const pid_t pid = spawn_attnlab(args, dir.file("out.txt"), dir.file("err.txt"));
  spawned.push_back(pid);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(run_dir + "/checkpoint.h5")) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      wait_child(pid);
      spawned.clear();
      FAIL("no checkpoint within 60 s: " << read_text(dir.file("err.txt")));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pid;
}

void wait_all_children() {
  for (pid_t p : spawned) wait_child(p);
  spawned.clear();
}

}  // namespace

TEST_CASE("sweep: points are grid x zip x seeds, named by their overrides, in file order", "[sweep]") {
  TempDir dir;
  const SweepFile s = load_sweep(write_sweep(dir, 4));
  const auto points = sweep_points(s);
  REQUIRE(points.size() == 8);
  CHECK(points[0].name == "model.norm=layernorm,optimizer.lr=0.001,schedule.warmup_steps=1,seed=1");
  CHECK(points[1].name == "model.norm=layernorm,optimizer.lr=0.001,schedule.warmup_steps=1,seed=2");
  CHECK(points[2].name == "model.norm=layernorm,optimizer.lr=0.003,schedule.warmup_steps=2,seed=1");
  CHECK(points[7].name == "model.norm=rmsnorm,optimizer.lr=0.003,schedule.warmup_steps=2,seed=2");
  CHECK(points[7].overrides == std::vector<std::string>{"model.norm=rmsnorm", "optimizer.lr=0.003",
                                                          "schedule.warmup_steps=2", "run.seed=2"});
  const LoadedConfig c = point_config(s, points[7]);
  CHECK(c.cfg.model.norm == "rmsnorm");
  CHECK(c.cfg.optimizer.lr == 0.003);
  CHECK(c.cfg.run.seed == 2);
  CHECK(c.cfg.train.log_interval == 2);
  CHECK(c.cfg.run.name == points[7].name);
  CHECK(c.cfg.run.out_dir == dir.file("runs") + "/tiny_sweep");
  // Long names keep each key's last part and end in a hash of the full name: distinct, stable.
  TempDir d2;
  write_tiny_config(d2, 2);
  const SweepFile l = load_sweep(d2.write("long.yaml", "base: tiny.yaml\ngrid:\n  attention.query_scaling: [init, query]\n"
                                                      "  optimizer.weight_decay: [0.1]\n  schedule.warmup_steps: [1]\n"
                                                      "  train.qk_clip.alpha: [0.5]\n  train.qk_clip.tau: [100.0]\n"
                                                      "  attention.kernel: [dense]\n"));
  const auto lp = sweep_points(l);
  REQUIRE(lp.size() == 2);
  CHECK(lp[0].name != lp[1].name);
  CHECK(lp[0].name.rfind("query_scaling=init,weight_decay=0.1,", 0) == 0);
  CHECK(lp[0].name.size() <= 96);
  CHECK(sweep_points(l)[0].name == lp[0].name);
}

TEST_CASE("sweep: a bad sweep file or axis value stops before any run, naming file, line and key", "[sweep][errors]") {
  TempDir dir;
  write_tiny_config(dir, 2);
  auto err = [&](const std::string& text) {
    const std::string path = dir.write("s.yaml", text);
    const std::string msg = config_error([&] {
      const SweepFile s = load_sweep(path);
      for (const auto& p : sweep_points(s)) point_config(s, p);
    });
    INFO(msg);
    REQUIRE(msg.rfind(path, 0) == 0);
    return "s.yaml" + msg.substr(path.size());
  };
  CHECK(err("base: tiny.yaml\ngrid:\n  model.normm: [layernorm]\n") ==
        "s.yaml:3:3: grid: unknown config key model.normm (did you mean model.norm?)");
  CHECK(err("base: tiny.yaml\ngrid:\n  model.norm: [layernorm, batchnorm]\n") ==
        "s.yaml:3:27: model.norm: expected one of layernorm, rmsnorm, got \"batchnorm\" (point model.norm=batchnorm)");
  CHECK(err("base: tiny.yaml\nzip:\n  optimizer.lr: [0.1, 0.2]\n  run.seed: [1]\n") ==
        "s.yaml:4:3: zip: run.seed is set by the sweep (point names, out_dir, seeds:), not an axis");
  CHECK(err("base: tiny.yaml\nzip:\n  optimizer.lr: [0.1, 0.2]\n  optimizer.beta1: [0.9]\n") ==
        "s.yaml:4:21: zip optimizer.beta1: 1 values, but zip optimizer.lr has 2 (zip pairs its lists element by element)");
  CHECK(err("base: tiny.yaml\ngrids:\n  model.norm: [layernorm]\n") ==
        "s.yaml:2:1: unknown sweep key grids (expected one of name, base, out_dir, overrides, grid, zip, seeds, plots; "
        "did you mean grid?)");
  CHECK(err("grid:\n  model.norm: [layernorm]\n") == "s.yaml: base: missing (the config every point starts from)");
  CHECK(err("base: tiny.yaml\ngrid:\n  model.norm: layernorm\n") ==
        "s.yaml:3:15: grid model.norm: expected a non-empty list of values, got \"layernorm\"");
  CHECK(err("base: tiny.yaml\nseeds: [1, x]\n") ==
        "s.yaml:2:12: run.seed: expected an integer >= 0, got \"x\" (point seed=x)");
  CHECK(err("base: tiny.yaml\nseeds: [1]\nseeds: [2]\n") == "s.yaml:3:1: duplicate key seeds (first at line 2)");
  CHECK(err("base: tiny.yaml\noverrides: [run.name=x]\n") ==
        "s.yaml:2:13: overrides: run.name is set by the sweep for every point (point names), not an override");
  CHECK(err("base: tiny.yaml\nseeds: [1]\noverrides: [run.seed=3]\n") ==
        "s.yaml:3:13: overrides: run.seed is set by the sweep for every point (seeds:), not an override");
  CHECK(err("base: tiny.yaml\n---\nseeds: [1]\n") ==
        "s.yaml: 2 YAML documents (separated by ---); a sweep file is one document");
  {  // 101 x 100 x 1 points: refused before any is made (listing 10^6 took half an hour)
    std::string lrs, batches;
    for (int i = 1; i <= 101; ++i) lrs += (i > 1 ? ", " : "") + std::to_string(i) + "e-4";
    for (int i = 1; i <= 100; ++i) batches += (i > 1 ? ", " : "") + std::to_string(i);
    CHECK(err("base: tiny.yaml\ngrid:\n  optimizer.lr: [" + lrs + "]\n  train.batch_size: [" + batches +
              "]\nseeds: [1]\n") ==
          "s.yaml: 101 (optimizer.lr) x 100 (train.batch_size) x 1 (seeds) points: more than 10000, the most one "
          "sweep runs; split it into several sweeps");
  }
  // Cross-key checks name the point's value too.
  CHECK(err("base: tiny.yaml\ngrid:\n  schedule.warmup_steps: [1, 50]\n") ==
        "s.yaml:3:30: schedule.warmup_steps (50) must be <= train.steps (2) (point schedule.warmup_steps=50)");
}

TEST_CASE("sweep: runs every point in parallel jobs, skips them on a rerun, reports them", "[sweep][cli]") {
  TempDir dir;
  const std::string sweep = write_sweep(dir, 4);
  const RunOutput dry = run_attnlab({"sweep", sweep, "--dry-run"});
  INFO(dry.all());
  REQUIRE(dry.exit_code == 0);
  CHECK(lines_of(dry.out).size() == 9);  // a header and 8 points
  CHECK(contains(dry.out, "model.norm=rmsnorm,optimizer.lr=0.003,schedule.warmup_steps=2,seed=2"));
  CHECK(!std::filesystem::exists(dir.file("runs/tiny_sweep")));  // a dry run writes nothing

  const RunOutput r = run_attnlab({"sweep", sweep, "--jobs", "2"}, 300);
  INFO(r.all());
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.err, "2 jobs x 1 threads"));
  CHECK(contains(r.err, "8 of 8 points completed"));
  const std::string pdir = dir.file("runs/tiny_sweep/model.norm=rmsnorm,optimizer.lr=0.003,schedule.warmup_steps=2,seed=2");
  const RunSummary s = read_run_summary(pdir + "/metrics.h5");
  CHECK(s.status == "completed");
  CHECK(s.last_step == 4);
  const auto mtime = std::filesystem::last_write_time(pdir + "/metrics.h5");

  const RunOutput again = run_attnlab({"sweep", sweep, "--jobs", "2"});
  INFO(again.all());
  REQUIRE(again.exit_code == 0);
  CHECK(contains(again.err, "8 completed, 0 to run"));
  CHECK(std::filesystem::last_write_time(pdir + "/metrics.h5") == mtime);

  const RunOutput rep = run_attnlab({"report", dir.file("runs/tiny_sweep"), "--by", "optimizer.lr"});
  INFO(rep.all());
  REQUIRE(rep.exit_code == 0);
  // Four rows (seeds grouped), each with 2 runs and a mean ± std.
  CHECK(contains(rep.out, "| layernorm | 0.001 | 1 | 2 |"));
  CHECK(contains(rep.out, " ± "));
  CHECK(contains(rep.out, "2 completed"));
  const auto csv = lines_of(read_text(dir.file("runs/tiny_sweep/report.csv")));
  CHECK(csv.size() == 9);
  CHECK(std::filesystem::exists(dir.file("runs/tiny_sweep/plot1_curves_val_loss.svg")));
  CHECK(contains(read_text(dir.file("runs/tiny_sweep/plot2_final_train_loss.svg")), "<polyline"));
  // A run trained into the sweep's folder by hand is not a point: left out, with a warning.
  REQUIRE(run_attnlab({"-q", "train", dir.file("tiny.yaml"), "run.out_dir=" + dir.file("runs/tiny_sweep"),
                       "run.name=by_hand", "optimizer.lr=0.001", "model.norm=layernorm", "schedule.warmup_steps=1"})
              .exit_code == 0);
  const RunOutput rep2 = run_attnlab({"report", dir.file("runs/tiny_sweep"), "--by", "optimizer.lr"});
  INFO(rep2.all());
  REQUIRE(rep2.exit_code == 0);
  CHECK(contains(rep2.err, "1 run directories that are not points of its sweep.yaml left out"));
  CHECK(contains(rep2.out, "| layernorm | 0.001 | 1 | 2 |"));
  CHECK(lines_of(read_text(dir.file("runs/tiny_sweep/report.csv"))).size() == 9);

  // A changed value of a finished point is refused, naming it.
  // (A changed axis value makes new points; changing what every point shares changes finished ones.)
  std::string text = read_text(sweep);
  text.replace(text.find("eval.interval=3"), 15, "eval.interval=2");
  dir.write("sweep.yaml", text);
  const RunOutput changed = run_attnlab({"sweep", sweep});
  INFO(changed.all());
  CHECK(changed.exit_code == 2);
  CHECK(contains(changed.err, "already ran in"));
  CHECK(contains(changed.err, "eval.interval: 3, the sweep now gives 2"));
}

TEST_CASE("sweep: a point killed with SIGKILL is reported interrupted and resumed bit-identically", "[sweep][cli]") {
  TempDir dir;
  const std::string sweep = write_seeds_sweep(dir, "k", 3000, 500, "[5]");
  const std::string pdir = dir.file("runs/k/seed=5");
  // kill -9 mid-run, once a checkpoint exists
  ::kill(spawn_until_checkpoint({"sweep", sweep, "--point", "0"}, dir, pdir), SIGKILL);
  wait_all_children();
  const RunOutput insp = run_attnlab({"inspect", pdir});
  INFO(insp.all());
  CHECK(contains(insp.out, "status      interrupted"));
  const RunOutput dry = run_attnlab({"sweep", sweep, "--dry-run"});
  CHECK(contains(dry.out, "resume"));
  const RunOutput resumed = run_attnlab({"sweep", sweep}, 120);
  INFO(resumed.all());
  REQUIRE(resumed.exit_code == 0);
  // The same point run straight through elsewhere: the same parameters, bit for bit.
  const RunOutput straight = run_attnlab({"-q", "train", pdir + "/point.yaml", "run.out_dir=" + dir.file("straight"),
                                          "runtime.threads=" + std::to_string(std::max(1u, std::thread::hardware_concurrency()))},
                                         120);
  REQUIRE(straight.exit_code == 0);
  const std::string a = pdir + "/checkpoint.h5", b = dir.file("straight/seed=5/checkpoint.h5");
  for (const auto& n : list_datasets(a, "params")) {
    INFO(n);
    CHECK(same_bits(read_f32(a, "params/" + n), read_f32(b, "params/" + n)));
  }
  CHECK(same_bits(read_f64(pdir + "/metrics.h5", "train/loss"), read_f64(dir.file("straight/seed=5/metrics.h5"), "train/loss")));
}

TEST_CASE("sweep: --emit parallel writes one command per point that GNU parallel (or a shell) can run", "[sweep][cli]") {
  TempDir dir;
  const std::string sweep = write_sweep(dir, 2);
  const RunOutput r = run_attnlab({"sweep", sweep, "--emit", "parallel", "--threads", "1"});
  INFO(r.all());
  REQUIRE(r.exit_code == 0);
  const std::string file = dir.file("runs/tiny_sweep/parallel.txt");
  const auto cmds = lines_of(read_text(file));
  REQUIRE(cmds.size() == 8);
  CHECK(contains(cmds[3], "--point 3 --threads 1"));
  // Run them with a plain shell, as parallel would, one by one.
  REQUIRE(std::system(("bash " + file + " > " + dir.file("par.log") + " 2>&1").c_str()) == 0);
  for (const auto& p : sweep_points(load_sweep(sweep)))
    CHECK(read_run_summary(dir.file("runs/tiny_sweep/" + p.name + "/metrics.h5")).status == "completed");
  // Slurm: one array task per point, with the point index from the array.
  const RunOutput sl = run_attnlab({"sweep", sweep, "--emit", "slurm", "--threads", "1"});
  REQUIRE(sl.exit_code == 0);
  const std::string script = read_text(dir.file("runs/tiny_sweep/slurm.sh"));
  CHECK(contains(script, "#SBATCH --array=0-7"));
  CHECK(contains(script, "#SBATCH --cpus-per-task=1"));
  CHECK(contains(script, "--point \"$SLURM_ARRAY_TASK_ID\""));
}

TEST_CASE("sweep: points that train the same config, and a negative --point, are refused", "[sweep][cli]") {
  TempDir dir;
  write_tiny_config(dir, 2);
  for (const char* axis : {"grid:\n  optimizer.lr: [0.001, 1e-3]\n", "grid:\n  model.n_layer: [1, '1']\n",
                           "seeds: [1, 1]\n"}) {
    INFO(axis);
    const std::string sweep = dir.write("d.yaml", "base: tiny.yaml\nout_dir: " + dir.file("runs") + "\n" + axis);
    const RunOutput r = run_attnlab({"sweep", sweep, "--dry-run"});
    INFO(r.all());
    CHECK(r.exit_code == 2);
    CHECK(contains(r.err, "points 0 ("));
    CHECK(contains(r.err, "train the same config"));
  }
  const std::string ok = dir.write("ok.yaml", "base: tiny.yaml\nout_dir: " + dir.file("runs") + "\nseeds: [1]\n");
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--point", "-1"}, {"--threads", "0"}, {"--threads", "-1"}, {"--jobs", "-3"}}) {
    std::vector<std::string> args{"sweep", ok};
    args.insert(args.end(), bad.begin(), bad.end());
    const RunOutput r = run_attnlab(args);
    INFO(bad[0] << " " << bad[1] << ": " << r.all());
    CHECK(r.exit_code == 2);
    CHECK(!std::filesystem::exists(dir.file("runs/ok/seed=1/metrics.h5")));
  }
}

TEST_CASE("sweep: Ctrl-C at the terminal checkpoints and stops the running point, and the sweep sums up", "[sweep][cli]") {
  TempDir dir;
  const std::string sweep = write_seeds_sweep(dir, "c", 100000, 100000, "[3, 4]");
  const std::string pdir = dir.file("runs/c/seed=3");
  const pid_t pid = spawn_until_checkpoint({"sweep", sweep, "--jobs", "1"}, dir, pdir);
  // The terminal sends SIGINT to its whole foreground process group, the sweep being its leader.
  REQUIRE(::kill(-pid, SIGINT) == 0);
  const int code = wait_child(pid, 60);
  spawned.clear();
  const std::string err = read_text(dir.file("err.txt")), log = read_text(pdir + "/train.log");
  INFO(err << "\n--- train.log\n" << log);
  CHECK(code == kExitInterrupted);
  CHECK(contains(err, "0 of 2 points completed, 0 failed, 1 interrupted"));
  // One SIGINT reached the point (the sweep's; its group is its own): a last checkpoint, not an
  // immediate stop; the second point never started.
  CHECK(contains(log, "interrupted after step"));
  REQUIRE(!run_is_live(pdir));
  const RunSummary sum = read_run_summary(pdir + "/metrics.h5");
  CHECK(sum.status == "interrupted");
  auto session = Session::from_checkpoint(pdir + "/checkpoint.h5", {}, /*load_data=*/false);
  CHECK(session->progress.step == sum.last_step);
  CHECK(!std::filesystem::exists(dir.file("runs/c/seed=4/metrics.h5")));
}

TEST_CASE("sweep: a sweep killed with SIGKILL stops its running point, which keeps a readable log", "[sweep][cli]") {
  TempDir dir;
  const std::string sweep = write_seeds_sweep(dir, "o", 100000, 100000, "[3]");
  const std::string pdir = dir.file("runs/o/seed=3");
  ::kill(spawn_until_checkpoint({"sweep", sweep, "--jobs", "1"}, dir, pdir), SIGKILL);
  wait_all_children();
  // The point's process gets SIGINT from the kernel as its parent dies: it checkpoints and stops.
  const auto stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (run_is_live(pdir) && std::chrono::steady_clock::now() < stop_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(!run_is_live(pdir));
  const RunSummary sum = read_run_summary(pdir + "/metrics.h5");
  CHECK(sum.status == "interrupted");
  CHECK(sum.last_step < 100000);
  // Its progress went to train.log (children are not quiet), which says how it stopped.
  const std::string log = read_text(pdir + "/train.log");
  INFO(log);
  CHECK(contains(log, "step "));
  CHECK(contains(log, "interrupted after step"));
}
