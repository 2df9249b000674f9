#pragma once
// Below this many elements a pointwise loop runs on the calling thread: waking the OpenMP team
// costs more than the loop.
#include <cstdint>

namespace attnlab::kernels {
inline constexpr int64_t kParallelMin = 1 << 15;
}
