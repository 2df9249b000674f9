#include "train/sample.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "autograd/tape.h"
#include "util/check.h"
#include "util/rng.h"

namespace attnlab {

namespace {

// The next id from the last position's logits z [V].
int32_t draw(const float* z, int V, const SampleOptions& opt, Rng& rng, std::vector<double>& prob,
             std::vector<int>& order) {
  int next = int(std::max_element(z, z + V) - z);
  if (opt.temperature > 0.f) {
    for (int v = 0; v < V; ++v) order[v] = v;
    const int keep = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
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
  return int32_t(next);
}

}  // namespace

SampleResult sample(Transformer& model, std::vector<int32_t> ids, const SampleOptions& opt) {
  ATTN_CHECK(!ids.empty(), "sample: empty prompt");
  ATTN_CHECK(opt.temperature >= 0.f, "sample: negative temperature");
  const int V = model.spec().vocab, context = model.spec().context;
  SampleResult res;
  res.shift = opt.shift > 0 ? std::min(opt.shift, context) : std::max(1, context / 4);
  NoGrad no_grad;
  Arena arena;
  ArenaScope scope(arena);
  Rng rng(opt.seed, "sample");
  std::vector<double> prob(V);
  std::vector<int> order(V);
  KvCache cache = model.new_cache();
  size_t start = ids.size() > size_t(context) ? ids.size() - context : 0;
  res.prompt_cut = int(start);
  std::vector<float> last(V);
  // The window [start, ids.size()) from scratch: its last position's logits into `last`.
  auto rebuild = [&] {
    arena.reset();
    const int T = int(ids.size() - start);
    cache.length = 0;
    Tensor z = opt.cache ? model.decode(ids.data() + start, T, cache) : model.logits(ids.data() + start, 1, T);
    std::copy(z.data + int64_t(T - 1) * V, z.data + int64_t(T) * V, last.begin());
  };
  const auto t0 = std::chrono::steady_clock::now();
  rebuild();
  for (int n = 0; n < opt.tokens; ++n) {
    ids.push_back(draw(last.data(), V, opt, rng, prob, order));
    if (n + 1 == opt.tokens) break;  // the last token's logits are not needed
    if (ids.size() - start > size_t(context)) {
      start += res.shift;
      ++res.slides;
      rebuild();
    } else if (opt.cache) {
      arena.reset();
      Tensor z = model.decode(&ids.back(), 1, cache);
      std::copy(z.data, z.data + V, last.begin());
    } else {
      rebuild();
    }
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.ids = std::move(ids);
  return res;
}

}  // namespace attnlab
