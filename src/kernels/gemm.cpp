#include "kernels/gemm.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <vector>

#include "kernels/transpose.h"
#include "tensor/tensor.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab::kernels {
namespace {

// b_blocked (bf16 only): B is converted by a reorder into the layout the primitive's kernel reads
// (the layout oneDNN picks for weights), instead of packed dense in its stored layout, from which
// the kernel would copy it into that layout again for every block of rows of A it multiplies.
// part >= 0: one range of a split_k product, a single-threaded primitive whose operands are given
// as they are (f32, or dense bf16 copies with lda/ldb as their row strides).
struct Key {
  int64_t M, N, K, lda, ldb, ldc;
  bool ta, tb, acc, bf16, b_blocked;
  int64_t batch = 1, sa = 0, sb = 0, sc = 0;  // gemm_batched: matrix count and strides (f32 operands)
  bool b_from_bf16 = false;                   // b_blocked: the reorder reads a dense bf16 copy of B
  int64_t part = -1;
  bool operator==(const Key&) const = default;
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = 1469598103934665603ULL;
    for (int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc,
                      int64_t(k.ta) | int64_t(k.tb) << 1 | int64_t(k.acc) << 2 | int64_t(k.bf16) << 3 | int64_t(k.b_blocked) << 4,
                      k.batch, k.sa, k.sb, k.sc, int64_t(k.b_from_bf16), k.part})
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
  // b_blocked: the reorder of B (f32 as stored, or its dense bf16 copy) into the kernel's layout,
  // of b_bytes.
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
  // packed_b's B in the kernel's layout (bytes), split_k's partial results, transposed's Cᵀ,
  // measurement's C.
  uint16_t* blocked_b = nullptr;
  int64_t blocked_b_size = 0;
  uint16_t* partials = nullptr;
  int64_t partials_size = 0;
  uint16_t* transposed_c = nullptr;
  int64_t transposed_c_size = 0;
  uint16_t* scratch_c = nullptr;
  int64_t scratch_c_size = 0;
  std::vector<dnnl::stream> part_streams;  // one per split_k range: each thread executes on its own
  ~Backend() {
    for (uint16_t* p : {pack_a, pack_b, blocked_b, partials, transposed_c, scratch_c}) aligned_free(p);
  }
};

Backend& backend() {
  static Backend b;
  return b;
}

using dt = dnnl::memory::data_type;

