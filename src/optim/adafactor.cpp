#include "optim/adafactor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/check.h"

namespace attnlab {

bool Adafactor::factored(const Param& p) const {
  return p.shape.rank == 2 && p.shape[0] >= cfg_.min_dim_size_to_factor && p.shape[1] >= cfg_.min_dim_size_to_factor;
}

Adafactor::Adafactor(ParamStore& store, AdafactorConfig cfg) : Optimizer(store, cfg.decay_roles), cfg_(std::move(cfg)) {
  int64_t total = 0, largest = 1;
  auto sizes = [&](const Param& p) {
    const int64_t stats = factored(p) ? p.shape[0] + p.shape[1] : p.numel();
    return stats + (cfg_.beta1 > 0 ? p.numel() : 0);
  };
  for (const Param* p : store.params()) {
    total += sizes(*p);
    largest = std::max(largest, p->numel());
  }
  block_ = static_cast<float*>(aligned_alloc_bytes(std::max<int64_t>(total, 1) * sizeof(float)));
  std::memset(block_, 0, std::max<int64_t>(total, 1) * sizeof(float));
  scratch_ = static_cast<float*>(aligned_alloc_bytes(largest * sizeof(float)));
  float* next = block_;
  for (const Param* p : store.params()) {
    State s;
    if (factored(*p)) {
      s.r = next;
      s.c = next + p->shape[0];
      next += p->shape[0] + p->shape[1];
    } else {
      s.v = next;
      next += p->numel();
    }
    if (cfg_.beta1 > 0) {
      s.m = next;
      next += p->numel();
    }
    state_.push_back(s);
  }
}

Adafactor::~Adafactor() {
  aligned_free(block_);
  aligned_free(scratch_);
}

std::vector<Optimizer::Slot> Adafactor::slots() {
  std::vector<Slot> out;
  const auto& ps = store_.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    const Param* p = ps[i];
    const State& s = state_[i];
    if (s.r) {
      out.push_back({"vr", p, s.r, Shape{p->shape[0]}});
      out.push_back({"vc", p, s.c, Shape{p->shape[1]}});
    } else {
      out.push_back({"v", p, s.v, p->shape});
    }
    if (s.m) out.push_back({"m", p, s.m, p->shape});
  }
  return out;
}

void Adafactor::step(float lr) {
  ++t_;
  const double t = double(t_);
  const float beta2t = float(1.0 - std::pow(t, -double(cfg_.decay_rate)));
  const float rho = cfg_.relative_step ? float(std::min(1e-2, 1.0 / std::sqrt(t))) : lr;
  const float eps1 = cfg_.eps1;
  const auto& ps = store_.params();
  for (size_t pi = 0; pi < ps.size(); ++pi) {
    const Param* p = ps[pi];
    if (p->frozen) continue;
    const State& s = state_[pi];
    const int64_t n = p->numel();
    float *w = p->data, *g = p->grad, *u = scratch_;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(w[i]) * w[i];
    const float rms_w = float(std::sqrt(ss / double(n)));
    const float alpha = cfg_.multiply_by_parameter_scale ? rho * std::max(cfg_.eps2, rms_w) : rho;
    if (s.r) {
      const int64_t R = p->shape[0], C = p->shape[1];
      // r ← β2ₜ r + (1 − β2ₜ) mean_c G;  c ← β2ₜ c + (1 − β2ₜ) mean_r G   (c summed row by row, in order)
      std::fill(u, u + C, 0.f);
      for (int64_t i = 0; i < R; ++i) {
        const float* gr = g + i * C;
        double row = 0;
        for (int64_t j = 0; j < C; ++j) {
          const float G = gr[j] * gr[j] + eps1;
          row += G;
          u[j] += G;
        }
        s.r[i] = beta2t * s.r[i] + (1.f - beta2t) * float(row / double(C));
      }
      for (int64_t j = 0; j < C; ++j) s.c[j] = beta2t * s.c[j] + (1.f - beta2t) * u[j] / float(R);
      double rsum = 0;
      for (int64_t i = 0; i < R; ++i) rsum += s.r[i];
      const float rmean = float(rsum / double(R));
      for (int64_t i = 0; i < R; ++i) {
        const float ri = 1.f / std::sqrt(s.r[i] / rmean);
        for (int64_t j = 0; j < C; ++j) u[i * C + j] = g[i * C + j] * ri / std::sqrt(s.c[j]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        s.v[i] = beta2t * s.v[i] + (1.f - beta2t) * (g[i] * g[i] + eps1);
        u[i] = g[i] / std::sqrt(s.v[i]);
      }
    }
    double us = 0;
    for (int64_t i = 0; i < n; ++i) us += double(u[i]) * u[i];
    const float rms_u = float(std::sqrt(us / double(n)));
    const float k = alpha / std::max(1.f, rms_u / cfg_.clipping_threshold);
    const float decay = decays(*p) ? 1.f - rho * cfg_.weight_decay : 1.f;
    if (s.m) {
      const float b1 = cfg_.beta1;
      for (int64_t i = 0; i < n; ++i) {
        s.m[i] = b1 * s.m[i] + (1.f - b1) * k * u[i];
        w[i] = w[i] * decay - s.m[i];
      }
    } else {
      for (int64_t i = 0; i < n; ++i) w[i] = w[i] * decay - k * u[i];
    }
  }
}

}  // namespace attnlab
