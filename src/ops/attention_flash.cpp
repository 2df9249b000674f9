// Flash attention on the CPU [Dao et al. 2022, "FlashAttention"; Dao 2023, "FlashAttention-2"]:
// the function of ops/attention.h computed over key blocks with an online softmax, so no T×S
// matrix exists. Forward keeps, per query row, the running max m, the running sum l and the
// output accumulator; it saves only the log-sum-exp L = m + log l. Backward recomputes each
// probability as exp(s − L). Key blocks entirely above the causal diagonal are skipped.
//
// Layout for speed: per (batch, kv head) a thread copies K and V into zero-padded scratch (Kᵀ
// [Dp, Sp] for q·k, row-major [Sp, Dp] for P·V; Dp = D rounded up to 16, Sp = S rounded up to
// kKeyTile), and processes kRows query rows at a time. Products are register tiles with
// compile-time sizes (tile_abt, tile_ab_acc, tile_atb_acc), which the compiler keeps in vector
// registers; the zero padding contributes nothing. Backward follows FlashAttention-2: each thread
// owns one kv head's dK and dV accumulators across its query heads and all query rows.
//
// The kernel is written once over an operand-layout policy: F32Tiles, or, with bf16 matmul
// products (precision.matmul=bf16) on a build with AVX-512 BF16, Bf16Tiles, whose products read
// bf16 operands (q, k, v, dy, p, ds rounded to nearest even) and accumulate in f32 with vdpbf16ps.
// The softmax, its max/sum statistics, the log-sum-exp and every accumulator stay f32 in both.
// Rows of q, k, v, dy and y are strided in memory; the next query tile's rows and the next kv
// head's K and V are prefetched while the current tile computes.
#include <immintrin.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "ops/attention_internal.h"
#include "util/check.h"

namespace attnlab::attn_detail {
namespace {

constexpr int kRows = 8;         // query rows per register tile
constexpr int kKeyTile = 32;     // keys per register tile of logits
constexpr int kLanes = 16;       // head-dim chunk of the output tiles
constexpr int64_t kKeyBlock = 128;  // keys per online-softmax update

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Last key index query row i may see.
inline int64_t last_key(int64_t i, const Dims& d, bool causal) { return causal ? i + (d.S - d.T) : d.S - 1; }

// s[r, j] = Σ_e a[r, e] · bt[e, j] for r < kRows, j < kKeyTile; a is [kRows, Dp], bt has row stride ldb.
inline void tile_abt(float* __restrict s, int64_t lds, const float* __restrict a, int64_t Dp,
                     const float* __restrict bt, int64_t ldb) {
  float acc[kRows][kKeyTile] = {};
  for (int64_t e = 0; e < Dp; ++e) {
    const float* b = bt + e * ldb;
    for (int r = 0; r < kRows; ++r) {
      const float ar = a[r * Dp + e];
#pragma omp simd
      for (int j = 0; j < kKeyTile; ++j) acc[r][j] += ar * b[j];
    }
  }
  for (int r = 0; r < kRows; ++r)
#pragma omp simd
    for (int j = 0; j < kKeyTile; ++j) s[r * lds + j] = acc[r][j];
}

// o[r, :] = c[r] · o[r, :] + Σ_{j<n} p[r, j] · x[j, :] for r < kRows (c null: 1); o is [kRows, Dp],
// x is [n, Dp], p has row stride ldp.
inline void tile_ab_acc(float* __restrict o, const float* __restrict c, const float* __restrict p, int64_t ldp,
                        const float* __restrict x, int64_t n, int64_t Dp) {
  for (int64_t e0 = 0; e0 < Dp; e0 += kLanes) {
    float acc[kRows][kLanes];
    for (int r = 0; r < kRows; ++r) {
      const float cr = c ? c[r] : 1.f;
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) acc[r][e] = o[r * Dp + e0 + e] * cr;
    }
    for (int64_t j = 0; j < n; ++j) {
      const float* xj = x + j * Dp + e0;
      for (int r = 0; r < kRows; ++r) {
        const float pr = p[r * ldp + j];
#pragma omp simd
        for (int e = 0; e < kLanes; ++e) acc[r][e] += pr * xj[e];
      }
    }
    for (int r = 0; r < kRows; ++r)
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) o[r * Dp + e0 + e] = acc[r][e];
  }
}

