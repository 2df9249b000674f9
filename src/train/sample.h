#pragma once
// Autoregressive sampling: each new token is drawn from softmax(logits / temperature) of the
// last position, restricted to the top_k most likely tokens when top_k > 0; temperature 0 is
// greedy (argmax). Draws come from Rng(seed, "sample"), so the same seed gives the same text.
//
// The window: the model sees the tokens [start, n) of the sequence, at positions 0, 1, ...; start
// is 0 until the sequence outgrows the context. A prompt longer than the context starts at its
// last `context` tokens. When a new token would not fit, the window drops its `shift` oldest
// tokens (start += shift, repeatedly), and the cache is rebuilt from what remains. shift = 1 is
// the classic sliding window (every token past the context rebuilds the cache: as slow as no
// cache); the default, context / 4, keeps at least 3/4 of the context as history.
//
// With a cache (the default) each token costs one decoding step (Transformer::decode); without,
// the whole window is recomputed for every token. Both see the same windows and give the same
// logits (to float rounding).
#include <cstdint>
#include <string>
#include <vector>

#include "nn/model.h"

namespace attnlab {

struct SampleOptions {
  int tokens = 200;
  float temperature = 1.f;
  int top_k = 0;
  uint64_t seed = 0;
  bool cache = true;
  int shift = 0;  // 0: context / 4 (at least 1)
};

struct SampleResult {
  std::vector<int32_t> ids;  // the prompt followed by the generated ids
  double seconds = 0;        // the prompt's pass and every decoding step
  int prompt_cut = 0;        // prompt tokens the model never saw (prompt longer than the context)
  int slides = 0;            // times the window dropped its oldest tokens
  int shift = 0;             // tokens dropped per slide
};

// The prompt must hold at least one id.
SampleResult sample(Transformer& model, std::vector<int32_t> prompt, const SampleOptions& opt);

}  // namespace attnlab
