#pragma once
// `attnlab bench`: times full training steps (forward, backward, clipping, optimizer) of a
// config after warm-up, with a per-phase breakdown, and relates the speed to the machine's
// matmul peak measured with oneDNN.
#include <array>
#include <string>
#include <vector>

#include "config/config.h"
#include "kernels/gemm.h"
#include "util/profile.h"

namespace attnlab {

struct BenchResult {
  int threads = 0, steps = 0;
  int64_t params = 0;            // every parameter
  int64_t tokens_per_step = 0;   // batch · context · grad_accum
  double flops_per_token = 0;    // 6·N + 12·n_layer·context·d_model, N = params without pos_emb
  double ms_per_step = 0;        // median
  double ms_min = 0, ms_max = 0;
  double tokens_per_s = 0;       // at the median step time
  double model_gflops = 0;       // flops_per_token · tokens_per_s
  double peak_gflops_f32 = 0, peak_gflops_bf16 = 0;
  double mfu = 0;                // model_gflops / peak of the matmul precision in use
  double peak_rss_mb = 0;
  // Where the memory is: activations (the step arena's high water), activation gradients in
  // flight (the tape's grad pool high water), parameters + grads + optimizer state.
  double activations_mb = 0, grads_in_flight_mb = 0, state_mb = 0;
  std::array<double, size_t(Phase::count)> phase_ms{};  // mean per step
  std::string precision;
  std::string attention;  // the attention kernel, and for flash what its products run on (ops/attention.h)
  // Each distinct product of the timed steps: its form, calls and time (over all timed steps).
  std::vector<kernels::ProductStat> products;
};

BenchResult bench(const LoadedConfig& cfg, int steps, int warmup);
std::string bench_json(const BenchResult& r);
std::string bench_text(const BenchResult& r);

}  // namespace attnlab
