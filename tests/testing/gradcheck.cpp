#include "testing/gradcheck.h"

#include <cmath>

#include "autograd/tape.h"
#include "util/rng.h"

namespace testing {

Vec randn(int64_t n, uint64_t seed, double scale) {
  attnlab::Rng r(seed, 12345);
  Vec v(n);
  for (auto& x : v) x = scale * r.normal();
  return v;
}

double rel_err(const Vec& a, const Vec& b, double floor) {
  REQUIRE(a.size() == b.size());
  double num = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return std::sqrt(num) / std::max({std::sqrt(na), std::sqrt(nb), floor, 1e-30});
}

namespace {
double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}
}  // namespace

void check_grad(const OpCase& c) {
  INFO("op " << c.name << " (reference vs finite differences)");
  Vec y = c.ref_fwd(c.inputs);
  Vec r = randn(int64_t(y.size()), c.seed + 7);
  auto grads = c.ref_bwd(c.inputs, r);
  REQUIRE(grads.size() == c.inputs.size());
  for (size_t in = 0; in < c.inputs.size(); ++in) {
    const int64_t n = int64_t(c.inputs[in].size());
    if (n == 0) continue;
    // Coordinates: all, or an evenly spread sample with a random phase.
    std::vector<int64_t> coords;
    const int64_t step = std::max<int64_t>(1, n / c.max_coords);
    for (int64_t i = int64_t(c.seed % step); i < n; i += step) coords.push_back(i);
    Vec analytic, numeric;
    std::vector<Vec> x = c.inputs;
    for (int64_t i : coords) {
      const double x0 = x[in][i];
      x[in][i] = x0 + c.fd_h;
      const double lp = dot(r, c.ref_fwd(x));
      x[in][i] = x0 - c.fd_h;
      const double lm = dot(r, c.ref_fwd(x));
      x[in][i] = x0;
      numeric.push_back((lp - lm) / (2 * c.fd_h));
      analytic.push_back(grads[in][i]);
    }
    INFO("input " << in << " shape " << c.shapes[in] << ", " << coords.size() << " coordinates");
    CHECK(rel_err(analytic, numeric) <= c.fd_rtol);
  }
}

void check_fast_vs_ref(const OpCase& c) {
  INFO("op " << c.name << " (fast f32 vs reference f64)");
  attnlab::Arena arena;
  attnlab::Tape tape;
  attnlab::ArenaScope as(arena);
  attnlab::TapeScope ts(tape);
  std::vector<Tensor> ins;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    Tensor t = attnlab::empty(c.shapes[i], true);
    REQUIRE(int64_t(c.inputs[i].size()) == t.numel());
    for (int64_t j = 0; j < t.numel(); ++j) t.data[j] = float(c.inputs[i][j]);
    ins.push_back(t);
  }
  // The reference sees the f32-rounded inputs, so only the op's own error is measured.
  std::vector<Vec> rounded(c.inputs.size());
  for (size_t i = 0; i < ins.size(); ++i) rounded[i].assign(ins[i].data, ins[i].data + ins[i].numel());
  Vec y_ref = c.ref_fwd(rounded);
  Tensor y = c.fast(ins);
  REQUIRE(y.numel() == int64_t(y_ref.size()));
  Tensor yc = y;
  if (!y.is_contiguous()) FAIL("fast op output must be contiguous");
  Vec y_fast(yc.data, yc.data + yc.numel());
  CHECK(rel_err(y_fast, y_ref) <= c.fast_rtol);
  Vec r = randn(int64_t(y_ref.size()), c.seed + 7);
  std::vector<float> rf(r.begin(), r.end());
  Vec rr(rf.begin(), rf.end());
  auto g_ref = c.ref_bwd(rounded, rr);
  if (!y.requires_grad()) FAIL("fast op output does not require grad");
  attnlab::backward_from(y, rf.data());
  for (size_t i = 0; i < ins.size(); ++i) {
    INFO("grad of input " << i << " shape " << c.shapes[i]);
    Vec g(ins[i].grad(), ins[i].grad() + ins[i].numel());
    CHECK(rel_err(g, g_ref[i], c.grad_floor) <= c.fast_rtol);
  }
}

}  // namespace testing
