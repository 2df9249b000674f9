#include "train/bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "kernels/gemm.h"
#include "ops/attention.h"
#include "train/distributed.h"
#include "train/session.h"
#include "train/setup.h"
#include "train/step.h"
#include "util/check.h"
#include "util/timer.h"

namespace attnlab {

BenchResult bench(const LoadedConfig& cfg_in, int steps, int warmup) {
  ATTN_CHECK(steps >= 1 && warmup >= 0, "bench: steps must be >= 1 and warmup >= 0");
  BenchResult r;
  r.threads = apply_runtime(cfg_in.cfg);
  // Enough schedule for warm-up and timed steps, whatever train.steps says.
  LoadedConfig cfg = cfg_in;
  cfg.cfg.train.steps = std::max(cfg.cfg.train.steps, warmup + steps);
  auto session = Session::from_config(cfg);
  Session& s = *session;
  const RunConfig& c = s.config.cfg;
  r.steps = steps;
  r.precision = c.precision.matmul;
  int64_t n = 0;
  for (const Param* p : s.store.params())
    if (p->name != "pos_emb") n += p->numel();
  r.params = 0;
  for (const Param* p : s.store.params()) r.params += p->numel();
  // Over MPI a step trains every rank's share (train/distributed.h).
  r.tokens_per_step = int64_t(c.train.batch_size) * c.model.context * c.train.grad_accum * dist::size();
  // Model FLOPs per token, counted as the PyTorch peer counts them: 6 per parameter but the position
  // table, and the attention products 6·layers·context·heads·(d_qk + d_v) (12·layers·context·d_model
  // for MHA with d_head = d_model / n_head).
  const int d_v = c.attention.type == "mla" ? c.mla.v_head_dim : resolved_d_head(c);
  r.attention = c.attention.kernel == "flash"
                    ? "flash, " + std::string(flash_products(resolved_qk_head_dim(c), d_v)) + " products"
                    : c.attention.kernel;
  r.flops_per_token = 6.0 * double(n) + 6.0 * c.model.n_layer * c.model.context * c.model.n_head *
                                            double(resolved_qk_head_dim(c) + d_v);

  Stepper stepper(s);
  for (int i = 0; i < warmup; ++i) stepper.step();
  std::vector<double> ms;
  reset_phase_times();
  kernels::reset_product_stats();
  set_profiling(true);
  for (int i = 0; i < steps; ++i) {
    Timer t;
    const StepResult res = stepper.step();
    ms.push_back(1e3 * t.seconds());
    if (!res.diverged.empty()) {
      set_profiling(false);
      throw DivergedError(res.diverged + " (during bench)");
    }
  }
  set_profiling(false);
  r.products = kernels::product_stats();
  std::vector<double> sorted = ms;
  std::sort(sorted.begin(), sorted.end());
  r.ms_per_step = sorted[sorted.size() / 2];
  r.ms_min = sorted.front();
  r.ms_max = sorted.back();
  r.tokens_per_s = double(r.tokens_per_step) / (r.ms_per_step / 1e3);
  r.model_gflops = r.flops_per_token * r.tokens_per_s / 1e9;
  for (size_t i = 0; i < r.phase_ms.size(); ++i) r.phase_ms[i] = 1e3 * phase_times().seconds[i] / steps;
  // Phases cover the ops; what is left of the step (batch draw, zeroing, bookkeeping) is "other".
  double covered = 0;
  for (size_t i = 0; i < r.phase_ms.size(); ++i)
    if (i != size_t(Phase::other)) covered += r.phase_ms[i];
  double mean = 0;
  for (double v : ms) mean += v / steps;
  r.phase_ms[size_t(Phase::other)] = std::max(0.0, mean - covered);
  r.peak_gflops_f32 = kernels::measured_peak_gflops(false);
  r.peak_gflops_bf16 = kernels::measured_peak_gflops(true);
  r.mfu = r.model_gflops / (r.precision == "bf16" ? r.peak_gflops_bf16 : r.peak_gflops_f32);
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  r.peak_rss_mb = double(ru.ru_maxrss) / 1024.0;
  r.activations_mb = double(stepper.arena().high_water()) / (1 << 20);
  r.grads_in_flight_mb = double(stepper.tape().grad_high_water()) / (1 << 20);
  double state = 2.0 * double(s.store.total());
  for (const Optimizer::Slot& slot : s.optimizer->slots()) state += double(slot.shape.numel());
  r.state_mb = state * sizeof(float) / (1 << 20);
  return r;
}

std::string bench_json(const BenchResult& r) {
  char buf[2048];
  std::string phases;
  for (size_t i = 0; i < r.phase_ms.size(); ++i) {
    char p[64];
    std::snprintf(p, sizeof p, "%s\"%s\": %.3f", i ? ", " : "", kPhaseNames[i], r.phase_ms[i]);
    phases += p;
  }
  std::snprintf(buf, sizeof buf,
                "{\"tokens_per_s\": %.1f, \"ms_per_step\": %.3f, \"ms_min\": %.3f, \"ms_max\": %.3f, "
                "\"model_gflops\": %.2f, \"mfu\": %.4f, \"peak_rss_mb\": %.1f, \"activations_mb\": %.1f, "
                "\"grads_in_flight_mb\": %.1f, \"state_mb\": %.1f, \"flops_per_token\": %.0f, "
                "\"params\": %lld, \"tokens_per_step\": %lld, \"threads\": %d, \"steps\": %d, \"precision\": \"%s\", "
                "\"peak_gflops_f32\": %.1f, \"peak_gflops_bf16\": %.1f, \"attention\": \"%s\", \"phases\": {%s}}",
                r.tokens_per_s, r.ms_per_step, r.ms_min, r.ms_max, r.model_gflops, r.mfu, r.peak_rss_mb,
                r.activations_mb, r.grads_in_flight_mb, r.state_mb, r.flops_per_token, (long long)r.params, (long long)r.tokens_per_step, r.threads, r.steps,
                r.precision.c_str(), r.peak_gflops_f32, r.peak_gflops_bf16, r.attention.c_str(), phases.c_str());
  std::string out = buf;
  out.pop_back();  // the closing brace: the products follow
  out += ", \"products\": [";
  for (size_t i = 0; i < r.products.size(); ++i) {
    const kernels::ProductStat& p = r.products[i];
    std::snprintf(buf, sizeof buf,
                  "%s{\"product\": \"%s\", \"form\": \"%s\", \"calls_per_step\": %.2f, \"ms_per_step\": %.3f, "
                  "\"gflops\": %.1f}",
                  i ? ", " : "", p.product.c_str(), p.form.c_str(), double(p.calls) / r.steps, 1e3 * p.seconds / r.steps,
                  p.flops / p.seconds / 1e9);
    out += buf;
  }
  return out + "]}";
}

std::string bench_text(const BenchResult& r) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "tokens/s        %.0f\nms/step         %.2f median (min %.2f, max %.2f) over %d steps\n"
                "model FLOPs     %.3g per token, %.1f GFLOP/s\nMFU             %.1f%% of %.0f GFLOP/s (%s matmul peak, "
                "measured; bf16 peak %.0f)\npeak RSS        %.0f MB (activations %.0f, their grads in flight %.0f, "
                "parameters + grads + optimizer state %.0f)\nthreads         %d\nattention       %s\nphases (ms/step):\n",
                r.tokens_per_s, r.ms_per_step, r.ms_min, r.ms_max, r.steps, r.flops_per_token, r.model_gflops,
                100 * r.mfu, r.precision == "bf16" ? r.peak_gflops_bf16 : r.peak_gflops_f32, r.precision.c_str(),
                r.peak_gflops_bf16, r.peak_rss_mb, r.activations_mb, r.grads_in_flight_mb, r.state_mb, r.threads,
                r.attention.c_str());
  std::string out = buf;
  double total = 0;
  for (double v : r.phase_ms) total += v;
  for (size_t i = 0; i < r.phase_ms.size(); ++i) {
    std::snprintf(buf, sizeof buf, "  %-10s %8.2f  (%4.1f%%)\n", kPhaseNames[i], r.phase_ms[i],
                  100 * r.phase_ms[i] / total);
    out += buf;
  }
  out += "products (per step, by time; forms: docs/performance.md):\n";
  for (const kernels::ProductStat& p : r.products) {
    std::snprintf(buf, sizeof buf, "  %-46s %-8s %5.1f calls %8.2f ms %7.1f GFLOP/s\n", p.product.c_str(),
                  p.form.c_str(), double(p.calls) / r.steps, 1e3 * p.seconds / r.steps, p.flops / p.seconds / 1e9);
    out += buf;
  }
  return out;
}

}  // namespace attnlab
