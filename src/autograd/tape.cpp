#include "autograd/tape.h"

#include "util/check.h"
#include "util/profile.h"

namespace attnlab {

void Tape::backward() {
  if (profiling()) {
    for (size_t i = records_.size(); i-- > 0;) {
      PhaseScope p(phase_of(records_[i].op));
      records_[i].run(records_[i].closure);
    }
  } else {
    for (size_t i = records_.size(); i-- > 0;) records_[i].run(records_[i].closure);
  }
  records_.clear();
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

void backward(const Tensor& loss, float seed) {
  ATTN_CHECK(loss.numel() == 1, "backward: loss must be a scalar, got ", loss.shape);
  ATTN_CHECK(loss.requires_grad(), "backward: loss does not require grad (nothing to differentiate)");
  loss.grad[0] += seed;
  current_tape().backward();
}

void backward_from(const Tensor& y, const float* dy) {
  ATTN_CHECK(y.requires_grad(), "backward_from: output does not require grad");
  ATTN_CHECK(y.is_contiguous(), "backward_from: output must be contiguous");
  for (int64_t i = 0; i < y.numel(); ++i) y.grad[i] += dy[i];
  current_tape().backward();
}

}  // namespace attnlab
