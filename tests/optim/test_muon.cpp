// Muon: steps against an independent scalar implementation written here from the formulas in
// src/optim/muon.h and docs/model.md, and Newton–Schulz's output spectrum.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "optim/muon.h"
#include "testing/gradcheck.h"
#include "util/rng.h"

using namespace attnlab;
using Mat = std::vector<double>;  // row-major

namespace {

Mat matmul(const Mat& a, const Mat& b, int M, int K, int N) {
  Mat c(size_t(M) * N, 0.0);
  for (int i = 0; i < M; ++i)
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < N; ++j) c[i * N + j] += a[i * K + k] * b[k * N + j];
  return c;
}
Mat transposed(const Mat& a, int R, int C) {
  Mat t(a.size());
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) t[c * R + r] = a[r * C + c];
  return t;
}

// NS5 in double, straight from the formula.
Mat ns5(const Mat& u, int R, int C, int steps) {
  double norm = 0;
  for (double x : u) norm += x * x;
  norm = std::sqrt(norm);
  const bool tall = R > C;
  Mat x = tall ? transposed(u, R, C) : u;
  const int m = tall ? C : R, n = tall ? R : C;
  for (double& e : x) e /= norm + 1e-7;
  for (int it = 0; it < steps; ++it) {
    const Mat A = matmul(x, transposed(x, m, n), m, n, m);
    const Mat AA = matmul(A, A, m, m, m);
    Mat P(A.size());
    for (size_t i = 0; i < A.size(); ++i) P[i] = -4.7750 * A[i] + 2.0315 * AA[i];
    const Mat PX = matmul(P, x, m, m, n);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 3.4445 * x[i] + PX[i];
  }
  return tall ? transposed(x, m, n) : x;
}

// Five steps of NS5's scalar polynomial.
double phi5(double x) {
  for (int i = 0; i < 5; ++i) x = 3.4445 * x - 4.7750 * x * x * x + 2.0315 * x * x * x * x * x;
  return x;
}

// Eigenvalues of a symmetric matrix (cyclic Jacobi).
std::vector<double> eigenvalues(Mat a, int n) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    if (off < 1e-24) break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        if (std::abs(a[p * n + q]) < 1e-300) continue;
        const double th = 0.5 * std::atan2(2 * a[p * n + q], a[q * n + q] - a[p * n + p]);
        const double c = std::cos(th), s = std::sin(th);
        for (int k = 0; k < n; ++k) {  // rotate columns p, q
          const double akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // and rows p, q
          const double apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> ev(n);
  for (int i = 0; i < n; ++i) ev[i] = a[i * n + i];
  return ev;
}

std::vector<double> singular_values(const std::vector<float>& o, int R, int C) {
  Mat x(o.begin(), o.end());
  const bool tall = R > C;
  if (tall) x = transposed(x, R, C);
  const int m = tall ? C : R, n = tall ? R : C;
  std::vector<double> ev = eigenvalues(matmul(x, transposed(x, m, n), m, n, m), m);
  for (double& e : ev) e = std::sqrt(std::max(0.0, e));
  return ev;
}

}  // namespace

TEST_CASE("muon: Newton-Schulz 5 equals the double formula and sends every singular value into the band",
          "[optim][muon]") {
  for (auto [R, C] : {std::pair<int, int>{4, 9}, {9, 4}, {16, 16}, {64, 24}, {1, 7}}) {
    INFO("shape " << R << " x " << C);
    const testing::Vec init = testing::randn(int64_t(R) * C, uint64_t(R * 100 + C));
    std::vector<float> u(init.begin(), init.end()), o(u.size());
    std::vector<float> scratch(size_t(ns_scratch_floats(R, C)));
    newton_schulz5(o.data(), u.data(), R, C, 5, scratch.data());
    const Mat want = ns5(Mat(u.begin(), u.end()), R, C, 5);
    CHECK(testing::rel_err(testing::Vec(o.begin(), o.end()), want) <= 1e-5);
    // NS5 acts on each singular value alone: σ' = φ⁵(σ / ‖u‖_F), φ(x) = a·x + b·x³ + c·x⁵. So the
    // output's singular values are the scalar iteration of the input's.
    std::vector<double> sv_in = singular_values(u, R, C);
    double fro = 0;
    for (float x : u) fro += double(x) * x;
    for (double& x : sv_in) x = std::abs(phi5(x / std::sqrt(fro)));
    std::vector<double> sv = singular_values(o, R, C);
    std::sort(sv.begin(), sv.end());
    std::sort(sv_in.begin(), sv_in.end());
    CHECK(testing::rel_err(sv, sv_in) <= 1e-4);
  }
  // The band: every singular value that is at least 1/500 of the Frobenius norm ends in [0.68, 1.21]
  // (smaller ones grow by a³⁵ ≈ 490 and may not reach it in five steps).
  double lo = 1e9, hi = -1e9;
  for (double x = 0.002; x <= 1.0; x += 1e-5) lo = std::min(lo, phi5(x)), hi = std::max(hi, phi5(x));
  CHECK(lo > 0.68);
  CHECK(hi < 1.21);
}