// o[j, :] += Σ_{r<kRows} p[r, j] · x[r, :] for j < n; o is [n, Dp], x is [kRows, Dp].
inline void tile_atb_acc(float* __restrict o, const float* __restrict p, int64_t ldp, const float* __restrict x,
                         int64_t n, int64_t Dp) {
  for (int64_t e0 = 0; e0 < Dp; e0 += kLanes) {
    float xr[kRows][kLanes];
    for (int r = 0; r < kRows; ++r)
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) xr[r][e] = x[r * Dp + e0 + e];
    for (int64_t j = 0; j < n; ++j) {
      float* oj = o + j * Dp + e0;
      float acc[kLanes];
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) acc[e] = oj[e];
      for (int r = 0; r < kRows; ++r) {
        const float pr = p[r * ldp + j];
#pragma omp simd
        for (int e = 0; e < kLanes; ++e) acc[e] += pr * xr[r][e];
      }
#pragma omp simd
      for (int e = 0; e < kLanes; ++e) oj[e] = acc[e];
    }
  }
}

// max(s[0, n)), n >= 1, in 16 lanes (GCC leaves a max reduction scalar even under omp simd).
inline float row_max(const float* __restrict s, int64_t n) {
  float lanes[kLanes];
  for (int e = 0; e < kLanes; ++e) lanes[e] = s[0];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
#pragma omp simd
    for (int e = 0; e < kLanes; ++e) lanes[e] = lanes[e] > s[j + e] ? lanes[e] : s[j + e];
  float m = s[0];
  for (int e = 0; e < kLanes; ++e) m = m > lanes[e] ? m : lanes[e];
  for (; j < n; ++j) m = m > s[j] ? m : s[j];
  return m;
}

// s[j] = exp(s[j] − m) for j < n, 0 for n <= j < round_up(n, 16); returns Σ_{j<n} s[j], summed in
// 16 lanes. (An omp simd sum kept its partial sums in memory and ran the remainder scalar.)
inline float exp_shift_sum(float* __restrict s, int64_t n, float m) {
  float lanes[kLanes] = {};
  for (int64_t j0 = 0; j0 < n; j0 += kLanes)
#pragma omp simd
    for (int e = 0; e < kLanes; ++e) {
      const float x = j0 + e < n ? kernels::fast_exp(s[j0 + e] - m) : 0.f;
      s[j0 + e] = x;
      lanes[e] += x;
    }
  float sum = 0.f;
  for (int e = 0; e < kLanes; ++e) sum += lanes[e];
  return sum;
}

// Asks for the cache lines of rows [i0, i0 + n) of head (b, h) of a strided [B, T, heads, D] tensor
// (rows with x's strides, starting at base): the next query tile's rows, fetched while the
// current tile computes (their stride defeats the hardware prefetcher).
inline void prefetch_rows(const float* base, const Tensor& x, int64_t b, int64_t i0, int64_t n, int64_t h, int64_t D) {
  for (int64_t r = 0; r < n; ++r) {
    const char* p = reinterpret_cast<const char*>(base + b * x.strides[0] + (i0 + r) * x.strides[1] + h * x.strides[2]);
    for (int64_t off = 0; off < D * int64_t(sizeof(float)); off += 64) __builtin_prefetch(p + off);
  }
}

// While head (b, g)'s last query head runs, the next (b, g) of the thread's static range has its K
// and V rows prefetched, a share per query tile: rows [t·c, (t + 1)·c) at tile t.
inline void prefetch_next_kv(const Tensor& k, const Tensor& v, int64_t b, int64_t g, int64_t tile, const Dims& d) {
  const int64_t next = b * d.Hkv + g + 1, nb = next / d.Hkv, ng = next % d.Hkv;
  if (nb >= d.B) return;
  const int64_t tiles = (d.T + kRows - 1) / kRows, per_tile = (d.S + tiles - 1) / tiles;
  const int64_t j0 = tile * per_tile, n = std::min(per_tile, d.S - j0);
  if (n <= 0) return;
  prefetch_rows(k.data, k, nb, j0, n, ng, d.D);
  prefetch_rows(v.data, v, nb, j0, n, ng, d.D);
}

// dst[0, n) = src, or += src when accumulating into a gradient written before.
inline void store_row(float* __restrict dst, const float* __restrict src, int64_t n, bool accumulate) {
  if (accumulate) {
#pragma omp simd
    for (int64_t e = 0; e < n; ++e) dst[e] += src[e];
  } else {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  }
}

