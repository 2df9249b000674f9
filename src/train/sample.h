#pragma once
// Autoregressive sampling: each new token is drawn from softmax(logits / temperature) of the
// last position, restricted to the top_k most likely tokens when top_k > 0; temperature 0 is
// greedy (argmax). The model sees the last `context` tokens. Draws come from Rng(seed,
// "sample"), so the same seed gives the same text.
#include <cstdint>
#include <vector>

#include "nn/model.h"

namespace attnlab {

struct SampleOptions {
  int tokens = 200;
  float temperature = 1.f;
  int top_k = 0;
  uint64_t seed = 0;
};

// Returns the prompt followed by the generated ids. The prompt must hold at least one id.
std::vector<int32_t> sample(Transformer& model, std::vector<int32_t> prompt, const SampleOptions& opt);

}  // namespace attnlab
