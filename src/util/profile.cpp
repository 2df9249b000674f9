#include "util/profile.h"

#include <cstring>

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

Phase phase_of(const char* op) {
  for (const char* p : {"matmul", "residual_linear", "residual_gelu_mlp"})
    if (!std::strcmp(op, p)) return Phase::matmul;
  if (!std::strcmp(op, "attention")) return Phase::attention;
  if (!std::strcmp(op, "cross_entropy")) return Phase::loss;
  for (const char* p : {"layer_norm", "rms_norm", "gelu", "silu", "swiglu", "rope", "add", "scale", "mul", "dropout",
                        "embedding"})
    if (!std::strcmp(op, p)) return Phase::norm_act;
  return Phase::other;
}

}  // namespace attnlab
