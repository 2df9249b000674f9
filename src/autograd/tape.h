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
// NOTE [grad accumulation]: every backward adds into the grad buffers of its inputs (+=); it
// never overwrites. A tensor used by several ops (a residual stream) thus receives the sum of
// its consumers' contributions, and parameter grads accumulate over micro-batches until the
// optimizer zeroes them.
#include <new>
#include <type_traits>
#include <vector>

#include "tensor/tensor.h"

namespace attnlab {

class Tape {
 public:
  struct Record {
    const char* op;
    void (*run)(void* closure);
    void* closure;
  };
  template <class F>
  void record(const char* op, const F& f) {
    static_assert(std::is_trivially_destructible_v<F>, "backward closures capture handles and scalars only");
    void* mem = current_arena().alloc_bytes(sizeof(F));
    void* c = new (mem) F(f);
    records_.push_back({op, [](void* p) { (*static_cast<F*>(p))(); }, c});
  }
  // Runs every record in reverse creation order, then clears the tape.
  void backward();
  void clear() { records_.clear(); }
  size_t size() const { return records_.size(); }
  const std::vector<Record>& records() const { return records_; }

 private:
  std::vector<Record> records_;
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

template <class F>
void record(const char* op, const F& f) {
  current_tape().record(op, f);
}

// Seeds d(loss) = seed (loss is a scalar with a grad buffer) and runs the current tape backward.
void backward(const Tensor& loss, float seed = 1.0f);
// Seeds the output's grad with `dy` (same shape, contiguous) and runs the current tape backward.
void backward_from(const Tensor& y, const float* dy);

}  // namespace attnlab
