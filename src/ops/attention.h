#pragma once
// Scaled dot-product attention: a dense kernel (the probabilities of every head kept for backward)
// and a tiled flash kernel (online softmax over key blocks, backward recomputed from the saved
// log-sum-exp; memory linear in the sequence length). Both compute exactly this:
//   r[i,j] = α · q_i·k_j                      α = options.logit_scale (NOTE [attention scale])
//   s      = c · tanh(r / c)                  when options.softcap = c > 0   [Gemma 2]; else s = r
//   s[i,j] = -∞ for j > i + (S - T)           when causal (queries are the last T of S positions)
//   s[i,j] = -∞ for j < first_key(i + S − T)   the local masks (options.mask, causal only): a
//            sliding window sees the last W positions, a chunk only its own chunk's earlier ones,
//            a document (packed sequences) only its own document's
//   p_i    = softmax_j(s[i, :]),   y_i = Σ_j p[i,j] v_j
// q: [B, T, H, Dqk]   k: [B, S, Hkv, Dqk]   v: [B, S, Hkv, Dv] (strided views, last dim dense; H a
// multiple of Hkv: query head h reads kv head h / (H / Hkv), i.e. GQA; Dv may differ from Dqk, as
// in MLA)   ->   y: [B, T, H, Dv] contiguous.
// Max-logit recording (QK-Clip's S_max): when options.max_logits points at H floats, each receives
// max(itself, max over batch, query and unmasked key positions of r), the logit *before* the
// soft-cap (a capped logit never exceeds c, so it could never say a head needs clipping).
//
// Block softmax (options.block; docs/learned_softmax.md): the key positions [0, P) of the context
// are cut into N contiguous blocks, block β = [⌈βP/N⌉, ⌈(β+1)P/N⌉) (sizes differ by at most one
// when N does not divide P). Each block's visible keys get their own softmax: o_β(i) its
// normalised output, L_β(i) its log-sum-exp (−∞, and no contribution, when row i sees no key of
// the block, as causal rows do for later blocks). The row's output is then
//   exact:    y_i = Σ_β e^{L_β − L} o_β,  L = log Σ_β e^{L_β}   (merge_partial_attention: the full softmax)
//   none:     y_i = Σ_β o_β                                      (the independent softmaxes, summed)
//   learned:  y_i = Σ_β |a[β, t]| o_β                            a = options.block_scales, [N, P], or
//                                                                [H, N, P] (per head: a[h, β, t])
// with t = i + (S − T) the query's position. Mode exact with N = 1 is the plain softmax above.
//
// Sinks (options.sinks, [H]; gpt-oss): head h's softmax gets one more logit σ_h, taken as it is
// (no α, no cap, no mask), whose value is zero: p_ij = e^{s_ij} / (e^{σ_h} + Σ_j' e^{s_ij'}), so
// y_i = Σ_j p_ij v_j weighs less when σ_h is large. Gradient: dσ_h = −Σ_i e^{σ_h − L_i} (dy_i·y_i)
// (L_i the log-sum-exp including the sink). Needs the block softmax's mode exact.
//
// A row that sees no key (a causal call with fewer keys than queries: row i sees keys up to
// i + S − T) has output 0 and passes no gradient.
//
// Output scale (options.output_scale; docs/almost_scaled.md): y_i is multiplied by c_i, a constant,
// or √(n_i / e) with n_i the number of keys row i sees (the causal form of the √(d_seq/e) that
// makes attention's output unit-variance). Its backward scales dy_i by c_i.
//
// NOTE [attention scale]: the multiplier on the logits is never implied by a kernel. It is the
// explicit logit_scale, which the model takes from its ScalePlan (nn/attention.h): the one
// place that decides, for each query_scaling mode, whether the scale goes into W_q's init, into q,
// or into the logits. Every kernel applies logit_scale exactly once and nothing else, and
// tests/nn/test_attention_scale.cpp checks each kernel × placement × attention type.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tensor/tensor.h"