// A logical [rows, cols] matrix stored row-major with leading dimension ld, or its transpose.
dnnl::memory::desc matrix_desc(int64_t rows, int64_t cols, int64_t ld, bool transposed, dt type = dt::f32) {
  dnnl::memory::dims strides = transposed ? dnnl::memory::dims{1, ld} : dnnl::memory::dims{ld, 1};
  return dnnl::memory::desc({rows, cols}, type, strides);
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
  const dt type = k.bf16 ? dt::bf16 : dt::f32;
  auto a_md = k.batch > 1  ? batch_desc(k.batch, k.M, k.K, k.lda, k.sa, k.ta, k.bf16)
              : k.part >= 0 ? matrix_desc(k.M, k.K, k.lda, k.ta, type)
              : k.bf16      ? packed_desc(k.M, k.K, k.ta)
                            : matrix_desc(k.M, k.K, k.lda, k.ta);
  auto b_md = k.batch > 1    ? batch_desc(k.batch, k.K, k.N, k.ldb, k.sb, k.tb, k.bf16)
              : k.part >= 0   ? matrix_desc(k.K, k.N, k.ldb, k.tb, type)
              : k.b_blocked   ? dnnl::memory::desc({k.K, k.N}, type, dnnl::memory::format_tag::any)
              : k.bf16        ? packed_desc(k.K, k.N, k.tb)
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
  // A split_k range runs on one thread: oneDNN sizes its work split by the threads it sees now.
  const int threads = omp_get_max_threads();
  if (k.part >= 0) omp_set_num_threads(1);
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, be.eng);
  if (k.part >= 0) omp_set_num_threads(threads);
  e->prim = dnnl::matmul(pd);
  e->a = dnnl::memory(a_md, be.eng, DNNL_MEMORY_NONE);
  e->b = dnnl::memory(pd.weights_desc(), be.eng, DNNL_MEMORY_NONE);
  if (k.b_blocked) {
    e->b_f32 = dnnl::memory(k.b_from_bf16 ? packed_desc(k.K, k.N, k.tb) : matrix_desc(k.K, k.N, k.ldb, k.tb), be.eng,
                            DNNL_MEMORY_NONE);
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

namespace {

// One call's product: C (+)= op(A)·op(B), as gemm documents it.
struct Product {
  bool ta, tb;
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
  bool acc;
  PackedOperands packed;
  bool bf16;
};

void execute(Entry& e, dnnl::stream& strm, const Product& p) {
  const dnnl_status_t st = dnnl_primitive_execute(e.prim.get(), strm.get(), 4, e.args);
  ATTN_CHECK(st == dnnl_success, "oneDNN matmul failed (status ", int(st), ") for M ", p.M, " N ", p.N, " K ", p.K);
}

// B into the kernel's layout through e's reorder (from f32 as stored, or a dense bf16 copy).
void reorder_b(Entry& e, const void* src) {
  Backend& be = backend();
  e.b.set_data_handle(grow(be.blocked_b, be.blocked_b_size, int64_t((e.b_bytes + 1) / sizeof(uint16_t))));
  e.b_f32.set_data_handle(const_cast<void*>(src));
  const dnnl_status_t st = dnnl_primitive_execute(e.b_reorder.get(), be.strm.get(), 2, e.reorder_args);
  ATTN_CHECK(st == dnnl_success, "oneDNN reorder failed (status ", int(st), ") for a B of ", e.b_bytes, " bytes");
}

// An operand's bf16 copy: the caller's, or packed here into buf (dense, in its stored layout).
const uint16_t* bf16_operand(const uint16_t* given, const float* src, int64_t rows, int64_t cols, int64_t ld,
                             uint16_t*& buf, int64_t& size) {
  if (given) return given;
  uint16_t* dst = grow(buf, size, rows * cols);
  pack_bf16(dst, src, rows, cols, ld);
  return dst;
}
const uint16_t* bf16_a(const Product& p) {
  Backend& be = backend();
  return bf16_operand(p.packed.a, p.A, p.ta ? p.K : p.M, p.ta ? p.M : p.K, p.lda, be.pack_a, be.pack_a_size);
}
const uint16_t* bf16_b_dense(const Product& p) {
  Backend& be = backend();
  return bf16_operand(p.packed.b, p.B, p.tb ? p.N : p.K, p.tb ? p.K : p.N, p.ldb, be.pack_b, be.pack_b_size);
}

// direct: one primitive. In bf16 a B that gemm converts itself goes straight into the kernel's
// layout (that conversion is needed anyway); a caller's dense copy is read as it is.
void run_direct(const Product& p) {
  Backend& be = backend();
  Entry& e = lookup({p.M, p.N, p.K, p.lda, p.ldb, p.ldc, p.ta, p.tb, p.acc, p.bf16, p.bf16 && !p.packed.b});
  if (p.bf16) {
    e.a.set_data_handle(const_cast<uint16_t*>(bf16_a(p)));
    if (p.packed.b)
      e.b.set_data_handle(const_cast<uint16_t*>(p.packed.b));
    else
      reorder_b(e, p.B);
  } else {
    e.a.set_data_handle(const_cast<float*>(p.A));
    e.b.set_data_handle(const_cast<float*>(p.B));
  }
  e.c.set_data_handle(p.C);
  execute(e, be.strm, p);
  be.strm.wait();
}

// packed_b: B (f32, or the caller's dense bf16 copy) reordered into the kernel's layout first.
void run_packed_b(const Product& p) {
  Backend& be = backend();
  Key k{p.M, p.N, p.K, p.lda, p.ldb, p.ldc, p.ta, p.tb, p.acc, p.bf16, true};
  k.b_from_bf16 = p.packed.b != nullptr;
  Entry& e = lookup(k);
  if (p.bf16) {
    e.a.set_data_handle(const_cast<uint16_t*>(bf16_a(p)));
    reorder_b(e, p.packed.b ? static_cast<const void*>(p.packed.b) : p.B);
  } else {
    e.a.set_data_handle(const_cast<float*>(p.A));
    reorder_b(e, p.B);
  }
  e.c.set_data_handle(p.C);
  execute(e, be.strm, p);
  be.strm.wait();
}

// split_k: range r of K on thread r, each a single-threaded primitive; range 0 writes C (adding to
// it when accumulating), the others write partial results that are then added in range order.
void run_split_k(const Product& p) {
  Backend& be = backend();
  const int parts = omp_get_max_threads();
  if (parts < 2 || p.K < parts) return run_direct(p);  // a preset choice made for other threads
  while (int(be.part_streams.size()) < parts) be.part_streams.emplace_back(be.eng);
  const void* a = p.A;
  const void* b = p.B;
  int64_t lda = p.lda, ldb = p.ldb;
  const size_t elem = p.bf16 ? sizeof(uint16_t) : sizeof(float);
  if (p.bf16) a = bf16_a(p), b = bf16_b_dense(p), lda = p.ta ? p.M : p.K, ldb = p.tb ? p.K : p.N;
  float* partial = reinterpret_cast<float*>(
      grow(be.partials, be.partials_size, 2 * int64_t(parts - 1) * p.M * p.N));  // 2 bf16 slots per float
  // Entries are looked up (and created) here, outside the parallel region: the cache is not shared-safe.
  Entry* entries[64];
  ATTN_CHECK(parts <= 64, "split_k: ", parts, " threads");
  for (int r = 0; r < parts; ++r) {
    const int64_t k0 = p.K * r / parts, k1 = p.K * (r + 1) / parts;
    Key k{p.M, p.N, k1 - k0, lda, ldb, r == 0 ? p.ldc : p.N, p.ta, p.tb, r == 0 && p.acc, p.bf16, false};
    k.part = r;
    Entry& e = lookup(k);
    e.a.set_data_handle(const_cast<char*>(static_cast<const char*>(a) + elem * size_t(p.ta ? k0 * lda : k0)));
    e.b.set_data_handle(const_cast<char*>(static_cast<const char*>(b) + elem * size_t(p.tb ? k0 : k0 * ldb)));
    e.c.set_data_handle(r == 0 ? p.C : partial + int64_t(r - 1) * p.M * p.N);
    entries[r] = &e;
  }
#pragma omp parallel num_threads(parts)
  {
    const int r = omp_get_thread_num();
    execute(*entries[r], be.part_streams[size_t(r)], p);
    be.part_streams[size_t(r)].wait();
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < p.M; ++i) {
    float* c = p.C + i * p.ldc;
    for (int r = 1; r < parts; ++r) {
      const float* q = partial + int64_t(r - 1) * p.M * p.N + i * p.N;
#pragma omp simd
      for (int64_t j = 0; j < p.N; ++j) c[j] += q[j];
    }
  }
}

// transposed: Cᵀ = op(B)ᵀ·op(A)ᵀ, the direct product with the operands' roles swapped (a caller's
// bf16 copies swap with them), into a dense [N, M] scratch that is then transposed into C, or
// added to it when accumulating. oneDNN blocks and parallelises the swapped shape differently.
void run_transposed(const Product& p) {
  Backend& be = backend();
  // ct [N, M], then with accumulation C's rows [M, N] before they are added (2 bf16 slots per float)
  float* ct = reinterpret_cast<float*>(grow(be.transposed_c, be.transposed_c_size, 4 * p.N * p.M));
  const Product q{!p.tb, !p.ta, p.N, p.M, p.K, p.B, p.ldb, p.A, p.lda, ct, p.M, false, {p.packed.b, p.packed.a}, p.bf16};
  run_direct(q);
  float* rows_out = p.acc ? ct + p.N * p.M : p.C;
  const int64_t ldr = p.acc ? p.N : p.ldc;
  // C's rows in blocks of 16 per task: a block reads 16 columns of ct.
  const int64_t blocks = (p.M + 15) / 16;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t i0 = blk * 16, rows = std::min<int64_t>(16, p.M - i0);
    transpose(rows_out + i0 * ldr, ldr, ct + i0, p.M, p.N, rows);
    if (p.acc)
      for (int64_t i = i0; i < i0 + rows; ++i) {
        float* c = p.C + i * p.ldc;
        const float* r = rows_out + i * ldr;
#pragma omp simd
        for (int64_t j = 0; j < p.N; ++j) c[j] += r[j];
      }
  }
}

void run(MatmulForm f, const Product& p) {
  switch (f) {
    case MatmulForm::direct: return run_direct(p);
    case MatmulForm::packed_b: return run_packed_b(p);
    case MatmulForm::split_k: return run_split_k(p);
    case MatmulForm::transposed: return run_transposed(p);
  }
}

// ---- form choice -------------------------------------------------------------------------------

// What identifies a product for its form: shape, layouts, accumulation, precision, whether B comes
// as the caller's bf16 copy, and the thread count (split_k's ranges are one per thread).
struct FormKey {
  int64_t M, N, K, lda, ldb, ldc;
  bool ta, tb, acc, bf16, pb;
  int threads;
  bool operator==(const FormKey&) const = default;
};
struct FormKeyHash {
  size_t operator()(const FormKey& k) const {
    size_t h = 1469598103934665603ULL;
    for (int64_t v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc, int64_t(k.threads),
                      int64_t(k.ta) | int64_t(k.tb) << 1 | int64_t(k.acc) << 2 | int64_t(k.bf16) << 3 | int64_t(k.pb) << 4})
      h = (h ^ size_t(v)) * 1099511628211ULL;
    return h;
  }
};

