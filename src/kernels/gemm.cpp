#include "kernels/gemm.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <vector>

#include "tensor/tensor.h"
#include "util/check.h"

namespace attnlab::kernels {
namespace {

// b_blocked (bf16 only): B is converted by a reorder into the layout the primitive's kernel reads
// (the layout oneDNN picks for weights), instead of packed dense in its stored layout, from which
// the kernel would copy it into that layout again for every block of rows of A it multiplies.
struct Key {
  int64_t M, N, K, lda, ldb, ldc;
  bool ta, tb, acc, bf16, b_blocked;
  int64_t batch = 1, sa = 0, sb = 0, sc = 0;  // gemm_batched: matrix count and strides (f32 operands)
  bool operator==(const Key&) const = default;
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ULL;
    for (int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc,
                      int64_t(k.ta) | int64_t(k.tb) << 1 | int64_t(k.acc) << 2 | int64_t(k.bf16) << 3 | int64_t(k.b_blocked) << 4,
                      k.batch, k.sa, k.sb, k.sc})
      h = (h ^ size_t(v)) * 1099511628211ULL;
    return h;
  }
};

struct Entry {
  dnnl::matmul prim;
  dnnl::memory a, b, c, scratch;
  // The C API takes the arguments as an array: built once, so executing allocates nothing in
  // attnlab (oneDNN 2.6 itself still builds an argument map per call, see the no-alloc test).
  dnnl_exec_arg_t args[4];
  void* scratch_buf = nullptr;
  // b_blocked: the reorder of f32 B (as stored) into the kernel's bf16 layout, of b_bytes.
  dnnl::reorder b_reorder;
  dnnl::memory b_f32;
  dnnl_exec_arg_t reorder_args[2];
  size_t b_bytes = 0;
  ~Entry() { aligned_free(scratch_buf); }
};

struct Backend {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::unordered_map<Key, std::unique_ptr<Entry>, KeyHash> cache;
  int64_t created = 0;
  MatmulPrecision precision = MatmulPrecision::f32;
  // bf16 copies of the operands, grown to the largest product seen and then reused.
  uint16_t* pack_a = nullptr;
  uint16_t* pack_b = nullptr;
  int64_t pack_a_size = 0, pack_b_size = 0;
  ~Backend() {
    aligned_free(pack_a);
    aligned_free(pack_b);
  }
};

Backend& backend() {
  static Backend b;
  return b;
}

using dt = dnnl::memory::data_type;

// A logical [rows, cols] matrix stored row-major with leading dimension ld, or its transpose.
dnnl::memory::desc matrix_desc(int64_t rows, int64_t cols, int64_t ld, bool transposed) {
  dnnl::memory::dims strides = transposed ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  return dnnl::memory::desc({rows, cols}, dt::f32, strides);
}

// A logical [rows, cols] bf16 matrix stored densely: row-major, or column-major when transposed.
dnnl::memory::desc packed_desc(int64_t rows, int64_t cols, bool transposed) {
  dnnl::memory::dims strides = transposed ? dnnl::memory::dims{1, rows} : dnnl::memory::dims{cols, 1};
  return dnnl::memory::desc({rows, cols}, dt::bf16, strides);
}

// Batched: [batch, rows, cols] with matrix stride `stride` (f32 as stored; bf16 packed dense, each
// matrix in its stored layout, one after another).
dnnl::memory::desc batch_desc(int64_t batch, int64_t rows, int64_t cols, int64_t ld, int64_t stride, bool transposed,
                              bool bf16) {
  if (bf16) stride = rows * cols, ld = transposed ? rows : cols;
  dnnl::memory::dims strides = transposed ? dnnl::memory::dims{stride, 1, ld} : dnnl::memory::dims{stride, ld, 1};
  return dnnl::memory::desc({batch, rows, cols}, bf16 ? dt::bf16 : dt::f32, strides);
}

