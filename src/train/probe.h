#pragma once
// `attnlab probe attention-scale`: the standard deviation of the attention op's output for unit-
// normal q, k and v (the figures of Graphcore's "Almost-scaled dot-product attention", 2023;
// docs/almost_scaled.md derives them). Everything runs through attention() itself, so it measures
// what the model computes.
#include <cstdint>
#include <string>
#include <vector>

namespace attnlab {

struct AttentionScaleProbeOptions {
  int64_t d_seq = 256;    // keys (and queries) per sequence
  int64_t d_head = 64;
  int64_t samples = 64;   // independent sequences × heads
  uint64_t seed = 0;
  std::vector<double> temperatures;  // empty: 2^(k/2), k = −12 … 12
};

struct AttentionScaleProbe {
  // Non-causal, logits scaled by 1/√d_head: σ of every output element.
  double sigma_plain = 0, sigma_scaled = 0;  // output_scale none, sqrt_dseq_over_e
  // Causal: σ at each query position (over samples and features), per output_scale.
  std::vector<double> causal_none, causal_dseq, causal_causal;
  // Non-causal, logits scaled by t/√d_head: σ per temperature t, without and with √(d_seq/e), and
  // the log-normal model's prediction √(min(1, e^{t²}/d_seq)) of the first.
  std::vector<double> temperatures, temp_none, temp_scaled, temp_model;
};

AttentionScaleProbe probe_attention_scale(const AttentionScaleProbeOptions& opt);

// Writes attention_scale_position.{csv,svg} and attention_scale_temperature.{csv,svg} into dir.
void write_attention_scale_probe(const AttentionScaleProbe& p, const AttentionScaleProbeOptions& opt,
                                 const std::string& dir);

}  // namespace attnlab
