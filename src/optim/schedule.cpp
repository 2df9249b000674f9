#include "optim/schedule.h"

#include <algorithm>
#include <cmath>

namespace attnlab {

double Schedule::at(int64_t s) const {
  if (s < warmup) return lr * double(s + 1) / double(warmup);
  const double r = std::min(1.0, double(s - warmup) / double(std::max<int64_t>(1, total - warmup)));
  switch (kind) {
    case ScheduleKind::cosine: return min_lr + 0.5 * (1.0 + std::cos(M_PI * r)) * (lr - min_lr);
    case ScheduleKind::linear: return min_lr + (1.0 - r) * (lr - min_lr);
    case ScheduleKind::constant: return lr;
  }
  return lr;
}

}  // namespace attnlab
