#include "ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "autograd/tape.h"
#include "ops/attention_internal.h"
#include "kernels/vmath.h"
#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

using namespace attn_detail;
const char* kernel_name(AttentionKernel k) {
  switch (k) {
    case AttentionKernel::dense: return "dense";
    case AttentionKernel::flash: return "flash";
  }
  return "?";
}

BlockPlan attn_detail::block_plan(const AttentionOptions& opt, const Dims& d) {
  BlockPlan bp;
  bp.shape = opt.block;
  bp.P = opt.block.context ? opt.block.context : d.S;
  ATTN_CHECK(bp.P >= d.S, "attention: block softmax over a context of ", bp.P, " positions, but ", d.S, " keys");
  ATTN_CHECK(opt.block.blocks >= 1 && opt.block.blocks <= bp.P, "attention: block softmax with ", opt.block.blocks,
             " blocks over ", bp.P, " positions (1 to the context length)");
  const Tensor& a = opt.block_scales;
  if (opt.block.mode == BlockSoftmaxMode::learned) {
    const int64_t N = opt.block.blocks;
    ATTN_CHECK(a.defined() && a.is_contiguous() &&
                   ((a.rank() == 2 && a.size(0) == N && a.size(1) == bp.P) ||
                    (a.rank() == 3 && a.size(0) == d.H && a.size(1) == N && a.size(2) == bp.P)),
               "attention: learned block softmax needs contiguous scales [", N, ", ", bp.P, "] or [", d.H, ", ", N,
               ", ", bp.P, "], got ", a.shape);
    bp.a = a.data;
    bp.per_head = a.rank() == 3;
  } else {
    ATTN_CHECK(!a.defined(), "attention: block scales given, but the block softmax mode is not learned");
  }
  return bp;
}

void attn_detail::store_scale_grads(const Tensor& scales, const float* partial, const BlockPlan& bp, const Dims& d) {
  const int64_t NP = bp.blocks() * bp.P, heads = bp.per_head ? d.H : 1;
  float* sum = current_arena().alloc_zeroed(heads * NP);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      float* dst = sum + (bp.per_head ? h : 0) * NP;
      const float* src = partial + (b * d.H + h) * NP;
      for (int64_t x = 0; x < NP; ++x) dst[x] += src[x];
    }
  const GradSink g = scales.grad_out();
  for (int64_t x = 0; x < heads * NP; ++x) g.ptr[x] = g.accumulate ? g.ptr[x] + sum[x] : sum[x];
}

void attn_detail::store_sink_grads(const Tensor& sinks, const float* partial, const Dims& d) {
  const GradSink g = sinks.grad_out();
  for (int64_t h = 0; h < d.H; ++h) {
    float sum = 0.f;
    for (int64_t b = 0; b < d.B; ++b) sum += partial[b * d.H + h];
    g.ptr[h] = g.accumulate ? g.ptr[h] + sum : sum;
  }
}

void document_starts(int32_t* out, const int32_t* ids, int64_t n, const std::vector<int32_t>& separator) {
  const int64_t L = int64_t(separator.size());
  int32_t start = 0;
  for (int64_t t = 0; t < n; ++t) {
    out[t] = start;
    if (L > 0 && t + 1 >= L && std::equal(separator.begin(), separator.end(), ids + t + 1 - L)) start = int32_t(t + 1);
  }
}

