#pragma once
// Optimizers update a ParamStore's trainable parameters from its grads. Their state is a list of
// named tensors per parameter (AdamW: m and v of the parameter's shape; Adafactor: row and column
// statistics for factored matrices), which checkpoints save as "optim/<optimizer>/<slot>/<param>".
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
  // Whether weight decay applies to a parameter (false for names matching a no-decay pattern).
  bool decays(const Param& p) const;

 protected:
  Optimizer(ParamStore& store, std::vector<std::string> no_decay);
  ParamStore& store_;
  std::vector<std::string> no_decay_;
  int64_t t_ = 0;
};

// AdamW [Loshchilov & Hutter 2019], as torch.optim.AdamW computes it, per trainable element:
//   θ ← θ − lr·λ·θ                                  (decoupled decay; λ = 0 for no-decay names)
//   m ← β1·m + (1 − β1)·g        v ← β2·v + (1 − β2)·g²
//   θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.99f, eps = 1e-8f, weight_decay = 0.1f;
  std::vector<std::string> no_decay;
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
