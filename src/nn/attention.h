#pragma once
// The attention sub-layer as a module, chosen once when the model is built: multi-head attention
// (MHA, and GQA when n_kv_head < n_head) or DeepSeek's multi-head latent attention (MLA). Both
// take the block's normed input and return the heads' outputs concatenated, before the output
// projection wo (which the model adds to the residual stream). docs/model.md and docs/mla.md state
// exactly what each computes.
//
//   MHA  q = h·wq,  k = h·wk,  v = h·wv  (per head; RoPE on q and k with positions: rope)
//   MLA  q = h·wq  or  rms_norm(h·wq_a; q_norm)·wq_b;  head h's q = [q^C_h; RoPE(q^R_h)]
//        [c | k^R] = h·wkv_a;  c_kv = rms_norm(c; kv_norm);  [k^C_h; v_h] = c_kv·wkv_b
//        head h's k = [k^C_h; RoPE(k^R)]   (one rotary key shared by every head)
//   both: a = attention(q, k, v) with the logit multiplier of the ScalePlan
//
// Each module lists its QK-Clip targets: which columns of which parameter scale a head's logits.
#include <memory>
#include <string>
#include <vector>

#include "nn/param.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "tensor/tensor.h"

namespace attnlab {

enum class AttentionType { mha, mla };
// Where the attention scale is applied (NOTE [attention scale] in ops/attention.h).
enum class QueryScaling { init, query, logits, none, both };

// The placement of the attention scale s for each query_scaling mode: a multiplier on the query
// projection's initial values (W_q, or W_q_b in MLA with a query low rank), on q in the forward
// pass, and on the logits. This function is the only place that maps a mode to multipliers.
struct ScalePlan {
  float wq_init = 1.f;
  float query = 1.f;
  float logits = 1.f;
};
ScalePlan plan_attention_scale(QueryScaling where, float scale);

// MLA's sizes (config section `mla`); the defaults are the peer's for d_head 32.
struct MlaSizes {
  int q_lora_rank = 0;       // 0: q = h·wq; > 0: q = rms_norm(h·wq_a)·wq_b through this rank
  int kv_lora_rank = 64;     // width of the latent c_kv, the cached part
  int qk_nope_head_dim = 32;  // q^C, k^C per head
  int qk_rope_head_dim = 16;  // q^R per head, and the shared k^R (even)
  int v_head_dim = 32;
};

struct AttentionSpec {
  AttentionType type = AttentionType::mha;
  int d_model = 0, n_head = 0;
  int n_kv_head = 0, d_head = 0;  // MHA/GQA
  MlaSizes mla;                   // MLA
  bool rope = false;              // MHA: RoPE on q and k (positions: rope); MLA always rotates q^R, k^R
  float rope_base = 10000.f;
  float norm_eps = 1e-5f;         // MLA's q_norm and kv_norm
  float init_std = 0.02f, out_init_std = 0.02f;  // projections; wo
  bool pytorch_init = false;  // projections U(−1/√in, 1/√in) instead (nn.Linear's default)
  bool bias = false;          // MHA: biases bq, bk, bv, bo (bo added with wo's product by the model)
  ScalePlan plan;
  float softcap = 0.f;
  bool sinks = false;             // a learned sink logit per head: param `sinks` [n_head]
  AttentionKernel kernel = AttentionKernel::flash;
  int context = 0;                // positions; the block softmax cuts them into blocks
  BlockSoftmax block;             // block.context is set from context
  bool block_per_head = false;    // learned: scales [n_head, N, context] instead of [N, context]
  OutputScale output_scale;       // the multiplier on each output row of the attention op
  AttentionMask mask;             // this layer's window / chunk (none: causal only)

