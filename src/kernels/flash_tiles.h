#pragma once
// The register tiles of the flash attention kernel (ops/attention_flash.cpp), written once per
// operand layout: F32Tiles, and, on a build with AVX-512 BF16, Bf16Tiles, whose products read bf16
// operands (rounded to nearest even) and accumulate in f32 with vdpbf16ps. The kernel is written
// once over this policy; everything here works on raw rows (a pointer and a row stride), so it
// knows nothing of tensors or autograd.
//
// Sizes: Dp = a head size rounded up to the policy's pad() (kLanes; 32 on AMX tiles), Sp = the key
// count rounded up to kKeyTile; every padded copy is zero past the real rows and columns, so the
// padding contributes nothing.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/transpose.h"
#include "kernels/vmath.h"

namespace attnlab::kernels::flash {

constexpr int kRows = 8;            // query rows per register tile
constexpr int kKeyTile = 32;        // keys per register tile of logits
constexpr int kLanes = 16;          // head-dim chunk of the output tiles
constexpr int64_t kKeyBlock = 128;  // keys per online-softmax update

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

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
#ifdef __AVX512F__
  // One zmm per 16 lanes, written out: inlined into the kernel, GCC 12 compiled the loops below
  // with x's rows on the stack (Xeon, mid's f32 attention per step: 81 ms with 256-bit vectors,
  // 102 with 512, 54 written out). Same operations in the same order, so the same floats.
  static_assert(kLanes == 16);
  for (int64_t e0 = 0; e0 < Dp; e0 += kLanes) {
    __m512 xr[kRows];
    for (int r = 0; r < kRows; ++r) xr[r] = _mm512_loadu_ps(x + r * Dp + e0);
    for (int64_t j = 0; j < n; ++j) {
      float* oj = o + j * Dp + e0;
      __m512 acc = _mm512_loadu_ps(oj);
      for (int r = 0; r < kRows; ++r) acc = _mm512_fmadd_ps(_mm512_set1_ps(p[r * ldp + j]), xr[r], acc);
      _mm512_storeu_ps(oj, acc);
    }
  }
#else
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
#endif
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
      const float x = j0 + e < n ? fast_exp(s[j0 + e] - m) : 0.f;
      s[j0 + e] = x;
      lanes[e] += x;
    }
  float sum = 0.f;
  for (int e = 0; e < kLanes; ++e) sum += lanes[e];
  return sum;
}

