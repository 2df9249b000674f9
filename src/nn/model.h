#pragma once
// The decoder-only transformer (docs/model.md states exactly what it computes).
//
//   x = tok_emb[ids] (+ pos_emb[t] when positions = learned)             x: [B·T, C]
//   for each block l:  x = x + wo · attn(norm1(x))   then   x = x + mlp(norm2(x))
//   logits = norm_f(x) · tok_embᵀ  (tied embeddings)        loss = mean cross-entropy
//
// Parameter names (NOTE [param layout] in nn/param.h):
//   tok_emb [V, C]   pos_emb [context, C]   norm_f.{g,b}
//   blocks.{l}.norm1.{g,b}   blocks.{l}.norm2.{g,b}            (b only for layernorm)
//   blocks.{l}.attn.*  the attention module's (nn/attention.h): MHA wq, wk, wv, wo; MLA wq (or
//                      wq_a, q_norm.g, wq_b), wkv_a, kv_norm.g, wkv_b, wo
//   blocks.{l}.mlp.w1 [C, F]   .w2 [F, C]   (.w3 [C, F], the up projection, for swiglu)
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/attention.h"
#include "nn/param.h"
#include "tensor/tensor.h"

namespace attnlab {

enum class NormKind { layernorm, rmsnorm };
enum class MlpKind { gelu, swiglu };
enum class Positions { learned, rope };

struct ModelSpec {
  int vocab = 0;
  int context = 64;
  int n_layer = 4;
  int n_head = 4;
  int n_kv_head = 4;
  int d_model = 128;
  int d_head = 32;
  AttentionType attention = AttentionType::mha;
  MlaSizes mla;  // attention = mla
  int d_ff = 512;
  NormKind norm = NormKind::layernorm;
  float norm_eps = 1e-5f;
  MlpKind mlp = MlpKind::gelu;
  Positions positions = Positions::learned;
  float rope_base = 10000.f;
  float dropout = 0.f;
  // Residual branches: x + f(x) (sum), or √(1−τ)·x + √τ·f(x) (weighted; τ = tau_attn for the
  // attention branch, tau_mlp for the MLP's).
  bool weighted_residual = false;
  float tau_attn = 0.01f, tau_mlp = 0.5f;
  float init_std = 0.02f;
  // PyTorch's default init (model.init: pytorch) instead of N(0, init_std²): every projection
  // [in, out] and its bias U(−1/√in, 1/√in) (nn.Linear), embeddings N(0, 1) (nn.Embedding).
  bool pytorch_init = false;
  bool bias = false;          // a bias on every projection (and on the head when untied)
  bool embed_norm = false;    // a norm (model.norm's kind) after the embeddings: emb_norm
  bool tied_head = true;      // logits = x · tok_embᵀ; false: x · head (+ head_b)
  QueryScaling query_scaling = QueryScaling::logits;
  float attn_scale = 0.f;  // the value s (e.g. 1/√d_head; MLA: 1/√(qk_nope + qk_rope))
  float softcap = 0.f;
  bool sinks = false;  // a learned sink logit per head and layer (blocks.l.attn.sinks)
  // Packed documents: a document ends with each occurrence of these ids (data.packing separator),
  // and no position attends across a document's start. Empty: one document per sequence.
  std::vector<int32_t> doc_separator;
  AttentionKernel kernel = AttentionKernel::dense;
  BlockSoftmax block;           // the block softmax (mode exact, 1 block: the plain softmax)
  bool block_per_head = false;  // learned scales per head
  OutputScale output_scale;     // the multiplier on attention's output rows
  AttentionMask mask;           // window / chunk of the local layers
  std::vector<bool> layer_local;  // layer l is local when layer_local[l % size]; empty: every layer
};

// The keys and values of the positions decoded so far, per layer (Attention::decode states what a
// position's entry holds). Positions [0, length) are filled; capacity is the model's context.
struct KvCache {
  int length = 0;
  std::vector<int32_t> ids, docs;  // the positions' ids and document starts (with doc_separator)
  std::vector<std::vector<float>> layers;
};

class Transformer {
 public:
  // Registers every parameter in `store`; the caller then calls store.finalize(seed).
  Transformer(const ModelSpec& spec, ParamStore& store);

  // Next-token loss for ids/targets [B·T] int32 (caller keeps them alive until backward).
  // dropout_seed and step select the dropout masks (unused when dropout = 0 or grad is off).
  Tensor loss(const int32_t* ids, const int32_t* targets, int B, int T, uint64_t dropout_seed = 0,
              uint64_t step = 0);
  // Logits [B·T, V].
  Tensor logits(const int32_t* ids, int B, int T, uint64_t dropout_seed = 0, uint64_t step = 0);

  // Decoding with a cache (no gradient): logits [T, V] of positions [cache.length, cache.length + T)
  // of one sequence, given their ids; the positions before come from the cache, which gains these.
  // Equal to rows [cache.length, cache.length + T) of logits() over the whole sequence.
  KvCache new_cache() const;
  Tensor decode(const int32_t* ids, int T, KvCache& cache);
  // Floats a position adds to layer l's cache.
  int64_t cache_floats_per_token(int l) const { return blocks_[l].attn->cache_floats_per_token(); }

  // Per layer and head, the max attention logit (before the cap, after the mask) of the last forward
  // pass, over batch and positions: [n_layer · n_head], layer-major.
  const std::vector<float>& max_logits() const { return max_logits_; }
  const ModelSpec& spec() const { return spec_; }
  const ScalePlan& scale_plan() const { return plan_; }
  // Layer l's attention module (its QK-Clip targets, its spec).
  const Attention& attention(int l) const { return *blocks_[l].attn; }

 private:
  struct Norm {
    Param *g = nullptr, *b = nullptr;
  };
  struct Block {
    Norm norm1, norm2;
    std::unique_ptr<Attention> attn;
    Param *w1, *w2, *w3 = nullptr;
    Param *b1 = nullptr, *b2 = nullptr, *b3 = nullptr;  // model.bias
  };
  // y16: as for layer_norm (the bf16 copy of the output for the products that read it).
  Tensor norm(const Norm& n, const Tensor& x, const uint16_t** y16 = nullptr) const;
  Tensor head_logits(const Tensor& x) const;  // the final stream's logits
  // With a cache: B = 1, the positions start at cache->length, attention decodes.
  Tensor hidden(const int32_t* ids, int B, int T, uint64_t dropout_seed, uint64_t step, KvCache* cache = nullptr);

  ModelSpec spec_;
  ScalePlan plan_;
  Param* tok_emb_;
  Param* pos_emb_ = nullptr;
  Norm emb_norm_;                 // model.embed_norm
  Param *head_ = nullptr, *head_bias_ = nullptr;  // untied head [C, V] (and its bias)
  std::vector<Block> blocks_;
  Norm norm_f_;
  std::vector<float> max_logits_;
};

}  // namespace attnlab
