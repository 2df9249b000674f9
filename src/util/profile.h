#pragma once
// Time per phase of the training step, for `attnlab bench`. Off by default; when off a
// PhaseScope costs one branch. Ops open a scope in their forward pass and the tape opens one
// around each backward closure, so a phase's time covers both directions.
#include <array>
#include <chrono>

namespace attnlab {

enum class Phase { matmul, attention, norm_act, loss, optimizer, other, count };
inline constexpr const char* kPhaseNames[] = {"matmul", "attention", "norm_act", "loss", "optimizer", "other"};

struct PhaseTimes {
  std::array<double, size_t(Phase::count)> seconds{};
};

void set_profiling(bool on);
bool profiling();
PhaseTimes& phase_times();  // accumulated since the last reset
void reset_phase_times();
// The phase a recorded op belongs to, by its name ("matmul", "attention", ...).
Phase phase_of(const char* op);

class PhaseScope {
 public:
  explicit PhaseScope(Phase p) : phase_(p), on_(profiling()) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~PhaseScope() {
    if (on_)
      phase_times().seconds[size_t(phase_)] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  Phase phase_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace attnlab