// Padded copies of kv head (b, g): rows [Sp, Dp] and/or transposed [Dp, Sp]; padding is zero.
void gather_padded(float* rows, float* cols, const Tensor& x, int64_t b, int64_t g, const Dims& d, int64_t Dp,
                   int64_t Sp) {
  const bool padded = Sp > d.S || Dp > d.D;
  if (rows) {
    if (padded) std::memset(rows, 0, size_t(Sp * Dp) * sizeof(float));
    for (int64_t j = 0; j < d.S; ++j) std::memcpy(rows + j * Dp, row(x, b, j, g), size_t(d.D) * sizeof(float));
  }
  if (cols) {
    if (padded) std::memset(cols, 0, size_t(Sp * Dp) * sizeof(float));
    kernels::transpose(cols, Sp, row(x, b, 0, g), x.strides[1], d.S, d.D);
  }
}

// kRows query rows [i0, i0 + n) of head (b, h) into a zero-padded [kRows, Dp] tile.
void gather_query_rows(float* dst, const float* base, const Tensor& x, int64_t b, int64_t i0, int64_t n, int64_t h,
                       const Dims& d, int64_t Dp) {
  if (n < kRows || Dp > d.D) std::memset(dst, 0, size_t(kRows * Dp) * sizeof(float));
  for (int64_t r = 0; r < n; ++r)
    std::memcpy(dst + r * Dp, base + b * x.strides[0] + (i0 + r) * x.strides[1] + h * x.strides[2],
                size_t(d.D) * sizeof(float));
}

// Logit tiles of query tile a against keys [j0, j0 + nb): s [kRows, kKeyBlock].
inline void block_logits(float* s, const float* a, const float* bt, int64_t j0, int64_t nb, int64_t Dp, int64_t Sp) {
  for (int64_t jt = 0; jt < nb; jt += kKeyTile) tile_abt(s + jt, kKeyBlock, a, Dp, bt + j0 + jt, Sp);
}

// Operand layouts of the products, as a policy the kernel is written once over.
// F32: K for logits transposed [Dp, Sp] (kt), K and V as rows [Sp, Dp] for P·V and dS·K, query-side
// tiles as rows [kRows, Dp]; the P and dS blocks are read as they are.
struct F32Tiles {
  static int64_t key_cols(int64_t Dp, int64_t Sp) { return Dp * Sp; }       // logits-side K/V, in floats
  static int64_t key_rows(int64_t Dp, int64_t Sp) { return Dp * Sp; }       // P·X-side K/V, in floats
  static int64_t row_tile(int64_t Dp) { return kRows * Dp; }                  // a query-side tile, in floats
  static int64_t block() { return 0; }                                        // converted P/dS block, in floats
  static void gather_cols(float* dst, const Tensor& x, int64_t b, int64_t g, const Dims& d, int64_t Dp, int64_t Sp) {
    gather_padded(nullptr, dst, x, b, g, d, Dp, Sp);
  }
  static void gather_rows(float* dst, const Tensor& x, int64_t b, int64_t g, const Dims& d, int64_t Dp, int64_t Sp) {
    gather_padded(dst, nullptr, x, b, g, d, Dp, Sp);
  }
  // Query-side tile for logits (rows) and, in backward, for the dK/dV updates (the same tile here).
  static void gather_tile(float* dst, const float* base, const Tensor& x, int64_t b, int64_t i0, int64_t n, int64_t h,
                          const Dims& d, int64_t Dp) {
    gather_query_rows(dst, base, x, b, i0, n, h, d, Dp);
  }
  static void logits(float* s, const float* a, const float* kt, int64_t j0, int64_t nb, int64_t Dp, int64_t Sp) {
    block_logits(s, a, kt, j0, nb, Dp, Sp);
  }
  // A P or dS block [kRows, kKeyBlock] (f32) as the operand of P·X (rows) or Pᵀ·X (columns).
  static const float* block_rows(float*, const float* w, int64_t) { return w; }
  static const float* block_cols(float*, const float* w, int64_t) { return w; }
  // o[kRows, Dp] = c ⊙ o + w[kRows, nb] · x rows [j0, j0 + nb); c: per-row factors, null for 1
  static void ab_acc(float* o, const float* c, const float* w, const float* x, int64_t j0, int64_t nb, int64_t Dp) {
    tile_ab_acc(o, c, w, kKeyBlock, x + j0 * Dp, nb, Dp);
  }
  // o[nb, Dp] += wᵀ · x, x the query-side tile (rows [kRows, Dp])
  static void atb_acc(float* o, const float* w, const float* x, int64_t nb, int64_t Dp) {
    tile_atb_acc(o, w, kKeyBlock, x, nb, Dp);
  }
};

