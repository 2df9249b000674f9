#pragma once
// The flash kernel's bf16 products on AMX tiles: Bf16Tiles (kernels/flash_tiles.h) with its three
// products (q·k logits, P·X, Pᵀ·X) done by TDPBF16PS on a tile unit (kernels/amx.h: the hardware,
// or its emulation), on query tiles of R = 8 or 16 rows (16: a full tile). The operands are
// Bf16Tiles' layouts at R rows, which are already what the tiles read: bf16 rows for the left
// operand, pairs along the summed index for the right one. The one new layout is the P/dS block
// for Pᵀ·X, transposed to bf16 [keys, R] rows (there the keys are the output rows).
// Conversion, rounding (nearest even) and every f32 statistic are Bf16Tiles'.
//
// Tile registers, configured once per (batch, kv head) by enter():
//   0, 1  C  [R, 16] f32       logits of 16 keys / 16 output features of P·X
//   2     A  [R, 32] bf16      query-side rows, or P rows, 32 of the summed index
//   3     B  [16 pairs, 16]    Kᵀ pairs of features, or X pairs of keys
//   4     C  [16, 16] f32      16 keys × 16 features of dK or dV
//   5     A  [16, R] bf16      Pᵀ (or dSᵀ): 16 keys × the tile's rows
//   6     B  [R/2 pairs, 16]   the query-side tile as pairs of rows
// The summed index of logits is the head size: head sizes are padded to multiples of 32 (pad()).
#include "kernels/amx.h"
#include "kernels/flash_tiles.h"

