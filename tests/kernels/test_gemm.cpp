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

using testing::PrecisionScope;
}  // namespace

TEST_CASE("gemm: every transpose and accumulate combination, f32 and bf16 operands", "[kernels]") {
  for (auto prec : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16})
    for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 17, 65}, {65, 3, 17}, {130, 67, 129},
                                  {1, 17, 65}, {1, 300, 200}})  // one row: the decoding path
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

TEST_CASE("gemm: operands converted once (PackedOperands) give the bits of converting at the call", "[kernels]") {
  {
    PrecisionScope ps(kernels::MatmulPrecision::f32);
    kernels::Bf16Copy copy;
    std::vector<float> x(6, 1.f);
    CHECK(copy.pack(x.data(), 2, 3, 3) == nullptr);  // f32 products read f32 operands
  }
  PrecisionScope ps(kernels::MatmulPrecision::bf16);
  const int64_t N = 19, K = 70;
  for (int64_t M : {37, 1})  // 1: the one-row path
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool acc : {false, true}) {
        INFO("M " << M << " ta " << ta << " tb " << tb << " acc " << acc);
        Vec A = testing::randn(M * K, 11), B = testing::randn(K * N, 12), C0 = testing::randn(M * N, 13);
        std::vector<float> a(A.begin(), A.end()), b(B.begin(), B.end()), c0(C0.begin(), C0.end());
        const int64_t lda = ta ? M : K, ldb = tb ? K : N;
        kernels::Bf16Copy a16, b16;
        const uint16_t* pa = a16.pack(a.data(), ta ? K : M, lda, lda);  // the stored layout, dense
        const uint16_t* pb = b16.pack(b.data(), tb ? N : K, ldb, ldb);
        REQUIRE(pa != nullptr);
        REQUIRE(pb != nullptr);
        std::vector<float> want = c0;
        kernels::gemm(ta, tb, M, N, K, a.data(), lda, b.data(), ldb, want.data(), N, acc);
        for (kernels::PackedOperands p : {kernels::PackedOperands{pa, nullptr}, {nullptr, pb}, {pa, pb}}) {
          std::vector<float> got = c0;
          kernels::gemm(ta, tb, M, N, K, a.data(), lda, b.data(), ldb, got.data(), N, acc, p);
          CHECK(got == want);
        }
        // The copy is what the product reads: another copy gives another result.
        std::vector<float> other(b.size(), 0.5f), got = c0;
        kernels::Bf16Copy o16;
        kernels::gemm(ta, tb, M, N, K, a.data(), lda, b.data(), ldb, got.data(), N, acc,
                      {nullptr, o16.pack(other.data(), tb ? N : K, ldb, ldb)});
        CHECK(got != want);
      }
}

TEST_CASE("gemm_batched: each product of the batch equals the reference, every transpose, f32 and bf16", "[kernels]") {
  const int64_t batch = 3, M = 5, N = 4, K = 7;
  for (auto precision : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool acc : {false, true}) {
          INFO("bf16 " << (precision == kernels::MatmulPrecision::bf16) << " ta " << ta << " tb " << tb << " acc " << acc);
          testing::PrecisionScope ps(precision);
          // Matrices spaced apart (stride larger than the matrix) to check the strides are used.
          const int64_t sa = M * K + 3, sb = K * N + 5, sc = M * N + 2;
          const Vec A = testing::randn(batch * sa, 1), B = testing::randn(batch * sb, 2), C0 = testing::randn(batch * sc, 3);
          std::vector<float> a(A.begin(), A.end()), b(B.begin(), B.end()), c(C0.begin(), C0.end());
          kernels::gemm_batched(batch, ta, tb, M, N, K, a.data(), ta ? M : K, sa, b.data(), tb ? K : N, sb, c.data(), N,
                                sc, acc);
          for (int64_t i = 0; i < batch; ++i) {
            const Vec Ai(A.begin() + i * sa, A.begin() + i * sa + M * K), Bi(B.begin() + i * sb, B.begin() + i * sb + K * N),
                Ci(C0.begin() + i * sc, C0.begin() + i * sc + M * N);
            const Vec want = reference(Ai, Bi, Ci, M, N, K, ta, tb, acc, precision == kernels::MatmulPrecision::bf16);
            CHECK(testing::rel_err(Vec(c.begin() + i * sc, c.begin() + i * sc + M * N), want) <= 1e-5);
            // The gaps between matrices are never written.
            if (i + 1 < batch) CHECK(c[size_t(i * sc + M * N)] == float(C0[size_t(i * sc + M * N)]));
          }
        }
}
