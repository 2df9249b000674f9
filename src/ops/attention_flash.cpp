// Flash attention on the CPU [Dao et al. 2022, "FlashAttention"; Dao 2023, "FlashAttention-2"]:
// the function of ops/attention.h computed over key blocks with an online softmax, so no T×S
// matrix exists. Forward keeps, per query row, the running max m, the running sum l and the
// output accumulator; it saves only the log-sum-exp L = m + log l. Backward recomputes each
// probability as exp(s − L). Key blocks entirely above the causal diagonal are skipped.
//
// Layout for speed: per (batch, kv head) a thread copies K and V into zero-padded scratch (Kᵀ
// [Dp, Sp] for q·k, row-major [Sp, Dvp] for P·V; Dp and Dvp = the q/k and v head sizes rounded up
// to 16, or 32 on AMX tiles, Sp = S rounded up to kKeyTile), and processes a tile of query rows
// at a time (the policy's rows: 8, or 16 on AMX tiles from T = 256). Products are register tiles
// with compile-time sizes (kernels/flash_tiles.h), which the compiler keeps in vector registers;
// the zero padding contributes nothing. Backward follows FlashAttention-2: each thread owns one kv
// head's dK and dV accumulators across its query heads and all query rows.
//
// Block softmax (ops/attention.h): each softmax block is its own run of the online softmax over its
// keys (the first key chunk aligned down to a key tile, the keys before the block masked), closed
// per row into (o_β, L_β) and then merged with merge_partial_attention (exact) or summed with its
// weight (none, learned). Backward takes each block's L_β and D_β = dy·o_β (o_β saved in forward)
// in place of the row's L and dy·y, per key range of a chunk. With one exact block (the default)
// the kernel runs the single online softmax it always did.
//
// The kernel is written once over an operand-layout policy (kernels/flash_tiles.h): F32Tiles, or, with bf16 matmul
// products (precision.matmul=bf16) on a build with AVX-512 BF16, Bf16Tiles, whose products read
// bf16 operands (q, k, v, dy, p, ds rounded to nearest even) and accumulate in f32 with vdpbf16ps.
// The softmax, its max/sum statistics, the log-sum-exp and every accumulator stay f32 in both.
// Rows of q, k, v, dy and y are strided in memory; the next query tile's rows and the next kv
// head's K and V are prefetched while the current tile computes.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "autograd/tape.h"
#include "kernels/flash_amx.h"
#include "kernels/flash_tiles.h"
#include "kernels/gemm.h"
#include "ops/attention_internal.h"
#include "util/check.h"

