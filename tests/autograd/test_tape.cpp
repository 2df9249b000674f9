// The tape's gradient bookkeeping (NOTE [grad buffers], NOTE [grad accumulation]): first writes
// overwrite, later ones add; storage is pooled and released; parameters are settled.
#include <catch2/catch.hpp>

#include <vector>

#include "autograd/tape.h"
#include "nn/param.h"
#include "ops/ops.h"

using namespace attnlab;

namespace {
Tensor leaf(const std::vector<float>& v) {
  Tensor x = empty({int64_t(v.size())}, true);
  std::copy(v.begin(), v.end(), x.data);
  return x;
}
}  // namespace

TEST_CASE("tape: a tensor used twice gets the sum, and reused storage is overwritten, not added to",
          "[autograd]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  for (int round = 0; round < 3; ++round) {  // rounds 2 and 3 get the pool's stale storage back
    arena.reset();
    Tensor x = leaf({1.f, -2.f, 3.f});
    Tensor y = scale(x, 2.f);
    Tensor s = add(scale(y, 3.f), scale(y, 5.f));  // ds/dx = 2·(3 + 5)
    const float k = float(round + 1);
    const std::vector<float> dy{k, 2 * k, 3 * k};
    backward_from(s, dy.data());
    for (int i = 0; i < 3; ++i) REQUIRE(x.grad()[i] == 16.f * dy[size_t(i)]);
  }
}

TEST_CASE("tape: gradient storage is returned after the producer's backward", "[autograd]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  constexpr int64_t n = 4096, depth = 40;
  Tensor x = empty({n}, true);
  std::fill(x.data, x.data + n, 1.f);
  Tensor y = x;
  for (int i = 0; i < depth; ++i) y = scale(y, 1.f);
  std::vector<float> dy(n, 1.f);
  backward_from(y, dy.data());
  REQUIRE(x.grad()[n - 1] == 1.f);
  // In flight at any time: the output's dy and its input's grad. Without release it would be 40.
  REQUIRE(tape.grad_high_water() <= 2 * n * sizeof(float));
}

TEST_CASE("tape: an output no gradient reaches contributes nothing", "[autograd]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  Tensor x = leaf({1.f, 2.f});
  Tensor y = scale(x, 2.f);
  Tensor unused = scale(x, 100.f);  // recorded, never seeded: its backward is skipped
  REQUIRE(unused.requires_grad());
  const std::vector<float> dy{1.f, 1.f};
  backward_from(y, dy.data());
  REQUIRE(x.grad()[0] == 2.f);
  REQUIRE(x.grad()[1] == 2.f);
  REQUIRE(unused.grad() == nullptr);
}

TEST_CASE("tape: a view covering part of a buffer leaves the rest zero, not stale", "[autograd]") {
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  for (int round = 0; round < 2; ++round) {
    arena.reset();
    Tensor x = empty({2, 4}, true);
    std::fill(x.data, x.data + 8, 1.f);
    Tensor y = scale(x, 3.f);
    // Round 0 writes all of y's grad; round 1 only the left half (through a slice).
    Tensor used = round == 0 ? y : contiguous(y.slice(1, 0, 2));
    std::vector<float> dy(size_t(used.numel()), 1.f);
    backward_from(used, dy.data());
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t c = 0; c < 4; ++c) REQUIRE(x.grad()[r * 4 + c] == (round == 0 || c < 2 ? 3.f : 0.f));
  }
}

TEST_CASE("tape: parameter grads overwrite after zero_grad, add over micro-batches, and settle to zero",
          "[autograd]") {
  ParamStore store;
  Param* a = store.add("a", {3}, Role::gain, {Init::ones});
  Param* b = store.add("b", {3}, Role::gain, {Init::ones});
  store.finalize(1);
  std::fill(a->grad, a->grad + 3, 100.f);  // stale values from an earlier step
  std::fill(b->grad, b->grad + 3, 100.f);
  store.zero_grad();
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  for (float k : {2.f, 5.f}) {  // two micro-batches use `a` only
    arena.reset();
    Tensor y = scale(a->tensor(), k);
    const std::vector<float> dy{1.f, 1.f, 1.f};
    backward_from(y, dy.data());
  }
  store.settle_grads();
  for (int i = 0; i < 3; ++i) {
    REQUIRE(a->grad[i] == 7.f);  // 2 + 5: the stale 100 was overwritten by the first micro-batch
    REQUIRE(b->grad[i] == 0.f);  // unused this step
  }
}
