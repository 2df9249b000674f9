#pragma once
// The transformer of nn/model.h composed from the double-precision reference kernels: an
// independent forward pass used for whole-model finite-difference checks.
#include <map>
#include <string>
#include <vector>

#include "nn/model.h"

namespace testing {

using ParamValues = std::map<std::string, std::vector<double>>;

// Current values of every parameter of a store, in double.
ParamValues param_values(const attnlab::ParamStore& store);
// Mean next-token loss of the model with parameters p.
double ref_model_loss(const attnlab::ModelSpec& spec, const ParamValues& p, const std::vector<int32_t>& ids,
                      const std::vector<int32_t>& targets, int B, int T);

}  // namespace testing
