#include <catch2/catch.hpp>

#include <cmath>
#include <map>

#include "optim/adafactor.h"
#include "util/rng.h"

using namespace attnlab;

namespace {

// An independent Adafactor in double, written from the paper's Algorithm 4/5 with the knobs of
// the common implementations; one parameter at a time.
struct OracleParam {
  std::vector<double> w, r, c, v, m;
  int64_t R, C;
  bool factored, decay;
};

void oracle_step(OracleParam& p, const std::vector<double>& g, const AdafactorConfig& cfg, int t, double lr) {
  const double beta2t = 1 - std::pow(double(t), -double(cfg.decay_rate));
  const double rho = cfg.relative_step ? std::min(1e-2, 1 / std::sqrt(double(t))) : lr;
  const int64_t n = int64_t(p.w.size());
  double ss = 0;
  for (double x : p.w) ss += x * x;
  const double alpha = cfg.multiply_by_parameter_scale ? rho * std::max(double(cfg.eps2), std::sqrt(ss / n)) : rho;
  std::vector<double> u(n);
  if (p.factored) {
    for (int64_t i = 0; i < p.R; ++i) {
      double mean = 0;
      for (int64_t j = 0; j < p.C; ++j) mean += (g[i * p.C + j] * g[i * p.C + j] + cfg.eps1) / p.C;
      p.r[i] = beta2t * p.r[i] + (1 - beta2t) * mean;
    }
    for (int64_t j = 0; j < p.C; ++j) {
      double mean = 0;
      for (int64_t i = 0; i < p.R; ++i) mean += (g[i * p.C + j] * g[i * p.C + j] + cfg.eps1) / p.R;
      p.c[j] = beta2t * p.c[j] + (1 - beta2t) * mean;
    }
    double rmean = 0;
    for (double x : p.r) rmean += x / p.R;
    for (int64_t i = 0; i < p.R; ++i)
      for (int64_t j = 0; j < p.C; ++j) u[i * p.C + j] = g[i * p.C + j] / std::sqrt(p.r[i] * p.c[j] / rmean);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      p.v[i] = beta2t * p.v[i] + (1 - beta2t) * (g[i] * g[i] + cfg.eps1);
      u[i] = g[i] / std::sqrt(p.v[i]);
    }
  }
  double us = 0;
  for (double x : u) us += x * x;
  const double clip = std::max(1.0, std::sqrt(us / n) / cfg.clipping_threshold);
  for (int64_t i = 0; i < n; ++i) {
    double upd = alpha * u[i] / clip;
    if (cfg.beta1 > 0) {
      p.m[i] = cfg.beta1 * p.m[i] + (1 - cfg.beta1) * upd;
      upd = p.m[i];
    }
    p.w[i] = p.w[i] * (1 - (p.decay ? rho * cfg.weight_decay : 0.0)) - upd;
  }
}

