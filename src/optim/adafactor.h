#pragma once
// Adafactor [Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory
// Cost"], with the defaults of the common implementations. Per trainable parameter θ with grad g,
// at step t (from 1):
//   β2ₜ = 1 − t^(−decay_rate)
//   ρₜ  = min(1e-2, 1/√t) if relative_step, else the scheduled lr
//   αₜ  = ρₜ · max(eps2, RMS(θ)) if multiply_by_parameter_scale, else ρₜ
//   G   = g² + eps1
//   factored (rank 2, both dims ≥ min_dim_size_to_factor), θ: [R, C]:
//       r ← β2ₜ r + (1 − β2ₜ) mean_c G     (R values)      c ← β2ₜ c + (1 − β2ₜ) mean_r G   (C values)
//       u = g / √(r_i c_j / mean(r))
//   otherwise:  v ← β2ₜ v + (1 − β2ₜ) G;   u = g / √v
//   u ← u / max(1, RMS(u) / clipping_threshold)
//   u ← αₜ u;   with beta1 > 0:  m ← β1 m + (1 − β1) u;  u = m
//   θ ← θ (1 − ρₜ λ) − u                    (λ = optimizer.weight_decay; 0 unless the role decays)
// Weight decay is decoupled and proportional to θ, so scaling θ by k scales every term by k
// (docs/query_scaling.md explains why that matters).
#include "optim/optimizer.h"

namespace attnlab {

struct AdafactorConfig {
  float decay_rate = 0.8f;
  float eps1 = 1e-30f;
  float eps2 = 1e-3f;
  float clipping_threshold = 1.f;
  bool multiply_by_parameter_scale = true;
  bool relative_step = false;
  int min_dim_size_to_factor = 128;
  float beta1 = 0.f;
  float weight_decay = 0.f;
  std::vector<Role> decay_roles{Role::matrix};
};

class Adafactor final : public Optimizer {
 public:
  Adafactor(ParamStore& store, AdafactorConfig cfg);
  ~Adafactor() override;
  const char* name() const override { return "adafactor"; }
  void step(float lr) override;
  std::vector<Slot> slots() override;
  bool factored(const Param& p) const;

 private:
  struct State {
    float *r = nullptr, *c = nullptr, *v = nullptr, *m = nullptr;
  };
  AdafactorConfig cfg_;
  std::vector<State> state_;  // per parameter, in store order
  float* block_ = nullptr;
  float* scratch_ = nullptr;  // the update u of the largest parameter
};

}  // namespace attnlab
