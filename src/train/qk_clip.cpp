#include "train/qk_clip.h"

#include <algorithm>
#include <cmath>

#include "util/check.h"

namespace attnlab {

QkClipStats qk_clip(const Transformer& model, const std::vector<float>& max_logits, const QkClipConfig& cfg) {
  const ModelSpec& s = model.spec();
  ATTN_CHECK(max_logits.size() == size_t(s.n_layer) * s.n_head, "qk_clip: ", max_logits.size(),
             " max logits for ", s.n_layer, " layers of ", s.n_head, " heads");
  ATTN_CHECK(cfg.tau > 0.f && cfg.alpha >= 0.f && cfg.alpha <= 1.f, "qk_clip: tau must be > 0 and alpha in [0, 1]");
  QkClipStats stats;
  float min_gamma = 1.f;
  std::vector<float> gamma(s.n_head), key_scale;
  for (int l = 0; l < s.n_layer; ++l) {
    const Attention& attn = model.attention(l);
    bool any = false;
    for (int h = 0; h < s.n_head; ++h) {
      const float m = max_logits[size_t(l) * s.n_head + h];
      gamma[h] = std::isfinite(m) && m > cfg.tau ? cfg.tau / m : 1.f;
      if (gamma[h] < 1.f) {
        any = true;
        stats.clipped_heads++;
        min_gamma = std::min(min_gamma, gamma[h]);
      }
    }
    if (!any) continue;  // every parameter of the layer stays bit-identical
    // Key head g serves query heads [g·G, (g+1)·G): it takes the group's smallest γ.
    const int key_heads = attn.key_heads(), G = s.n_head / key_heads;
    key_scale.assign(key_heads, 1.f);
    for (int g = 0; g < key_heads; ++g) {
      float gmin = 1.f;
      for (int h = g * G; h < (g + 1) * G; ++h) gmin = std::min(gmin, gamma[h]);
      key_scale[g] = std::pow(gmin, 1.f - cfg.alpha);
    }
    for (const QkClipTarget& t : attn.qk_clip_targets()) {
      float f = 1.f;
      switch (t.share) {
        case QkClipTarget::key: f = key_scale[t.head]; break;
        case QkClipTarget::query: f = gamma[t.head] / key_scale[t.head / G]; break;
        case QkClipTarget::query_full: f = gamma[t.head]; break;
      }
      if (f != 1.f && !t.param->frozen) t.param->head_part(t.head, t.part).scale_(f);
    }
  }
  stats.gamma_deficit = 1.f - min_gamma;
  return stats;
}

}  // namespace attnlab
