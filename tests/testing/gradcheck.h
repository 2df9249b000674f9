#pragma once
// Gradient-check helpers for ops (see STYLE: every op gets (a) its double reference backward
// against central finite differences and (b) its fast float32 path against the reference).
//
// The scalar differentiated is L = Σ r ⊙ y with a fixed random r, never a plain sum: a softmax's
// rows sum to 1, so a plain sum's gradient vanishes and a wrong backward would still pass.
#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "tensor/tensor.h"
#include "util/check.h"

namespace testing {

using Vec = std::vector<double>;
using attnlab::Shape;
using attnlab::Tensor;

struct OpCase {
  std::string name;
  std::vector<Shape> shapes;  // differentiable inputs
  std::vector<Vec> inputs;
  // Reference forward (double): y from inputs.
  std::function<Vec(const std::vector<Vec>&)> ref_fwd;
  // Reference backward (double): grads of every input, given dy (accumulates into zeroed vectors).
  std::function<std::vector<Vec>(const std::vector<Vec>&, const Vec& dy)> ref_bwd;
  // Fast float32 op on tensors that require grad.
  std::function<Tensor(const std::vector<Tensor>&)> fast;
  double fd_h = 1e-5;
  double fd_rtol = 1e-6;
  double fast_rtol = 1e-4;
  // Input-gradient norms below this count as this in the fast path's relative error. Zero unless
  // a true gradient is exactly zero (then float rounding noise has no norm to be relative to).
  double grad_floor = 0;
  int max_coords = 400;  // finite differences on at most this many coordinates per input
  uint64_t seed = 1;
};

// Standard normal values, seeded.
Vec randn(int64_t n, uint64_t seed, double scale = 1.0);
// ||a - b|| / max(||a||, ||b||, floor, tiny): normwise relative error.
double rel_err(const Vec& a, const Vec& b, double floor = 0);

// (a) reference backward vs central finite differences of the reference forward.
void check_grad(const OpCase& c);
// (b) fast f32 op vs reference: output, and every input grad for the same upstream r.
void check_fast_vs_ref(const OpCase& c);
inline void check_op(const OpCase& c) {
  check_grad(c);
  check_fast_vs_ref(c);
}

// Matmul precision for one scope, restored after.
struct PrecisionScope {
  attnlab::kernels::MatmulPrecision prev = attnlab::kernels::matmul_precision();
  explicit PrecisionScope(attnlab::kernels::MatmulPrecision p) { attnlab::kernels::set_matmul_precision(p); }
  ~PrecisionScope() { attnlab::kernels::set_matmul_precision(prev); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;
};

// Odd and even sizes the issue asks for.
inline const std::vector<int64_t>& odd_sizes() {
  static const std::vector<int64_t> s{1, 3, 17, 65};
  return s;
}

}  // namespace testing