TEST_CASE("muon: steps of matrices and of the AdamW parameters match a scalar implementation", "[optim][muon]") {
  for (bool nesterov : {true, false}) {
    INFO("nesterov " << nesterov);
    ParamStore s;
    s.add("blocks.0.attn.wq", {6, 10}, Role::matrix, {Init::normal, 0.3f});
    s.add("blocks.0.mlp.w2", {12, 5}, Role::matrix, {Init::normal, 0.3f});
    // Same oriented shape as wq, wide and tall: orthogonalised in one batch with it.
    s.add("blocks.1.attn.wq", {6, 10}, Role::matrix, {Init::normal, 0.3f});
    s.add("blocks.1.mlp.w2", {10, 6}, Role::matrix, {Init::normal, 0.3f});
    s.add("blocks.0.norm1.g", {6}, Role::gain, {Init::ones});
    s.add("tok_emb", {7, 6}, Role::embedding, {Init::normal, 0.3f});
    s.add("frozen.w", {3, 3}, Role::matrix, {Init::normal, 0.3f});
    s.finalize(4);
    s.freeze({"frozen.*"});
    MuonConfig cfg;
    cfg.lr_ratio = 15.f;
    cfg.momentum = 0.9f;
    cfg.nesterov = nesterov;
    cfg.adamw.weight_decay = 0.2f;
    cfg.adamw.beta1 = 0.8f;
    cfg.adamw.beta2 = 0.95f;
    cfg.adamw.eps = 1e-6f;
    cfg.adamw.decay_roles = {Role::matrix, Role::embedding};
    Muon opt(s, cfg);
    std::map<std::string, Mat> w, buf, m, v;
    for (const Param* p : s.params()) {
      w[p->name] = Mat(p->data, p->data + p->numel());
      buf[p->name] = m[p->name] = v[p->name] = Mat(p->numel(), 0.0);
    }
    const std::vector<float> frozen_before(s.at("frozen.w").data, s.at("frozen.w").data + 9);
    Rng gr(8, 8);
    for (int t = 1; t <= 3; ++t) {
      const double lr = 0.01 * t;
      for (Param* p : s.params())
        for (int64_t i = 0; i < p->numel(); ++i) p->grad[i] = float(gr.normal() * 0.5);
      for (const Param* p : s.params()) {
        if (p->frozen) continue;
        Mat& W = w[p->name];
        const bool decays = p->role == Role::matrix || p->role == Role::embedding;
        if (p->role == Role::matrix) {
          const double eta = lr * 15.0;
          Mat u(W.size());
          for (size_t i = 0; i < W.size(); ++i) {
            buf[p->name][i] = 0.9 * buf[p->name][i] + p->grad[i];
            u[i] = nesterov ? p->grad[i] + 0.9 * buf[p->name][i] : buf[p->name][i];
          }
          const int R = int(p->shape[0]), C = int(p->shape[1]);
          const Mat o = ns5(u, R, C, 5);
          for (size_t i = 0; i < W.size(); ++i)
            W[i] = W[i] * (1 - eta * 0.2) - eta * 0.2 * std::sqrt(double(std::max(R, C))) * o[i];
        } else {
          for (size_t i = 0; i < W.size(); ++i) {
            const double g = p->grad[i];
            W[i] *= 1 - lr * (decays ? 0.2 : 0.0);
            m[p->name][i] = 0.8 * m[p->name][i] + 0.2 * g;
            v[p->name][i] = 0.95 * v[p->name][i] + 0.05 * g * g;
            const double mh = m[p->name][i] / (1 - std::pow(0.8, t)), vh = v[p->name][i] / (1 - std::pow(0.95, t));
            W[i] -= lr * mh / (std::sqrt(vh) + 1e-6);
          }
        }
      }
      opt.step(float(lr));
      for (const Param* p : s.params()) {
        if (p->frozen) continue;
        INFO(p->name << " step " << t);
        CHECK(testing::rel_err(testing::Vec(p->data, p->data + p->numel()), w[p->name]) <= 2e-5);
      }
    }
    for (int i = 0; i < 9; ++i) REQUIRE(s.at("frozen.w").data[i] == frozen_before[i]);
    // State: the matrices' momentum, the others' m and v; nothing for a frozen matrix is touched.
    int momentum = 0, adam = 0;
    for (const auto& slot : opt.slots()) (slot.name == "momentum" ? momentum : adam)++;
    CHECK(momentum == 5);
    CHECK(adam == 4);
  }
}
