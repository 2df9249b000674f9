#include <bit>
#include <cmath>

#include "kernels/gemm.h"
#include "testing/gradcheck.h"

using namespace attnlab;
using testing::Vec;

namespace {
double bf16_round(double x) {
  const uint32_t u = std::bit_cast<uint32_t>(float(x));
  return double(std::bit_cast<float>(((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) << 16));
}

// C = op(A)·op(B) (+ C0) in double, optionally from bf16-rounded operands.
Vec reference(const Vec& A, const Vec& B, const Vec& C0, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
              bool acc, bool round_bf16) {
  Vec C(M * N);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = acc ? C0[m * N + n] : 0.0;
      for (int64_t k = 0; k < K; ++k) {
        double a = ta ? A[k * M + m] : A[m * K + k], b = tb ? B[n * K + k] : B[k * N + n];
        if (round_bf16) a = bf16_round(a), b = bf16_round(b);
        s += a * b;
      }
      C[m * N + n] = s;
    }
  return C;
}

struct PrecisionScope {
  kernels::MatmulPrecision prev = kernels::matmul_precision();
  explicit PrecisionScope(kernels::MatmulPrecision p) { kernels::set_matmul_precision(p); }
  ~PrecisionScope() { kernels::set_matmul_precision(prev); }
};
}  // namespace

TEST_CASE("gemm: every transpose and accumulate combination, f32 and bf16 operands", "[kernels]") {
  for (auto prec : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16})
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 17, 65}, {65, 3, 17}, {130, 67, 129}})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (bool acc : {false, true}) {
            INFO("bf16 " << (prec == kernels::MatmulPrecision::bf16) << " M " << M << " N " << N << " K " << K
                         << " ta " << ta << " tb " << tb << " acc " << acc);
            PrecisionScope ps(prec);
            Vec A = testing::randn(M * K, uint64_t(M * 7 + K)), B = testing::randn(K * N, uint64_t(N * 5 + K)),
                C0 = testing::randn(M * N, 3);
            std::vector<float> a(A.begin(), A.end()), b(B.begin(), B.end()), c(C0.begin(), C0.end());
            Vec Af(a.begin(), a.end()), Bf(b.begin(), b.end()), Cf(c.begin(), c.end());
            kernels::gemm(ta, tb, M, N, K, a.data(), ta ? M : K, b.data(), tb ? K : N, c.data(), N, acc);
            const bool bf16 = prec == kernels::MatmulPrecision::bf16;
            Vec got(c.begin(), c.end());
            // Against the exact product of the operands the kernel saw (f32, or bf16-rounded).
            CHECK(testing::rel_err(got, reference(Af, Bf, Cf, M, N, K, ta, tb, acc, bf16)) <= 1e-5);
            // bf16 against the f32 product: the documented precision loss, about 2^-9 per operand.
            if (bf16) CHECK(testing::rel_err(got, reference(Af, Bf, Cf, M, N, K, ta, tb, acc, false)) <= 1e-2);
          }
}
