#pragma once
// Learning-rate schedules, for 0-based step index s of `total` steps, warm-up of w steps:
//   s < w:   lr · (s + 1) / w
//   after:   r = (s − w) / max(1, total − w)
//            cosine:   min_lr + ½(1 + cos(π·min(1, r)))·(lr − min_lr)
//            linear:   min_lr + (1 − min(1, r))·(lr − min_lr)
//            constant: lr
#include <cstdint>

namespace attnlab {

enum class ScheduleKind { cosine, linear, constant };

struct Schedule {
  ScheduleKind kind = ScheduleKind::cosine;
  double lr = 1e-3, min_lr = 1e-4;
  int64_t warmup = 100, total = 2000;
  double at(int64_t step) const;
};

}  // namespace attnlab