Entry& lookup(const Key& k) {
  Backend& be = backend();
  auto it = be.cache.find(k);
  if (it != be.cache.end()) return *it->second;
  auto e = std::make_unique<Entry>();
  // bf16 operands are packed dense in their stored layout (a transposed operand stays
  // transposed, so packing reads and writes contiguous rows), except a B that gemm converts itself
  // (b_blocked), which takes the layout oneDNN chooses.
  // gemm_batched: [batch, rows, cols] descriptors, no blocked B.
  auto a_md = k.batch > 1 ? batch_desc(k.batch, k.M, k.K, k.lda, k.sa, k.ta, k.bf16)
              : k.bf16    ? packed_desc(k.M, k.K, k.ta)
                          : matrix_desc(k.M, k.K, k.lda, k.ta);
  auto b_md = k.batch > 1 ? batch_desc(k.batch, k.K, k.N, k.ldb, k.sb, k.tb, k.bf16)
              : k.b_blocked ? dnnl::memory::desc({k.K, k.N}, dt::bf16, dnnl::memory::format_tag::any)
              : k.bf16      ? packed_desc(k.K, k.N, k.tb)
                            : matrix_desc(k.K, k.N, k.ldb, k.tb);
  auto c_md = k.batch > 1 ? batch_desc(k.batch, k.M, k.N, k.ldc, k.sc, false, false)
                          : matrix_desc(k.M, k.N, k.ldc, false);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (k.acc) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, be.eng);
  e->prim = dnnl::matmul(pd);
  e->a = dnnl::memory(a_md, be.eng, DNNL_MEMORY_NONE);
  e->b = dnnl::memory(pd.weights_desc(), be.eng, DNNL_MEMORY_NONE);
  if (k.b_blocked) {
    e->b_f32 = dnnl::memory(matrix_desc(k.K, k.N, k.ldb, k.tb), be.eng, DNNL_MEMORY_NONE);
    e->b_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(e->b_f32, e->b));
    e->reorder_args[0] = {DNNL_ARG_FROM, e->b_f32.get()};
    e->reorder_args[1] = {DNNL_ARG_TO, e->b.get()};
    e->b_bytes = pd.weights_desc().get_size();
  }
  e->c = dnnl::memory(c_md, be.eng, DNNL_MEMORY_NONE);
  size_t sp = pd.scratchpad_desc().get_size();
  e->scratch_buf = sp ? aligned_alloc_bytes(sp) : nullptr;
  e->scratch = dnnl::memory(pd.scratchpad_desc(), be.eng, e->scratch_buf);
  e->args[0] = {DNNL_ARG_SRC, e->a.get()};
  e->args[1] = {DNNL_ARG_WEIGHTS, e->b.get()};
  e->args[2] = {DNNL_ARG_DST, e->c.get()};
  e->args[3] = {DNNL_ARG_SCRATCHPAD, e->scratch.get()};
  be.created++;
  return *be.cache.emplace(k, std::move(e)).first->second;
}

uint16_t* grow(uint16_t*& buf, int64_t& size, int64_t need) {
  if (need > size) {
    aligned_free(buf);
    buf = static_cast<uint16_t*>(aligned_alloc_bytes(size_t(need) * sizeof(uint16_t)));
    size = need;
  }
  return buf;
}

}  // namespace

void pack_bf16(uint16_t* dst, const float* src, int64_t rows, int64_t cols, int64_t ld) {
#pragma omp parallel for if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    uint16_t* d = dst + r * cols;
    const float* srow = src + r * ld;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) d[c] = to_bf16(srow[c]);
  }
}

Bf16Copy::~Bf16Copy() { aligned_free(data_); }

uint16_t* Bf16Copy::reserve(int64_t n) {
  if (matmul_precision() != MatmulPrecision::bf16) return nullptr;
  return grow(data_, size_, n);
}

const uint16_t* Bf16Copy::pack(const float* src, int64_t rows, int64_t cols, int64_t ld) {
  uint16_t* dst = reserve(rows * cols);
  if (dst) pack_bf16(dst, src, rows, cols, ld);
  return dst;
}

void set_matmul_precision(MatmulPrecision p) { backend().precision = p; }
MatmulPrecision matmul_precision() { return backend().precision; }

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, PackedOperands{});
}

namespace {

// C[1, N] (+)= a[1, K] · B[K, N] (row stride ldb): one row, as in decoding with a KV cache. Memory
// bound (each weight is read once and used once), where oneDNN's matmul, built for many rows,
// spends as long again around the product (with bf16 products it would first reorder all of B).
// Each thread streams a contiguous range of B's rows into its own partial sums over N; the
// partials are then added in thread order (fixed for a thread count). With bf16 products a and B
// are rounded as pack_bf16 rounds them, and the sums stay f32.
// a16: a's bf16 copy when the caller has one (a producer may write only that one).
void gemv(int64_t N, int64_t K, const float* a, const uint16_t* a16, const float* B, int64_t ldb, float* C,
          bool accumulate, bool bf16) {
  auto round = [](float x) { return std::bit_cast<float>(uint32_t(to_bf16(x)) << 16); };
  const int threads = N * K > (1 << 15) ? std::min<int>(omp_get_max_threads(), int(K)) : 1;
  static thread_local std::vector<float> partial;
  if (partial.size() < size_t(threads * N)) partial.resize(size_t(threads * N));
  float* part = partial.data();
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* acc = part + int64_t(t) * N;
    std::fill(acc, acc + N, 0.f);
    for (int64_t k = K * t / nt; k < K * (t + 1) / nt; ++k) {
      const float* b = B + k * ldb;
      if (bf16) {
        const float ak = a16 ? std::bit_cast<float>(uint32_t(a16[k]) << 16) : round(a[k]);
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) acc[j] += ak * round(b[j]);
      } else {
        const float ak = a[k];
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) acc[j] += ak * b[j];
      }
    }
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t j = 0; j < N; ++j) {
      float sum = part[j];
      for (int x = 1; x < nt; ++x) sum += part[int64_t(x) * N + j];
      C[j] = accumulate ? C[j] + sum : sum;
    }
  }
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate, PackedOperands packed) {
  if (M == 0 || N == 0) return;
  if (M == 1 && !trans_a && !trans_b && !packed.b && K > 0) {
    const bool bf16 = backend().precision == MatmulPrecision::bf16;
    gemv(N, K, A, bf16 ? packed.a : nullptr, B, ldb, C, accumulate, bf16);
    return;
  }
  if (K == 0) {  // empty sum: C = 0 (or unchanged when accumulating)
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = 0.f;
    return;
  }
  Backend& be = backend();
  const bool bf16 = be.precision == MatmulPrecision::bf16;
  Entry& e = lookup({M, N, K, lda, ldb, ldc, trans_a, trans_b, accumulate, bf16, bf16 && !packed.b});
  if (bf16) {
    // Stored shapes: A is [M, K] ([K, M] when transposed), B is [K, N] ([N, K] when transposed).
    const uint16_t* a = packed.a;
    if (!a) {
      a = grow(be.pack_a, be.pack_a_size, M * K);
      pack_bf16(be.pack_a, A, trans_a ? K : M, trans_a ? M : K, lda);
    }
    e.a.set_data_handle(const_cast<uint16_t*>(a));
    if (packed.b) {
      e.b.set_data_handle(const_cast<uint16_t*>(packed.b));
    } else {  // converted into the kernel's layout (rounded to nearest even, as pack_bf16 does)
      e.b.set_data_handle(grow(be.pack_b, be.pack_b_size, int64_t((e.b_bytes + 1) / sizeof(uint16_t))));
      e.b_f32.set_data_handle(const_cast<float*>(B));
      const dnnl_status_t st = dnnl_primitive_execute(e.b_reorder.get(), be.strm.get(), 2, e.reorder_args);
      ATTN_CHECK(st == dnnl_success, "oneDNN reorder failed (status ", int(st), ") for B of M ", M, " N ", N, " K ", K);
    }
  } else {
    e.a.set_data_handle(const_cast<float*>(A));
    e.b.set_data_handle(const_cast<float*>(B));
  }
  e.c.set_data_handle(C);
  const dnnl_status_t st = dnnl_primitive_execute(e.prim.get(), backend().strm.get(), 4, e.args);
  ATTN_CHECK(st == dnnl_success, "oneDNN matmul failed (status ", int(st), ") for M ", M, " N ", N, " K ", K);
  backend().strm.wait();
}

