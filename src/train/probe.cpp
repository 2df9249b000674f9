#include "train/probe.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "autograd/tape.h"
#include "io/atomic_file.h"
#include "io/plot_svg.h"
#include "ops/attention.h"
#include "util/check.h"
#include "util/rng.h"

namespace attnlab {

namespace {

struct Inputs {
  std::vector<float> q, k, v;
};

// Unit-normal q, k, v [1, S, samples, D]: each sample is one head of one sequence.
Inputs draw(const AttentionScaleProbeOptions& o) {
  const int64_t n = o.d_seq * o.samples * o.d_head;
  Inputs in{std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
  Rng rq(o.seed, "probe.q"), rk(o.seed, "probe.k"), rv(o.seed, "probe.v");
  for (int64_t i = 0; i < n; ++i) {
    in.q[i] = float(rq.normal());
    in.k[i] = float(rk.normal());
    in.v[i] = float(rv.normal());
  }
  return in;
}

// The op's output for these inputs: y [S, samples, D].
std::vector<float> run(Inputs& in, const AttentionScaleProbeOptions& o, double temperature, bool causal,
                       OutputScale out) {
  NoGrad no_grad;
  Arena arena;
  ArenaScope scope(arena);
  const Shape shape{1, o.d_seq, o.samples, o.d_head};
  const Tensor q(in.q.data(), nullptr, shape), k(in.k.data(), nullptr, shape), v(in.v.data(), nullptr, shape);
  AttentionOptions opt(float(temperature / std::sqrt(double(o.d_head))));
  opt.kernel = AttentionKernel::flash;
  opt.causal = causal;
  opt.output_scale = out;
  Tensor y = attention(q, k, v, opt);
  return std::vector<float>(y.data, y.data + y.numel());
}

// σ of y's elements at positions [t0, t1).
double sigma(const std::vector<float>& y, const AttentionScaleProbeOptions& o, int64_t t0, int64_t t1) {
  const int64_t per = o.samples * o.d_head;
  double s = 0, s2 = 0;
  for (int64_t i = t0 * per; i < t1 * per; ++i) {
    s += y[i];
    s2 += double(y[i]) * y[i];
  }
  const double n = double((t1 - t0) * per), mean = s / n;
  return std::sqrt(std::max(0.0, s2 / n - mean * mean));
}

}  // namespace

AttentionScaleProbe probe_attention_scale(const AttentionScaleProbeOptions& opt) {
  ATTN_CHECK(opt.d_seq >= 1 && opt.d_head >= 1 && opt.samples >= 1, "probe: sizes must be positive");
  Inputs in = draw(opt);
  const int64_t S = opt.d_seq;
  const OutputScale dseq{OutputScale::constant, float(std::sqrt(double(S) / std::exp(1.0)))};
  const OutputScale causal{OutputScale::causal, 1.f};
  AttentionScaleProbe p;
  p.sigma_plain = sigma(run(in, opt, 1.0, false, {}), opt, 0, S);
  p.sigma_scaled = sigma(run(in, opt, 1.0, false, dseq), opt, 0, S);
  const auto none_c = run(in, opt, 1.0, true, {}), dseq_c = run(in, opt, 1.0, true, dseq),
             causal_c = run(in, opt, 1.0, true, causal);
  for (int64_t t = 0; t < S; ++t) {
    p.causal_none.push_back(sigma(none_c, opt, t, t + 1));
    p.causal_dseq.push_back(sigma(dseq_c, opt, t, t + 1));
    p.causal_causal.push_back(sigma(causal_c, opt, t, t + 1));
  }
  p.temperatures = opt.temperatures;
  if (p.temperatures.empty())
    for (int k = -12; k <= 12; ++k) p.temperatures.push_back(std::pow(2.0, k / 2.0));
  for (double t : p.temperatures) {
    p.temp_none.push_back(sigma(run(in, opt, t, false, {}), opt, 0, S));
    p.temp_scaled.push_back(sigma(run(in, opt, t, false, dseq), opt, 0, S));
    p.temp_model.push_back(std::sqrt(std::min(1.0, std::exp(t * t) / double(S))));
  }
  return p;
}

void write_attention_scale_probe(const AttentionScaleProbe& p, const AttentionScaleProbeOptions& opt,
                                 const std::string& dir) {
  std::filesystem::create_directories(dir);
  const std::filesystem::path d(dir);
  std::string csv = "position,sigma_none,sigma_sqrt_dseq_over_e,sigma_causal\n";
  char line[160];
  for (size_t t = 0; t < p.causal_none.size(); ++t) {
    std::snprintf(line, sizeof line, "%zu,%.6f,%.6f,%.6f\n", t, p.causal_none[t], p.causal_dseq[t], p.causal_causal[t]);
    csv += line;
  }
  write_file_atomic((d / "attention_scale_position.csv").string(), csv);
  Plot pos;
  pos.title = "causal attention, q, k, v ~ N(0, 1), d_seq " + std::to_string(opt.d_seq) + ", d_head " +
              std::to_string(opt.d_head);
  pos.x_label = "query position i (sees i + 1 keys)";
  pos.y_label = "std of the output";
  pos.log_y = true;
  std::vector<double> x;
  for (size_t t = 0; t < p.causal_none.size(); ++t) x.push_back(double(t));
  pos.series = {{"output_scale none", x, p.causal_none},
                {"sqrt_dseq_over_e", x, p.causal_dseq},
                {"causal: sqrt(n_i / e)", x, p.causal_causal}};
  write_plot_svg((d / "attention_scale_position.svg").string(), pos);

  csv = "temperature,sigma_none,sigma_sqrt_dseq_over_e,lognormal_model\n";
  for (size_t i = 0; i < p.temperatures.size(); ++i) {
    std::snprintf(line, sizeof line, "%.6g,%.6f,%.6f,%.6f\n", p.temperatures[i], p.temp_none[i], p.temp_scaled[i],
                  p.temp_model[i]);
    csv += line;
  }
  write_file_atomic((d / "attention_scale_temperature.csv").string(), csv);
  Plot temp;
  temp.title = "non-causal attention over temperature t (logits t·q·k/sqrt(d_head))";
  temp.x_label = "temperature t";
  temp.y_label = "std of the output";
  temp.log_x = temp.log_y = true;
  temp.series = {{"output_scale none", p.temperatures, p.temp_none, true},
                 {"sqrt_dseq_over_e", p.temperatures, p.temp_scaled, true},
                 {"log-normal model sqrt(min(1, e^(t^2) / d_seq))", p.temperatures, p.temp_model}};
  write_plot_svg((d / "attention_scale_temperature.svg").string(), temp);
}

}  // namespace attnlab
