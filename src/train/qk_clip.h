#pragma once
// QK-Clip [Kimi Team 2025, "Kimi K2: Open Agentic Intelligence", §2.1 (MuonClip)]: after each
// optimizer step, every attention head h whose max logit S_h of the step's own forward pass
// exceeded τ has its query and key weights rescaled so that its logits scale by
// γ_h = min(1, τ / S_h). The step itself (forward, backward, update) is untouched; any optimizer.
//
// Which columns move comes from the attention modules' QK-Clip targets (NOTE [qk-clip targets] in
// nn/attention.h), by parameter and head part, never by name patterns:
//   key head g (shared by the query heads of group g under GQA): × γ_g^(1−α), γ_g = min over the
//     group of γ_h (so no head's logits grow);
//   query part of head h: × γ_h / γ_g^(1−α) (= γ_h^α without GQA);
//   query part whose key is shared and never scaled (MLA's q^R): × γ_h.
// Head h's logits then scale by exactly γ_h, and a head at or below τ keeps its logits. A frozen
// parameter (train.freeze) is never changed: its share of γ is then not applied. S_h is
// the softmax input before any soft-cap, so the rule holds for every query_scaling placement
// (docs/qk_clip.md derives each case).
#include <vector>

#include "nn/model.h"

namespace attnlab {

struct QkClipConfig {
  float tau = 100.f;
  float alpha = 0.5f;  // the query's share of γ; the key gets 1 − alpha
};

struct QkClipStats {
  int clipped_heads = 0;     // heads with S_h > τ this step
  float gamma_deficit = 0.f;  // 1 − min_h γ_h: 0 when nothing was clipped
};

// Rescales model's query/key parameters in place from max_logits (n_layer · n_head, layer-major,
// as Transformer::max_logits). A non-finite or non-positive S_h clips nothing.
QkClipStats qk_clip(const Transformer& model, const std::vector<float>& max_logits, const QkClipConfig& cfg);

}  // namespace attnlab
