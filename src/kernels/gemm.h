#pragma once
// Matrix products through oneDNN matmul primitives (the only oneDNN user besides its bench).
// Every distinct (shape, transposes, leading dimensions, accumulate) creates its primitive once
// and keeps it, with its memory objects and a user scratchpad, in a cache: a repeated call only
// swaps data pointers. Call from one thread (the primitives parallelise internally with OpenMP).
#include <cstdint>

namespace attnlab::kernels {

// Matmul operand precision. bf16: operands rounded to bfloat16 (nearest even), products
// accumulated and stored in f32; parameters, grads and optimizer state stay f32 (master weights).
enum class MatmulPrecision { f32, bf16 };
void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();

// C[M,N] (row stride ldc) = op(A)[M,K] · op(B)[K,N], or C += ... when accumulate.
// op(A) = A stored [M,K] with row stride lda, or with trans_a, A stored [K,M] (row stride lda).
// op(B) likewise: [K,N] with ldb, or with trans_b, [N,K].
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate);

// The machine's matmul peak as oneDNN reaches it: GFLOP/s of a large square product
// ([2048 x 2048] x [2048 x 2048], best of a few runs), in f32 or with bf16 operands (f32 result).
double measured_peak_gflops(bool bf16);

// Sets OpenMP's and therefore oneDNN's thread count.
void set_num_threads(int n);
int num_threads();
// Primitives created so far (a test checks that a steady training step creates none).
int64_t gemm_primitives_created();

}  // namespace attnlab::kernels
