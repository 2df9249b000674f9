#include "train/sample.h"

#include <algorithm>
#include <cmath>

#include "autograd/tape.h"
#include "util/check.h"
#include "util/rng.h"

namespace attnlab {

std::vector<int32_t> sample(Transformer& model, std::vector<int32_t> ids, const SampleOptions& opt) {
  ATTN_CHECK(!ids.empty(), "sample: empty prompt");
  ATTN_CHECK(opt.temperature >= 0.f, "sample: negative temperature");
  const int V = model.spec().vocab, context = model.spec().context;
  NoGrad no_grad;
  Arena arena;
  ArenaScope scope(arena);
  Rng rng(opt.seed, "sample");
  std::vector<double> prob(V);
  std::vector<int> order(V);
  for (int n = 0; n < opt.tokens; ++n) {
    arena.reset();
    const int T = int(std::min<size_t>(ids.size(), size_t(context)));
    Tensor logits = model.logits(ids.data() + ids.size() - T, 1, T);
    const float* z = logits.data + int64_t(T - 1) * V;
    int next = int(std::max_element(z, z + V) - z);
    if (opt.temperature > 0.f) {
      for (int v = 0; v < V; ++v) order[v] = v;
      int keep = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
      std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                        [&](int a, int b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
      const double m = z[order[0]];
      double total = 0;
      for (int i = 0; i < keep; ++i) total += prob[i] = std::exp((double(z[order[i]]) - m) / opt.temperature);
      double u = rng.uniform() * total;
      next = order[keep - 1];
      for (int i = 0; i < keep; ++i) {
        if (u < prob[i]) {
          next = order[i];
          break;
        }
        u -= prob[i];
      }
    }
    ids.push_back(int32_t(next));
  }
  return ids;
}

}  // namespace attnlab