namespace attnlab::attn_detail {
namespace {

using namespace kernels::flash;

// The row stride of the transposed K and V [Dp, Sp]: the key count rounded up to kKeyTile, plus one
// tile when that is a multiple of 256 floats. Rows a power-of-two multiple of 1 KiB apart fall in
// the same few cache sets, and a key block's Dp columns then evict each other from the L2 (at S
// 4096, 8 rows per set group): the window's cost grew faster than S.
inline int64_t padded_keys(int64_t S) {
  const int64_t Sp = round_up(S, kKeyTile);
  return Sp % 256 == 0 ? Sp + kKeyTile : Sp;
}

// Last key index query row i may see (negative: none, a row before every key).
inline int64_t last_key(int64_t i, const Dims& d, bool causal) { return causal ? i + (d.S - d.T) : d.S - 1; }
// How many keys row i sees, given its first visible key.
inline int64_t visible(int64_t i, int64_t first, const Dims& d, bool causal) {
  return std::max<int64_t>(0, last_key(i, d, causal) + 1 - first);
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
inline void prefetch_next_kv(const Tensor& k, const Tensor& v, int64_t b, int64_t g, int64_t tile, int64_t rows,
                             const Dims& d) {
  const int64_t next = b * d.Hkv + g + 1, nb = next / d.Hkv, ng = next % d.Hkv;
  if (nb >= d.B) return;
  const int64_t tiles = (d.T + rows - 1) / rows, per_tile = (d.S + tiles - 1) / tiles;
  const int64_t j0 = tile * per_tile, n = std::min(per_tile, d.S - j0);
  if (n <= 0) return;
  prefetch_rows(k.data, k, nb, j0, n, ng, d.D);
  prefetch_rows(v.data, v, nb, j0, n, ng, d.Dv);
}

// Rows [i0, i0 + n) of head (b, h) of a strided [B, T, heads, ·] tensor whose data starts at base
// (x's own data, or its gradient's), null past n: the rows of a query-side tile.
template <int R>
inline void tile_rows(const float* (&xr)[R], const float* base, const Tensor& x, int64_t b, int64_t i0, int64_t n,
                      int64_t h) {
  for (int r = 0; r < R; ++r)
    xr[r] = r < n ? base + b * x.strides[0] + (i0 + r) * x.strides[1] + h * x.strides[2] : nullptr;
}

// Row r's keys in the chunk starting at key j0: [st, en) relative to j0, within the segment [a, e)
// of the keys and the row's causal limit (en <= st: none).
struct RowKeys {
  int64_t st, en;
};

template <class Tiles>
Tensor flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d) {
  constexpr int R = Tiles::rows;  // query rows per tile
  const float alpha = opt.logit_scale, cap = opt.softcap;
  const bool causal = opt.causal;
  const BlockPlan bp = block_plan(opt, d);
  const Tensor scales = opt.block_scales;
  const OutputScale out_scale = opt.output_scale;
  const AttentionMask mask = opt.mask;
  const Tensor sinks = opt.sinks;
  const int N = bp.blocks();
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  Tensor y = new_output({d.B, d.T, d.H, d.Dv}, needs_grad(q, k, v) || scales.requires_grad() || sinks.requires_grad());
  float* lse = current_arena().alloc_floats(d.B * d.H * d.T);  // [B, H, T]
  // Separate block softmaxes (none/learned): each block's log-sum-exp [B, H, T, N] and normalised
  // output [B, H, T, N, Dv], which backward needs (D_β = dy·o_β).
  const bool keep_blocks = bp.separate() && y.requires_grad();
  float* lse_blk = keep_blocks ? current_arena().alloc_floats(d.B * d.H * d.T * N) : nullptr;
  float* o_blk = keep_blocks ? current_arena().alloc_floats(d.B * d.H * d.T * N * d.Dv) : nullptr;
  const int nt = omp_get_max_threads();
  // Dp: the q/k head size padded, Dvp: the v head size padded.
  const int64_t Dp = Tiles::pad(d.D), Dvp = Tiles::pad(d.Dv), Sp = padded_keys(d.S);
  const int64_t kld = k.strides[1], vld = v.strides[1];
  // Per thread: K for logits, V for P·V, the query tile and accumulator [R, Dvp], a logits
  // block [R, kKeyBlock] and its converted copy, m, l [R], and for the block softmax the
  // merged output [R, Dvp] and a block's output row [Dvp].
  const int64_t kc = Tiles::key_cols(Dp, Sp), vr_size = Tiles::key_rows(Dvp, Sp), tile = Tiles::row_tile(Dp);
  const int64_t per_thread = kc + vr_size + tile + R * Dvp + R * kKeyBlock + Tiles::block() + 2 * R +
                             (bp.plain() ? 0 : R * Dvp + Dvp);
  float* scratch = current_arena().alloc_floats(nt * per_thread);
  float* head_max = current_arena().alloc_floats(d.B * d.H);

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t g = 0; g < d.Hkv; ++g) {
      float* kt = scratch + omp_get_thread_num() * per_thread;
      float* vr = kt + kc;
      float* qb = vr + vr_size;
      float* acc = qb + tile;
      float* s = acc + R * Dvp;
      float* sb = s + R * kKeyBlock;
      float* m = sb + Tiles::block();
      float* l = m + R;
      float* out = l + R;     // block softmax: the rows' outputs so far
      float* ob = out + R * Dvp;  // block softmax: one row's block output
      Tiles::enter();
      // Query tiles outer, the group's heads inner, and K and V copied a key block at a time just
      // before the first tile that reads it: what a tile reads was copied recently and is still in
      // cache, however long S is (with a window, the tiles' keys move along the sequence).
      int64_t gathered = 0;
      for (int64_t hh = 0; hh < d.G; ++hh) head_max[b * d.H + g * d.G + hh] = kNegInf;
      for (int64_t i0 = 0; i0 < d.T; i0 += R) {
        const int64_t rows = std::min<int64_t>(R, d.T - i0);
        {
          const int64_t reach = std::min(Sp, round_up(std::max<int64_t>(0, last_key(i0 + rows - 1, d, causal) + 1), kKeyTile));
          if (reach > gathered) {
            Tiles::gather_cols(kt, row(k, b, 0, g), kld, gathered, reach, d.S, d.D, Dp, Sp);
            Tiles::gather_rows(vr, row(v, b, 0, g), vld, gathered, reach, d.S, d.Dv, Dvp, Sp);
            gathered = reach;
          }
        }
        for (int64_t hh = 0; hh < d.G; ++hh) {
          const int64_t h = g * d.G + hh;
          const float sink = sinks.defined() ? sinks.data[h] : kNegInf;
          float& hmax = head_max[b * d.H + h];  // the largest logit before the cap (QK-Clip's S_max)
          const float* qrows[R];
          tile_rows(qrows, q.data, q, b, i0, rows, h);
          Tiles::gather_tile(qb, qrows, d.D, Dp);
          prefetch_rows(q.data, q, b, i0 + rows, std::min<int64_t>(R, d.T - i0 - rows), h, d.D);
          if (hh == d.G - 1) prefetch_next_kv(k, v, b, g, i0 / R, R, d);
          const int64_t keys = last_key(i0 + rows - 1, d, causal) + 1;  // blocks past the diagonal: skipped
          // Each row's first visible key; the tile's first row has the smallest, and key tiles
          // before it are skipped (a sliding window's cost is linear in T).
          int64_t first[R];
          for (int64_t r = 0; r < R; ++r) first[r] = mask.first_key(std::min(i0 + r, d.T - 1) + d.S - d.T, b);
          // The online softmax of the tile's rows over keys [a, e): leaves each row's running max m,
          // sum l (0: no visible key) and unnormalised output acc.
          auto segment = [&](int64_t a, int64_t e) {
            std::fill(m, m + R, kNegInf);
            std::fill(l, l + R, 0.f);
            std::fill(acc, acc + R * Dvp, 0.f);
            for (int64_t j0 = std::max(a, first[0]) / kKeyTile * kKeyTile; j0 < e; j0 += kKeyBlock) {
              const int64_t nb = std::min(e, j0 + kKeyBlock) - j0;
              const int64_t nb_tiles = std::min(round_up(nb, kKeyTile), kKeyBlock);  // what the tiles read
              Tiles::logits(s, qb, kt, j0, nb, Dp, Sp);
              float corr[R];  // the rescaling of each row's accumulator, applied by ab_acc
              for (int64_t r = 0; r < R; ++r) {
                float* sr = s + r * kKeyBlock;
                const int64_t st = std::max<int64_t>(std::max(a, first[r]) - j0, 0);
                const int64_t en = r < rows ? std::min(nb, last_key(i0 + r, d, causal) + 1 - j0) : 0;
                corr[r] = 1.f;
                if (en <= st) {  // no key of this chunk is visible to row r: it adds nothing
                  std::fill(sr, sr + nb_tiles, 0.f);
                  continue;
                }
                const float raw_max = finish_logits(sr + st, en - st, alpha, cap);
                hmax = std::max(hmax, raw_max);
                const float mb = cap > 0.f ? row_max(sr + st, en - st) : raw_max;  // uncapped: the same max
                const float m_new = std::max(m[r], mb);
                corr[r] = kernels::fast_exp(m[r] - m_new);  // about 0 when m was -inf (and acc is 0)
                float sum;
                if (st == 0) {
                  sum = exp_shift_sum(sr, en, m_new);
                } else {
                  sum = exp_shift_sum_range(sr, st, en, m_new);
                  std::fill(sr, sr + st / kLanes * kLanes, 0.f);
                }
                std::fill(sr + round_up(en, kLanes), sr + nb_tiles, 0.f);
                l[r] = l[r] * corr[r] + sum;
                m[r] = m_new;
              }
              Tiles::ab_acc(acc, corr, Tiles::block_rows(sb, s, nb), vr, j0, nb, Dvp);
            }
          };
          if (bp.plain()) {
            segment(0, keys);
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t i = i0 + r;
              float L = l[r] > 0.f ? m[r] + std::log(l[r]) : kNegInf;
              float f = l[r] > 0.f ? 1.f / l[r] : 0.f;  // times the sink's share and the output scale c_i
              if (sink != kNegInf) {  // the sink: one more term of the sum, with no value
                const float Ls = std::max(L, sink) + std::log1p(std::exp(-std::fabs(L - sink)));
                f *= L == kNegInf ? 0.f : std::exp(L - Ls);
                L = Ls;
              }
              if (out_scale.kind != OutputScale::none) f *= out_scale.at(visible(i, first[r], d, causal));
              float* yi = y.data + ((b * d.T + i) * d.H + h) * d.Dv;
              for (int64_t e = 0; e < d.Dv; ++e) yi[e] = acc[r * Dvp + e] * f;
              lse[(b * d.H + h) * d.T + i] = L;
            }
            continue;
          }
          // Block softmax: one segment per block, then merged (exact) or summed with weights.
          float L[R];
          std::fill(L, L + R, kNegInf);
          std::fill(out, out + R * Dvp, 0.f);
          for (int bl = 0; bl < N; ++bl) {
            const int64_t a = bp.start(bl), e = std::min(bp.start(bl + 1), keys);
            if (keep_blocks)  // blocks a row does not reach: no output, L = −∞
              for (int64_t r = 0; r < rows; ++r) {
                const int64_t x = ((b * d.H + h) * d.T + i0 + r) * N + bl;
                lse_blk[x] = kNegInf;
                std::fill(o_blk + x * d.Dv, o_blk + (x + 1) * d.Dv, 0.f);
              }
            if (a >= e) continue;
            segment(a, e);
            for (int64_t r = 0; r < rows; ++r) {
              if (l[r] == 0.f) continue;
              const float inv_l = 1.f / l[r], Lb = m[r] + std::log(l[r]);
              for (int64_t x = 0; x < d.Dv; ++x) ob[x] = acc[r * Dvp + x] * inv_l;
              float* o = out + r * Dvp;
              if (!bp.separate()) {
                merge_partial_attention(o, L[r], ob, Lb, d.Dv);
                continue;
              }
              const float w = bp.weight(h, bl, i0 + r + d.S - d.T);
              for (int64_t x = 0; x < d.Dv; ++x) o[x] += w * ob[x];
              if (keep_blocks) {
                const int64_t x = ((b * d.H + h) * d.T + i0 + r) * N + bl;
                lse_blk[x] = Lb;
                std::copy(ob, ob + d.Dv, o_blk + x * d.Dv);
              }
            }
          }
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            if (sink != kNegInf) {  // the sink: a part with output zero
              std::fill(ob, ob + d.Dv, 0.f);
              merge_partial_attention(out + r * Dvp, L[r], ob, sink, d.Dv);
            }
            const float c = out_scale.at(visible(i, first[r], d, causal));
            float* yi = y.data + ((b * d.T + i) * d.H + h) * d.Dv;
            for (int64_t e = 0; e < d.Dv; ++e) yi[e] = out[r * Dvp + e] * c;
            lse[(b * d.H + h) * d.T + i] = L[r];  // exact: the full softmax's; unused otherwise
          }
        }
      }
      Tiles::leave();
    }
  record_max_logits(opt, head_max, d);
  if (!y.requires_grad()) return y;

  // Backward scratch per thread: K and V for logits, K for dS·K, the dK [Sp, Dp] and dV [Sp, Dvp]
  // accumulators, the q and dy tiles, the dq tile [R, Dp], the p and ds blocks
  // [R, kKeyBlock] and their converted copies.
  const int64_t vc = Tiles::key_cols(Dvp, Sp), kr = Tiles::key_rows(Dp, Sp), dy_tile = Tiles::row_tile(Dvp);
  // Separate block softmaxes: each tile row's L_β, D_β and weight w_β [R, N] each.
  const int64_t bwd_per_thread = kc + vc + kr + Sp * Dp + Sp * Dvp + tile + dy_tile + R * Dp +
                                 2 * R * kKeyBlock + 3 * Tiles::block() + (bp.separate() ? 3 * R * N : 0) +
                                 R * d.Dv;
  float* bscratch = current_arena().alloc_floats(nt * bwd_per_thread);
  record("attention", y,
         [q, k, v, y, lse, bscratch, bwd_per_thread, d, Dp, Dvp, Sp, kc, vc, kr, tile, dy_tile, kld, vld, alpha, cap,
          causal, bp, scales, lse_blk, o_blk, N, out_scale, mask, sinks] {
    // fwd: y_i = Σ_j p_ij v_j, p_ij = exp(s_ij − L_i), s = cap(α q·k)  =>
    //   dv_j += p_ij dy_i;  dp_ij = dy_i·v_j;  ds_ij = p_ij (dp_ij − dy_i·y_i) (1 − (s/c)²);
    //   dq_i += α Σ_j ds_ij k_j;  dk_j += α Σ_i ds_ij q_i
    const float* dy = y.grad_in();
    // Each element of dq, dk and dv is stored exactly once below, so a first write overwrites
    // (no zero-fill, no read of the old values).
    const GradSink qg = q.requires_grad() ? q.grad_out() : GradSink{};
    const GradSink kg = k.requires_grad() ? k.grad_out() : GradSink{};
    const GradSink vg = v.requires_grad() ? v.grad_out() : GradSink{};
    // Separate block softmaxes: the scales' gradient per (batch, head), summed after the loop.
    float* da = bp.a && scales.requires_grad() ? current_arena().alloc_zeroed(d.B * d.H * N * bp.P) : nullptr;
    // The sinks' gradient per (batch, head), summed over the batch after the loop.
    float* dsink = sinks.requires_grad() ? current_arena().alloc_zeroed(d.B * d.H) : nullptr;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t g = 0; g < d.Hkv; ++g) {
        float* kt = bscratch + omp_get_thread_num() * bwd_per_thread;
        float* vt = kt + kc;
        float* krows = vt + vc;
        float* dk = krows + kr;
        float* dv = dk + Sp * Dp;
        float* qb = dv + Sp * Dvp;
        float* dyb = qb + tile;
        float* dq = dyb + dy_tile;
        float* p = dq + R * Dp;
        float* ds = p + R * kKeyBlock;
        float* ds_rows = ds + R * kKeyBlock;
        float* ds_cols = ds_rows + Tiles::block();
        float* p_cols = ds_cols + Tiles::block();
        float* Lb = p_cols + Tiles::block();  // separate blocks: [R, N] each
        float* Db = Lb + R * N;
        float* Wb = Db + R * N;
        float* dys = Lb + (bp.separate() ? 3 * R * N : 0);  // with an output scale: the rows c_i · dy_i
        Tiles::enter();
        // Query tiles outer, the group's heads inner: dK and dV rows are zeroed when a tile first
        // reaches them and stored once no later tile can (each row's first visible key never
        // decreases), so with a window only the rows near it are live and stay in cache.
        int64_t zeroed = 0, stored = 0;
        auto store_kv = [&](int64_t upto) {
          for (int64_t j = stored; j < std::min(upto, d.S); ++j) {
            if (kg.ptr) store_row(grad_row(kg.ptr, k, b, j, g), dk + j * Dp, d.D, kg.accumulate);
            if (vg.ptr) store_row(grad_row(vg.ptr, v, b, j, g), dv + j * Dvp, d.Dv, vg.accumulate);
          }
          stored = std::max(stored, std::min(upto, d.S));
        };
        // K and V are copied a key block at a time, just before the first tile that reads it (as in
        // forward), and the dK, dV rows zeroed with them.
        auto zero_kv = [&](int64_t upto) {
          if (upto <= zeroed) return;
          Tiles::gather_cols(kt, row(k, b, 0, g), kld, zeroed, upto, d.S, d.D, Dp, Sp);
          Tiles::gather_cols(vt, row(v, b, 0, g), vld, zeroed, upto, d.S, d.Dv, Dvp, Sp);
          Tiles::gather_rows(krows, row(k, b, 0, g), kld, zeroed, upto, d.S, d.D, Dp, Sp);
          std::fill(dk + zeroed * Dp, dk + upto * Dp, 0.f);
          std::fill(dv + zeroed * Dvp, dv + upto * Dvp, 0.f);
          zeroed = upto;
        };
        for (int64_t i0 = 0; i0 < d.T; i0 += R) {
          const int64_t rows = std::min<int64_t>(R, d.T - i0);
          zero_kv(std::min(Sp, round_up(std::max<int64_t>(0, last_key(i0 + rows - 1, d, causal) + 1), kKeyTile)));
          for (int64_t hh = 0; hh < d.G; ++hh) {
            const int64_t h = g * d.G + hh;
            const float* xrows[R];
            int64_t first[R];  // each row's first visible key (the local masks)
            for (int64_t r = 0; r < R; ++r) first[r] = mask.first_key(std::min(i0 + r, d.T - 1) + d.S - d.T, b);
            tile_rows(xrows, q.data, q, b, i0, rows, h);
            Tiles::gather_tile(qb, xrows, d.D, Dp);
            tile_rows(xrows, dy, y, b, i0, rows, h);
            if (out_scale.kind != OutputScale::none)  // y_i = c_i · o_i: o_i's gradient is c_i · dy_i
              for (int64_t r = 0; r < rows; ++r) {
                const float c = out_scale.at(visible(i0 + r, first[r], d, causal));
                for (int64_t e = 0; e < d.Dv; ++e) dys[r * d.Dv + e] = c * xrows[r][e];
                xrows[r] = dys + r * d.Dv;
              }
            Tiles::gather_tile(dyb, xrows, d.Dv, Dvp);
            {
              const int64_t next = std::min<int64_t>(R, d.T - i0 - rows);
              prefetch_rows(q.data, q, b, i0 + rows, next, h, d.D);
              prefetch_rows(dy, y, b, i0 + rows, next, h, d.Dv);
              prefetch_rows(y.data, y, b, i0 + rows, next, h, d.Dv);
              if (hh == d.G - 1) prefetch_next_kv(k, v, b, g, i0 / R, R, d);
            }
            float rowdot[R] = {}, L[R] = {};  // Σ_j p_ij dp_ij = dy_i · y_i
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t off = ((b * d.T + i0 + r) * d.H + h) * d.Dv;
              const float *yi = y.data + off, *dyi = dy + off;
              float dot = 0.f;
#pragma omp simd reduction(+ : dot)
              for (int64_t e = 0; e < d.Dv; ++e) dot += dyi[e] * yi[e];
              rowdot[r] = dot;
              L[r] = lse[(b * d.H + h) * d.T + i0 + r];
              if (dsink && L[r] != -std::numeric_limits<float>::infinity())  // −p_σ · (dy·y)
                dsink[b * d.H + h] -= std::exp(sinks.data[h] - L[r]) * dot;
              if (!bp.separate()) continue;
              const int64_t t = i0 + r + d.S - d.T;
              for (int bl = 0; bl < N; ++bl) {  // D_β = dy_i · o_β
                const int64_t x = ((b * d.H + h) * d.T + i0 + r) * N + bl;
                const float* o = o_blk + x * d.Dv;
                float db = 0.f;
#pragma omp simd reduction(+ : db)
                for (int64_t e = 0; e < d.Dv; ++e) db += dyi[e] * o[e];
                db *= out_scale.at(visible(i0 + r, first[r], d, causal));  // (c_i dy_i) · o_β
                Lb[r * N + bl] = lse_blk[x];
                Db[r * N + bl] = db;
                Wb[r * N + bl] = bp.weight(h, bl, t);
                if (da && lse_blk[x] != -std::numeric_limits<float>::infinity())
                  da[((b * d.H + h) * N + bl) * bp.P + t] = bp.sign(h, bl, t) * db;
              }
            }
            std::fill(dq, dq + R * Dp, 0.f);
            const int64_t keys = last_key(i0 + rows - 1, d, causal) + 1;
            for (int64_t j0 = first[0] / kKeyTile * kKeyTile; j0 < keys; j0 += kKeyBlock) {
              const int64_t nb = std::min(keys, j0 + kKeyBlock) - j0;
              const int64_t nb_tiles = std::min(round_up(nb, kKeyTile), kKeyBlock);
              Tiles::logits(p, qb, kt, j0, nb, Dp, Sp);     // s, turned into p below
              Tiles::logits(ds, dyb, vt, j0, nb, Dvp, Sp);  // dp_ij = dy_i · v_j, turned into α·ds
              for (int64_t r = 0; r < R; ++r) {
                float *pr = p + r * kKeyBlock, *dsr = ds + r * kKeyBlock;
                const int64_t n = r < rows ? std::max<int64_t>(0, std::min(nb, last_key(i0 + r, d, causal) + 1 - j0)) : 0;
                const int64_t st = std::min(n, std::max<int64_t>(first[r] - j0, 0));  // keys before st: masked
                if (n > st) finish_logits(pr + st, n - st, alpha, cap);
                // p_j = w·exp(s_j − L), ds_j = p_j (dp_j − D) (1 − (s_j/c)²) over keys [j1, j2) of the
                // chunk: the whole row with the full softmax's L and D = dy·y and w = 1, or one
                // block's part with that block's L_β, D_β and w_β.
                auto grad_part = [&](int64_t j1, int64_t j2, float Lr, float rd, float w) {
#pragma omp simd
                  for (int64_t j = j1; j < j2; ++j) {
                    const float pj = w * kernels::fast_exp(pr[j] - Lr);
                    float dsj = pj * (dsr[j] - rd);
                    if (cap > 0.f) dsj *= 1.f - (pr[j] / cap) * (pr[j] / cap);
                    dsr[j] = alpha * dsj;
                    pr[j] = pj;
                  }
                };
                if (!bp.separate()) {
                  grad_part(st, n, L[r], rowdot[r], 1.f);
                } else {
                  for (int bl = int((j0 + st) * N / bp.P); bl < N && bp.start(bl) < j0 + n; ++bl) {
                    const int64_t j1 = std::max<int64_t>(bp.start(bl) - j0, st), j2 = std::min(bp.start(bl + 1) - j0, n);
                    grad_part(j1, j2, Lb[r * N + bl], Db[r * N + bl], Wb[r * N + bl]);
                  }
                }
                std::fill(pr, pr + st, 0.f);
                std::fill(dsr, dsr + st, 0.f);
                std::fill(pr + n, pr + nb_tiles, 0.f);
                std::fill(dsr + n, dsr + nb_tiles, 0.f);
              }
              Tiles::ab_acc(dq, nullptr, Tiles::block_rows(ds_rows, ds, nb), krows, j0, nb, Dp);  // dq_i += α Σ_j ds_ij k_j
              Tiles::atb_acc(dk + j0 * Dp, Tiles::block_cols(ds_cols, ds, nb), qb, nb, Dp);  // dk_j += α Σ_i ds_ij q_i
              Tiles::atb_acc(dv + j0 * Dvp, Tiles::block_cols(p_cols, p, nb), dyb, nb, Dvp);  // dv_j += Σ_i p_ij dy_i
            }
            if (qg.ptr)
              for (int64_t r = 0; r < rows; ++r) store_row(grad_row(qg.ptr, q, b, i0 + r, h), dq + r * Dp, d.D, qg.accumulate);
          }
          if (i0 + R < d.T)  // the next tile starts at its first row's first key tile
            store_kv(mask.first_key(i0 + R + d.S - d.T, b) / kKeyTile * kKeyTile);
        }
        zero_kv(Sp);
        store_kv(d.S);
        Tiles::leave();
      }
    if (da) store_scale_grads(scales, da, bp, d);
    if (dsink) store_sink_grads(sinks, dsink, d);
  });
  return y;
}

}  // namespace