void run_case(AdafactorConfig cfg) {
  ParamStore s;
  s.add("blocks.0.attn.wq", {130, 129}, Role::matrix, {Init::normal, 0.02f});  // factored
  s.add("blocks.0.mlp.w1", {130, 17}, Role::matrix, {Init::normal, 0.02f});    // a dim < 128: full v
  s.add("blocks.0.norm1.g", {65}, Role::gain, {Init::ones});                   // rank 1
  s.add("tiny", {3}, Role::matrix, {Init::normal, 1e-4f});                     // below the eps2 floor
  s.finalize(7);
  // decay_roles stays {matrix}: the gain gets no decay.
  Adafactor opt(s, cfg);
  REQUIRE(opt.factored(s.at("blocks.0.attn.wq")));
  REQUIRE_FALSE(opt.factored(s.at("blocks.0.mlp.w1")));
  std::map<std::string, OracleParam> oracle;
  for (const Param* p : s.params()) {
    OracleParam o;
    o.w.assign(p->data, p->data + p->numel());
    o.factored = opt.factored(*p);
    o.R = p->shape.rank == 2 ? p->shape[0] : 1;
    o.C = p->shape[-1];
    o.r.assign(o.R, 0.0);
    o.c.assign(o.C, 0.0);
    o.v.assign(p->numel(), 0.0);
    o.m.assign(p->numel(), 0.0);
    o.decay = p->name.find("norm") == std::string::npos;
    oracle[p->name] = o;
  }
  Rng rng(3, 3);
  for (int t = 1; t <= 6; ++t) {
    const double lr = 0.01 / t;
    for (Param* p : s.params()) {
      std::vector<double> g(p->numel());
      // Gradients with very different scales per row, so factoring matters.
      for (int64_t i = 0; i < p->numel(); ++i) {
        p->grad[i] = float(rng.normal() * (1 + (i / p->shape[-1]) % 5) * 1e-3);
        g[i] = p->grad[i];
      }
      oracle_step(oracle[p->name], g, cfg, t, lr);
    }
    opt.step(float(lr));
    for (const Param* p : s.params()) {
      INFO("step " << t << " parameter " << p->name);
      const auto& o = oracle[p->name];
      double err = 0, norm = 0;
      for (int64_t i = 0; i < p->numel(); ++i) {
        err += (p->data[i] - o.w[i]) * (p->data[i] - o.w[i]);
        norm += o.w[i] * o.w[i];
      }
      REQUIRE(std::sqrt(err / norm) < 1e-5);
    }
  }
  // State tensors are exposed by name with the right shapes (checkpoints rely on it).
  int factored_slots = 0;
  for (const auto& slot : opt.slots())
    if (slot.param->name == "blocks.0.attn.wq") {
      factored_slots++;
      if (slot.name == "vr") REQUIRE(slot.shape == Shape{130});
      if (slot.name == "vc") REQUIRE(slot.shape == Shape{129});
    }
  REQUIRE(factored_slots == (cfg.beta1 > 0 ? 3 : 2));
}

}  // namespace

TEST_CASE("adafactor: matches an independent implementation (defaults: factored, param scale, clipping)",
          "[optim][adafactor]") {
  run_case(AdafactorConfig{});
}

TEST_CASE("adafactor: momentum, weight decay, relative step, no parameter scale", "[optim][adafactor]") {
  AdafactorConfig c;
  c.beta1 = 0.9f;
  c.weight_decay = 0.1f;
  run_case(c);
  c.relative_step = true;
  c.multiply_by_parameter_scale = false;
  c.clipping_threshold = 0.5f;
  run_case(c);
}

TEST_CASE("adafactor: scaling a parameter by k scales its trajectory by k (the query-scaling invariance)",
          "[optim][adafactor]") {
  // Same gradients divided by k (as d loss / d W_q is when W_q is k times larger): the updates of
  // the scaled copy stay exactly k times those of the original, while the RMS stays above eps2.
  const float k = 0.125f;
  ParamStore a, b;
  a.add("w", {128, 128}, Role::matrix, {Init::normal, 0.02f});
  b.add("w", {128, 128}, Role::matrix, {Init::normal, 0.02f * k});
  a.finalize(1);
  b.finalize(1);
  AdafactorConfig cfg;
  cfg.eps1 = 1e-30f;
  Adafactor oa(a, cfg), ob(b, cfg);
  Rng rng(2, 2);
  for (int t = 1; t <= 20; ++t) {
    for (int64_t i = 0; i < 128 * 128; ++i) {
      const float g = float(rng.normal() * 1e-2);
      a.at("w").grad[i] = g;
      b.at("w").grad[i] = g / k;
    }
    oa.step(1e-2f);
    ob.step(1e-2f);
  }
  double err = 0, norm = 0;
  for (int64_t i = 0; i < 128 * 128; ++i) {
    const double d = double(b.at("w").data[i]) - double(a.at("w").data[i]) * k;
    err += d * d;
    norm += double(b.at("w").data[i]) * b.at("w").data[i];
  }
  REQUIRE(std::sqrt(err / norm) < 1e-5);
}