struct FormChoice {
  MatmulForm form = MatmulForm::direct;
  int64_t calls = 0;  // while profiling
  double seconds = 0;
};

struct Forms {
  bool measure = true;
  std::string file;  // empty: remembered in this process only
  std::unordered_map<FormKey, FormChoice, FormKeyHash> table;
  std::vector<std::string> news;  // for take_new_matmul_forms
};
Forms& forms() {
  static Forms f;
  return f;
}

std::string key_text(const FormKey& k) {
  return attnlab::detail::concat("M=", k.M, " N=", k.N, " K=", k.K, " lda=", k.lda, " ldb=", k.ldb, " ldc=", k.ldc,
                        " ta=", int(k.ta), " tb=", int(k.tb), " acc=", int(k.acc), " bf16=", int(k.bf16),
                        " pb=", int(k.pb), " threads=", k.threads);
}

std::optional<FormKey> parse_key(const std::string& t) {
  FormKey k{};
  long long v[12];
  int used = 0;
  if (std::sscanf(t.c_str(), "M=%lld N=%lld K=%lld lda=%lld ldb=%lld ldc=%lld ta=%lld tb=%lld acc=%lld bf16=%lld pb=%lld threads=%lld%n",
                  &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &used) != 12 ||
      used != int(t.size()))
    return std::nullopt;
  for (int i : {6, 7, 8, 9, 10})
    if (v[i] != 0 && v[i] != 1) return std::nullopt;
  if (v[11] > 4096) return std::nullopt;
  k = {v[0], v[1], v[2], v[3], v[4], v[5], bool(v[6]), bool(v[7]), bool(v[8]), bool(v[9]), bool(v[10]), int(v[11])};
  if (k.M < 1 || k.N < 1 || k.K < 1 || k.threads < 1 || k.lda < 1 || k.ldb < 1 || k.ldc < k.N) return std::nullopt;
  return k;
}

