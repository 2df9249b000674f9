#include "io/run_log.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>

#include "io/atomic_file.h"
#include "io/h5.h"
#include "io/h5_trial.h"
#include "util/check.h"

namespace attnlab {
namespace {

// Bumped when the layout changes incompatibly; readers reject newer files by name.
constexpr int64_t kFormatVersion = 1;
constexpr std::array<std::string_view, 5> kStatuses = {"running", "completed", "diverged", "interrupted", "failed"};

struct LoadedLog {
  RunLogMeta meta;
  std::string status;
  std::vector<TrainPoint> train;
  std::vector<EvalPoint> eval;
  std::vector<int64_t> attn_step;
  std::vector<float> attn_values;
  std::vector<int64_t> attn_clipped;  // per attention point; zeros in a log written before QK-Clip
  std::vector<float> attn_deficit;
};

int attr_int(const h5::File& f, const std::string& key) {
  const int64_t v = f.attr_i64(key);
  if (v < 1 || v > std::numeric_limits<int>::max())
    f.fail("attribute " + key, "expected a positive int, found " + std::to_string(v));
  return static_cast<int>(v);
}

// A float64 series of the same length as its group's step series.
std::vector<double> column(const h5::File& f, const std::string& name, const std::string& step_name, size_t n) {
  std::vector<double> v = f.read_series<double>(name, h5::Dtype::f64);
  if (v.size() != n)
    f.fail(name, "has " + std::to_string(v.size()) + " points but " + step_name + " has " + std::to_string(n));
  return v;
}

// Reads and validates a whole metrics.h5.
LoadedLog load_unguarded(const std::string& path) {
  const h5::File f = h5::File::open(path);
  const int64_t format = f.attr_i64("format_version");
  if (format > kFormatVersion)
    f.fail("attribute format_version", "file format " + std::to_string(format) + " is newer than this attnlab reads (" +
                                           std::to_string(kFormatVersion) + ")");
  LoadedLog l;
  l.meta.config_yaml = f.attr_string("config");
  l.meta.seed = f.attr_u64("seed");
  l.meta.version = f.attr_string("version");
  l.meta.git_commit = f.attr_string("git_commit");
  l.meta.n_layer = attr_int(f, "n_layer");
  l.meta.n_head = attr_int(f, "n_head");
  l.status = f.attr_string("status");

  const std::vector<int64_t> step = f.read_series<int64_t>("train/step", h5::Dtype::i64);
  const size_t n = step.size();
  const std::vector<double> loss = column(f, "train/loss", "train/step", n),
                            lr = column(f, "train/lr", "train/step", n),
                            gnorm = column(f, "train/grad_norm", "train/step", n),
                            tps = column(f, "train/tokens_per_s", "train/step", n),
                            wall = column(f, "train/wall_s", "train/step", n);
  for (size_t i = 0; i < n; ++i) l.train.push_back({step[i], loss[i], lr[i], gnorm[i], tps[i], wall[i]});

  const std::vector<int64_t> estep = f.read_series<int64_t>("eval/step", h5::Dtype::i64);
  const std::vector<double> etrain = column(f, "eval/train_loss", "eval/step", estep.size()),
                            eval = column(f, "eval/val_loss", "eval/step", estep.size());
  for (size_t i = 0; i < estep.size(); ++i) l.eval.push_back({estep[i], etrain[i], eval[i]});

  l.attn_step = f.read_series<int64_t>("attention/step", h5::Dtype::i64);
  const std::array<int64_t, 3> shape = {static_cast<int64_t>(l.attn_step.size()), l.meta.n_layer, l.meta.n_head};
  l.attn_values.resize(l.attn_step.size() * static_cast<size_t>(l.meta.n_layer * l.meta.n_head));
  f.read("attention/max_logits", h5::Dtype::f32, shape, l.attn_values.data());
  l.attn_clipped.assign(l.attn_step.size(), 0);
  l.attn_deficit.assign(l.attn_step.size(), 0.f);
  if (f.exists("attention/clipped_heads")) {  // logs from before QK-Clip have neither
    const std::array<int64_t, 1> n = {static_cast<int64_t>(l.attn_step.size())};
    f.read("attention/clipped_heads", h5::Dtype::i64, n, l.attn_clipped.data());
    f.read("attention/gamma_deficit", h5::Dtype::f32, n, l.attn_deficit.data());
  }
  return l;
}

// load_unguarded, tried first in a child process: a run log has no checksum (a live run rewrites
// it at each flush), and a damaged one could crash HDF5 (io/h5_trial.h).
LoadedLog load(const std::string& path) {
  const std::string failed = h5::try_read_in_child(path, [&] { load_unguarded(path); });
  if (!failed.empty()) throw CheckpointError(path + ": corrupt run log: " + failed);
  return load_unguarded(path);
}

std::optional<double> min_finite(const std::vector<double>& v) {
  std::optional<double> best;
  for (double x : v)
    if (std::isfinite(x) && (!best || x < *best)) best = x;
  return best;
}

}  // namespace

RunLog::RunLog(std::string path, RunLogMeta meta) : path_(std::move(path)), meta_(std::move(meta)) {
  ATTN_CHECK(meta_.n_layer >= 1 && meta_.n_head >= 1, path_, ": run log needs n_layer, n_head >= 1, got ",
             meta_.n_layer, ", ", meta_.n_head);
}

RunLog RunLog::resume(std::string path, RunLogMeta meta, int64_t up_to_step) {
  RunLog log(std::move(path), std::move(meta));
  std::error_code ec;
  if (!std::filesystem::exists(log.path_, ec) && !ec) return log;  // otherwise load() says what is wrong
  LoadedLog l = load(log.path_);
  if (l.meta.n_layer != log.meta_.n_layer || l.meta.n_head != log.meta_.n_head)
    throw CheckpointError(log.path_ + ": attention/max_logits: the log has n_layer=" + std::to_string(l.meta.n_layer) +
                          " n_head=" + std::to_string(l.meta.n_head) + " but the resumed run has n_layer=" +
                          std::to_string(log.meta_.n_layer) + " n_head=" + std::to_string(log.meta_.n_head));
  for (const TrainPoint& p : l.train)
    if (p.step <= up_to_step) log.train_.push_back(p);
  for (const EvalPoint& p : l.eval)
    if (p.step <= up_to_step) log.eval_.push_back(p);
  const size_t per = static_cast<size_t>(log.meta_.n_layer * log.meta_.n_head);
  for (size_t i = 0; i < l.attn_step.size(); ++i) {
    if (l.attn_step[i] > up_to_step) continue;
    log.attn_step_.push_back(l.attn_step[i]);
    log.attn_values_.insert(log.attn_values_.end(), l.attn_values.begin() + i * per,
                            l.attn_values.begin() + (i + 1) * per);
    log.attn_clipped_.push_back(l.attn_clipped[i]);
    log.attn_deficit_.push_back(l.attn_deficit[i]);
  }
  return log;
}

void RunLog::add_train(const TrainPoint& p) { train_.push_back(p); }

void RunLog::add_eval(int64_t step, double train_loss, double val_loss) {
  eval_.push_back({step, train_loss, val_loss});
}

void RunLog::add_max_logits(int64_t step, std::span<const float> values, int clipped_heads, float gamma_deficit) {
  ATTN_CHECK(values.size() == static_cast<size_t>(meta_.n_layer * meta_.n_head),
             "add_max_logits: expected n_layer*n_head = ", meta_.n_layer, "*", meta_.n_head, " values, got ",
             values.size());
  attn_step_.push_back(step);
  attn_values_.insert(attn_values_.end(), values.begin(), values.end());
  attn_clipped_.push_back(clipped_heads);
  attn_deficit_.push_back(gamma_deficit);
}

void RunLog::set_status(std::string_view s) {
  ATTN_CHECK(std::ranges::find(kStatuses, s) != kStatuses.end(), "run log status \"", s,
             "\": expected running, completed, diverged, interrupted or failed");
  status_ = s;
}

void RunLog::flush() {
  // NOTE [run log crash safety], NOTE [atomic replace]
  const std::string tmp = path_ + ".tmp";
  try {
    h5::File f = h5::File::create(tmp);
    const auto train_col = [&](const std::string& name, double TrainPoint::*field) {
      std::vector<double> v;
      v.reserve(train_.size());
      for (const TrainPoint& p : train_) v.push_back(p.*field);
      const std::array<int64_t, 1> shape = {static_cast<int64_t>(v.size())};
      f.write(name, h5::Dtype::f64, shape, v.data(), h5::Layout::extendable);
    };
    std::vector<int64_t> steps;
    for (const TrainPoint& p : train_) steps.push_back(p.step);
    std::array<int64_t, 1> shape = {static_cast<int64_t>(steps.size())};
    f.write("train/step", h5::Dtype::i64, shape, steps.data(), h5::Layout::extendable);
    train_col("train/loss", &TrainPoint::loss);
    train_col("train/lr", &TrainPoint::lr);
    train_col("train/grad_norm", &TrainPoint::grad_norm);
    train_col("train/tokens_per_s", &TrainPoint::tokens_per_s);
    train_col("train/wall_s", &TrainPoint::wall_s);

    steps.clear();
    std::vector<double> etrain, eval;
    for (const EvalPoint& p : eval_) {
      steps.push_back(p.step);
      etrain.push_back(p.train_loss);
      eval.push_back(p.val_loss);
    }
    shape = {static_cast<int64_t>(steps.size())};
    f.write("eval/step", h5::Dtype::i64, shape, steps.data(), h5::Layout::extendable);
    f.write("eval/train_loss", h5::Dtype::f64, shape, etrain.data(), h5::Layout::extendable);
    f.write("eval/val_loss", h5::Dtype::f64, shape, eval.data(), h5::Layout::extendable);

    shape = {static_cast<int64_t>(attn_step_.size())};
    f.write("attention/step", h5::Dtype::i64, shape, attn_step_.data(), h5::Layout::extendable);
    const std::array<int64_t, 3> lshape = {shape[0], meta_.n_layer, meta_.n_head};
    f.write("attention/max_logits", h5::Dtype::f32, lshape, attn_values_.data(), h5::Layout::extendable);
    f.write("attention/clipped_heads", h5::Dtype::i64, shape, attn_clipped_.data(), h5::Layout::extendable);
    f.write("attention/gamma_deficit", h5::Dtype::f32, shape, attn_deficit_.data(), h5::Layout::extendable);

    f.set_attr("format_version", kFormatVersion);
    f.set_attr("config", meta_.config_yaml);
    f.set_attr_u64("seed", meta_.seed);
    f.set_attr("version", meta_.version);
    f.set_attr("git_commit", meta_.git_commit);
    f.set_attr("status", status_);
    f.set_attr("matmul_forms", matmul_forms_);
    f.set_attr("n_layer", int64_t{meta_.n_layer});
    f.set_attr("n_head", int64_t{meta_.n_head});
    f.close();
    fsync_and_rename(tmp, path_);
  } catch (...) {
    remove_quietly(tmp);
    throw;
  }
}

RunSummary summarize(const LoadedLog& l);

RunSummary read_run_summary(const std::string& path) { return summarize(load(path)); }

RunSeries read_run_series(const std::string& path) {
  const LoadedLog l = load(path);
  RunSeries r;
  r.summary = summarize(l);
  for (const TrainPoint& p : l.train) {
    r.step.push_back(p.step);
    r.loss.push_back(p.loss);
    r.wall_s.push_back(p.wall_s);
  }
  for (const EvalPoint& p : l.eval) {
    r.eval_step.push_back(p.step);
    r.eval_train.push_back(p.train_loss);
    r.eval_val.push_back(p.val_loss);
  }
  const size_t per = static_cast<size_t>(l.meta.n_layer * l.meta.n_head);
  r.attn_step = l.attn_step;
  for (size_t i = 0; i < l.attn_step.size(); ++i)
    r.attn_max.push_back(*std::max_element(l.attn_values.begin() + i * per, l.attn_values.begin() + (i + 1) * per));
  return r;
}

RunSummary summarize(const LoadedLog& l) {
  RunSummary s;
  s.config = l.meta.config_yaml;
  s.status = l.status;
  s.version = l.meta.version;
  s.git_commit = l.meta.git_commit;
  s.seed = l.meta.seed;
  s.train_points = static_cast<int64_t>(l.train.size());
  if (!l.train.empty()) {
    s.last_step = l.train.back().step;
    s.last_train_loss = l.train.back().loss;
  }
  std::vector<double> v;
  for (const TrainPoint& p : l.train) v.push_back(p.loss);
  s.best_train_loss = min_finite(v);
  if (!l.eval.empty()) s.last_val_loss = l.eval.back().val_loss;
  const size_t per = static_cast<size_t>(l.meta.n_layer * l.meta.n_head);
  if (!l.attn_step.empty()) {
    s.max_logit_step = l.attn_step.back();
    const float* last = l.attn_values.data() + (l.attn_step.size() - 1) * per;
    for (int layer = 0; layer < l.meta.n_layer; ++layer)
      s.last_max_logit_per_layer.push_back(
          *std::max_element(last + layer * l.meta.n_head, last + (layer + 1) * l.meta.n_head));
    s.peak_max_logit = -std::numeric_limits<float>::infinity();
    for (float v : l.attn_values)
      if (std::isfinite(v)) s.peak_max_logit = std::max(s.peak_max_logit, v);
  }
  for (int64_t c : l.attn_clipped) s.clipped_steps += c > 0;
  for (const EvalPoint& p : l.eval)
    if (std::isfinite(p.val_loss) && (!s.best_val_loss || p.val_loss < *s.best_val_loss)) {
      s.best_val_loss = p.val_loss;
      s.best_val_step = p.step;
    }
  return s;
}

}  // namespace attnlab
