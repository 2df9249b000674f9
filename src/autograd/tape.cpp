#include "autograd/tape.h"

#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

void Tape::backward() {
  GradPoolScope pool_scope(pool_);
  const bool timed = profiling();
  for (size_t i = records_.size(); i-- > 0;) {
    const Record& r = records_[i];
    GradBuffer& out = *r.out;
    if (out.written) {  // else dy = 0: nothing to propagate
      if (timed) {
        PhaseScope p(r.phase);
        r.run(r.closure);
      } else {
        r.run(r.closure);
      }
    }
    if (out.pooled && out.ptr) {  // dy is dead: no record before this one reads it
      pool_.release(out.ptr, out.numel);
      out.ptr = nullptr;
      out.written = false;
    }
  }
  records_.clear();
  pool_.reset();
}

namespace {
thread_local Tape* g_tape = nullptr;
thread_local bool g_grad_enabled = true;
Tape& default_tape() {
  thread_local Tape t;
  return t;
}
}  // namespace

Tape& current_tape() { return g_tape ? *g_tape : default_tape(); }
TapeScope::TapeScope(Tape& t) : prev_(g_tape) { g_tape = &t; }
TapeScope::~TapeScope() { g_tape = prev_; }

bool grad_enabled() { return g_grad_enabled; }
NoGrad::NoGrad() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGrad::~NoGrad() { g_grad_enabled = prev_; }

void Tape::seed_grad(const Tensor& y, const float* dy) {
  ATTN_CHECK(y.requires_grad(), "seed_grad: output does not require grad");
  ATTN_CHECK(y.is_contiguous(), "seed_grad: output must be contiguous");
  GradPoolScope pool_scope(pool_);
  const GradSink g = y.grad_out();
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) g.ptr[i] = g.accumulate ? g.ptr[i] + dy[i] : dy[i];
}

void backward(const Tensor& loss, float seed) {
  ATTN_CHECK(loss.numel() == 1, "backward: loss must be a scalar, got ", loss.shape);
  ATTN_CHECK(loss.requires_grad(), "backward: loss does not require grad (nothing to differentiate)");
  current_tape().seed_grad(loss, &seed);
  current_tape().backward();
}

void backward_from(const Tensor& y, const float* dy) {
  current_tape().seed_grad(y, dy);
  current_tape().backward();
}

}  // namespace attnlab
