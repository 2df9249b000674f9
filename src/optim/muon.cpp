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

int64_t ns_batch_scratch_floats(int64_t batch, int64_t m, int64_t n) {
  return batch * (m * n + 3 * m * m);  // X's successor [m, n]; A, A·A and b·A + c·A·A [m, m]
}

void newton_schulz5_wide(float* x, int64_t batch, int64_t m, int64_t n, int steps, float* scratch) {
  constexpr float a = 3.4445f, b = -4.7750f, c = 2.0315f;
  ATTN_CHECK(m <= n, "newton_schulz5_wide: [", m, " x ", n, "] is not wide");
  const int64_t mn = m * n, mm = m * m, total = batch * mn;
  for (int64_t i = 0; i < batch; ++i) {
    float* xi = x + i * mn;
    double ss = 0;
#pragma omp parallel for simd reduction(+ : ss) if (mn > kernels::kParallelMin)
    for (int64_t j = 0; j < mn; ++j) ss += double(xi[j]) * double(xi[j]);
    const float inv = float(1.0 / (std::sqrt(ss) + 1e-7));
#pragma omp parallel for simd if (mn > kernels::kParallelMin)
    for (int64_t j = 0; j < mn; ++j) xi[j] *= inv;
  }
  float* xn = scratch;
  float* A = xn + total;
  float* AA = A + batch * mm;
  float* P = AA + batch * mm;
  float* cur = x;
  for (int it = 0; it < steps; ++it) {
    kernels::gemm_batched(batch, false, true, m, m, n, cur, n, mn, cur, n, mn, A, m, mm, false);  // A = X·Xᵀ
    kernels::gemm_batched(batch, false, false, m, m, m, A, m, mm, A, m, mm, AA, m, mm, false);    // A·A
#pragma omp parallel for simd if (batch * mm > kernels::kParallelMin)
    for (int64_t i = 0; i < batch * mm; ++i) P[i] = b * A[i] + c * AA[i];
    float* next = cur == x ? xn : x;
#pragma omp parallel for simd if (total > kernels::kParallelMin)
    for (int64_t i = 0; i < total; ++i) next[i] = a * cur[i];
    kernels::gemm_batched(batch, false, false, m, n, m, P, m, mm, cur, n, mn, next, n, mn, true);  // + (bA + cA²)·X
    cur = next;
  }
  if (cur != x) std::memcpy(x, cur, size_t(total) * sizeof(float));
}

int64_t ns_scratch_floats(int64_t rows, int64_t cols) {
  const int64_t m = std::min(rows, cols), n = std::max(rows, cols);
  return m * n + ns_batch_scratch_floats(1, m, n);
}

void newton_schulz5(float* o, const float* u, int64_t rows, int64_t cols, int steps, float* scratch) {
  const bool wide = rows <= cols;
  const int64_t m = wide ? rows : cols, n = wide ? cols : rows;
  float* x = scratch;
  if (wide) std::memcpy(x, u, size_t(m * n) * sizeof(float));
  else kernels::transpose(x, n, u, cols, rows, cols);  // x [cols, rows] = uᵀ
  newton_schulz5_wide(x, 1, m, n, steps, x + m * n);
  if (wide) std::memcpy(o, x, size_t(m * n) * sizeof(float));
  else kernels::transpose(o, cols, x, n, m, n);  // o [rows, cols] = xᵀ
}