// The same over keys [lo, hi): s[j] = exp(s[j] − m) there, 0 for the other j of the 16-lane chunks
// that overlap [lo, hi) (none before lo / 16 · 16 or from round_up(hi, 16) on is touched).
inline float exp_shift_sum_range(float* __restrict s, int64_t lo, int64_t hi, float m) {
  float lanes[kLanes] = {};
  for (int64_t j0 = lo / kLanes * kLanes; j0 < hi; j0 += kLanes)
#pragma omp simd
    for (int e = 0; e < kLanes; ++e) {
      const int64_t j = j0 + e;
      const float x = j >= lo && j < hi ? fast_exp(s[j] - m) : 0.f;
      s[j] = x;
      lanes[e] += x;
    }
  float sum = 0.f;
  for (int e = 0; e < kLanes; ++e) sum += lanes[e];
  return sum;
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

// Padded copies of S rows of D floats (row j at x + j·ld): as rows [Sp, Dp] and/or transposed
// [Dp, Sp]; padding is zero.
inline void gather_padded(float* rows, float* cols, const float* x, int64_t ld, int64_t S, int64_t D, int64_t Dp,
                          int64_t Sp) {
  const bool padded = Sp > S || Dp > D;
  if (rows) {
    if (padded) std::memset(rows, 0, size_t(Sp * Dp) * sizeof(float));
    for (int64_t j = 0; j < S; ++j) std::memcpy(rows + j * Dp, x + j * ld, size_t(D) * sizeof(float));
  }
  if (cols) {
    if (padded) std::memset(cols, 0, size_t(Sp * Dp) * sizeof(float));
    transpose(cols, Sp, x, ld, S, D);
  }
}

// Keys [a, b) only (a, b multiples of kKeyTile, b <= Sp) of gather_padded's copies, so that a
// kernel can copy each key block just before it reads it: rows [a, b) of `rows`, columns [a, b)
// of `cols`; keys at or past S, and features at or past D, are zero.
inline void gather_padded_range(float* rows, float* cols, const float* x, int64_t ld, int64_t a, int64_t b,
                                int64_t S, int64_t D, int64_t Dp, int64_t Sp) {
  const int64_t e = std::min(b, S);  // keys [a, e) exist
  if (rows) {
    for (int64_t j = a; j < e; ++j) {
      std::memcpy(rows + j * Dp, x + j * ld, size_t(D) * sizeof(float));
      std::fill(rows + j * Dp + D, rows + (j + 1) * Dp, 0.f);
    }
    std::fill(rows + std::max(a, e) * Dp, rows + b * Dp, 0.f);
  }
  if (cols) {
    if (e > a) transpose(cols + a, Sp, x + a * ld, ld, e - a, D);
    for (int64_t f = 0; f < Dp; ++f)
      std::fill(cols + f * Sp + (f < D ? std::max(a, e) : a), cols + f * Sp + b, 0.f);
  }
}

// Up to kRows rows of D floats (xr[r] null: a zero row) into a zero-padded [kRows, Dp] tile.
inline void gather_query_rows(float* dst, const float* const* xr, int64_t D, int64_t Dp) {
  for (int r = 0; r < kRows; ++r)
    if (xr[r]) {
      std::memcpy(dst + r * Dp, xr[r], size_t(D) * sizeof(float));
      std::fill(dst + r * Dp + D, dst + (r + 1) * Dp, 0.f);
    } else {
      std::fill(dst + r * Dp, dst + (r + 1) * Dp, 0.f);
    }
}

// Logit tiles of query tile a against keys [j0, j0 + nb): s [kRows, kKeyBlock].
inline void block_logits(float* s, const float* a, const float* bt, int64_t j0, int64_t nb, int64_t Dp, int64_t Sp) {
  for (int64_t jt = 0; jt < nb; jt += kKeyTile) tile_abt(s + jt, kKeyBlock, a, Dp, bt + j0 + jt, Sp);
}

// Operand layouts of the products, as a policy the kernel is written once over. A head's keys or
// values are S rows of D floats at x + j·ld.
// F32: K for logits transposed [Dp, Sp] (kt), K and V as rows [Sp, Dp] for P·V and dS·K, query-side
// tiles as rows [kRows, Dp]; the P and dS blocks are read as they are.
struct F32Tiles {
  static constexpr int rows = kRows;  // query rows per tile
  // A head size padded to what the products read (Dp, Dvp).
  static int64_t pad(int64_t D) { return round_up(D, kLanes); }
  // Per-thread set-up before a (batch, kv head)'s products, and its undoing (AMX tiles: their shapes).
  static void enter() {}
  static void leave() {}
  static int64_t key_cols(int64_t Dp, int64_t Sp) { return Dp * Sp; }       // logits-side K/V, in floats
  static int64_t key_rows(int64_t Dp, int64_t Sp) { return Dp * Sp; }       // P·X-side K/V, in floats
  static int64_t row_tile(int64_t Dp) { return kRows * Dp; }                  // a query-side tile, in floats
  static int64_t block() { return 0; }                                        // converted P/dS block, in floats
  static void gather_cols(float* dst, const float* x, int64_t ld, int64_t S, int64_t D, int64_t Dp, int64_t Sp) {
    gather_padded(nullptr, dst, x, ld, S, D, Dp, Sp);
  }
  static void gather_rows(float* dst, const float* x, int64_t ld, int64_t S, int64_t D, int64_t Dp, int64_t Sp) {
    gather_padded(dst, nullptr, x, ld, S, D, Dp, Sp);
  }
  // Keys [a, b) only (multiples of kKeyTile): what gather_cols / gather_rows write there.
  static void gather_cols(float* dst, const float* x, int64_t ld, int64_t a, int64_t b, int64_t S, int64_t D,
                          int64_t Dp, int64_t Sp) {
    gather_padded_range(nullptr, dst, x, ld, a, b, S, D, Dp, Sp);
  }
  static void gather_rows(float* dst, const float* x, int64_t ld, int64_t a, int64_t b, int64_t S, int64_t D,
                          int64_t Dp, int64_t Sp) {
    gather_padded_range(dst, nullptr, x, ld, a, b, S, D, Dp, Sp);
  }
  // Query-side tile for logits (rows) and, in backward, for the dK/dV updates (the same tile here);
  // xr[r] is row r (null past the last row).
  static void gather_tile(float* dst, const float* const* xr, int64_t D, int64_t Dp) {
    gather_query_rows(dst, xr, D, Dp);
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

// A query-side tile of R rows as bf16 rows [R, Dp] (the first R·Dp/2 words) and as pairs of rows
// [R/2, Dp] (the next R·Dp/2); xr[r] is row r (null past the last row).
template <int R>
inline void gather_bf16_tile(float* dstf, const float* const* xr, int64_t D, int64_t Dp) {
  auto* rows = reinterpret_cast<uint16_t*>(dstf);
  auto* pairs = reinterpret_cast<uint32_t*>(dstf) + R * Dp / 2;
  for (int r = 0; r < R; ++r)
    if (xr[r])
      to_bf16_row(rows + r * Dp, xr[r], D, Dp);
    else
      std::memset(rows + r * Dp, 0, size_t(Dp) * sizeof(uint16_t));
  for (int rp = 0; rp < R / 2; ++rp)
    if (xr[2 * rp])
      to_bf16_pairs(pairs + rp * Dp, xr[2 * rp], xr[2 * rp + 1], D, Dp);
    else
      std::memset(pairs + rp * Dp, 0, size_t(Dp) * sizeof(uint32_t));
}
// A P or dS block of R rows (f32, row stride kKeyBlock) as bf16 rows [R, kKeyBlock], from its first
// round_up(nb, 32) columns.
template <int R>
inline const float* bf16_block_rows(float* buf, const float* w, int64_t nb) {
  auto* out = reinterpret_cast<uint16_t*>(buf);
  for (int r = 0; r < R; ++r)
    for (int64_t j = 0; j < nb; j += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(w + r * kKeyBlock + j + 16),
                                             _mm512_loadu_ps(w + r * kKeyBlock + j));
      _mm512_storeu_si512(out + r * kKeyBlock + j, reinterpret_cast<const __m512i&>(v));
    }
  return buf;
}

struct Bf16Tiles {
  static constexpr int rows = kRows;
  static int64_t pad(int64_t D) { return round_up(D, kLanes); }
  static void enter() {}
  static void leave() {}
  // Logits-side K/V: pairs of e, [Dp/2, Sp], built through a row-major bf16 copy [Sp, Dp/2].
  static int64_t key_cols(int64_t Dp, int64_t Sp) { return Dp / 2 * Sp + Sp * Dp / 2; }
  static int64_t key_rows(int64_t Dp, int64_t Sp) { return Sp / 2 * Dp; }
  // Rows as bf16 [kRows, Dp] (kRows·Dp/2 words), then pairs of rows [kRows/2, Dp] (kRows·Dp/2 words).
  static int64_t row_tile(int64_t Dp) { return kRows * Dp; }
  // A block as bf16 rows [kRows, kKeyBlock] or as pairs of rows [kRows/2, kKeyBlock].
  static int64_t block() { return kRows * kKeyBlock / 2; }

  // dst[ep, j] = (x[j, 2ep], x[j, 2ep + 1]), zero past D and S: each row converted (a pair of e is
  // one word of the row-major bf16 copy), then the words transposed in 16×16 blocks.
  static void gather_cols(float* dstf, const float* x, int64_t ld, int64_t S, int64_t D, int64_t Dp, int64_t Sp) {
    const int64_t Dh = Dp / 2;
    float* tmp = dstf + Dh * Sp;  // [S, Dh] words
    for (int64_t j = 0; j < S; ++j) to_bf16_row(reinterpret_cast<uint16_t*>(tmp + j * Dh), x + j * ld, D, Dp);
    if (Sp > S) std::memset(dstf, 0, size_t(Dh * Sp) * sizeof(float));
    transpose(dstf, Sp, tmp, Dh, S, Dh);  // moves 32-bit words, whatever their bits
  }
  // Keys [a, b) only (multiples of kKeyTile): what gather_cols writes there (its row-major copy
  // included).
  static void gather_cols(float* dstf, const float* x, int64_t ld, int64_t a, int64_t b, int64_t S, int64_t D,
                          int64_t Dp, int64_t Sp) {
    const int64_t Dh = Dp / 2, e = std::min(b, S);
    float* tmp = dstf + Dh * Sp;  // [S, Dh] words
    for (int64_t j = a; j < e; ++j) to_bf16_row(reinterpret_cast<uint16_t*>(tmp + j * Dh), x + j * ld, D, Dp);
    if (e > a) transpose(dstf + a, Sp, tmp + a * Dh, Dh, e - a, Dh);
    for (int64_t f = 0; f < Dh; ++f) std::fill(dstf + f * Sp + std::max(a, e), dstf + f * Sp + b, 0.f);
  }
  static void gather_rows(float* dstf, const float* x, int64_t ld, int64_t a, int64_t b, int64_t S, int64_t D,
                          int64_t Dp, int64_t Sp) {
    auto* dst = reinterpret_cast<uint32_t*>(dstf);
    for (int64_t j = a; j < b; j += 2)
      if (j < S)
        to_bf16_pairs(dst + j / 2 * Dp, x + j * ld, j + 1 < S ? x + (j + 1) * ld : nullptr, D, Dp);
      else
        std::memset(dst + j / 2 * Dp, 0, size_t(Dp) * sizeof(uint32_t));
  }
  // dst[jp, e] = (x[2jp, e], x[2jp + 1, e]), zero past D and S.
  static void gather_rows(float* dstf, const float* x, int64_t ld, int64_t S, int64_t D, int64_t Dp, int64_t Sp) {
    auto* dst = reinterpret_cast<uint32_t*>(dstf);
    for (int64_t j = 0; j < Sp; j += 2)
      if (j < S)
        to_bf16_pairs(dst + j / 2 * Dp, x + j * ld, j + 1 < S ? x + (j + 1) * ld : nullptr, D, Dp);
      else
        std::memset(dst + j / 2 * Dp, 0, size_t(Dp) * sizeof(uint32_t));
  }
  // The tile as bf16 rows (first kRows·Dp/2 words) and as pairs of rows (the next kRows·Dp/2);
  // xr[r] is row r (null past the last row).
  static void gather_tile(float* dstf, const float* const* xr, int64_t D, int64_t Dp) {
    gather_bf16_tile<kRows>(dstf, xr, D, Dp);
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
  static const float* block_rows(float* buf, const float* w, int64_t nb) { return bf16_block_rows<kRows>(buf, w, nb); }
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

}  // namespace attnlab::kernels::flash
