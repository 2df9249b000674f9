#pragma once
// Muon [Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"] with
// Moonlight's update-RMS matching [Liu et al. 2025, "Muon is Scalable for LLM Training"], as Kimi
// K2 trains with it. The blocks' matrices (Role::matrix) take Muon steps; every other parameter
// (embeddings, gains, biases) takes AdamW steps (optimizer.beta1/beta2/eps) at the scheduled lr.
// Per matrix W [R, C] with grad g, t = step count from 1, η = lr · muon.lr / optimizer.lr (the
// schedule applied to Muon's own peak learning rate):
//   b ← μ·b + g                         (momentum buffer, μ = muon.momentum)
//   u = g + μ·b   (nesterov)  or  u = b
//   o = NS5(u)                          (≈ U Vᵀ of u = U Σ Vᵀ: every singular value sent near 1)
//   W ← W·(1 − η·λ) − η · 0.2·√max(R, C) · o       (λ = optimizer.weight_decay, if the role decays)
// NS5 (Newton–Schulz, quintic): X = u / (‖u‖_F + 1e-7), transposed so that rows ≤ cols; ns_steps
// times A = X·Xᵀ, X ← a·X + (b·A + c·A·A)·X with (a, b, c) = (3.4445, −4.7750, 2.0315); transposed
// back. The products are oneDNN matmuls (bf16 operands under precision.matmul: bf16), batched over
// every matrix of the same (oriented) shape: a model's 4·n_layer attention projections run as one
// product per iteration step instead of 4·n_layer small ones.
#include "optim/optimizer.h"

namespace attnlab {

struct MuonConfig {
  float lr_ratio = 20.f;  // muon.lr / optimizer.lr: Muon's learning rate relative to the schedule's
  float momentum = 0.95f;
  bool nesterov = true;
  int ns_steps = 5;
  // The AdamW of the parameters Muon does not take; its weight decay and decay roles apply to
  // Muon's matrices too.
  AdamWConfig adamw;
};

// NS5 in place on `batch` matrices [m, n] (m <= n) stored one after another in x; each is first
// divided by its Frobenius norm (+ 1e-7). scratch holds ns_batch_scratch_floats(batch, m, n).
int64_t ns_batch_scratch_floats(int64_t batch, int64_t m, int64_t n);
void newton_schulz5_wide(float* x, int64_t batch, int64_t m, int64_t n, int steps, float* scratch);
// o = NS5(u) for one u [rows, cols] (row stride cols), either orientation; scratch holds
// ns_scratch_floats(rows, cols) floats.
int64_t ns_scratch_floats(int64_t rows, int64_t cols);
void newton_schulz5(float* o, const float* u, int64_t rows, int64_t cols, int steps, float* scratch);

class Muon final : public Optimizer {
 public:
  Muon(ParamStore& store, MuonConfig cfg);
  ~Muon() override;
  const char* name() const override { return "muon"; }
  void step(float lr) override;
  // "momentum" for Muon's matrices; "m" and "v" for the AdamW parameters.
  std::vector<Slot> slots() override;
  // Whether p takes Muon steps (a trainable matrix of rank 2).
  static bool takes_muon(const Param& p) { return p.role == Role::matrix && p.shape.rank == 2; }

 private:
  // The trainable Muon matrices of one oriented shape [m, n] (m <= n), orthogonalised together.
  struct Group {
    int64_t m, n;
    std::vector<size_t> params;  // indices into the store's params, in store order
    float* x;                    // [params.size(), m, n]
  };
  MuonConfig cfg_;
  float* block_ = nullptr;    // per parameter: momentum (Muon) or m, v (AdamW), in store order
  float* groups_block_ = nullptr;  // the groups' x
  float* scratch_ = nullptr;  // NS5 scratch of the largest group, then one matrix for (un)transposing
  std::vector<int64_t> state_;  // offset of each parameter's state in block_
  std::vector<bool> decays_;
  std::vector<Group> groups_;
};

}  // namespace attnlab
