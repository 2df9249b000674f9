#pragma once
// `attnlab train`: the training loop with evaluation, progress, the HDF5 run log, checkpoints,
// resume, interruption and divergence handling. Files go to <run.out_dir>/<run.name>/:
// metrics.h5 (the run log, docs/run_files.md), checkpoint.h5, config.yaml (resolved).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "config/config.h"

namespace attnlab {

struct TrainOptions {
  bool quiet = false;
  // Stop as if interrupted once this many steps are complete (tests; -1: never).
  int64_t stop_after = -1;
  // Progress: a live line on a terminal, plain lines otherwise.
  bool live_progress = false;
  // The resolved config on stderr once every input has been checked (not with quiet).
  bool print_config = false;
  // Called with the step after each checkpoint is written (tests: what a kill right then leaves).
  std::function<void(int64_t)> after_checkpoint;
};

struct TrainResult {
  enum Status { completed, interrupted } status = completed;
  int64_t steps = 0;              // completed optimizer steps
  std::vector<double> losses;     // train loss of each step run in this process, in order
  double final_train_loss = 0, final_val_loss = 0;
  std::string run_dir, metrics_path, checkpoint_path;
  std::string sample_text;
};

// Throws ConfigError/DataError/CheckpointError for bad input, DivergedError (after writing the
// log with status "diverged") for a non-finite loss or gradient.
TrainResult train(const LoadedConfig& cfg, const TrainOptions& opt);

}  // namespace attnlab