#ifdef __AVX512BF16__
// bf16 operands, f32 accumulation (vdpbf16ps: each f32 lane adds the products of one pair of bf16).
// Pairs run along the summed index: logits sum over e, so K (and V for dP) is stored as pairs of
// e, [Dp/2, Sp] in uint32; P·X and dS·K sum over keys, so X is pairs of keys, [Sp/2, Dp];
// dK and dV sum over query rows, so the query-side tile and the P/dS block are pairs of rows.
// The softmax, its statistics and every accumulator stay f32.
inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }
inline __m512bh load_pairs(const uint32_t* p) { return as_bh(_mm512_loadu_si512(p)); }
// acc + x · (the pair at p, in every lane), the pair read by the product's embedded broadcast
// (GCC 12 does not fold a broadcast into vdpbf16ps; a separate broadcast costs an instruction).
inline __m512 dp_bcast(__m512 acc, __m512bh x, const uint32_t* p) {
  asm("vdpbf16ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*p));
  return acc;
}

// x[0, 16) as bf16, reading only x[0, n) (zeros past n, none read when n <= 0).
inline __m256i bf16x16(const float* x, int64_t n) {
  const __mmask16 m = n >= 16 ? __mmask16(0xffff) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
  const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x));
  return reinterpret_cast<const __m256i&>(v);
}
// out[e] = bf16(x[e]) for e < n_out (a multiple of 16), zero past n.
inline void to_bf16_row(uint16_t* out, const float* x, int64_t n, int64_t n_out) {
  for (int64_t e = 0; e < n_out; e += 16) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + e), bf16x16(x + e, n - e));
}
// out[e] = (bf16(a[e]), bf16(b[e])) as one word for e < n_out (a multiple of 16), zero past n;
// b null reads as zeros. (The zero-masked conversions: GCC 12 warns about the unmasked ones'
// undefined pass-through.)
inline void to_bf16_pairs(uint32_t* out, const float* a, const float* b, int64_t n, int64_t n_out) {
  for (int64_t e = 0; e < n_out; e += 16) {
    const __m512i lo = _mm512_maskz_cvtepu16_epi32(0xffff, bf16x16(a + e, n - e));
    const __m512i hi = b ? _mm512_maskz_cvtepu16_epi32(0xffff, bf16x16(b + e, n - e)) : _mm512_setzero_si512();
    _mm512_storeu_si512(out + e, _mm512_or_si512(lo, _mm512_maskz_slli_epi32(0xffff, hi, 16)));
  }
}

struct Bf16Tiles {
  // Logits-side K/V: pairs of e, [Dp/2, Sp], built through a row-major bf16 copy [Sp, Dp/2].
  static int64_t key_cols(int64_t Dp, int64_t Sp) { return Dp / 2 * Sp + Sp * Dp / 2; }
  static int64_t key_rows(int64_t Dp, int64_t Sp) { return Sp / 2 * Dp; }
  // Rows as bf16 [kRows, Dp] (kRows·Dp/2 words), then pairs of rows [kRows/2, Dp] (kRows·Dp/2 words).
  static int64_t row_tile(int64_t Dp) { return kRows * Dp; }
  // A block as bf16 rows [kRows, kKeyBlock] or as pairs of rows [kRows/2, kKeyBlock].
  static int64_t block() { return kRows * kKeyBlock / 2; }