namespace {

// Row i's output from its logits s[first, n): p = softmax(s) into s (0 before first), y = Σ_j p_j v_j
// (kv head (b, g)); sink: the sink logit σ, or −∞. Returns the log-sum-exp (−∞: no key, no sink).
float softmax_row(float* yi, float* s, int64_t first, int64_t n, const Tensor& v, int64_t b, int64_t g, float sink,
                  const Dims& d) {
  float m = sink;
  for (int64_t j = first; j < n; ++j) m = std::max(m, s[j]);
  float l = m == -std::numeric_limits<float>::infinity() ? 0.f : std::exp(sink - m);
#pragma omp simd reduction(+ : l)
  for (int64_t j = first; j < n; ++j) {
    s[j] = kernels::fast_exp(s[j] - m);
    l += s[j];
  }
  const float inv_l = l > 0.f ? 1.f / l : 0.f;
  std::fill(yi, yi + d.Dv, 0.f);
  std::fill(s, s + first, 0.f);
  for (int64_t j = first; j < n; ++j) {
    const float pj = s[j] * inv_l;
    const float* vj = row(v, b, j, g);
#pragma omp simd
    for (int64_t e = 0; e < d.Dv; ++e) yi[e] += pj * vj[e];
    s[j] = pj;
  }
  return l > 0.f ? m + std::log(l) : m;
}

// The block softmax of row i (query position t, head h): each block's own softmax; y merges their
// outputs (exact) or sums them weighted (none: 1, learned: |a|). s[0, n) holds the logits on
// entry and, on return, what backward reads: the full softmax's p (exact) or each block's own p^β
// (0 before first, the row's first visible key). Scratch: ob [Dv], mb [N].
// Exact: returns the merged log-sum-exp, the sink (σ, or −∞) merged in as one more part whose
// output is zero.
float block_softmax_row(float* yi, float* s, int64_t first, int64_t n, const Tensor& v, int64_t b, int64_t g,
                        int64_t h, int64_t t, const BlockPlan& bp, float* ob, float* mb, float sink, const Dims& d) {
  float L = -std::numeric_limits<float>::infinity();
  std::fill(yi, yi + d.Dv, 0.f);
  std::fill(s, s + first, 0.f);
  for (int bl = 0; bl < bp.blocks(); ++bl) {
    const int64_t j0 = std::max(first, bp.start(bl)), j1 = std::min(n, bp.start(bl + 1));
    mb[bl] = -std::numeric_limits<float>::infinity();
    if (j0 >= j1) continue;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = j0; j < j1; ++j) m = std::max(m, s[j]);
    float l = 0.f;
#pragma omp simd reduction(+ : l)
    for (int64_t j = j0; j < j1; ++j) {
      s[j] = kernels::fast_exp(s[j] - m);
      l += s[j];
    }
    const float inv_l = 1.f / l;
    std::fill(ob, ob + d.Dv, 0.f);
    for (int64_t j = j0; j < j1; ++j) {
      const float* vj = row(v, b, j, g);
      const float pj = s[j] * inv_l;
#pragma omp simd
      for (int64_t e = 0; e < d.Dv; ++e) ob[e] += pj * vj[e];
    }
    if (bp.separate()) {
      const float w = bp.weight(h, bl, t);
      for (int64_t e = 0; e < d.Dv; ++e) yi[e] += w * ob[e];
      for (int64_t j = j0; j < j1; ++j) s[j] *= inv_l;
    } else {
      merge_partial_attention(yi, L, ob, m + std::log(l), d.Dv);
      mb[bl] = m;
    }
  }
  if (bp.separate()) return L;
  if (sink != -std::numeric_limits<float>::infinity()) {
    std::fill(ob, ob + d.Dv, 0.f);
    merge_partial_attention(yi, L, ob, sink, d.Dv);
  }
  // p_j = exp(s_j − m_β) · exp(m_β − L), the full softmax
  for (int bl = 0; bl < bp.blocks(); ++bl) {
    const int64_t j0 = std::max(first, bp.start(bl)), j1 = std::min(n, bp.start(bl + 1));
    if (j0 >= j1) continue;
    const float c = std::exp(mb[bl] - L);
    for (int64_t j = j0; j < j1; ++j) s[j] *= c;
  }
  return L;
}

// ds for keys [j0, j1) of one row, into dp (which holds dp_j = dy·v_j on entry): α·ds_j with
// ds_j = p_j (dp_j − rowdot) (1 − (s_j/c)²) (the cap's factor when cap > 0; s: the capped logits).
// p: the probabilities times the block's weight.
inline void grad_logits(float* dp, const float* p, const float* s, int64_t j0, int64_t j1, float rowdot, float alpha,
                        float cap) {
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    float ds = p[j] * (dp[j] - rowdot);
    if (cap > 0.f) ds *= 1.f - (s[j] / cap) * (s[j] / cap);
    dp[j] = alpha * ds;
  }
}

