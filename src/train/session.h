#pragma once
// A Session is everything one run works with: the resolved config, the vocabulary (and, when
// loaded, the corpus and its split), the parameters, the model, the optimizer, the schedule and
// the progress counters. Checkpoints save and restore exactly the part that changes.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/batch_sampler.h"
#include "data/corpus.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace attnlab {

struct RunProgress {
  int64_t step = 0;            // completed optimizer steps
  uint64_t train_batches = 0;  // the train sampler's counter
};

// The next batch from a sampler: inputs x and targets y [B, T], allocated in the current arena.
struct Batch {
  int32_t* x;
  int32_t* y;
};
Batch draw_batch(BatchSampler& sampler, int B, int T);

class Session {
 public:
  // Loads data.path, builds the model from the config, initialises parameters from run.seed.
  static std::unique_ptr<Session> from_config(const LoadedConfig& cfg);
  // Rebuilds the session a checkpoint was saved from: its stored config (with `overrides`
  // applied), its vocabulary, parameters, optimizer state and counters. The corpus is loaded
  // only when load_data (eval needs it; sample does not).
  static std::unique_ptr<Session> from_checkpoint(const std::string& path, const std::vector<std::string>& overrides,
                                                  bool load_data);

  // Writes the checkpoint atomically (temporary file, then rename).
  void save_checkpoint(const std::string& path) const;
  // Restores parameters, optimizer state and counters from a checkpoint of the same model;
  // CheckpointError naming what differs otherwise.
  void load_checkpoint(const std::string& path);
  // train.init_from: parameters by name from a checkpoint (shapes must match; the model may have
  // parameters the checkpoint lacks, which keep their init). Step, optimizer state and the data
  // position stay fresh. Returns the names of the parameters not in the checkpoint.
  std::vector<std::string> init_from_checkpoint(const std::string& path);

  // Mean loss over `iters` batches of a split, drawn from a sampler reset to batch 0: the same
  // batches at every evaluation. No grad; dropout off.
  double evaluate(std::span<const int32_t> tokens, const std::string& stream, int iters);

  LoadedConfig config;
  // The resolved config stored in the checkpoint load_checkpoint last read (empty before).
  std::string checkpoint_config;
  Vocab vocab;
  std::optional<Corpus> corpus;
  Split split;
  ParamStore store;
  std::unique_ptr<Transformer> model;
  std::unique_ptr<Optimizer> optimizer;
  Schedule schedule;
  RunProgress progress;

  Session(const LoadedConfig& cfg, Vocab v, std::optional<Corpus> c);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

 private:
  // Kept across evaluations: a fresh arena per evaluation would fault its pages in every time.
  Arena eval_arena_;
};

}  // namespace attnlab
