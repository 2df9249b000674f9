#pragma once
// One optimizer step, exactly as `attnlab train` takes it and `attnlab bench` times it:
// zero grads; per micro-batch draw a batch, forward, backward (loss scaled by 1/grad_accum);
// global grad norm; clip; optimizer update with the scheduled learning rate; then, with
// train.qk_clip.enabled, the QK-Clip pass from the step's own max logits.
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "data/batch_sampler.h"
#include "train/qk_clip.h"
#include "train/session.h"

namespace attnlab {

struct StepResult {
  double loss = 0;       // mean over micro-batches (the non-finite value when the loss diverged)
  double grad_norm = 0;  // before clipping
  float lr = 0;
  std::string diverged;  // non-empty: the non-finite loss or gradient, named; nothing was updated
  QkClipStats qk_clip;   // what the QK-Clip pass after the update did (zeros when it is off)
};

class Stepper {
 public:
  explicit Stepper(Session& s);  // the train sampler continues from s.progress.train_batches
  StepResult step();             // advances s.progress unless the step diverged
  // Per layer and head, the max attention logit of the last step (max over its micro-batches).
  const std::vector<float>& max_logits() const { return max_logits_; }
  const Arena& arena() const { return arena_; }
  const Tape& tape() const { return tape_; }

 private:
  Session& s_;
  BatchSampler sampler_;
  Arena arena_;
  Tape tape_;
  std::vector<float> max_logits_;
};

}  // namespace attnlab