void gemm_batched(int64_t batch, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                  int64_t lda, int64_t stride_a, const float* B, int64_t ldb, int64_t stride_b, float* C, int64_t ldc,
                  int64_t stride_c, bool accumulate) {
  if (batch == 1) return gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  ATTN_CHECK(batch > 1 && M > 0 && N > 0 && K > 0, "gemm_batched: batch ", batch, " of M ", M, " N ", N, " K ", K);
  Backend& be = backend();
  const bool bf16 = be.precision == MatmulPrecision::bf16;
  Key key{M, N, K, lda, ldb, ldc, trans_a, trans_b, accumulate, bf16, false};
  key.batch = batch, key.sa = stride_a, key.sb = stride_b, key.sc = stride_c;
  Entry& e = lookup(key);
  if (bf16) {
    uint16_t* a = grow(be.pack_a, be.pack_a_size, batch * M * K);
    uint16_t* b = grow(be.pack_b, be.pack_b_size, batch * K * N);
    for (int64_t i = 0; i < batch; ++i) {
      pack_bf16(a + i * M * K, A + i * stride_a, trans_a ? K : M, trans_a ? M : K, lda);
      pack_bf16(b + i * K * N, B + i * stride_b, trans_b ? N : K, trans_b ? K : N, ldb);
    }
    e.a.set_data_handle(a);
    e.b.set_data_handle(b);
  } else {
    e.a.set_data_handle(const_cast<float*>(A));
    e.b.set_data_handle(const_cast<float*>(B));
  }
  e.c.set_data_handle(C);
  const dnnl_status_t st = dnnl_primitive_execute(e.prim.get(), be.strm.get(), 4, e.args);
  ATTN_CHECK(st == dnnl_success, "oneDNN batched matmul failed (status ", int(st), ") for ", batch, " x M ", M, " N ",
             N, " K ", K);
  be.strm.wait();
}

double measured_peak_gflops(bool bf16) {
  const int64_t n = 2048;
  const dt in = bf16 ? dt::bf16 : dt::f32;
  dnnl::engine& eng = backend().eng;
  dnnl::memory::desc a_md({n, n}, in, dnnl::memory::format_tag::ab), c_md({n, n}, dt::f32, dnnl::memory::format_tag::ab);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, a_md, c_md), eng);
  dnnl::matmul prim(pd);
  dnnl::memory a(a_md, eng), b(a_md, eng), c(c_md, eng);
  std::memset(a.get_data_handle(), 0, a_md.get_size());
  std::memset(b.get_data_handle(), 0, a_md.get_size());
  double best = 0;
  for (int rep = 0; rep < 6; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    prim.execute(backend().strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    backend().strm.wait();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (rep > 0) best = std::max(best, 2.0 * double(n) * n * n / sec / 1e9);  // rep 0 warms up
  }
  return best;
}

void set_num_threads(int n) {
  ATTN_CHECK(n >= 1, "set_num_threads: ", n);
  omp_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

int64_t gemm_primitives_created() { return backend().created; }

}  // namespace attnlab::kernels
