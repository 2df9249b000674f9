#include <catch2/catch.hpp>

#include <cmath>

#include "kernels/vmath.h"

using namespace attnlab::kernels;

TEST_CASE("vmath: fast_exp and fast_tanh agree with libm to a few ulp", "[kernels]") {
  double worst_exp = 0, worst_tanh = 0;
  for (float x = -87.f; x <= 87.9f; x += 0.0137f) {
    const double e = std::exp(double(x));
    worst_exp = std::max(worst_exp, std::abs(fast_exp(x) - e) / e);
  }
  for (float x = -20.f; x <= 20.f; x += 0.00113f) {
    const double t = std::tanh(double(x));
    // Relative error away from 0, absolute error near it (tanh(x) ≈ x there).
    worst_tanh = std::max(worst_tanh, std::abs(fast_tanh(x) - t) / std::max(std::abs(t), 1e-3));
  }
  CHECK(worst_exp < 5e-7);   // ~4 ulp
  CHECK(worst_tanh < 1e-6);
  CHECK(fast_tanh(0.f) == 0.f);
  CHECK(fast_tanh(1e-8f) == Approx(1e-8f));
  CHECK(fast_tanh(-30.f) == -1.f);
  CHECK(fast_exp(-1000.f) < 1e-37f);  // clamped, not NaN
  CHECK(std::isfinite(fast_exp(1000.f)));  // clamped at e^88
}
