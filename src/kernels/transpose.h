#pragma once
// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols: the attention kernels turn a head's
// keys and values into columns with it. Element by element, a transpose is a strided store per
// float; in 16×16 blocks of AVX-512 shuffles it is 16 loads, 64 shuffles and 16 stores.
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace attnlab::kernels {

namespace detail {
inline void transpose_scalar(float* __restrict dst, int64_t ldd, const float* __restrict src, int64_t lds,
                             int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
}

#if defined(__AVX512F__)
// GCC 12 flags the intrinsics' own _mm512_undefined_ps() operands as (maybe-)uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// One full 16×16 block.
inline void transpose16(float* __restrict dst, int64_t ldd, const float* __restrict src, int64_t lds) {
  __m512 a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_loadu_ps(src + i * lds);
  // Interleave row pairs (elements), then pairs of pairs (element pairs), then 128-bit lanes twice.
  for (int i = 0; i < 16; i += 2) {
    b[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
    b[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    a[i] = _mm512_shuffle_ps(b[i], b[i + 2], 0x44);
    a[i + 1] = _mm512_shuffle_ps(b[i], b[i + 2], 0xEE);
    a[i + 2] = _mm512_shuffle_ps(b[i + 1], b[i + 3], 0x44);
    a[i + 3] = _mm512_shuffle_ps(b[i + 1], b[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    b[i] = _mm512_shuffle_f32x4(a[i], a[i + 4], 0x88);
    b[i + 4] = _mm512_shuffle_f32x4(a[i], a[i + 4], 0xDD);
    b[i + 8] = _mm512_shuffle_f32x4(a[i + 8], a[i + 12], 0x88);
    b[i + 12] = _mm512_shuffle_f32x4(a[i + 8], a[i + 12], 0xDD);
  }
  for (int i = 0; i < 8; ++i) {
    a[i] = _mm512_shuffle_f32x4(b[i], b[i + 8], 0x88);
    a[i + 8] = _mm512_shuffle_f32x4(b[i], b[i + 8], 0xDD);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, a[i]);
}
#pragma GCC diagnostic pop
#endif
}  // namespace detail

inline void transpose(float* __restrict dst, int64_t ldd, const float* __restrict src, int64_t lds, int64_t rows,
                      int64_t cols) {
#if defined(__AVX512F__)
  const int64_t rows16 = rows / 16 * 16, cols16 = cols / 16 * 16;
  for (int64_t r = 0; r < rows16; r += 16)
    for (int64_t c = 0; c < cols16; c += 16) detail::transpose16(dst + c * ldd + r, ldd, src + r * lds + c, lds);
  // The ragged edges: the last cols % 16 columns of every row, then the last rows % 16 rows.
  detail::transpose_scalar(dst + cols16 * ldd, ldd, src + cols16, lds, rows16, cols - cols16);
  detail::transpose_scalar(dst + rows16, ldd, src + rows16 * lds, lds, rows - rows16, cols);
#else
  detail::transpose_scalar(dst, ldd, src, lds, rows, cols);
#endif
}

}  // namespace attnlab::kernels