namespace attnlab {

// The attention implementations. Each one computes the function above; the kernel-consistency
// tests iterate over all_attention_kernels().
enum class AttentionKernel { dense, flash };
inline constexpr AttentionKernel kAllAttentionKernels[] = {AttentionKernel::dense, AttentionKernel::flash};
const char* kernel_name(AttentionKernel k);
// What the flash kernel's products run on at the current matmul precision, for q/k head size D and
// v head size Dv: "f32", or the bf16 path's name (kernels/amx.h; AMX tiles take D and Dv above 16,
// else the AVX-512 BF16 products run).
const char* flash_products(int64_t D, int64_t Dv);

enum class BlockSoftmaxMode { exact, none, learned };

// The block softmax's shape: N blocks over a context of P positions (0: P = S, the key count).
struct BlockSoftmax {
  BlockSoftmaxMode mode = BlockSoftmaxMode::exact;
  int blocks = 1;
  int64_t context = 0;
  bool plain() const { return blocks == 1 && mode == BlockSoftmaxMode::exact; }
  // First key position of block b (b = N: the context's end).
  int64_t start(int b, int64_t P) const { return (int64_t(b) * P + blocks - 1) / blocks; }
};

// Masks on top of the causal one; a row at position t (of sequence b) sees keys [first_key(t, b), t].
// Each bound is non-decreasing in t. Key blocks wholly before a tile's first visible key are skipped
// by the flash kernel.
struct AttentionMask {
  int64_t window = 0;  // > 0: the last `window` positions, t − window < j ≤ t
  int64_t chunk = 0;   // > 0: causal inside chunks of `chunk` positions, ⌊t / chunk⌋·chunk ≤ j ≤ t
  // Documents: docs[b·docs_stride + t] is the first position of the document that holds position t
  // of sequence b (non-decreasing in t, ≤ t); null: one document. docs_stride = the key count S.
  const int32_t* docs = nullptr;
  int64_t docs_stride = 0;
  bool local() const { return window > 0 || chunk > 0 || docs; }
  int64_t first_key(int64_t t, int64_t b = 0) const {
    int64_t lo = 0;
    if (window > 0) lo = std::max(lo, t - window + 1);
    if (chunk > 0) lo = std::max(lo, t / chunk * chunk);
    if (docs && t >= 0) lo = std::max<int64_t>(lo, docs[b * docs_stride + t]);
    return lo;
  }
};

// docs for AttentionMask: out[t] = the first position of t's document, for ids [0, n) of one
// sequence; a document ends with each occurrence of `separator` (a run of ids), so the position
// after it starts a new one. An empty separator: one document.
void document_starts(int32_t* out, const int32_t* ids, int64_t n, const std::vector<int32_t>& separator);

// The multiplier c_i on query row i's output.
struct OutputScale {
  enum Kind { none, constant, causal };
  Kind kind = none;
  float value = 1.f;  // constant: c_i = value
  // c_i for a row that sees n keys.
  float at(int64_t n) const {
    return kind == causal ? std::sqrt(float(n) / 2.718281828459045f) : kind == constant ? value : 1.f;
  }
};

struct AttentionOptions {
  explicit AttentionOptions(float logit_scale_) : logit_scale(logit_scale_) {}
  float logit_scale;
  AttentionKernel kernel = AttentionKernel::dense;
  float softcap = 0.f;
  bool causal = true;
  float* max_logits = nullptr;
  BlockSoftmax block;
  Tensor block_scales;  // mode learned: [N, P] or [H, N, P] (gradient: sign(a)·(dy·o_β), summed)
  OutputScale output_scale;
  AttentionMask mask;   // window / chunk (needs causal)
  Tensor sinks;         // [H] sink logits, or undefined: none
};

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt);

// The exact merge of attention computed over two disjoint key sets A and B from their statistics:
// o, L hold A's normalised output [Dv] and log-sum-exp, o2, L2 B's; on return they hold those of
// A ∪ B: L' = log(e^L + e^L2), o' = e^{L − L'} o + e^{L2 − L'} o2. L = −∞ marks an empty set (its
// o is ignored, and must be finite). One function for every kernel and the block softmax.
inline void merge_partial_attention(float* o, float& L, const float* o2, float L2, int64_t Dv) {
  if (L2 == -std::numeric_limits<float>::infinity()) return;
  if (L == -std::numeric_limits<float>::infinity()) {
    for (int64_t e = 0; e < Dv; ++e) o[e] = o2[e];
    L = L2;
    return;
  }
  const float m = std::max(L, L2);
  const float a = std::exp(L - m), b = std::exp(L2 - m), sum = a + b;
  const float wa = a / sum, wb = b / sum;
  for (int64_t e = 0; e < Dv; ++e) o[e] = wa * o[e] + wb * o2[e];
  L = m + std::log(sum);
}