Muon::Muon(ParamStore& store, MuonConfig cfg) : Optimizer(store, cfg.adamw.decay_roles), cfg_(std::move(cfg)) {
  ATTN_CHECK(cfg_.ns_steps >= 0, "muon: ns_steps must be >= 0");
  int64_t total = 0;
  const auto& ps = store.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const Param* p = ps[i];
    state_.push_back(total);
    decays_.push_back(decays(*p));
    total += takes_muon(*p) ? p->numel() : 2 * p->numel();
    if (!takes_muon(*p) || p->frozen) continue;
    const int64_t m = std::min(p->shape[0], p->shape[1]), n = std::max(p->shape[0], p->shape[1]);
    auto g = std::find_if(groups_.begin(), groups_.end(), [&](const Group& gr) { return gr.m == m && gr.n == n; });
    if (g == groups_.end()) g = groups_.insert(groups_.end(), Group{m, n, {}, nullptr});
    g->params.push_back(i);
  }
  block_ = static_cast<float*>(aligned_alloc_bytes(size_t(std::max<int64_t>(total, 1)) * sizeof(float)));
  std::memset(block_, 0, size_t(std::max<int64_t>(total, 1)) * sizeof(float));
  int64_t group_floats = 0, scratch = 0, largest = 0;
  for (const Group& g : groups_) {
    const int64_t b = int64_t(g.params.size());
    group_floats += b * g.m * g.n;
    scratch = std::max(scratch, ns_batch_scratch_floats(b, g.m, g.n));
    largest = std::max(largest, g.m * g.n);
  }
  groups_block_ = static_cast<float*>(aligned_alloc_bytes(size_t(std::max<int64_t>(group_floats, 1)) * sizeof(float)));
  float* x = groups_block_;
  for (Group& g : groups_) {
    g.x = x;
    x += int64_t(g.params.size()) * g.m * g.n;
  }
  scratch_ = static_cast<float*>(aligned_alloc_bytes(size_t(std::max<int64_t>(scratch + largest, 1)) * sizeof(float)));
}

Muon::~Muon() {
  aligned_free(block_);
  aligned_free(groups_block_);
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
  const float b1 = cfg_.adamw.beta1, b2 = cfg_.adamw.beta2;
  const float bc1 = 1.f - std::pow(b1, float(t_)), bc2_sqrt = std::sqrt(1.f - std::pow(b2, float(t_)));
  const float eta = lr * cfg_.lr_ratio, mu = cfg_.momentum;
  const bool nesterov = cfg_.nesterov;
  const auto& ps = store_.params();
  for (size_t i = 0; i < ps.size(); ++i) {  // the AdamW parameters
    const Param* p = ps[i];
    if (p->frozen || takes_muon(*p)) continue;
    const int64_t n = p->numel();
    float* s = block_ + state_[i];
    adamw_update(p->data, p->grad, s, s + n, n, b1, b2, cfg_.adamw.eps, lr / bc1, bc2_sqrt,
                 decays_[i] ? 1.f - lr * cfg_.adamw.weight_decay : 1.f);
  }
  for (Group& g : groups_) {
    const int64_t mn = g.m * g.n;
    float* tmp = scratch_ + ns_batch_scratch_floats(int64_t(g.params.size()), g.m, g.n);  // one matrix
    // b ← μ·b + g;  u = g + μ·b (Nesterov) or b, into the group's slot (transposed when tall).
    for (size_t k = 0; k < g.params.size(); ++k) {
      const Param* p = ps[g.params[k]];
      float* s = block_ + state_[g.params[k]];
      const float* grad = p->grad;
      const bool wide = p->shape[0] <= p->shape[1];
      float* u = wide ? g.x + int64_t(k) * mn : tmp;
#pragma omp parallel for simd if (mn > kernels::kParallelMin)
      for (int64_t j = 0; j < mn; ++j) {
        s[j] = mu * s[j] + grad[j];
        u[j] = nesterov ? grad[j] + mu * s[j] : s[j];
      }
      if (!wide) kernels::transpose(g.x + int64_t(k) * mn, p->shape[0], tmp, p->shape[1], p->shape[0], p->shape[1]);
    }
    newton_schulz5_wide(g.x, int64_t(g.params.size()), g.m, g.n, cfg_.ns_steps, scratch_);
    for (size_t k = 0; k < g.params.size(); ++k) {
      const Param* p = ps[g.params[k]];
      const int64_t R = p->shape[0], C = p->shape[1];
      const float* o = g.x + int64_t(k) * mn;
      if (R > C) {  // back to [R, C]
        kernels::transpose(tmp, C, o, R, C, R);
        o = tmp;
      }
      const float decay = decays_[g.params[k]] ? 1.f - eta * cfg_.adamw.weight_decay : 1.f;
      const float step = eta * 0.2f * std::sqrt(float(std::max(R, C)));
      float* w = p->data;
#pragma omp parallel for simd if (mn > kernels::kParallelMin)
      for (int64_t j = 0; j < mn; ++j) w[j] = w[j] * decay - step * o[j];
    }
  }
}

}  // namespace attnlab
