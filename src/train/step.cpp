#include "train/step.h"

#include <cmath>
#include <limits>

#include "train/distributed.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

Stepper::Stepper(Session& s)
    : s_(s),
      sampler_(s.split.train, uint64_t(s.config.cfg.run.seed), "data.train"),
      max_logits_(s.model->max_logits().size()) {
  sampler_.set_counter(s.progress.train_batches);
}

StepResult Stepper::step() {
  const RunConfig& cfg = s_.config.cfg;
  const int B = cfg.train.batch_size, T = cfg.model.context, accum = cfg.train.grad_accum;
  const int64_t step = s_.progress.step;  // 0-based index of the step being taken
  ArenaScope arena_scope(arena_);
  TapeScope tape_scope(tape_);
  StepResult r;
  r.lr = float(s_.schedule.at(step));
  s_.store.zero_grad();
  std::fill(max_logits_.begin(), max_logits_.end(), -std::numeric_limits<float>::infinity());
  double loss_sum = 0;
  const int world = dist::size();
  for (int micro = 0; micro < accum; ++micro) {
    arena_.reset();
    // Over MPI: the batch of one process with world·B sequences; this rank trains on its share.
    const Batch b = draw_batch(sampler_, B * world, T);
    const int64_t share = int64_t(dist::rank()) * B * T;
    Tensor loss = s_.model->loss(b.x + share, b.y + share, B, T, uint64_t(cfg.run.seed), uint64_t(step * accum + micro));
    const float l = loss.item();
    if (!std::isfinite(l) && world == 1) {  // over MPI the non-finite mean is caught after the allreduce
      tape_.clear();
      r.loss = l;
      r.diverged = detail::concat("non-finite loss (", l, ") at step ", step + 1);
      return r;
    }
    loss_sum += l;
    backward(loss, 1.f / float(accum));
    const auto& m = s_.model->max_logits();
    for (size_t i = 0; i < max_logits_.size(); ++i) max_logits_[i] = std::max(max_logits_[i], m[i]);
  }
  r.loss = loss_sum / accum;
  PhaseScope optimizer_phase(Phase::optimizer);
  s_.store.settle_grads();
  if (world > 1) {
    // One allreduce over the contiguous gradient block: every rank then takes the same step.
    dist::mean_inplace(s_.store.grad(), s_.store.total());
    dist::max_inplace(max_logits_.data(), int64_t(max_logits_.size()));
    r.loss = dist::mean(r.loss);
    if (!std::isfinite(r.loss)) {
      r.diverged = detail::concat("non-finite loss (", r.loss, ") at step ", step + 1);
      return r;
    }
  }
  // A non-finite gradient makes the norm non-finite: scan for its name only then.
  r.grad_norm = global_grad_norm(s_.store);
  if (!std::isfinite(r.grad_norm)) {
    const Param* bad = first_non_finite(s_.store, false);
    r.diverged = detail::concat("non-finite gradient in ", bad ? bad->name : std::string("?"), " at step ", step + 1);
    return r;
  }
  if (cfg.train.grad_clip > 0) clip_grad_norm(s_.store, r.grad_norm, float(cfg.train.grad_clip));
  s_.optimizer->step(r.lr);
  const auto& qc = cfg.train.qk_clip;
  if (qc.enabled && (qc.until_step == 0 || step < qc.until_step)) {
    PhaseScope clip_phase(Phase::qk_clip);
    r.qk_clip = qk_clip(*s_.model, max_logits_, {float(qc.tau), float(qc.alpha)});
  }
  s_.progress.step = step + 1;
  s_.progress.train_batches = sampler_.counter();
  return r;
}

}  // namespace attnlab
