#include "optim/optimizer.h"

#include <cmath>
#include <cstring>

#include "util/check.h"

namespace attnlab {

Optimizer::Optimizer(ParamStore& store, std::vector<std::string> no_decay)
    : store_(store), no_decay_(std::move(no_decay)) {
  ATTN_CHECK(store.finalized(), "optimizer: the ParamStore must be finalized first");
}

bool Optimizer::decays(const Param& p) const {
  for (const auto& pat : no_decay_)
    if (glob_match(pat, p.name)) return false;
  return true;
}

AdamW::AdamW(ParamStore& store, AdamWConfig cfg) : Optimizer(store, cfg.no_decay), cfg_(std::move(cfg)) {
  const size_t bytes = std::max<int64_t>(store.total(), 1) * sizeof(float);
  m_ = static_cast<float*>(aligned_alloc_bytes(bytes));
  v_ = static_cast<float*>(aligned_alloc_bytes(bytes));
  std::memset(m_, 0, bytes);
  std::memset(v_, 0, bytes);
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
  const float step_size = lr / bc1;
  for (const Param* p : store_.params()) {
    if (p->frozen) continue;
    const float decay = decays(*p) ? 1.f - lr * cfg_.weight_decay : 1.f;
    float *w = p->data, *g = p->grad, *m = m_ + p->offset, *v = v_ + p->offset;
    const int64_t n = p->numel();
#pragma omp parallel for simd if (n > (1 << 16))
    for (int64_t i = 0; i < n; ++i) {
      const float gi = g[i];
      m[i] = b1 * m[i] + (1.f - b1) * gi;
      v[i] = b2 * v[i] + (1.f - b2) * gi * gi;
      w[i] = w[i] * decay - step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    }
  }
}

double global_grad_norm(const ParamStore& store) {
  double s = 0;
  for (const Param* p : store.params()) {
    if (p->frozen) continue;
    double ps = 0;
    for (int64_t i = 0; i < p->numel(); ++i) ps += double(p->grad[i]) * p->grad[i];
    s += ps;
  }
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
