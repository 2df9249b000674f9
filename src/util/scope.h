#pragma once
// OnUnwind: runs a function when its scope is left by an exception, not on a normal exit (as
// std::experimental::scope_fail). An exception from the function is swallowed: the one already on
// its way out is the error to report.
#include <exception>
#include <utility>

namespace attnlab {

template <class F>
class OnUnwind {
 public:
  explicit OnUnwind(F f) : f_(std::move(f)) {}
  ~OnUnwind() {
    if (std::uncaught_exceptions() <= uncaught_) return;
    try {
      f_();
    } catch (...) {
    }
  }
  OnUnwind(const OnUnwind&) = delete;
  OnUnwind& operator=(const OnUnwind&) = delete;

 private:
  F f_;
  int uncaught_ = std::uncaught_exceptions();
};

}  // namespace attnlab
