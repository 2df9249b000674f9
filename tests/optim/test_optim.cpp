#include <catch2/catch.hpp>

#include <cmath>

#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "util/rng.h"

using namespace attnlab;

namespace {
// Fills a store's params and grads with seeded values.
void fill(ParamStore& s, uint64_t seed) {
  Rng r(seed, 1);
  for (Param* p : s.params())
    for (int64_t i = 0; i < p->numel(); ++i) {
      p->data[i] = float(r.normal());
      p->grad[i] = float(r.normal() * 0.1);
    }
}
}  // namespace

TEST_CASE("adamw: matches an independent scalar implementation over several steps", "[optim]") {
  ParamStore s;
  s.add("blocks.0.attn.wq", {17, 3}, Role::matrix, {});
  s.add("blocks.0.norm1.g", {17}, Role::gain, {});
  s.add("tok_emb", {5, 3}, Role::embedding, {});
  s.add("frozen.w", {4}, Role::matrix, {});
  s.finalize(0);
  s.freeze({"frozen.*"});
  fill(s, 1);
  AdamWConfig cfg;
  cfg.beta1 = 0.8f;
  cfg.beta2 = 0.95f;
  cfg.eps = 1e-6f;
  cfg.weight_decay = 0.3f;
  // decay_roles stays {matrix}: the gain and the embedding get no decay.
  AdamW opt(s, cfg);
  // The oracle: plain double loops, straight from the paper's algorithm with PyTorch's placement.
  std::vector<double> w(s.data(), s.data() + s.total()), m(s.total()), v(s.total());
  const std::vector<float> frozen_before(s.at("frozen.w").data, s.at("frozen.w").data + 4);
  Rng gr(5, 5);
  for (int t = 1; t <= 5; ++t) {
    const double lr = 0.01 * t;
    for (const Param* p : s.params()) {
      if (p->frozen) continue;
      const bool decay = p->name == "blocks.0.attn.wq";
      for (int64_t i = 0; i < p->numel(); ++i) {
        const int64_t k = p->offset + i;
        const double g = p->grad[i];
        w[k] *= 1 - lr * (decay ? 0.3 : 0.0);
        m[k] = 0.8 * m[k] + 0.2 * g;
        v[k] = 0.95 * v[k] + 0.05 * g * g;
        const double mh = m[k] / (1 - std::pow(0.8, t)), vh = v[k] / (1 - std::pow(0.95, t));
        w[k] -= lr * mh / (std::sqrt(vh) + 1e-6);
      }
    }
    opt.step(float(lr));
    REQUIRE(opt.t() == t);
    for (const Param* p : s.params()) {
      if (p->frozen) continue;
      for (int64_t i = 0; i < p->numel(); ++i) REQUIRE(p->data[i] == Approx(w[p->offset + i]).epsilon(1e-5));
      for (int64_t i = 0; i < p->numel(); ++i) p->grad[i] = float(gr.normal() * 0.1);
    }
  }
  for (int i = 0; i < 4; ++i) REQUIRE(s.at("frozen.w").data[i] == frozen_before[i]);
  REQUIRE(opt.decays(s.at("blocks.0.attn.wq")));
  REQUIRE_FALSE(opt.decays(s.at("tok_emb")));
  // Decay follows the role, whatever the name says.
  AdamWConfig by_role;
  by_role.decay_roles = {Role::gain, Role::embedding};
  AdamW other(s, by_role);
  REQUIRE_FALSE(other.decays(s.at("blocks.0.attn.wq")));
  REQUIRE(other.decays(s.at("blocks.0.norm1.g")));
  REQUIRE(other.decays(s.at("tok_emb")));
}

TEST_CASE("global norm clipping: as clip_grad_norm_, frozen params excluded", "[optim]") {
  ParamStore s;
  s.add("a", {3}, Role::matrix, {});
  s.add("b", {2}, Role::matrix, {});
  s.finalize(0);
  float ga[3] = {3, 0, 4}, gb[2] = {100, 100};
  std::copy(ga, ga + 3, s.at("a").grad);
  s.freeze({"b"});
  std::copy(gb, gb + 2, s.at("b").grad);  // a frozen grad is ignored by the norm
  const double n = global_grad_norm(s);
  REQUIRE(n == Approx(5.0));
  REQUIRE(clip_grad_norm(s, n, 10.f) == 1.f);
  REQUIRE(s.at("a").grad[2] == 4.f);
  const float c = clip_grad_norm(s, n, 1.f);
  REQUIRE(c == Approx(1.0 / (5.0 + 1e-6)));
  REQUIRE(s.at("a").grad[0] == Approx(3.0 / 5.0));
}

TEST_CASE("non-finite detection names the first parameter", "[optim]") {
  ParamStore s;
  s.add("a", {3}, Role::matrix, {});
  s.add("b", {2}, Role::matrix, {});
  s.finalize(0);
  REQUIRE(first_non_finite(s, false) == nullptr);
  s.at("b").grad[1] = std::nanf("");
  REQUIRE(first_non_finite(s, false)->name == "b");
  s.at("a").data[0] = INFINITY;
  REQUIRE(first_non_finite(s, true)->name == "a");
}

TEST_CASE("schedules: warmup, cosine, linear, constant", "[optim]") {
  Schedule s{ScheduleKind::cosine, 1e-3, 1e-4, 100, 2000};
  REQUIRE(s.at(0) == Approx(1e-5));
  REQUIRE(s.at(99) == Approx(1e-3));
  REQUIRE(s.at(100) == Approx(1e-3));
  REQUIRE(s.at(1050) == Approx(1e-4 + 0.5 * 0.9e-3));
  REQUIRE(s.at(2000) == Approx(1e-4));
  REQUIRE(s.at(5000) == Approx(1e-4));
  s.kind = ScheduleKind::linear;
  REQUIRE(s.at(1050) == Approx(1e-4 + 0.5 * 0.9e-3));
  REQUIRE(s.at(575) == Approx(1e-4 + 0.75 * 0.9e-3));
  s.kind = ScheduleKind::constant;
  REQUIRE(s.at(1500) == Approx(1e-3));
  Schedule nowarm{ScheduleKind::cosine, 1.0, 0.0, 0, 10};
  REQUIRE(nowarm.at(0) == Approx(1.0));
  REQUIRE(nowarm.at(5) == Approx(0.5));
}