namespace {
// The products the flash kernel runs: f32 (no bf16), or a bf16 path that fits the head sizes.
std::optional<kernels::FlashBf16Path> bf16_path(int64_t D, int64_t Dv) {
#ifdef __AVX512BF16__
  if (kernels::matmul_precision() != kernels::MatmulPrecision::bf16) return std::nullopt;
  const kernels::FlashBf16Path p = kernels::flash_bf16_path();
  if (p != kernels::FlashBf16Path::avx512 && !AmxTiles<kernels::AmxHw, 8>::fits(D, Dv))
    return kernels::FlashBf16Path::avx512;
  return p;
#else
  (void)D, (void)Dv;
  return std::nullopt;
#endif
}
}  // namespace

Tensor attention_flash(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt, const Dims& d) {
  const std::optional<kernels::FlashBf16Path> bf16 = bf16_path(d.D, d.Dv);
  if (!bf16) return flash<F32Tiles>(q, k, v, opt, d);
#ifdef __AVX512BF16__
  // 16-row query tiles from 256 query rows on (Xeon, bf16 attention per step: baby-gpt's T 256
  // 286/292 -> 257/264 ms; forward + backward at T 1024 40 -> 30 ms); at T 128 the causal diagonal's masked
  // rows cost more than the fuller tiles gain (mid 48 -> 51 ms, MLA mid 59 -> 63 ms).
  const bool tall = d.T >= 256;
  switch (*bf16) {
    case kernels::FlashBf16Path::amx:
      return tall ? flash<AmxTiles<kernels::AmxHw, 16>>(q, k, v, opt, d)
                  : flash<AmxTiles<kernels::AmxHw, 8>>(q, k, v, opt, d);
    case kernels::FlashBf16Path::amx_emulated:
      return tall ? flash<AmxTiles<kernels::AmxEmu, 16>>(q, k, v, opt, d)
                  : flash<AmxTiles<kernels::AmxEmu, 8>>(q, k, v, opt, d);
    case kernels::FlashBf16Path::avx512:
      break;
  }
  return flash<Bf16Tiles>(q, k, v, opt, d);
#else
  throw InternalError("bf16 flash products on a build without AVX-512 BF16");
#endif
}

}  // namespace attnlab::attn_detail

namespace attnlab {
const char* flash_products(int64_t D, int64_t Dv) {
  const std::optional<kernels::FlashBf16Path> p = attn_detail::bf16_path(D, Dv);
  return p ? kernels::flash_bf16_path_name(*p) : "f32";
}
}  // namespace attnlab