// Decoding (few query rows, no gradient, plain softmax) with the keys split into one range per
// thread: each thread computes every row's softmax over its keys, as (output, log-sum-exp) parts,
// and the parts are merged in thread order by merge_partial_attention (then the sink, as a part
// with output zero, then the output scale). The order is fixed for a thread count.
Tensor attention_split_keys(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                            const Dims& d) {
  const int nt = omp_get_max_threads();
  const int64_t rows = d.B * d.T * d.H;
  const float alpha = opt.logit_scale, cap = opt.softcap;
  float* parts = current_arena().alloc_floats(int64_t(nt) * rows * (d.Dv + 2));  // per thread: o [Dv], L, max logit
  float* logits = current_arena().alloc_floats(int64_t(nt) * d.S);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    const int64_t j_lo = d.S * t / nt, j_hi = d.S * (t + 1) / nt;
    float* s = logits + int64_t(t) * d.S;
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t i = 0; i < d.T; ++i)
        for (int64_t h = 0; h < d.H; ++h) {
          const int64_t g = h / d.G, x = (b * d.T + i) * d.H + h;
          float* part = parts + (int64_t(t) * rows + x) * (d.Dv + 2);
          float* o = part;
          float& L = part[d.Dv];
          float& mx = part[d.Dv + 1];
          std::fill(o, o + d.Dv, 0.f);
          L = mx = -std::numeric_limits<float>::infinity();
          const int64_t n = opt.causal ? std::max<int64_t>(0, i + (d.S - d.T) + 1) : d.S;
          const int64_t first = std::min(n, opt.mask.first_key(i + d.S - d.T, b));
          const int64_t a = std::max(first, j_lo), e = std::min(n, j_hi);
          if (a >= e) continue;
          const float* qi = row(q, b, i, h);
          for (int64_t j = a; j < e; ++j) {
            const float* kj = row(k, b, j, g);
            float dot = 0.f;
#pragma omp simd reduction(+ : dot)
            for (int64_t f = 0; f < d.D; ++f) dot += qi[f] * kj[f];
            s[j - a] = dot;
          }
          mx = finish_logits(s, e - a, alpha, cap);
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j < e - a; ++j) m = std::max(m, s[j]);
          float l = 0.f;
          for (int64_t j = 0; j < e - a; ++j) {
            const float w = kernels::fast_exp(s[j] - m);
            l += w;
            const float* vj = row(v, b, a + j, g);
#pragma omp simd
            for (int64_t f = 0; f < d.Dv; ++f) o[f] += w * vj[f];
          }
          for (int64_t f = 0; f < d.Dv; ++f) o[f] /= l;
          L = m + std::log(l);
        }
  }
  Tensor y = new_output({d.B, d.T, d.H, d.Dv}, false);
  float* head_max = current_arena().alloc_floats(d.B * d.H);
  std::fill(head_max, head_max + d.B * d.H, -std::numeric_limits<float>::infinity());
  const float* zero = current_arena().alloc_zeroed(d.Dv);  // the sink's output
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t i = 0; i < d.T; ++i)
      for (int64_t h = 0; h < d.H; ++h) {
        const int64_t x = (b * d.T + i) * d.H + h;
        float* yi = y.data + x * d.Dv;
        std::fill(yi, yi + d.Dv, 0.f);
        float L = -std::numeric_limits<float>::infinity();
        for (int t = 0; t < nt; ++t) {
          const float* part = parts + (int64_t(t) * rows + x) * (d.Dv + 2);
          merge_partial_attention(yi, L, part, part[d.Dv], d.Dv);
          head_max[b * d.H + h] = std::max(head_max[b * d.H + h], part[d.Dv + 1]);
        }
        if (opt.sinks.defined()) merge_partial_attention(yi, L, zero, opt.sinks.data[h], d.Dv);
        const int64_t n = opt.causal ? std::max<int64_t>(0, i + (d.S - d.T) + 1) : d.S;
        const int64_t first = std::min(n, opt.mask.first_key(i + d.S - d.T, b));
        const float c = opt.output_scale.at(n - first);
        if (L == -std::numeric_limits<float>::infinity()) std::fill(yi, yi + d.Dv, 0.f);  // no key, no sink
        for (int64_t f = 0; f < d.Dv; ++f) yi[f] *= c;
      }
  record_max_logits(opt, head_max, d);
  return y;
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  PhaseScope phase(Phase::attention);
  ATTN_CHECK(q.rank() == 4 && k.rank() == 4 && v.rank() == 4, "attention: q ", q.shape, ", k ", k.shape, ", v ",
             v.shape, " must be [B, T, heads, D]");
  ATTN_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "attention: head dim must be dense");
  const Dims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3), 0};
  ATTN_CHECK(k.size(0) == d.B && k.size(3) == d.D, "attention: q ", q.shape, " and k ", k.shape, " do not match");
  ATTN_CHECK(v.size(0) == d.B && v.size(1) == d.S && v.size(2) == d.Hkv, "attention: k ", k.shape, " and v ", v.shape,
             " differ in batch, positions or heads");
  ATTN_CHECK(d.Hkv > 0 && d.H % d.Hkv == 0, "attention: ", d.H, " query heads are not a multiple of ", d.Hkv,
             " kv heads");
  ATTN_CHECK(opt.softcap >= 0.f, "attention: softcap ", opt.softcap, " must be >= 0");
  ATTN_CHECK(!opt.mask.local() || opt.causal, "attention: a window, chunk or document mask needs the causal mask");
  ATTN_CHECK(!opt.mask.docs || opt.mask.docs_stride == k.size(1), "attention: document starts per ",
             opt.mask.docs_stride, " positions, but ", k.size(1), " keys");
  ATTN_CHECK(opt.mask.window >= 0 && opt.mask.chunk >= 0, "attention: window ", opt.mask.window, " and chunk ",
             opt.mask.chunk, " must be >= 0");
  const Tensor& sk = opt.sinks;
  ATTN_CHECK(!sk.defined() || (sk.rank() == 1 && sk.size(0) == d.H && sk.is_contiguous()), "attention: sinks ",
             sk.shape, " must be [", d.H, "] (one per query head)");
  ATTN_CHECK(!sk.defined() || opt.block.mode == BlockSoftmaxMode::exact,
             "attention: sinks need the block softmax's mode exact");
  Dims dd = d;
  dd.G = d.H / d.Hkv;
  // Decoding (a few query rows per head, no gradient): the logits come straight from K's rows, as
  // copying K and V into the kernels' layouts would cost as much as the product.
  const bool direct = d.T * dd.G <= 4 && !needs_grad(q, k, v) && !opt.block_scales.requires_grad() &&
                      !opt.sinks.requires_grad();
  if (opt.kernel == AttentionKernel::flash && !direct) return attention_flash(q, k, v, opt, dd);
  const float alpha = opt.logit_scale, cap = opt.softcap;
  const bool causal = opt.causal;
  const BlockPlan bp = block_plan(opt, dd);
  // Decoding with fewer (batch, kv head) pairs than threads (MLA's absorbed form has one kv head):
  // the keys are split among the threads instead, and the parts merged (flash-decoding).
  if (direct && bp.plain() && d.B * d.Hkv < omp_get_max_threads() && d.S >= 256) return attention_split_keys(q, k, v, opt, dd);
  const Tensor scales = opt.block_scales;
  const OutputScale out = opt.output_scale;
  const AttentionMask mask = opt.mask;
  const Tensor sinks = opt.sinks;

  Tensor y = new_output({d.B, d.T, d.H, d.Dv}, needs_grad(q, k, v) || scales.requires_grad() || sinks.requires_grad());
  const bool save = y.requires_grad();
  // With sinks: each row's log-sum-exp [B, H, T], for the sinks' gradient.
  float* lse = save && sinks.defined() ? current_arena().alloc_floats(d.B * d.H * d.T) : nullptr;
  // p: [B, H, T, S] softmax probabilities kept for backward (this is the dense kernel); with
  // separate block softmaxes, each block's own probabilities (unweighted).
  float* p = save ? current_arena().alloc_floats(d.B * d.H * d.T * d.S) : nullptr;
  const int nt = omp_get_max_threads();
  // Per thread: Kᵀ [D, S], Vᵀ [Dv, S], three rows of S, a block's output or c·dy [Dv], block maxima [N].
  const int64_t scratch_per_thread = (d.D + d.Dv) * d.S + 3 * d.S + d.Dv + bp.blocks();
  float* scratch = current_arena().alloc_floats(nt * scratch_per_thread);
  float* head_max = current_arena().alloc_floats(d.B * d.H);