  // dst[ep, j] = (x[j, 2ep], x[j, 2ep + 1]), zero past D and S: each row converted (a pair of e is
  // one word of the row-major bf16 copy), then the words transposed in 16×16 blocks.
  static void gather_cols(float* dstf, const Tensor& x, int64_t b, int64_t g, const Dims& d, int64_t Dp, int64_t Sp) {
    const int64_t Dh = Dp / 2;
    float* tmp = dstf + Dh * Sp;  // [S, Dh] words
    for (int64_t j = 0; j < d.S; ++j)
      to_bf16_row(reinterpret_cast<uint16_t*>(tmp + j * Dh), row(x, b, j, g), d.D, Dp);
    if (Sp > d.S) std::memset(dstf, 0, size_t(Dh * Sp) * sizeof(float));
    kernels::transpose(dstf, Sp, tmp, Dh, d.S, Dh);  // moves 32-bit words, whatever their bits
  }
  // dst[jp, e] = (x[2jp, e], x[2jp + 1, e]), zero past D and S.
  static void gather_rows(float* dstf, const Tensor& x, int64_t b, int64_t g, const Dims& d, int64_t Dp, int64_t Sp) {
    auto* dst = reinterpret_cast<uint32_t*>(dstf);
    for (int64_t j = 0; j < Sp; j += 2)
      if (j < d.S)
        to_bf16_pairs(dst + j / 2 * Dp, row(x, b, j, g), j + 1 < d.S ? row(x, b, j + 1, g) : nullptr, d.D, Dp);
      else
        std::memset(dst + j / 2 * Dp, 0, size_t(Dp) * sizeof(uint32_t));
  }
  // The tile as bf16 rows (first kRows·Dp/2 words) and as pairs of rows (the next kRows·Dp/2).
  static void gather_tile(float* dstf, const float* base, const Tensor& x, int64_t b, int64_t i0, int64_t n, int64_t h,
                          const Dims& d, int64_t Dp) {
    auto* rows = reinterpret_cast<uint16_t*>(dstf);
    auto* pairs = reinterpret_cast<uint32_t*>(dstf) + kRows * Dp / 2;
    const float* xr[kRows] = {};
    for (int64_t r = 0; r < n; ++r) xr[r] = base + b * x.strides[0] + (i0 + r) * x.strides[1] + h * x.strides[2];
    for (int r = 0; r < kRows; ++r)
      if (xr[r])
        to_bf16_row(rows + r * Dp, xr[r], d.D, Dp);
      else
        std::memset(rows + r * Dp, 0, size_t(Dp) * sizeof(uint16_t));
    for (int rp = 0; rp < kRows / 2; ++rp)
      if (xr[2 * rp])
        to_bf16_pairs(pairs + rp * Dp, xr[2 * rp], xr[2 * rp + 1], d.D, Dp);
      else
        std::memset(pairs + rp * Dp, 0, size_t(Dp) * sizeof(uint32_t));
  }
  // s[r, j] = Σ_e a[r, e] k[j, e] over keys [j0, j0 + nb), in kKeyTile steps.
  static void logits(float* s, const float* af, const float* ktf, int64_t j0, int64_t nb, int64_t Dp, int64_t Sp) {
    const auto* a = reinterpret_cast<const uint32_t*>(af);
    const auto* kt = reinterpret_cast<const uint32_t*>(ktf);
    const int64_t Dh = Dp / 2;
    for (int64_t jt = 0; jt < nb; jt += kKeyTile) {
      __m512 acc[kRows][2];
      for (int r = 0; r < kRows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
      for (int64_t ep = 0; ep < Dh; ++ep) {
        const uint32_t* kp = kt + ep * Sp + j0 + jt;
        const __m512bh b0 = load_pairs(kp), b1 = load_pairs(kp + 16);
        for (int r = 0; r < kRows; ++r) {
          acc[r][0] = dp_bcast(acc[r][0], b0, a + r * Dh + ep);
          acc[r][1] = dp_bcast(acc[r][1], b1, a + r * Dh + ep);
        }
      }
      for (int r = 0; r < kRows; ++r) {
        _mm512_storeu_ps(s + r * kKeyBlock + jt, acc[r][0]);
        _mm512_storeu_ps(s + r * kKeyBlock + jt + 16, acc[r][1]);
      }
    }
  }
  // The block's rows in bf16 for ab_acc: [kRows, kKeyBlock] bf16 from w's first round_up(nb, 32)
  // columns (zero past the visible keys, as the softmax leaves them).
  static const float* block_rows(float* buf, const float* w, int64_t nb) {
    auto* out = reinterpret_cast<uint16_t*>(buf);
    for (int r = 0; r < kRows; ++r)
      for (int64_t j = 0; j < nb; j += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(w + r * kKeyBlock + j + 16),
                                               _mm512_loadu_ps(w + r * kKeyBlock + j));
        _mm512_storeu_si512(out + r * kKeyBlock + j, reinterpret_cast<const __m512i&>(v));
      }
    return buf;
  }
  // The block as pairs of rows for atb_acc: out[rp, j] = (w[2rp, j], w[2rp + 1, j]).
  static const float* block_cols(float* buf, const float* w, int64_t nb) {
    auto* out = reinterpret_cast<uint32_t*>(buf);
    const int64_t n = round_up(nb, 16);
    for (int rp = 0; rp < kRows / 2; ++rp)
      to_bf16_pairs(out + rp * kKeyBlock, w + 2 * rp * kKeyBlock, w + (2 * rp + 1) * kKeyBlock, n, n);
    return buf;
  }
  // o[kRows, Dp] = c ⊙ o + w[kRows, nb] · x, x = pairs of keys [Sp/2, Dp] from key j0 (even);
  // c: per-row factors, null for 1.
  static void ab_acc(float* o, const float* c, const float* wf, const float* xf, int64_t j0, int64_t nb,
                     int64_t Dp) {
    const auto* w = reinterpret_cast<const uint32_t*>(wf);
    const auto* x = reinterpret_cast<const uint32_t*>(xf) + j0 / 2 * Dp;
    const int64_t np = (nb + 1) / 2;
    for (int64_t e0 = 0; e0 < Dp; e0 += kLanes) {
      __m512 acc[kRows];
      for (int r = 0; r < kRows; ++r)
        acc[r] = c ? _mm512_mul_ps(_mm512_loadu_ps(o + r * Dp + e0), _mm512_set1_ps(c[r])) : _mm512_loadu_ps(o + r * Dp + e0);
      for (int64_t jp = 0; jp < np; ++jp) {
        const __m512bh xv = load_pairs(x + jp * Dp + e0);
        for (int r = 0; r < kRows; ++r) acc[r] = dp_bcast(acc[r], xv, w + r * kKeyBlock / 2 + jp);
      }
      for (int r = 0; r < kRows; ++r) _mm512_storeu_ps(o + r * Dp + e0, acc[r]);
    }
  }
  // o[nb, Dp] += wᵀ · x: w pairs of rows [kRows/2, kKeyBlock], x the tile's pairs of rows.
  static void atb_acc(float* o, const float* wf, const float* xf, int64_t nb, int64_t Dp) {
    const auto* w = reinterpret_cast<const uint32_t*>(wf);
    const auto* x = reinterpret_cast<const uint32_t*>(xf) + kRows * Dp / 2;
    for (int64_t e0 = 0; e0 < Dp; e0 += kLanes) {
      __m512bh xr[kRows / 2];
      for (int rp = 0; rp < kRows / 2; ++rp) xr[rp] = load_pairs(x + rp * Dp + e0);
      for (int64_t j = 0; j < nb; ++j) {
        __m512 acc = _mm512_loadu_ps(o + j * Dp + e0);
        for (int rp = 0; rp < kRows / 2; ++rp) acc = dp_bcast(acc, xr[rp], w + rp * kKeyBlock + j);
        _mm512_storeu_ps(o + j * Dp + e0, acc);
      }
    }
  }
};
#endif
template <class Tiles>
Tensor flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d) {
  const float alpha = opt.logit_scale, cap = opt.softcap;
  const bool causal = opt.causal;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  Tensor y = new_output(q.shape, needs_grad(q, k, v));
  float* lse = current_arena().alloc_floats(d.B * d.H * d.T);  // [B, H, T]
  const int nt = omp_get_max_threads();
  const int64_t Dp = round_up(d.D, kLanes), Sp = round_up(d.S, kKeyTile);
  // Per thread: K for logits, V for P·V, the query tile and accumulator [kRows, Dp], a logits
  // block [kRows, kKeyBlock] and its converted copy, and m, l [kRows].
  const int64_t kc = Tiles::key_cols(Dp, Sp), kr = Tiles::key_rows(Dp, Sp), tile = Tiles::row_tile(Dp);
  const int64_t per_thread = kc + kr + tile + kRows * Dp + kRows * kKeyBlock + Tiles::block() + 2 * kRows;
  float* scratch = current_arena().alloc_floats(nt * per_thread);
  float* head_max = current_arena().alloc_floats(d.B * d.H);

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t g = 0; g < d.Hkv; ++g) {
      float* kt = scratch + omp_get_thread_num() * per_thread;
      float* vr = kt + kc;
      float* qb = vr + kr;
      float* acc = qb + tile;
      float* s = acc + kRows * Dp;
      float* sb = s + kRows * kKeyBlock;
      float* m = sb + Tiles::block();
      float* l = m + kRows;
      Tiles::gather_cols(kt, k, b, g, d, Dp, Sp);
      Tiles::gather_rows(vr, v, b, g, d, Dp, Sp);
      for (int64_t hh = 0; hh < d.G; ++hh) {
        const int64_t h = g * d.G + hh;
        float hmax = kNegInf;
        for (int64_t i0 = 0; i0 < d.T; i0 += kRows) {
          const int64_t rows = std::min<int64_t>(kRows, d.T - i0);
          Tiles::gather_tile(qb, q.data, q, b, i0, rows, h, d, Dp);
          prefetch_rows(q.data, q, b, i0 + rows, std::min<int64_t>(kRows, d.T - i0 - rows), h, d.D);
          if (hh == d.G - 1) prefetch_next_kv(k, v, b, g, i0 / kRows, d);
          std::fill(m, m + kRows, kNegInf);
          std::fill(l, l + kRows, 0.f);
          std::fill(acc, acc + kRows * Dp, 0.f);
          const int64_t keys = last_key(i0 + rows - 1, d, causal) + 1;  // blocks past the diagonal: skipped
          for (int64_t j0 = 0; j0 < keys; j0 += kKeyBlock) {
            const int64_t nb = std::min(keys, j0 + kKeyBlock) - j0;
            const int64_t nb_tiles = std::min(round_up(nb, kKeyTile), kKeyBlock);  // what the tiles read
            Tiles::logits(s, qb, kt, j0, nb, Dp, Sp);
            float corr[kRows];  // the rescaling of each row's accumulator, applied by ab_acc
            for (int64_t r = 0; r < kRows; ++r) {
              float* sr = s + r * kKeyBlock;
              const int64_t n = r < rows ? std::min(nb, last_key(i0 + r, d, causal) + 1 - j0) : 0;
              corr[r] = 1.f;
              if (n <= 0) {  // no key of this block is visible to row r: it adds nothing
                std::fill(sr, sr + nb_tiles, 0.f);
                continue;
              }
              finish_logits(sr, n, alpha, cap);
              const float mb = row_max(sr, n);
              const float m_new = std::max(m[r], mb);
              corr[r] = kernels::fast_exp(m[r] - m_new);  // about 0 when m was -inf (and acc is 0)
              const float sum = exp_shift_sum(sr, n, m_new);
              std::fill(sr + round_up(n, kLanes), sr + nb_tiles, 0.f);
              l[r] = l[r] * corr[r] + sum;
              m[r] = m_new;
            }
            Tiles::ab_acc(acc, corr, Tiles::block_rows(sb, s, nb), vr, j0, nb, Dp);
          }
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            const float inv_l = 1.f / l[r];
            float* yi = y.data + ((b * d.T + i) * d.H + h) * d.D;
            for (int64_t e = 0; e < d.D; ++e) yi[e] = acc[r * Dp + e] * inv_l;
            lse[(b * d.H + h) * d.T + i] = m[r] + std::log(l[r]);
            hmax = std::max(hmax, m[r]);
          }
        }
        head_max[b * d.H + h] = hmax;
      }
    }
  record_max_logits(opt, head_max, d);
  if (!y.requires_grad()) return y;

  // Backward scratch per thread: K and V for logits, K for dS·K, the dK and dV accumulators
  // [Sp, Dp], the q and dy tiles, the dq tile [kRows, Dp], the p and ds blocks [kRows, kKeyBlock]
  // and their converted copies.
  const int64_t bwd_per_thread = 2 * kc + kr + 2 * Sp * Dp + 2 * tile + kRows * Dp + 2 * kRows * kKeyBlock +
                                 3 * Tiles::block();
  float* bscratch = current_arena().alloc_floats(nt * bwd_per_thread);
  record("attention", y, [q, k, v, y, lse, bscratch, bwd_per_thread, d, Dp, Sp, kc, kr, tile, alpha, cap, causal] {
    // fwd: y_i = Σ_j p_ij v_j, p_ij = exp(s_ij − L_i), s = cap(α q·k)  =>
    //   dv_j += p_ij dy_i;  dp_ij = dy_i·v_j;  ds_ij = p_ij (dp_ij − dy_i·y_i) (1 − (s/c)²);
    //   dq_i += α Σ_j ds_ij k_j;  dk_j += α Σ_i ds_ij q_i
    const float* dy = y.grad_in();
    // Each element of dq, dk and dv is stored exactly once below, so a first write overwrites
    // (no zero-fill, no read of the old values).
    const GradSink qg = q.requires_grad() ? q.grad_out() : GradSink{};
    const GradSink kg = k.requires_grad() ? k.grad_out() : GradSink{};
    const GradSink vg = v.requires_grad() ? v.grad_out() : GradSink{};
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t g = 0; g < d.Hkv; ++g) {
        float* kt = bscratch + omp_get_thread_num() * bwd_per_thread;
        float* vt = kt + kc;
        float* krows = vt + kc;
        float* dk = krows + kr;
        float* dv = dk + Sp * Dp;
        float* qb = dv + Sp * Dp;
        float* dyb = qb + tile;
        float* dq = dyb + tile;
        float* p = dq + kRows * Dp;
        float* ds = p + kRows * kKeyBlock;
        float* ds_rows = ds + kRows * kKeyBlock;
        float* ds_cols = ds_rows + Tiles::block();
        float* p_cols = ds_cols + Tiles::block();
        Tiles::gather_cols(kt, k, b, g, d, Dp, Sp);
        Tiles::gather_cols(vt, v, b, g, d, Dp, Sp);
        Tiles::gather_rows(krows, k, b, g, d, Dp, Sp);
        std::fill(dk, dk + Sp * Dp, 0.f);
        std::fill(dv, dv + Sp * Dp, 0.f);
        for (int64_t hh = 0; hh < d.G; ++hh) {
          const int64_t h = g * d.G + hh;
          for (int64_t i0 = 0; i0 < d.T; i0 += kRows) {
            const int64_t rows = std::min<int64_t>(kRows, d.T - i0);
            Tiles::gather_tile(qb, q.data, q, b, i0, rows, h, d, Dp);
            Tiles::gather_tile(dyb, dy, y, b, i0, rows, h, d, Dp);
            {
              const int64_t next = std::min<int64_t>(kRows, d.T - i0 - rows);
              prefetch_rows(q.data, q, b, i0 + rows, next, h, d.D);
              prefetch_rows(dy, y, b, i0 + rows, next, h, d.D);
              prefetch_rows(y.data, y, b, i0 + rows, next, h, d.D);
              if (hh == d.G - 1) prefetch_next_kv(k, v, b, g, i0 / kRows, d);
            }
            float rowdot[kRows] = {}, L[kRows] = {};  // Σ_j p_ij dp_ij = dy_i · y_i
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t off = (b * d.T + i0 + r) * d.H * d.D + h * d.D;
              const float *yi = y.data + off, *dyi = dy + off;
              float dot = 0.f;
#pragma omp simd reduction(+ : dot)
              for (int64_t e = 0; e < d.D; ++e) dot += dyi[e] * yi[e];
              rowdot[r] = dot;
              L[r] = lse[(b * d.H + h) * d.T + i0 + r];
            }
            std::fill(dq, dq + kRows * Dp, 0.f);
            const int64_t keys = last_key(i0 + rows - 1, d, causal) + 1;
            for (int64_t j0 = 0; j0 < keys; j0 += kKeyBlock) {
              const int64_t nb = std::min(keys, j0 + kKeyBlock) - j0;
              const int64_t nb_tiles = std::min(round_up(nb, kKeyTile), kKeyBlock);
              Tiles::logits(p, qb, kt, j0, nb, Dp, Sp);    // s, turned into p below
              Tiles::logits(ds, dyb, vt, j0, nb, Dp, Sp);  // dp_ij = dy_i · v_j, turned into α·ds
              for (int64_t r = 0; r < kRows; ++r) {
                float *pr = p + r * kKeyBlock, *dsr = ds + r * kKeyBlock;
                const int64_t n = r < rows ? std::max<int64_t>(0, std::min(nb, last_key(i0 + r, d, causal) + 1 - j0)) : 0;
                finish_logits(pr, n, alpha, cap);
                const float Lr = L[r], rd = rowdot[r];
#pragma omp simd
                for (int64_t j = 0; j < n; ++j) {
                  const float pj = kernels::fast_exp(pr[j] - Lr);
                  float dsj = pj * (dsr[j] - rd);
                  if (cap > 0.f) dsj *= 1.f - (pr[j] / cap) * (pr[j] / cap);
                  dsr[j] = alpha * dsj;
                  pr[j] = pj;
                }
                std::fill(pr + n, pr + nb_tiles, 0.f);
                std::fill(dsr + n, dsr + nb_tiles, 0.f);
              }
              Tiles::ab_acc(dq, nullptr, Tiles::block_rows(ds_rows, ds, nb), krows, j0, nb, Dp);  // dq_i += α Σ_j ds_ij k_j
              Tiles::atb_acc(dk + j0 * Dp, Tiles::block_cols(ds_cols, ds, nb), qb, nb, Dp);  // dk_j += α Σ_i ds_ij q_i
              Tiles::atb_acc(dv + j0 * Dp, Tiles::block_cols(p_cols, p, nb), dyb, nb, Dp);   // dv_j += Σ_i p_ij dy_i
            }
            if (qg.ptr)
              for (int64_t r = 0; r < rows; ++r) store_row(grad_row(qg.ptr, q, b, i0 + r, h), dq + r * Dp, d.D, qg.accumulate);
          }
        }
        for (int64_t j = 0; j < d.S; ++j) {
          if (kg.ptr) store_row(grad_row(kg.ptr, k, b, j, g), dk + j * Dp, d.D, kg.accumulate);
          if (vg.ptr) store_row(grad_row(vg.ptr, v, b, j, g), dv + j * Dp, d.D, vg.accumulate);
        }
      }
  });
  return y;
}

}  // namespace

Tensor attention_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d) {
#ifdef __AVX512BF16__
  if (kernels::matmul_precision() == kernels::MatmulPrecision::bf16) return flash<Bf16Tiles>(q, k, v, opt, d);
#endif
  return flash<F32Tiles>(q, k, v, opt, d);
}

}  // namespace attnlab::attn_detail
