#pragma once
// Matrix products through oneDNN matmul primitives (the only oneDNN user besides its bench).
// Every distinct (shape, transposes, leading dimensions, accumulate) creates its primitive once
// and keeps it, with its memory objects and a user scratchpad, in a cache: a repeated call only
// swaps data pointers. Call from one thread (the primitives parallelise internally with OpenMP).
#include <bit>
#include <cstdint>
#include <string>
#include <vector>

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

// bf16 products convert both operands at every call, a memory-bound pass that costs about a tenth
// of a bf16 training step. An operand read by several products (an output gradient, read by the
// dx and dW products) is converted once with Bf16Copy and passed here: `a` and `b`, when not null,
// replace the conversion of A and B (the same bytes, so the product is bit-identical). In f32 the
// copies are null and ignored. A B that gemm converts itself (a weight, typically) is reordered
// straight into the layout oneDNN's kernel reads, which the kernel would otherwise build from a
// dense copy again for every block of A's rows (a B passed here is dense and gets that copy).
struct PackedOperands {
  const uint16_t* a = nullptr;
  const uint16_t* b = nullptr;
};
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate, PackedOperands packed);

// `batch` independent products C_i = op(A_i)·op(B_i) (or C_i += ...), i < batch, each laid out as
// for gemm, matrix i of an operand starting stride_* elements after matrix i − 1. One oneDNN
// primitive runs them all, so many small products run nearer the machine's matmul rate than one
// call each (Muon's Newton–Schulz iterations over a model's same-shaped matrices). With bf16
// products both operands are converted at the call.
void gemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float* C, int64_t ldc,
                  int64_t stride_c, bool accumulate);

// x rounded to bfloat16, to nearest even (NaN stays NaN: its payload bits survive the shift).
inline uint16_t to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// dst[r·cols + c] = bf16(src[r·ld + c]): a stored row-major [rows, cols] matrix (a transposed
// operand is packed in its stored layout too), dense. Parallel over rows.
void pack_bf16(uint16_t* dst, const float* src, int64_t rows, int64_t cols, int64_t ld);

// A caller's bf16 copy of one operand, for gemm's PackedOperands. The buffer grows to the largest
// size seen and is then reused (no allocation on a steady training step).
class Bf16Copy {
 public:
  Bf16Copy() = default;
  Bf16Copy(const Bf16Copy&) = delete;
  Bf16Copy& operator=(const Bf16Copy&) = delete;
  ~Bf16Copy();
  // The stored [rows, cols] matrix src (row stride ld) converted; null when products run in f32.
  const uint16_t* pack(const float* src, int64_t rows, int64_t cols, int64_t ld);
  // Room for n values, for a producer that writes its output straight into bf16 (with to_bf16);
  // null when products run in f32.
  uint16_t* reserve(int64_t n);

 private:
  uint16_t* data_ = nullptr;
  int64_t size_ = 0;
};

// Matmul forms (docs/performance.md, "Matmul forms"). A product can be computed in equivalent
// forms whose speed depends on the CPU, the shape and the thread count:
//   direct    one oneDNN matmul on the operands as stored;
//   packed_b  B reordered first into the layout oneDNN's kernel reads (f32 B, or a caller's
//             dense bf16 copy), instead of the kernel copying it block by block;
//   split_k   K cut into one range per thread, each range a single-threaded product, the partial
//             results added in thread order (the dW products' long token axis).
//   transposed  Cᵀ = op(B)ᵀ·op(A)ᵀ computed directly into scratch, then transposed into C (added
//             to it when accumulating).
// A product of at least kFormMinFlops FLOPs takes its form from, in order: the choices installed
// by preset_matmul_forms (a checkpoint's), the forms file, or a measurement at its first call
// (each form timed on the call's operands into scratch, best of three; another form must beat direct
// by 3%),
// which is appended to the forms file. The choice is made once and kept, so a run, its rerun with
// the forms file and its resume compute bit-identical products. Smaller products run direct.
enum class MatmulForm { direct, packed_b, split_k, transposed };
const char* form_name(MatmulForm f);
inline constexpr double kFormMinFlops = 64e6;

// measure false: every product direct (nothing timed, nothing read or written). forms_file:
// where choices are remembered across processes (empty: only in this process). Its lines are
// "<machine>\t<product>\t<form>"; a process reads the lines of its own machine (CPU model,
// oneDNN's ISA and version) and appends what it measures, holding an exclusive lock on the file
// while it measures so that concurrent runs agree.
void set_matmul_forms(bool measure, const std::string& forms_file);
// The choices this process holds, one "<product>\t<form>" line each, sorted (for checkpoints).
std::string matmul_forms_text();
// Installs choices (matmul_forms_text's format) ahead of the file and of measurement. Throws
// Error naming the line on a malformed one.
void preset_matmul_forms(const std::string& text);
// Choices made or read since the last call, for the run's log: "<product>: <form> (how)".
std::vector<std::string> take_new_matmul_forms();
// Drops every choice this process holds (tests; a later product chooses again).
void forget_matmul_forms();
// This machine's signature, as the forms file's lines begin.
std::string matmul_forms_machine();

// Per product, while profiling (util/profile.h) is on: calls and seconds, for `attnlab bench`.
struct ProductStat {
  std::string product;  // "[M x K]·[K x N]" with the stored operands' transposes, f32/bf16, +=
  std::string form;
  int64_t calls = 0;
  double seconds = 0, flops = 0;  // over the calls
};
std::vector<ProductStat> product_stats();  // largest total time first
void reset_product_stats();

// The machine's matmul peak as oneDNN reaches it: GFLOP/s of a large square product
// ([2048 x 2048] x [2048 x 2048], best of a few runs), in f32 or with bf16 operands (f32 result).
double measured_peak_gflops(bool bf16);

// Sets OpenMP's and therefore oneDNN's thread count.
void set_num_threads(int n);
int num_threads();
// Primitives created so far (a test checks that a steady training step creates none).
int64_t gemm_primitives_created();

}  // namespace attnlab::kernels
