#include "optim/muon.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include "kernels/transpose.h"
#include "util/check.h"

namespace attnlab {

int64_t ns_scratch_floats(int64_t rows, int64_t cols) {
  const int64_t m = std::min(rows, cols), n = std::max(rows, cols);
  return 2 * m * n + 3 * m * m;  // X and its successor [m, n]; A, A·A and b·A + c·A·A [m, m]
}

void newton_schulz5(float* o, const float* u, int64_t rows, int64_t cols, int steps, float* scratch) {
  constexpr float a = 3.4445f, b = -4.7750f, c = 2.0315f;
  const bool wide = rows <= cols;  // work on the wide orientation: X [m, n], m <= n
  const int64_t m = wide ? rows : cols, n = wide ? cols : rows, mn = m * n;
  float* x = scratch;
  float* xn = x + mn;
  float* A = xn + mn;
  float* AA = A + m * m;
  float* P = AA + m * m;
  double ss = 0;
#pragma omp parallel for simd reduction(+ : ss) if (mn > kernels::kParallelMin)
  for (int64_t i = 0; i < mn; ++i) ss += double(u[i]) * double(u[i]);
  const float inv = float(1.0 / (std::sqrt(ss) + 1e-7));
  if (wide) {
    std::memcpy(x, u, size_t(mn) * sizeof(float));
  } else {
    kernels::transpose(x, n, u, cols, rows, cols);  // x [cols, rows] = uᵀ
  }
#pragma omp parallel for simd if (mn > kernels::kParallelMin)
  for (int64_t i = 0; i < mn; ++i) x[i] *= inv;
  for (int it = 0; it < steps; ++it) {
    kernels::gemm(false, true, m, m, n, x, n, x, n, A, m, false);    // A = X·Xᵀ
    kernels::gemm(false, false, m, m, m, A, m, A, m, AA, m, false);  // A·A
#pragma omp parallel for simd if (m * m > kernels::kParallelMin)
    for (int64_t i = 0; i < m * m; ++i) P[i] = b * A[i] + c * AA[i];
#pragma omp parallel for simd if (mn > kernels::kParallelMin)
    for (int64_t i = 0; i < mn; ++i) xn[i] = a * x[i];
    kernels::gemm(false, false, m, n, m, P, m, x, n, xn, n, true);  // X ← a·X + (b·A + c·A·A)·X
    std::swap(x, xn);
  }
  if (wide) {
    std::memcpy(o, x, size_t(mn) * sizeof(float));
  } else {
    kernels::transpose(o, cols, x, n, m, n);  // o [rows, cols] = xᵀ
  }
}

Muon::Muon(ParamStore& store, MuonConfig cfg) : Optimizer(store, cfg.decay_roles), cfg_(std::move(cfg)) {
  ATTN_CHECK(cfg_.ns_steps >= 0, "muon: ns_steps must be >= 0");
  int64_t total = 0, scratch = 0;
  for (const Param* p : store.params()) {
    state_.push_back(total);
    decays_.push_back(decays(*p));
    if (takes_muon(*p)) {
      total += p->numel();
      scratch = std::max(scratch, 2 * p->numel() + ns_scratch_floats(p->shape[0], p->shape[1]));
    } else {
      total += 2 * p->numel();
    }
  }
  block_ = static_cast<float*>(aligned_alloc_bytes(size_t(std::max<int64_t>(total, 1)) * sizeof(float)));
  std::memset(block_, 0, size_t(std::max<int64_t>(total, 1)) * sizeof(float));
  scratch_ = static_cast<float*>(aligned_alloc_bytes(size_t(std::max<int64_t>(scratch, 1)) * sizeof(float)));
}

Muon::~Muon() {
  aligned_free(block_);
  aligned_free(scratch_);
}

std::vector<Optimizer::Slot> Muon::slots() {
  std::vector<Slot> out;
  const auto& ps = store_.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const Param* p = ps[i];
    float* s = block_ + state_[i];
    if (takes_muon(*p)) {
      out.push_back({"momentum", p, s, p->shape});
    } else {
      out.push_back({"m", p, s, p->shape});
      out.push_back({"v", p, s + p->numel(), p->shape});
    }
  }
  return out;
}

void Muon::step(float lr) {
  ++t_;
  const float b1 = cfg_.beta1, b2 = cfg_.beta2;
  const float bc1 = 1.f - std::pow(b1, float(t_)), bc2_sqrt = std::sqrt(1.f - std::pow(b2, float(t_)));
  const float eta = lr * cfg_.lr_ratio, mu = cfg_.momentum;
  const auto& ps = store_.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const Param* p = ps[i];
    if (p->frozen) continue;
    const int64_t n = p->numel();
    float* w = p->data;
    const float* g = p->grad;
    float* s = block_ + state_[i];
    if (!takes_muon(*p)) {
      adamw_update(w, g, s, s + n, n, b1, b2, cfg_.eps, lr / bc1, bc2_sqrt,
                   decays_[i] ? 1.f - lr * cfg_.weight_decay : 1.f);
      continue;
    }
    // b ← μ·b + g;  u = g + μ·b (Nesterov) or b
    float* u = scratch_;
    float* o = u + n;
    const bool nesterov = cfg_.nesterov;
#pragma omp parallel for simd if (n > kernels::kParallelMin)
    for (int64_t j = 0; j < n; ++j) {
      s[j] = mu * s[j] + g[j];
      u[j] = nesterov ? g[j] + mu * s[j] : s[j];
    }
    const int64_t R = p->shape[0], C = p->shape[1];
    newton_schulz5(o, u, R, C, cfg_.ns_steps, o + n);
    const float decay = decays_[i] ? 1.f - eta * cfg_.weight_decay : 1.f;
    const float step = eta * 0.2f * std::sqrt(float(std::max(R, C)));
#pragma omp parallel for simd if (n > kernels::kParallelMin)
    for (int64_t j = 0; j < n; ++j) w[j] = w[j] * decay - step * o[j];
  }
}

}  // namespace attnlab
