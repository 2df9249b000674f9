#pragma once
// The run log <run dir>/metrics.h5: loss curves, eval points and per-head attention max-logits,
// plus the run's config, seed and status. Layout: docs/run_files.md.
// NOTE [run log crash safety]: the log keeps every series in memory, and flush() writes the whole
// file afresh to metrics.h5.tmp, fsyncs it and renames it over metrics.h5. A rename is atomic, so
// after a kill -9 at any moment metrics.h5 is the complete file of the last finished flush (or
// absent before the first). Readers (h5py in a notebook) can open it while the run goes on.
// NOTE [hdf5 threads]: call from one thread.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attnlab {

struct RunLogMeta {
  std::string config_yaml;  // the resolved config, as YAML text
  uint64_t seed = 0;
  std::string version;     // attnlab::kVersion
  std::string git_commit;  // attnlab::kGitCommit
  int n_layer = 1;         // shape of the max-logits records: [n_layer, n_head]
  int n_head = 1;
};

struct TrainPoint {
  int64_t step;
  double loss, lr, grad_norm, tokens_per_s, wall_s;
};

struct EvalPoint {
  int64_t step;
  double train_loss, val_loss;
};

class RunLog {
 public:
  // path is the file (<run dir>/metrics.h5). Starts empty with status "running"; nothing is
  // written before the first flush().
  RunLog(std::string path, RunLogMeta meta);
  // Continues the log of a resumed run: loads path's series and drops points with
  // step > up_to_step (the checkpoint's step). A missing file starts empty; a corrupt file, or
  // one whose max-logits shape differs from meta's n_layer x n_head, is a CheckpointError.
  // The root attributes come from meta; the status is "running" again.
  static RunLog resume(std::string path, RunLogMeta meta, int64_t up_to_step);

  void add_train(const TrainPoint& p);
  void add_eval(int64_t step, double train_loss, double val_loss);
  // n_layer * n_head values, layer-major: values[layer * n_head + head]; with QK-Clip, how many
  // heads the step's pass clipped and 1 − min γ.
  void add_max_logits(int64_t step, std::span<const float> values, int clipped_heads = 0, float gamma_deficit = 0.f);
  // One of: running, completed, diverged, interrupted, failed.
  void set_status(std::string_view s);
  const std::string& status() const { return status_; }
  // The products' forms (kernels/gemm.h, matmul_forms_text), stored as the attribute matmul_forms.
  void set_matmul_forms(std::string text) { matmul_forms_ = std::move(text); }

  // NOTE [run log crash safety]. Rewrites the whole file: cost grows with the log (about
  // 48 bytes per train point), so flush at eval or checkpoint time, not every step.
  // The destructor does not flush.
  void flush();

  const std::string& path() const { return path_; }
  size_t train_points() const { return train_.size(); }
  size_t eval_points() const { return eval_.size(); }
  size_t max_logits_points() const { return attn_step_.size(); }

 private:
  std::string path_;
  RunLogMeta meta_;
  std::string status_ = "running";
  std::string matmul_forms_;
  std::vector<TrainPoint> train_;
  std::vector<EvalPoint> eval_;
  std::vector<int64_t> attn_step_;
  std::vector<float> attn_values_;  // attn_step_.size() * n_layer * n_head
  std::vector<int64_t> attn_clipped_;
  std::vector<float> attn_deficit_;
};

// What `attnlab inspect` shows of a run. last_* are the last logged values (NaN after a
// divergence); best_* are minima over finite values; nullopt when there is none.
struct RunSummary {
  std::string config, status, version, git_commit;
  uint64_t seed = 0;
  int64_t train_points = 0;
  int64_t last_step = -1;  // last train step; -1 without train points
  std::optional<double> last_train_loss, best_train_loss, last_val_loss, best_val_loss;
  int64_t best_val_step = -1;  // -1 without a finite val loss
  // The last attention point: its step (-1 without one), per layer the largest head's max logit,
  // and over the whole log the peak of any head and how many steps QK-Clip clipped some head.
  int64_t max_logit_step = -1;
  std::vector<float> last_max_logit_per_layer;
  float peak_max_logit = 0.f;
  int64_t clipped_steps = 0;
};

// A run log's series, for reports and plots: the summary, the train and eval series, and per
// attention point the largest max logit of any layer and head.
struct RunSeries {
  RunSummary summary;
  std::vector<int64_t> step, eval_step, attn_step;
  std::vector<double> loss, wall_s, eval_train, eval_val, attn_max;
};
RunSeries read_run_series(const std::string& path);

// Reads and validates a metrics.h5. CheckpointError naming the file and object when it is not a
// file, not HDF5, or lacks a dataset or attribute, or its series have unequal lengths.
RunSummary read_run_summary(const std::string& path);

}  // namespace attnlab
