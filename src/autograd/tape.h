#pragma once
// Reverse-mode autograd over a tape recorded in the forward pass.
//
// Each op computes its output and, when an input requires grad and grad mode is on, records its
// backward closure with record(). Records are kept in creation order, which is already a
// topological order (an op's inputs exist before it runs), so backward() runs them in reverse:
// no graph search. Closures are stored in the current Arena (they must be trivially
// destructible: they capture Tensor handles and scalars), so recording allocates nothing once
// the tape's vector has reached its size in the first step.
//
// NOTE [grad accumulation]: a tensor used by several ops (a residual stream) receives the sum of
// its consumers' contributions, and parameter grads accumulate over micro-batches until the
// optimizer zeroes them. Ops get this right without zeroed buffers: each backward fetches an
// input's sink with Tensor::grad_out() and stores (`=`) when the sink says the write is the
// first, adds (`+=`) otherwise; kernels that can only add use Tensor::grad_accum(). The tape
// skips an op whose output received no gradient (its contribution is zero), and after an op's
// backward returns its output's pooled grad storage (NOTE [grad buffers] in tensor/tensor.h).
#include <algorithm>
#include <new>
#include <type_traits>
#include <vector>

#include "kernels/parallel.h"
#include "tensor/tensor.h"
#include "util/profile.h"

namespace attnlab {

class Tape {
 public:
  struct Record {
    const char* op;
    Phase phase;      // the phase the op's forward ran in: its backward is timed under it
    GradBuffer* out;  // the op's output grad: dy
    void (*run)(void* closure);
    void* closure;
  };
  // Records the backward of `op`, which produced `out`.
  template <class F>
  void record(const char* op, const Tensor& out, const F& f) {
    static_assert(std::is_trivially_destructible_v<F>, "backward closures capture handles and scalars only");
    void* mem = current_arena().alloc_bytes(sizeof(F));
    void* c = new (mem) F(f);
    records_.push_back({op, current_phase(), out.gbuf, [](void* p) { (*static_cast<F*>(p))(); }, c});
  }
  // Adds dy (contiguous, y's shape) into y's gradient: the seed of a backward pass. Several
  // outputs may be seeded before one backward().
  void seed_grad(const Tensor& y, const float* dy);
  // Runs every record in reverse creation order, then clears the tape.
  void backward();
  void clear() { records_.clear(); }
  size_t size() const { return records_.size(); }
  const std::vector<Record>& records() const { return records_; }
  // Bytes of op-output gradient storage in flight at the busiest point of backward.
  size_t grad_high_water() const { return pool_.high_water(); }
  GradPool& grad_pool() { return pool_; }

 private:
  std::vector<Record> records_;
  GradPool pool_;
};

// The tape ops record on (one per thread). TapeScope switches it.
Tape& current_tape();
class TapeScope {
 public:
  explicit TapeScope(Tape& t);
  ~TapeScope();

 private:
  Tape* prev_;
};

bool grad_enabled();
// Evaluation and sampling: ops record nothing and outputs carry no grad buffers.
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();

 private:
  bool prev_;
};

// True when grad mode is on and any input requires grad: the op's output then requires grad and
// its backward is recorded.
template <class... Ts>
bool needs_grad(const Ts&... inputs) {
  return grad_enabled() && (inputs.requires_grad() || ...);
}

// Pointwise gradient write: sink[i] = f(i) on a first write, sink[i] += f(i) otherwise.
// Chunks with a restrict-qualified destination: the compiler then keeps f's captured pointers in
// registers and vectorises with plain loads (otherwise it reloads them and emits gathers).
template <class F>
void write_grad(const GradSink& g, int64_t n, F f) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const bool acc = g.accumulate;
#pragma omp parallel for if (n > kernels::kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    float* __restrict p = g.ptr;
    const F fc = f;
    const int64_t lo = c * kChunk, hi = std::min(n, lo + kChunk);
    if (acc) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) p[i] += fc(i);
    } else {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) p[i] = fc(i);
    }
  }
}

template <class F>
void record(const char* op, const Tensor& out, const F& f) {
  current_tape().record(op, out, f);
}

// Seeds d(loss) = seed (loss is a scalar with a grad buffer) and runs the current tape backward.
void backward(const Tensor& loss, float seed = 1.0f);
// Seeds the output's grad with `dy` (same shape, contiguous) and runs the current tape backward.
void backward_from(const Tensor& y, const float* dy);

}  // namespace attnlab
