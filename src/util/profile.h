#pragma once
// Time per phase of the training step, for `attnlab bench`. Off by default; when off a
// PhaseScope costs a store and a branch. An op opens a scope in its forward pass, where it is
// defined; the record it makes there keeps that phase (current_phase()), and the tape opens a scope
// of it around the backward closure, so a phase's time covers both directions with no table of op
// names. Scopes nest exclusively: while an inner scope is open, its time counts to its phase, not
// the outer one's.
#include <array>
#include <chrono>

namespace attnlab {

enum class Phase { matmul, attention, norm_act, loss, optimizer, qk_clip, other, count };
inline constexpr const char* kPhaseNames[] = {"matmul", "attention", "norm_act", "loss", "optimizer", "qk_clip", "other"};

struct PhaseTimes {
  std::array<double, size_t(Phase::count)> seconds{};
};

void set_profiling(bool on);
bool profiling();
PhaseTimes& phase_times();  // accumulated since the last reset
void reset_phase_times();
// The phase of the innermost open scope (Phase::other outside every scope).
Phase current_phase();

class PhaseScope {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PhaseScope(Phase p) : phase_(p), on_(profiling()), enclosing_(current()) {
    current() = p;
    if (!on_) return;
    const Clock::time_point now = Clock::now();
    outer_ = innermost();
    if (outer_) outer_->charge(now);
    innermost() = this;
    start_ = now;
  }
  ~PhaseScope() {
    current() = enclosing_;
    if (!on_) return;
    const Clock::time_point now = Clock::now();
    charge(now);
    innermost() = outer_;
    if (outer_) outer_->start_ = now;
  }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  friend Phase current_phase();
  static PhaseScope*& innermost();  // the open scope whose phase the clock is running for
  static Phase& current();          // the innermost open scope's phase, kept also when not timing
  void charge(Clock::time_point now) {
    phase_times().seconds[size_t(phase_)] += std::chrono::duration<double>(now - start_).count();
  }
  Phase phase_;
  bool on_;
  Phase enclosing_;
  PhaseScope* outer_ = nullptr;
  Clock::time_point start_;
};

}  // namespace attnlab
