#pragma once
// Optimizers update a ParamStore's trainable parameters from its grads. Their state is a list of
// named tensors per parameter (AdamW: m and v of the parameter's shape; Adafactor: row and column
// statistics for factored matrices), which checkpoints save as "optim/<optimizer>/<slot>/<param>".
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/param.h"

namespace attnlab {

class Optimizer {
 public:
  struct Slot {
    std::string name;    // "m", "v", "vr", "vc"
    const Param* param;
    float* data;
    Shape shape;
  };
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // One update with learning rate lr; increments the step count first (so t = 1 on the first).
  virtual void step(float lr) = 0;
  virtual std::vector<Slot> slots() = 0;
  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }
  // Whether weight decay applies to a parameter: its role is one of optimizer.decay_roles.
  bool decays(const Param& p) const;

 protected:
  Optimizer(ParamStore& store, std::vector<Role> decay_roles);
  ParamStore& store_;
  std::vector<Role> decay_roles_;
  int64_t t_ = 0;
};

// The AdamW update of elements [0, n) (the formula below), the one loop AdamW and Muon's AdamW
// group share: decay = 1 − lr·λ (or 1), step_size = lr / (1 − β1ᵗ), bc2_sqrt = √(1 − β2ᵗ).
inline void adamw_update(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                         int64_t n, float b1, float b2, float eps, float step_size, float bc2_sqrt, float decay) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    m[i] = b1 * m[i] + (1.f - b1) * gi;
    v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
    w[i] = w[i] * decay - step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

// AdamW [Loshchilov & Hutter 2019], as torch.optim.AdamW computes it, per trainable element:
//   θ ← θ − lr·λ·θ                                  (decoupled decay; λ = 0 unless the role decays)
//   m ← β1·m + (1 − β1)·g        v ← β2·v + (1 − β2)·g²
//   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.99f, eps = 1e-8f, weight_decay = 0.1f;
  std::vector<Role> decay_roles{Role::matrix};
};

class AdamW final : public Optimizer {
 public:
  AdamW(ParamStore& store, AdamWConfig cfg);
  ~AdamW() override;
  const char* name() const override { return "adamw"; }
  void step(float lr) override;
  std::vector<Slot> slots() override;

 private:
  AdamWConfig cfg_;
  float *m_ = nullptr, *v_ = nullptr;
  std::vector<bool> decays_;  // per parameter, in store order
};

// ||g||₂ over every trainable parameter's grad, accumulated in double in a fixed order.
double global_grad_norm(const ParamStore& store);
// g ← g · min(1, max_norm / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_. Returns the factor.
float clip_grad_norm(ParamStore& store, double norm, float max_norm);
// The first parameter whose grad (or value, with values = true) holds a NaN or ±inf, or null.
const Param* first_non_finite(const ParamStore& store, bool values);

}  // namespace attnlab