  int qk_head_dim() const { return type == AttentionType::mla ? mla.qk_nope_head_dim + mla.qk_rope_head_dim : d_head; }
  int v_head_dim() const { return type == AttentionType::mla ? mla.v_head_dim : d_head; }
};

// NOTE [qk-clip targets]: one block of columns that QK-Clip rescales so that head `head`'s logits
// scale by γ: a query part gets γ^α, a key part γ^(1−α) (α = train.qk_clip.alpha), and a query
// part whose key is shared and never rescaled (MLA's q^R against the one k^R) gets all of γ.
// `head` is the query head for query parts and the kv head for key parts (GQA shares a key head
// among a group of query heads). The columns are param->head_part(head, part).
struct QkClipTarget {
  enum Share { query, key, query_full };
  Param* param;
  Share share;
  int head;
  std::string part;
};

class Attention {
 public:
  virtual ~Attention() = default;
  // h: the normed stream [B·T, C] (h16: its bf16 copy with bf16 products, else null). Returns
  // [B·T, H·Dv], the heads' outputs before wo. max_logits: n_head floats updated with the
  // pre-cap max logit of each head (ops/attention.h), or null. docs: [B, T] document starts
  // (AttentionMask::docs), or null.
  virtual Tensor forward(const Tensor& h, const uint16_t* h16, int B, int T, float* max_logits,
                         const int32_t* docs = nullptr) = 0;
  // Decoding with a KV cache (docs/attention.md, "KV-cache decoding"): h [T, C] is the normed
  // stream of T new positions [pos, pos + T) of one sequence; `cache` holds cache_floats_per_token()
  // floats for each position up to the context, those of [0, pos) already written. Writes the new
  // positions' entries and returns [T, H·Dv], the rows forward would give at those positions.
  //   MHA/GQA: a position's entry is [k (n_kv_head·d_head) | v (n_kv_head·d_head)].
  //   MLA:     [c_kv (kv_lora_rank) | RoPE(k^R) (qk_rope_head_dim)], with wkv_b absorbed: head h's
  //            query becomes [q^C_h·W^Kᵀ_h; RoPE(q^R_h)] against the key [c_kv; RoPE(k^R)] shared by
  //            every head, its value is c_kv, and its output o_h·W^V_h (W^K_h, W^V_h: head h's
  //            k_nope and v columns of wkv_b).
  // docs: [pos + T] document starts of the positions so far, or null.
  virtual Tensor decode(const Tensor& h, int T, int pos, float* cache, const int32_t* docs = nullptr) = 0;
  virtual int64_t cache_floats_per_token() const = 0;
  Param& wo() const { return *wo_; }
  Param* bo() const { return bo_; }  // wo's bias, or null
  const AttentionSpec& spec() const { return spec_; }
  // Key heads: query head h reads key head h / (n_head / key_heads()) (MHA/GQA: n_kv_head; MLA:
  // n_head, each head has its own k^C).
  int key_heads() const { return spec_.type == AttentionType::mla ? spec_.n_head : spec_.n_kv_head; }
  const std::vector<QkClipTarget>& qk_clip_targets() const { return targets_; }

 protected:
  explicit Attention(const AttentionSpec& spec) : spec_(spec) {}
  // docs: [B, S] document starts (S = docs_stride keys), or null.
  AttentionOptions options(float* max_logits, const int32_t* docs = nullptr, int64_t docs_stride = 0) const;
  // The learned block softmax's scales `softmax_scales`, drawn from N(0, 1) as in the source.
  void add_block_scales(const std::string& prefix, ParamStore& store);
  // The sinks `sinks` [n_head] when asked for, zero at init (one extra logit 0 per softmax).
  void add_sinks(const std::string& prefix, ParamStore& store);
  AttentionSpec spec_;
  Param* wo_ = nullptr;
  Param* bo_ = nullptr;
  Param* block_scales_ = nullptr;
  Param* sinks_ = nullptr;
  std::vector<QkClipTarget> targets_;
};

// h · w, plus the bias b when there is one (model.bias): the projections of the blocks.
inline Tensor project(const Tensor& h, Param& w, Param* b, const uint16_t* h16 = nullptr) {
  Tensor y = linear(h, w.tensor(), h16);
  return b ? add(y, b->tensor()) : y;
}

// Registers the module's parameters under `prefix` ("blocks.3.attn").
std::unique_ptr<Attention> make_attention(const AttentionSpec& spec, const std::string& prefix, ParamStore& store);

}  // namespace attnlab