namespace ref {
// s[j] = cap(α q·k_j) for keys j < n (key j at k + j·stride), q·k over D; returns max_j α q·k_j
// (before the cap).
template <class T>
T logits_row(T* s, const T* q, const T* k, int64_t n, int64_t stride, int64_t D, T scale, T softcap) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    T dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += q[d] * k[j * stride + d];
    s[j] = scale * dot;
    m = std::max(m, s[j]);
    if (softcap > 0) s[j] = softcap * std::tanh(s[j] / softcap);
  }
  return m;
}
// The block softmax for the reference: its shape, and for mode learned the scales a ([N, P], or
// [H, N, P] when per_head) and, in backward, where their gradient is accumulated.
template <class T>
struct Blocks {
  BlockSoftmax shape;
  const T* scales = nullptr;
  bool per_head = false;
  T* dscales = nullptr;
  // Index of a[h, β, t] (or a[β, t]).
  int64_t at(int64_t h, int b, int64_t t, int64_t P) const {
    return ((per_head ? h * shape.blocks : 0) + b) * P + t;
  }
};

// Contiguous layouts q [B,T,H,D], k [B,S,Hkv,D], v [B,S,Hkv,Dv], y [B,T,H,Dv]. Mode exact is the
// plain softmax over all visible keys (whatever N is: the reference does not merge).
template <class T>
void attention_fwd(T* y, const T* q, const T* k, const T* v, int64_t B, int64_t Tq, int64_t S, int64_t H,
                   int64_t Hkv, int64_t D, int64_t Dv, T scale, T softcap, bool causal, T* max_logits,
                   const Blocks<T>& blk = {}, const OutputScale& out = {}, const AttentionMask& mask = {},
                   const T* sinks = nullptr) {
  const int64_t G = H / Hkv;
  const bool blocked = blk.shape.mode != BlockSoftmaxMode::exact;
  const int N = blocked ? blk.shape.blocks : 1;
  const int64_t P = blk.shape.context ? blk.shape.context : S;
  std::vector<T> s(S);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t last = causal ? i + (S - Tq) : S - 1, first = mask.first_key(i + S - Tq, b);
        const T* qi = q + ((b * Tq + i) * H + h) * D;
        logits_row(s.data(), qi, k + (b * S * Hkv + h / G) * D, last + 1, Hkv * D, D, scale, softcap);
        if (max_logits)  // the largest visible logit before the cap
          for (int64_t j = first; j <= last; ++j) {
            T dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qi[d] * k[((b * S + j) * Hkv + h / G) * D + d];
            max_logits[h] = std::max(max_logits[h], scale * dot);
          }
        T* yi = y + ((b * Tq + i) * H + h) * Dv;
        for (int64_t d = 0; d < Dv; ++d) yi[d] = 0;
        for (int bl = 0; bl < N; ++bl) {  // one softmax per block (one block unless none/learned)
          const int64_t j0 = std::max(first, blocked ? blk.shape.start(bl, P) : 0);
          const int64_t j1 = std::min(last + 1, blocked ? blk.shape.start(bl + 1, P) : S);
          if (j0 >= j1) continue;
          T w = 1;
          if (blk.shape.mode == BlockSoftmaxMode::learned) w = std::abs(blk.scales[blk.at(h, bl, i + S - Tq, P)]);
          T m = sinks ? sinks[h] : -std::numeric_limits<T>::infinity();
          for (int64_t j = j0; j < j1; ++j) m = std::max(m, s[j]);
          T l = sinks ? std::exp(sinks[h] - m) : T(0);
          for (int64_t j = j0; j < j1; ++j) l += std::exp(s[j] - m);
          for (int64_t j = j0; j < j1; ++j) {
            const T* vj = v + ((b * S + j) * Hkv + h / G) * Dv;
            T p = w * std::exp(s[j] - m) / l;
            for (int64_t d = 0; d < Dv; ++d) yi[d] += p * vj[d];
          }
        }
        const int64_t n = std::max<int64_t>(0, last + 1 - first);  // keys the row sees
        const T c = out.kind == OutputScale::causal ? std::sqrt(T(n) / std::exp(T(1))) : T(out.at(n));
        for (int64_t d = 0; d < Dv; ++d) yi[d] *= c;
      }
}
// fwd: y_i = Σ_j p_ij v_j, p_i = softmax(s_i), s = cap(α q·k)  =>
//   dv_j += Σ_i p_ij dy_i;  dp_ij = dy_i·v_j;  ds_ij = p_ij (dp_ij - Σ_j' p_ij' dp_ij');
//   through the cap: ds_raw = ds (1 - (s/c)²);  dq_i += α Σ_j ds_ij k_j;  dk_j += α Σ_i ds_ij q_i
// Modes none/learned (y_i = Σ_β w_β o_β, o_β = Σ_{j∈β} p^β_j v_j): the same per block with its own
// softmax p^β, and dp scaled by w_β:  ds_ij = w_β p^β_ij (dp_ij − D_β), D_β = Σ_{j∈β} p^β_ij dp_ij
// = dy_i·o_β;  dv_j += w_β p^β_ij dy_i;  learned: da[β, t] += sign(a[β, t]) D_β.
template <class T>
void attention_bwd(T* dq, T* dk, T* dv, const T* dy, const T* q, const T* k, const T* v, int64_t B, int64_t Tq,
                   int64_t S, int64_t H, int64_t Hkv, int64_t D, int64_t Dv, T scale, T softcap, bool causal,
                   const Blocks<T>& blk = {}, const OutputScale& out = {}, const AttentionMask& mask = {},
                   const T* sinks = nullptr, T* dsinks = nullptr) {
  const int64_t G = H / Hkv;
  const bool blocked = blk.shape.mode != BlockSoftmaxMode::exact;
  const int N = blocked ? blk.shape.blocks : 1;
  const int64_t P = blk.shape.context ? blk.shape.context : S;
  std::vector<T> s(S), p(S), dp(S), dyc(Dv);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const int64_t last = causal ? i + (S - Tq) : S - 1, first = mask.first_key(i + S - Tq, b);
        const T* qi = q + ((b * Tq + i) * H + h) * D;
        // y_i = c_i · (the attention output): everything below sees dy_i times c_i
        const int64_t n = std::max<int64_t>(0, last + 1 - first);
        const T c = out.kind == OutputScale::causal ? std::sqrt(T(n) / std::exp(T(1))) : T(out.at(n));
        for (int64_t d = 0; d < Dv; ++d) dyc[d] = c * dy[((b * Tq + i) * H + h) * Dv + d];
        const T* dyi = dyc.data();
        logits_row(s.data(), qi, k + (b * S * Hkv + h / G) * D, last + 1, Hkv * D, D, scale, softcap);
        for (int bl = 0; bl < N; ++bl) {
          const int64_t j0 = std::max(first, blocked ? blk.shape.start(bl, P) : 0);
          const int64_t j1 = std::min(last + 1, blocked ? blk.shape.start(bl + 1, P) : S);
          if (j0 >= j1) continue;
          T w = 1, sign = 0;
          int64_t ai = 0;
          if (blk.shape.mode == BlockSoftmaxMode::learned) {
            ai = blk.at(h, bl, i + S - Tq, P);
            w = std::abs(blk.scales[ai]);
            sign = blk.scales[ai] > 0 ? T(1) : blk.scales[ai] < 0 ? T(-1) : T(0);
          }
          T m = sinks ? sinks[h] : -std::numeric_limits<T>::infinity();
          for (int64_t j = j0; j < j1; ++j) m = std::max(m, s[j]);
          T l = sinks ? std::exp(sinks[h] - m) : T(0);
          for (int64_t j = j0; j < j1; ++j) l += std::exp(s[j] - m);
          T rowdot = 0;
          for (int64_t j = j0; j < j1; ++j) {
            const T* vj = v + ((b * S + j) * Hkv + h / G) * Dv;
            p[j] = std::exp(s[j] - m) / l;
            dp[j] = 0;
            for (int64_t d = 0; d < Dv; ++d) dp[j] += dyi[d] * vj[d];
            rowdot += p[j] * dp[j];
          }
          if (blk.dscales && blk.shape.mode == BlockSoftmaxMode::learned) blk.dscales[ai] += sign * rowdot;
          if (dsinks) dsinks[h] -= std::exp(sinks[h] - m) / l * rowdot;  // −p_σ (dy·y)
          for (int64_t j = j0; j < j1; ++j) {
            T ds = w * p[j] * (dp[j] - rowdot);
            if (softcap > 0) ds *= T(1) - (s[j] / softcap) * (s[j] / softcap);
            const int64_t kj = ((b * S + j) * Hkv + h / G) * D, vj = ((b * S + j) * Hkv + h / G) * Dv;
            for (int64_t d = 0; d < D; ++d) {
              if (dq) dq[((b * Tq + i) * H + h) * D + d] += scale * ds * k[kj + d];
              if (dk) dk[kj + d] += scale * ds * qi[d];
            }
            if (dv)
              for (int64_t d = 0; d < Dv; ++d) dv[vj + d] += w * p[j] * dyi[d];
          }
        }
      }
}
}  // namespace ref

}  // namespace attnlab