#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t g = 0; g < d.Hkv; ++g) {
      float* kt = scratch + omp_get_thread_num() * scratch_per_thread;
      float* s = kt + (d.D + d.Dv) * d.S;
      if (!direct) gather_transposed(kt, k, b, g, dd);
      for (int64_t hh = 0; hh < dd.G; ++hh) {
        const int64_t h = g * dd.G + hh;
        float hmax = -std::numeric_limits<float>::infinity();
        const float sink = sinks.defined() ? sinks.data[h] : -std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < d.T; ++i) {
          // keys [first, n) are visible; none when the row precedes every key
          const int64_t n = causal ? std::max<int64_t>(0, i + (d.S - d.T) + 1) : d.S;
          const int64_t first = std::min(n, mask.first_key(i + d.S - d.T, b));
          if (direct) {
            const float* qi = row(q, b, i, h);
            for (int64_t j = 0; j < n; ++j) {
              const float* kj = row(k, b, j, g);
              float dot = 0.f;
#pragma omp simd reduction(+ : dot)
              for (int64_t e = 0; e < d.D; ++e) dot += qi[e] * kj[e];
              s[j] = dot;
            }
          } else {
            dot_rows(s, row(q, b, i, h), kt, n, d.D, dd);
          }
          if (n > first) hmax = std::max(hmax, finish_logits(s + first, n - first, alpha, cap));  // visible keys only
          float* yi = y.data + ((b * d.T + i) * d.H + h) * d.Dv;
          const float L = bp.plain() ? softmax_row(yi, s, first, n, v, b, g, sink, d)
                                     : block_softmax_row(yi, s, first, n, v, b, g, h, i + d.S - d.T, bp, s + 3 * d.S,
                                                         s + 3 * d.S + d.Dv, sink, d);
          if (lse) lse[(b * d.H + h) * d.T + i] = L;
          if (out.kind != OutputScale::none) {
            const float c = out.at(n - first);
            for (int64_t e = 0; e < d.Dv; ++e) yi[e] *= c;
          }
          if (p) std::memcpy(p + ((b * d.H + h) * d.T + i) * d.S, s, n * sizeof(float));
        }
        head_max[b * d.H + h] = hmax;
      }
    }
  record_max_logits(opt, head_max, d);

  if (save) {
    record("attention", y, [q, k, v, y, p, scratch, scratch_per_thread, dd, alpha, cap, causal, bp, scales, out,
                            mask, sinks, lse] {
      // fwd: y_i = Σ_j p_ij v_j, p_i = softmax(s_i), s = cap(α q·k)  =>  see ref::attention_bwd
      const Dims& d = dd;
      const float* dy = y.grad_in();
      float* qg = q.grad_accum();
      float* kg = k.grad_accum();
      float* vg = v.grad_accum();
      // Separate block softmaxes: the scales' gradient per (batch, head), summed after the loop.
      float* da = bp.a && scales.requires_grad() ? current_arena().alloc_zeroed(d.B * d.H * bp.blocks() * bp.P)
                                                 : nullptr;
      // The sinks' gradient per (batch, head), summed over the batch after the loop.
      float* dsink = sinks.requires_grad() ? current_arena().alloc_zeroed(d.B * d.H) : nullptr;
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < d.B; ++b)
        for (int64_t g = 0; g < d.Hkv; ++g) {
          float* kt = scratch + omp_get_thread_num() * scratch_per_thread;
          float* vt = kt + d.D * d.S;
          float* dp = vt + d.Dv * d.S;
          float* s = dp + d.S;
          float* pw = s + d.S;  // separate blocks: w_β p^β_ij, the weights of dv
          float* dyc = pw + d.S;  // with an output scale: c_i · dy_i
          gather_transposed(kt, k, b, g, d);
          gather_transposed(vt, v, b, g, d);
          for (int64_t hh = 0; hh < d.G; ++hh) {
            const int64_t h = g * d.G + hh;
            for (int64_t i = 0; i < d.T; ++i) {
              const int64_t n = causal ? std::max<int64_t>(0, i + (d.S - d.T) + 1) : d.S;
              const int64_t first = std::min(n, mask.first_key(i + d.S - d.T, b));
              if (n == first) continue;  // the row sees no key: no gradient
              const float* pi = p + ((b * d.H + h) * d.T + i) * d.S;
              const float* dyi = dy + ((b * d.T + i) * d.H + h) * d.Dv;
              if (out.kind != OutputScale::none) {  // y_i = c_i · o_i: o_i's gradient is c_i · dy_i
                const float c = out.at(n - first);
                for (int64_t e = 0; e < d.Dv; ++e) dyc[e] = c * dyi[e];
                dyi = dyc;
              }
              const float* qi = row(q, b, i, h);
              dot_rows(dp, dyi, vt, n, d.Dv, d);  // dp_j = dy_i · v_j
              if (cap > 0.f) logits_row(s, qi, kt, n, d, alpha, cap);  // capped logits, for 1 - (s/c)²
              const float* pv = pi;  // the weights of dv_j += p_ij dy_i
              if (!bp.separate()) {
                float rowdot = 0.f;
#pragma omp simd reduction(+ : rowdot)
                for (int64_t j = 0; j < n; ++j) rowdot += pi[j] * dp[j];
                grad_logits(dp, pi, s, 0, n, rowdot, alpha, cap);
                if (dsink)  // −p_σ · (dy·y)
                  dsink[b * d.H + h] -= std::exp(sinks.data[h] - lse[(b * d.H + h) * d.T + i]) * rowdot;
              } else {
                const int64_t t = i + d.S - d.T;
                for (int bl = 0; bl < bp.blocks(); ++bl) {
                  const int64_t j0 = std::max(first, bp.start(bl)), j1 = std::min(n, bp.start(bl + 1));
                  if (j0 >= j1) continue;
                  float rowdot = 0.f;  // D_β = dy_i · o_β
#pragma omp simd reduction(+ : rowdot)
                  for (int64_t j = j0; j < j1; ++j) rowdot += pi[j] * dp[j];
                  if (da) da[((b * d.H + h) * bp.blocks() + bl) * bp.P + t] = bp.sign(h, bl, t) * rowdot;
                  const float w = bp.weight(h, bl, t);
                  for (int64_t j = j0; j < j1; ++j) pw[j] = w * pi[j];
                  grad_logits(dp, pw, s, j0, j1, rowdot, alpha, cap);
                }
                pv = pw;
              }
              float* dqi = qg ? grad_row(qg, q, b, i, h) : nullptr;
              for (int64_t j = first; j < n; ++j) {  // keys before first have p = ds = 0
                const float a = dp[j], pij = pv[j];
                const float* kj = row(k, b, j, g);
                if (dqi) {
#pragma omp simd
                  for (int64_t e = 0; e < d.D; ++e) dqi[e] += a * kj[e];
                }
                if (kg) {
                  float* dkj = grad_row(kg, k, b, j, g);
#pragma omp simd
                  for (int64_t e = 0; e < d.D; ++e) dkj[e] += a * qi[e];
                }
                if (vg) {
                  float* dvj = grad_row(vg, v, b, j, g);
#pragma omp simd
                  for (int64_t e = 0; e < d.Dv; ++e) dvj[e] += pij * dyi[e];
                }
              }
            }
          }
        }
      if (da) store_scale_grads(scales, da, bp, d);
      if (dsink) store_sink_grads(sinks, dsink, d);
    });
  }
  return y;
}

}  // namespace attnlab
