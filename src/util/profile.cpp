#include "util/profile.h"

namespace attnlab {
namespace {
bool g_on = false;
PhaseTimes g_times;
}  // namespace

void set_profiling(bool on) { g_on = on; }
bool profiling() { return g_on; }
PhaseTimes& phase_times() { return g_times; }
void reset_phase_times() { g_times = PhaseTimes{}; }
PhaseScope*& PhaseScope::innermost() {
  static PhaseScope* scope = nullptr;
  return scope;
}

Phase& PhaseScope::current() {
  static Phase phase = Phase::other;
  return phase;
}
Phase current_phase() { return PhaseScope::current(); }

}  // namespace attnlab
