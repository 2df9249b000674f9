#include "train/trainer.h"

#include <optional>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <fstream>
#include <limits>
#include <sstream>

#include "autograd/tape.h"
#include "io/atomic_file.h"
#include "io/run_lock.h"
#include "io/run_log.h"
#include "kernels/gemm.h"
#include "train/distributed.h"
#include "train/sample.h"
#include "train/session.h"
#include "train/setup.h"
#include "train/signals.h"
#include "train/step.h"
#include "util/check.h"
#include "util/log.h"
#include "util/scope.h"
#include "util/timer.h"
#include "util/version.h"

namespace attnlab {
namespace {

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int s = int(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%d:%02d", s / 60, s % 60);
  return buf;
}

// The forms products took in this step for the first time (kernels/gemm.h): all of them into the
// run log, a count into the text log.
void log_new_matmul_forms(RunLog& runlog, bool quiet) {
  const std::vector<std::string> news = kernels::take_new_matmul_forms();
  if (news.empty()) return;
  runlog.set_matmul_forms(kernels::matmul_forms_text());
  if (quiet) return;
  std::map<std::string, int> by;
  for (const std::string& n : news) {
    const size_t colon = n.rfind(": ");
    by[n.substr(colon + 2)]++;  // "<form> (<how>)"
  }
  std::string counts;
  for (const auto& [what, n] : by) counts += detail::concat(counts.empty() ? "" : ", ", n, " ", what);
  log::info("matmul forms: {} (metrics.h5 attribute matmul_forms)", counts);
}

}  // namespace

// A resume continues the stored run bit for bit only under the config it was saved with. Keys that
// change only where the run stops, how it is logged, evaluated or computed (threads, forms) may differ.
static void warn_resume_differences(const std::string& stored_yaml, const RunConfig& now, const std::string& path) {
  if (stored_yaml.empty()) return;
  RunConfig was;
  try {
    was = config_from_yaml_text(stored_yaml, path + " (stored config)").cfg;
  } catch (const Error&) {
    return;  // from_checkpoint-style loaders report a bad stored config; a resume trains on `now`
  }
  was.run.name = now.run.name;
  was.run.out_dir = now.run.out_dir;
  was.runtime = now.runtime;
  was.eval = now.eval;
  was.train.steps = now.train.steps;
  was.train.resume = now.train.resume;
  was.train.log_interval = now.train.log_interval;
  was.train.checkpoint_interval = now.train.checkpoint_interval;
  if (was == now) return;
  std::string keys;
  for (const ConfigDifference& d : config_differences(was, now)) keys += (keys.empty() ? "" : ", ") + d.key;
  log::warn("resuming {} with a config that differs from the one it was saved with ({}): the run will not repeat "
            "an uninterrupted one",
            path, keys.empty() ? "see config.yaml" : keys);
}

TrainResult train(const LoadedConfig& cfg_given, const TrainOptions& opt_given) {
  // Over MPI only rank 0 prints and writes the run's files (train/distributed.h).
  TrainOptions opt = opt_given;
  opt.quiet = opt.quiet || !dist::root();
  const bool writer = dist::root();
  const LoadedConfig cfg_in = with_absolute_data_path(cfg_given);  // NOTE [relative paths]
  const RunConfig& cfg = cfg_in.cfg;
  const int threads = apply_runtime(cfg);
  auto session = Session::from_config(cfg_in);
  Session& s = *session;
  Transformer& model = *s.model;

  // Every input is checked before anything is written or printed: the config (by the caller), the
  // data (from_config), and the checkpoint to resume from.
  const bool resuming = !cfg.train.resume.empty();
  if (resuming) {
    s.load_checkpoint(cfg.train.resume);
    if (writer) warn_resume_differences(s.checkpoint_config, cfg, cfg.train.resume);
    if (s.progress.step > cfg.train.steps)
      throw ConfigError(detail::concat("train.resume: checkpoint ", cfg.train.resume, " is at step ", s.progress.step,
                                       ", past train.steps ", cfg.train.steps,
                                       ": nothing to train (train.steps above the checkpoint's step continues it)"));
  }
  std::vector<std::string> fresh_params;  // train.init_from: the parameters it did not hold
  const bool initialising = !resuming && !cfg.train.init_from.empty();
  if (initialising) fresh_params = s.init_from_checkpoint(cfg.train.init_from);
  if (opt.print_config && !opt.quiet) std::fprintf(stderr, "%s", cfg_in.resolved_yaml.c_str());

  TrainResult res;
  namespace fs = std::filesystem;
  const fs::path run_dir = fs::path(cfg.run.out_dir) / cfg.run.name;
  res.run_dir = run_dir.string();
  res.metrics_path = (run_dir / "metrics.h5").string();
  res.checkpoint_path = (run_dir / "checkpoint.h5").string();
  std::optional<RunLock> lock;  // NOTE [run liveness]: held until train() returns or the process dies
  if (writer) {
    std::error_code ec;
    fs::create_directories(run_dir, ec);
    if (ec) throw Error("cannot create run directory " + run_dir.string() + ": " + ec.message());
    lock.emplace(res.run_dir);
    // A warning, shown with --quiet too: it says what is about to be lost.
    if (!resuming && (fs::exists(res.metrics_path, ec) || fs::exists(res.checkpoint_path, ec))) {
      std::string earlier = "an earlier run";
      try {
        const RunSummary sum = read_run_summary(res.metrics_path);
        earlier = detail::concat("an earlier run (", sum.status, ", ", sum.train_points, " train points)");
      } catch (const Error&) {
      }
      log::warn("run directory {} holds {}: this run replaces it (train.resume={} continues it; another run.name "
                "keeps both)",
                res.run_dir, earlier, res.checkpoint_path);
    }
    write_file_atomic((run_dir / "config.yaml").string(), cfg_in.resolved_yaml);
  }

  RunLogMeta meta{cfg_in.resolved_yaml, uint64_t(cfg.run.seed), kVersion, kGitCommit, cfg.model.n_layer,
                  cfg.model.n_head};
  RunLog runlog = resuming && writer ? RunLog::resume(res.metrics_path, meta, s.progress.step)
                                     : RunLog(res.metrics_path, meta);
  auto flush = [&] {
    if (writer) runlog.flush();
  };
  runlog.set_status("running");
  flush();

  const int B = cfg.train.batch_size, T = cfg.model.context, accum = cfg.train.grad_accum;
  const int64_t total = cfg.train.steps, tokens_per_step = int64_t(B) * T * accum * dist::size();
  if (!opt.quiet) {
    log::info("attnlab {} ({}), {} threads", kVersion, kGitCommit, threads);
    log::info("data {}: {} tokens, vocabulary {}, train {} / val {}", s.corpus->path, s.corpus->tokens.size(),
              s.vocab.size(), s.split.train.size(), s.split.val.size());
    log::info("model: {} parameters ({} trainable), {} layers, {} heads, d_model {}, context {}", s.store.total(),
              s.store.trainable_count(), cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model, T);
    if (resuming) log::info("resuming from {} at step {}", cfg.train.resume, s.progress.step);
    if (initialising) {
      std::string names;
      for (const auto& n : fresh_params) names += (names.empty() ? "" : ", ") + n;
      log::info("parameters from {}; new: {}", cfg.train.init_from, names.empty() ? "none" : names);
    }
    log::info("run directory {}", res.run_dir);
  }

  Stepper stepper(s);
  InterruptGuard interrupt_guard;
  // An error out of the loop (a checkpoint that cannot be written, memory) leaves the log "failed",
  // not "running": inspect and a sweep's rerun then know the run ended, and how.
  const OnUnwind mark_failed([&] {
    if (runlog.status() != "running") return;  // diverged: the log says so already
    runlog.set_status("failed");
    flush();
  });

  double eval_seconds = 0;
  auto evaluate = [&](int64_t step, bool log) {
    Timer eval_timer;
    const double tl = s.evaluate(s.split.train, "eval.train", cfg.eval.iters);
    const double vl = s.evaluate(s.split.val, "eval.val", cfg.eval.iters);
    eval_seconds += eval_timer.seconds();
    if (log) runlog.add_eval(step, tl, vl);
    res.final_train_loss = tl;
    res.final_val_loss = vl;
    if (!opt.quiet) {
      if (opt.live_progress) std::fprintf(stderr, "\r\033[K");
      log::info("eval step {}: train loss {:.4f}, val loss {:.4f}", step, tl, vl);
    }
  };
  auto diverge = [&](const std::string& what) {
    runlog.set_status("diverged");
    flush();
    if (opt.live_progress && !opt.quiet) std::fprintf(stderr, "\n");
    throw DivergedError(what + " (run log: " + res.metrics_path + ")");
  };

  // A run that starts from another run's parameters logs where it starts (eval step 0).
  if (initialising) evaluate(0, true);
  Timer wall;
  double train_seconds = 0, interval_seconds = 0;  // step time only: evaluation and I/O excluded
  int64_t interval_steps = 0;
  while (s.progress.step < total) {
    const int64_t step = s.progress.step;  // 0-based index of the step being taken
    Timer step_timer;
    const StepResult r = stepper.step();
    const float lr = r.lr;
    const double grad_norm = r.grad_norm;
    const double loss = r.loss;
    const double step_s = step_timer.seconds();
    // The diverged step is logged too: its non-finite loss or norm is the last point.
    runlog.add_train({step + 1, loss, lr, grad_norm, double(tokens_per_step) / step_s, wall.seconds()});
    if (!r.diverged.empty()) diverge(r.diverged);
    log_new_matmul_forms(runlog, opt.quiet);
    // With QK-Clip every step's max logits and clip are logged: the clip acts per step.
    if (cfg.train.qk_clip.enabled)
      runlog.add_max_logits(step + 1, stepper.max_logits(), r.qk_clip.clipped_heads, r.qk_clip.gamma_deficit);
    train_seconds += step_s;
    interval_seconds += step_s;
    interval_steps++;
    res.losses.push_back(loss);

    const bool last = s.progress.step == total;
    // Every rank stops at the same step (a signal may reach the ranks a step apart).
    const bool stop = dist::any(interrupt_requested() || (opt.stop_after >= 0 && s.progress.step >= opt.stop_after));
    // Log points depend on the step only (not on where a run was stopped), so a resumed run's log
    // equals the straight run's.
    const bool log_point = s.progress.step % cfg.train.log_interval == 0 || last;
    if (log_point) {
      if (const Param* bad = first_non_finite(s.store, true))
        diverge(detail::concat("non-finite value in ", bad->name, " after step ", step + 1));
      if (!cfg.train.qk_clip.enabled) runlog.add_max_logits(step + 1, stepper.max_logits());
      const double tok_s = double(tokens_per_step) * double(interval_steps) / interval_seconds;
      const double eta = double(total - s.progress.step) * train_seconds / double(res.losses.size());
      if (!opt.quiet) {
        if (opt.live_progress)
          std::fprintf(stderr, "\r\033[Kstep %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s", (long long)(step + 1),
                       (long long)total, loss, lr, tok_s, format_eta(eta).c_str());
        else
          log::info("step {}/{} loss {:.4f} lr {:.2e} grad_norm {:.3f} {:.0f} tok/s ETA {}", step + 1, total, loss, lr,
                    grad_norm, tok_s, format_eta(eta));
      }
      flush();
      interval_seconds = 0;
      interval_steps = 0;
    } else if (stop) {
      flush();
    }
    if (s.progress.step % cfg.eval.interval == 0 || last) evaluate(s.progress.step, true);
    const bool ckpt = cfg.train.checkpoint_interval > 0 && s.progress.step % cfg.train.checkpoint_interval == 0;
    if ((ckpt || last || stop) && writer) {
      // The log first: a resume starts from the checkpoint and logs only the steps after it, so
      // every point up to the checkpoint's step must be on disk before the checkpoint is.
      flush();
      s.save_checkpoint(res.checkpoint_path);
      if (opt.after_checkpoint) opt.after_checkpoint(s.progress.step);
    }
    if (stop && !last) {
      res.status = TrainResult::interrupted;
      break;
    }
  }
  if (opt.live_progress && !opt.quiet) std::fprintf(stderr, "\n");
  res.steps = s.progress.step;
  if (res.status == TrainResult::completed && s.progress.step == total && res.losses.empty()) {
    if (!opt.quiet) log::warn("checkpoint is already at step {} of {}: nothing to train", s.progress.step, total);
    evaluate(s.progress.step, /*log=*/false);  // the log already holds this evaluation
  }
  runlog.set_status(res.status == TrainResult::completed ? "completed" : "interrupted");
  flush();

  if (cfg.eval.sample_tokens > 0 && res.status == TrainResult::completed) {
    SampleOptions so;
    so.tokens = cfg.eval.sample_tokens;
    so.seed = uint64_t(cfg.run.seed);
    std::vector<int32_t> prompt{s.split.val.empty() ? 0 : s.split.val[0]};
    res.sample_text = s.vocab.decode(sample(model, prompt, so).ids);
  }
  if (!opt.quiet) {
    if (res.status == TrainResult::interrupted)
      log::warn("interrupted after step {}: checkpoint {} (resume with train.resume={})", res.steps,
                res.checkpoint_path, res.checkpoint_path);
    else
      log::info("done: {} steps in {:.1f} s (steps {:.1f} s, evaluations {:.1f} s), final train loss {:.4f}, val loss "
                "{:.4f}",
                res.steps, wall.seconds(), train_seconds, eval_seconds, res.final_train_loss, res.final_val_loss);
    log::info("run log {}, checkpoint {}", res.metrics_path, res.checkpoint_path);
    if (!res.sample_text.empty()) std::fprintf(stderr, "--- sample ---\n%s\n--------------\n", res.sample_text.c_str());
  }
  return res;
}

}  // namespace attnlab