std::optional<MatmulForm> parse_form(const std::string& t) {
  for (MatmulForm f : {MatmulForm::direct, MatmulForm::packed_b, MatmulForm::split_k, MatmulForm::transposed})
    if (t == form_name(f)) return f;
  return std::nullopt;
}

// The forms a product can take here. packed_b: B is f32, or the caller's bf16 copy (a bf16 B that
// gemm converts itself already goes into the kernel's layout). split_k: two or more threads, a
// range of at least 256 per thread, partial results of at most 64 MB. transposed: always.
std::vector<MatmulForm> candidates(const FormKey& k) {
  std::vector<MatmulForm> c{MatmulForm::direct, MatmulForm::transposed};
  if (!k.bf16 || k.pb) c.push_back(MatmulForm::packed_b);
  if (k.threads >= 2 && k.K >= 256 * int64_t(k.threads) && (k.threads - 1) * k.M * k.N * 4 <= (int64_t(64) << 20))
    c.push_back(MatmulForm::split_k);
  return c;
}

// The machine a forms file line belongs to: CPU model, the ISA oneDNN dispatches to, its version.
const std::string& machine_signature() {
  static const std::string sig = [] {
    std::string model = "unknown";
    if (std::FILE* f = std::fopen("/proc/cpuinfo", "r")) {
      char line[512];
      while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "model name", 10) == 0) {
          const char* c = std::strchr(line, ':');
          if (c) {
            model = c + 1;
            while (!model.empty() && (model.front() == ' ' || model.front() == '\t')) model.erase(0, 1);
            while (!model.empty() && (model.back() == '\n' || model.back() == ' ')) model.pop_back();
          }
          break;
        }
      std::fclose(f);
    }
    for (char& ch : model)
      if (ch == '\t') ch = ' ';
    const dnnl_version_t* v = dnnl_version();
    return attnlab::detail::concat("cpu=", model, ";isa=", int(dnnl::get_effective_cpu_isa()), ";onednn=", v->major, ".",
                          v->minor, ".", v->patch);
  }();
  return sig;
}

