#pragma once
// From a resolved RunConfig to the engine's objects: the model spec, the optimizer and the
// LR schedule. The config's strings are mapped to enums here and nowhere else.
#include <memory>

#include "config/config.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace attnlab {

ModelSpec model_spec(const RunConfig& cfg, int vocab_size);
std::unique_ptr<Optimizer> make_optimizer(const RunConfig& cfg, ParamStore& store);
Schedule make_schedule(const RunConfig& cfg);
// Sets OpenMP/oneDNN threads (runtime.threads), the matmul precision and how products choose their
// form (runtime.matmul_forms); returns the thread count.
int apply_runtime(const RunConfig& cfg);
// runtime.matmul_forms_file resolved: "" (no file) for none, else the path.
std::string matmul_forms_file(const RunConfig& cfg);

}  // namespace attnlab