#ifdef __AVX512BF16__
namespace attnlab::kernels::flash {

static_assert(kKeyTile == 32 && kKeyBlock % 32 == 0, "the tile shapes below assume these");

// out[j·ld + r] = bf16(w[r, j]) for j < 16, r < 8 (w has row stride kKeyBlock).
inline void transpose_8x16_bf16(uint16_t* out, int64_t ld, const float* w) {
  __m256i r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = bf16x16(w + i * kKeyBlock, 16);  // keys 0–7 | 8–15 per 128-bit lane
  for (int i = 0; i < 4; ++i) {  // rows (2i, 2i + 1) interleaved per key
    t[2 * i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 4h … 4h + 3 per key: keys (0, 1), (2, 3), (4, 5), (6, 7) of a lane
    u[4 * h + 0] = _mm256_unpacklo_epi32(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm256_unpackhi_epi32(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm256_unpacklo_epi32(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm256_unpackhi_epi32(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int i = 0; i < 4; ++i) {  // all 8 rows of keys 2i and 2i + 1 (and 8 + those in the upper lane)
    const __m256i even = _mm256_unpacklo_epi64(u[i], u[4 + i]), odd = _mm256_unpackhi_epi64(u[i], u[4 + i]);
    auto key = [out, ld](int64_t j) { return reinterpret_cast<__m128i*>(out + j * ld); };
    _mm_storeu_si128(key(2 * i), _mm256_castsi256_si128(even));
    _mm_storeu_si128(key(2 * i + 1), _mm256_castsi256_si128(odd));
    _mm_storeu_si128(key(8 + 2 * i), _mm256_extracti128_si256(even, 1));
    _mm_storeu_si128(key(8 + 2 * i + 1), _mm256_extracti128_si256(odd, 1));
  }
}

// Rows: the query rows per tile, 8 (as the register policies) or 16 (a full tile: twice the work
// per instruction, and the causal diagonal's masked half of a tile twice as large).
template <class Unit, int Rows>
struct AmxTiles : Bf16Tiles {
  static_assert(Rows == 8 || Rows == 16);
  static constexpr int rows = Rows;
  static constexpr int R = Rows;
  // The summed index of logits is the head size, 32 bf16 per tile row: head sizes are padded to 32.
  static int64_t pad(int64_t D) { return round_up(D, 32); }
  // Head sizes the tiles take: above 16, where padding to 32 rather than 16 adds at most a third
  // (16 or less: twice the register path's products).
  static bool fits(int64_t D, int64_t Dv) { return D > 16 && Dv > 16; }
  static void enter() {
    TileConfig c;
    c.set(0, R, 64);
    c.set(1, R, 64);
    c.set(2, R, 64);
    c.set(3, 16, 64);
    c.set(4, 16, 64);
    c.set(5, 16, 2 * R);
    c.set(6, R / 2, 64);
    Unit::configure(c);
  }
  static void leave() { Unit::release(); }

  // Rows as bf16 [R, Dp] (R·Dp/2 words), then pairs of rows [R/2, Dp] (R·Dp/2 words).
  static int64_t row_tile(int64_t Dp) { return R * Dp; }
  // A block as bf16 rows [R, kKeyBlock], or transposed [kKeyBlock, R].
  static int64_t block() { return R * kKeyBlock / 2; }
  // The tile as bf16 rows and as pairs of rows; xr[r] is row r (null past the last row).
  static void gather_tile(float* dstf, const float* const* xr, int64_t D, int64_t Dp) {
    gather_bf16_tile<R>(dstf, xr, D, Dp);
  }

  // Tiles 0 and 1 (C [R, 16] each, side by side) += a [R, 32] · b [16 pairs, 32 columns]:
  // a bf16 rows (row stride lda bytes), b pairs along the summed index (row stride ldb bytes).
  static void dp_32_columns(const uint16_t* a, int64_t lda, const uint32_t* b, int64_t ldb) {
    Unit::template load<2>(a, lda);
    Unit::template load<3>(b, ldb);
    Unit::template dp<0, 2, 3>();
    Unit::template load<3>(b + 16, ldb);
    Unit::template dp<1, 2, 3>();
  }

  // s[r, j] = Σ_e a[r, e] k[j, e] over keys [j0, j0 + nb), 32 keys at a time; a: bf16 rows [R, Dp]
  // (gather_tile), kt: pairs of e [Dp/2, Sp] (gather_cols).
  static void logits(float* s, const float* af, const float* ktf, int64_t j0, int64_t nb, int64_t Dp, int64_t Sp) {
    const auto* a = reinterpret_cast<const uint16_t*>(af);
    const auto* kt = reinterpret_cast<const uint32_t*>(ktf);
    for (int64_t jt = 0; jt < nb; jt += kKeyTile) {
      Unit::template zero<0>();
      Unit::template zero<1>();
      for (int64_t e0 = 0; e0 < Dp; e0 += 32) dp_32_columns(a + e0, Dp * 2, kt + e0 / 2 * Sp + j0 + jt, Sp * 4);
      Unit::template store<0>(s + jt, kKeyBlock * 4);
      Unit::template store<1>(s + jt + 16, kKeyBlock * 4);
    }
  }
  // The block's bf16 rows for ab_acc: [R, kKeyBlock] from w's first round_up(nb, 32) columns (zero
  // past the visible keys, as the softmax leaves them).
  static const float* block_rows(float* buf, const float* w, int64_t nb) { return bf16_block_rows<R>(buf, w, nb); }
  // o[R, Dp] = c ⊙ o + w · x over keys [j0, j0 + nb): w the block's bf16 rows (block_rows), x pairs
  // of keys [Sp/2, Dp] (gather_rows); c null for 1.
  static void ab_acc(float* o, const float* c, const float* wf, const float* xf, int64_t j0, int64_t nb,
                     int64_t Dp) {
    if (c)
      for (int r = 0; r < R; ++r) {
        const float cr = c[r];
#pragma omp simd
        for (int64_t e = 0; e < Dp; ++e) o[r * Dp + e] *= cr;
      }
    const auto* w = reinterpret_cast<const uint16_t*>(wf);
    const auto* x = reinterpret_cast<const uint32_t*>(xf) + j0 / 2 * Dp;
    const int64_t keys = round_up(nb, 32);
    for (int64_t e0 = 0; e0 < Dp; e0 += 32) {
      Unit::template load<0>(o + e0, Dp * 4);
      Unit::template load<1>(o + e0 + 16, Dp * 4);
      for (int64_t k0 = 0; k0 < keys; k0 += 32) dp_32_columns(w + k0, kKeyBlock * 2, x + k0 / 2 * Dp + e0, Dp * 4);
      Unit::template store<0>(o + e0, Dp * 4);
      Unit::template store<1>(o + e0 + 16, Dp * 4);
    }
  }
  // The block transposed for atb_acc: bf16 [kKeyBlock, R], keys to the next 16 (zero past the
  // visible keys, as the softmax leaves them).
  static const float* block_cols(float* buf, const float* w, int64_t nb) {
    auto* out = reinterpret_cast<uint16_t*>(buf);
    for (int64_t j = 0; j < nb; j += 16)
      for (int r0 = 0; r0 < R; r0 += 8) transpose_8x16_bf16(out + j * R + r0, R, w + r0 * kKeyBlock + j);
    return buf;
  }
  // o[nb, Dp] += wᵀ · x, 16 keys at a time: w from block_cols, x the tile's pairs of rows. Rows of o
  // up to the next 16 keys are read and written back (wᵀ is zero there).
  static void atb_acc(float* o, const float* wf, const float* xf, int64_t nb, int64_t Dp) {
    const auto* wt = reinterpret_cast<const uint16_t*>(wf);
    const auto* x = reinterpret_cast<const uint32_t*>(xf) + R * Dp / 2;
    for (int64_t j = 0; j < nb; j += 16) {
      Unit::template load<5>(wt + j * R, R * 2);
      for (int64_t e0 = 0; e0 < Dp; e0 += 16) {
        Unit::template load<4>(o + j * Dp + e0, Dp * 4);
        Unit::template load<6>(x + e0, Dp * 4);
        Unit::template dp<4, 5, 6>();
        Unit::template store<4>(o + j * Dp + e0, Dp * 4);
      }
    }
  }
};

}  // namespace attnlab::kernels::flash
#endif