// The file's lines for this machine, into the table (an entry already there stays).
void read_forms_file(int fd) {
  Forms& fs = forms();
  std::string text;
  char buf[1 << 14];
  ::lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
  size_t pos = 0;
  int malformed = 0;  // this machine's lines that do not parse (another version's, or damaged)
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) break;  // a line still being written by another process
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    const size_t t1 = line.find('\t'), t2 = line.rfind('\t');
    if (t1 == std::string::npos || t2 == t1 || line.compare(0, t1, machine_signature()) != 0 ||
        t1 != machine_signature().size())
      continue;
    const auto k = parse_key(line.substr(t1 + 1, t2 - t1 - 1));
    const auto f = parse_form(line.substr(t2 + 1));
    if (!k || !f) ++malformed;
    if (k && f && !fs.table.count(*k)) {
      fs.table[*k].form = *f;
      fs.news.push_back(key_text(*k) + ": " + form_name(*f) + " (forms file)");
    }
  }
  static bool warned = false;  // once per process: the file is reread before each measurement
  if (malformed && !warned) {
    warned = true;
    std::fprintf(stderr, "warning: matmul forms file %s: %d line(s) for this machine not understood, ignored\n",
                 fs.file.c_str(), malformed);
  }
}

// Holds an exclusive lock on the forms file while open (fd < 0: no file, or not usable).
class LockedFormsFile {
 public:
  LockedFormsFile() {
    Forms& fs = forms();
    if (fs.file.empty()) return;
    std::error_code ec;
    const std::filesystem::path parent = std::filesystem::path(fs.file).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    fd_ = ::open(fs.file.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) ::close(fd_), fd_ = -1;
    if (fd_ < 0) {
      // Choices measured now would not be there for a rerun, which could then choose otherwise
      // and differ in its last bits: run direct instead.
      std::fprintf(stderr,
                   "warning: matmul forms file %s: %s; products run in their direct form (runtime.matmul_forms_file "
                   "names another file; none measures without one)\n",
                   fs.file.c_str(), std::strerror(errno));
      fs.file.clear();
      fs.measure = false;
    }
  }
  ~LockedFormsFile() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// Each candidate on the call's operands, into scratch: one untimed call (it builds the primitives),
// then the best of three.
MatmulForm measure_form(const FormKey& k, const Product& p) {
  Backend& be = backend();
  Product q = p;
  q.C = reinterpret_cast<float*>(grow(be.scratch_c, be.scratch_c_size, 2 * p.M * p.ldc));
  std::memset(q.C, 0, size_t(p.M * p.ldc) * sizeof(float));  // accumulating into garbage could hit denormals
  MatmulForm best = MatmulForm::direct;
  double best_s = 0, direct_s = 0;
  for (MatmulForm f : candidates(k)) {
    run(f, q);
    double s = 1e30;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      run(f, q);
      s = std::min(s, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    if (f == MatmulForm::direct) direct_s = s, best_s = s;
    if (s < 0.97 * direct_s && s < best_s) best = f, best_s = s;
  }
  return best;
}

FormChoice& choose_form(const Product& p) {
  Forms& fs = forms();
  const FormKey k{p.M, p.N, p.K, p.lda, p.ldb, p.ldc, p.ta, p.tb, p.acc, p.bf16, p.packed.b != nullptr,
                  omp_get_max_threads()};
  auto it = fs.table.find(k);
  if (it != fs.table.end()) return it->second;
  if (!fs.measure || 2.0 * double(p.M) * double(p.N) * double(p.K) < kFormMinFlops) return fs.table[k];
  LockedFormsFile file;
  if (!fs.measure) return fs.table[k];  // the file could not be used
  if (file.fd() >= 0) {
    read_forms_file(file.fd());  // another process may have measured it meanwhile
    it = fs.table.find(k);
    if (it != fs.table.end()) return it->second;
  }
  const MatmulForm f = measure_form(k, p);
  if (file.fd() >= 0) {
    const std::string line = machine_signature() + "\t" + key_text(k) + "\t" + form_name(f) + "\n";
    if (::write(file.fd(), line.data(), line.size()) != ssize_t(line.size()))
      std::fprintf(stderr, "warning: matmul forms file %s: write failed\n", fs.file.c_str());
  }
  fs.news.push_back(key_text(k) + ": " + form_name(f) + " (measured)");
  FormChoice& c = fs.table[k];
  c.form = f;
  return c;
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate, PackedOperands packed) {
  if (M == 0 || N == 0) return;
  const bool bf16 = backend().precision == MatmulPrecision::bf16;
  if (M == 1 && !trans_a && !trans_b && !packed.b && K > 0) {
    gemv(N, K, A, bf16 ? packed.a : nullptr, B, ldb, C, accumulate, bf16);
    return;
  }
  if (K == 0) {  // empty sum: C = 0 (or unchanged when accumulating)
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = 0.f;
    return;
  }
  if (!bf16) packed = {};
  const Product p{trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate, packed, bf16};
  FormChoice& choice = choose_form(p);
  if (!profiling()) return run(choice.form, p);
  const auto t0 = std::chrono::steady_clock::now();
  run(choice.form, p);
  choice.calls++;
  choice.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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

const char* form_name(MatmulForm f) {
  switch (f) {
    case MatmulForm::direct: return "direct";
    case MatmulForm::packed_b: return "packed_b";
    case MatmulForm::split_k: return "split_k";
    case MatmulForm::transposed: return "transposed";
  }
  return "?";
}

void set_matmul_forms(bool measure, const std::string& forms_file) {
  Forms& fs = forms();
  fs.measure = measure;
  fs.file = measure ? forms_file : std::string();
}

std::string matmul_forms_text() {
  std::vector<std::string> lines;
  for (const auto& [k, c] : forms().table)
    if (2.0 * double(k.M) * double(k.N) * double(k.K) >= kFormMinFlops || c.form != MatmulForm::direct)
      lines.push_back(key_text(k) + "\t" + form_name(c.form) + "\n");
  std::sort(lines.begin(), lines.end());
  std::string out;
  for (const auto& l : lines) out += l;
  return out;
}

void preset_matmul_forms(const std::string& text) {
  Forms& fs = forms();
  size_t pos = 0;
  for (int line_no = 1; pos < text.size(); ++line_no) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    const auto k = tab == std::string::npos ? std::nullopt : parse_key(line.substr(0, tab));
    const auto f = tab == std::string::npos ? std::nullopt : parse_form(line.substr(tab + 1));
    if (!k || !f)
      throw Error(attnlab::detail::concat("matmul forms, line ", line_no, ": \"", line,
                                 "\" is not \"M=.. N=.. K=.. lda=.. ldb=.. ldc=.. ta=0|1 tb=0|1 acc=0|1 bf16=0|1 "
                                 "pb=0|1 threads=..<tab>direct|packed_b|split_k|transposed\""));
    fs.table[*k].form = *f;
    fs.news.push_back(key_text(*k) + ": " + form_name(*f) + " (checkpoint)");
  }
}

void forget_matmul_forms() {
  forms().table.clear();
  forms().news.clear();
}

std::string matmul_forms_machine() { return machine_signature(); }

std::vector<std::string> take_new_matmul_forms() {
  std::vector<std::string> out;
  out.swap(forms().news);
  return out;
}

std::vector<ProductStat> product_stats() {
  std::vector<ProductStat> out;
  for (const auto& [k, c] : forms().table) {
    if (c.calls == 0) continue;
    ProductStat st;
    st.product = attnlab::detail::concat("[", k.M, "x", k.K, "]", k.ta ? "(stored T)" : "", " . [", k.K, "x", k.N, "]",
                                k.tb ? "(stored T)" : "", k.bf16 ? " bf16" : " f32", k.acc ? " +=" : "");
    st.form = form_name(c.form);
    st.calls = c.calls;
    st.seconds = c.seconds;
    st.flops = 2.0 * double(k.M) * double(k.N) * double(k.K) * double(c.calls);
    out.push_back(st);
  }
  std::sort(out.begin(), out.end(), [](const ProductStat& a, const ProductStat& b) { return a.seconds > b.seconds; });
  return out;
}

void reset_product_stats() {
  for (auto& [k, c] : forms().table) c.calls = 0, c.seconds = 0;
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
