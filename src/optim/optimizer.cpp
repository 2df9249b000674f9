#include "optim/optimizer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/check.h"

namespace attnlab {

Optimizer::Optimizer(ParamStore& store, std::vector<Role> decay_roles)
    : store_(store), decay_roles_(std::move(decay_roles)) {
  ATTN_CHECK(store.finalized(), "optimizer: the ParamStore must be finalized first");
}

bool Optimizer::decays(const Param& p) const {
  return std::find(decay_roles_.begin(), decay_roles_.end(), p.role) != decay_roles_.end();
}

AdamW::AdamW(ParamStore& store, AdamWConfig cfg) : Optimizer(store, cfg.decay_roles), cfg_(std::move(cfg)) {
  const size_t bytes = std::max<int64_t>(store.total(), 1) * sizeof(float);
  m_ = static_cast<float*>(aligned_alloc_bytes(bytes));
  v_ = static_cast<float*>(aligned_alloc_bytes(bytes));
  std::memset(m_, 0, bytes);
  std::memset(v_, 0, bytes);
  for (const Param* p : store.params()) decays_.push_back(decays(*p));
}

AdamW::~AdamW() {
  aligned_free(m_);
  aligned_free(v_);
}

std::vector<Optimizer::Slot> AdamW::slots() {
  std::vector<Slot> out;
  for (const Param* p : store_.params()) {
    out.push_back({"m", p, m_ + p->offset, p->shape});
    out.push_back({"v", p, v_ + p->offset, p->shape});
  }
  return out;
}

void AdamW::step(float lr) {
  ++t_;
  const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
  const float bc1 = 1.f - std::pow(b1, float(t_)), bc2_sqrt = std::sqrt(1.f - std::pow(b2, float(t_)));
  const float step_size = lr / bc1, decayed = 1.f - lr * cfg_.weight_decay;
  const auto& ps = store_.params();
  const int64_t total = store_.total();
  float *w0 = store_.data(), *g0 = store_.grad();
  // One pass over the flat block (NOTE [param layout]): each thread updates a fixed range of
  // elements, visiting the parameters that overlap it. The update is elementwise, so the result
  // does not depend on the split.
#pragma omp parallel if (total > (1 << 15))
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t lo = total * t / nt, hi = total * (t + 1) / nt;
    for (size_t pi = 0; pi < ps.size(); ++pi) {
      const Param* p = ps[pi];
      const int64_t a = std::max(lo, p->offset), b = std::min(hi, p->offset + p->numel());
      if (p->frozen || a >= b) continue;
      adamw_update(w0 + a, g0 + a, m_ + a, v_ + a, b - a, b1, b2, eps, step_size, bc2_sqrt,
                   decays_[pi] ? decayed : 1.f);
    }
  }
}

double global_grad_norm(const ParamStore& store) {
  // Per parameter in parallel, then summed in name order: the same value whatever the thread count.
  const auto& ps = store.params();
  thread_local std::vector<double> partial_storage;  // reused: no allocation per step
  std::vector<double>& partial = partial_storage;   // the caller's, also inside the team
  partial.assign(ps.size(), 0.0);
#pragma omp parallel for schedule(dynamic, 1) if (store.total() > (1 << 15))
  for (size_t pi = 0; pi < ps.size(); ++pi) {
    const Param* p = ps[pi];
    if (p->frozen) continue;
    const float* g = p->grad;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < p->numel(); ++i) s += double(g[i]) * double(g[i]);
    partial[pi] = s;
  }
  double s = 0;
  for (double x : partial) s += x;
  return std::sqrt(s);
}

float clip_grad_norm(ParamStore& store, double norm, float max_norm) {
  const double coef = double(max_norm) / (norm + 1e-6);
  if (coef >= 1.0) return 1.f;
  const float c = float(coef);
  float* g = store.grad();
  const int64_t n = store.total();
#pragma omp parallel for simd if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) g[i] *= c;
  return c;
}

const Param* first_non_finite(const ParamStore& store, bool values) {
  for (const Param* p : store.params()) {
    const float* x = values ? p->data : p->grad;
    for (int64_t i = 0; i < p->numel(); ++i)
      if (!std::isfinite(x[i])) return p;
  }
  return nullptr;
}

}  // namespace attnlab
