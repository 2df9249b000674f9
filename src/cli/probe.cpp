// attnlab probe attention-scale: the attention op's output scale for unit-normal inputs.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "train/probe.h"
#include "util/check.h"

namespace attnlab::cli {

Command add_probe(CLI::App& app, const Globals&) {
  struct Args {
    std::string what, out = "probe_attention_scale";
    AttentionScaleProbeOptions opt;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "probe", "measure a property of an op; attention-scale: the std of attention's output for unit-normal q, k, v");
  sub->add_option("what", a->what, "what to probe: attention-scale")->required()->check(CLI::IsMember({"attention-scale"}));
  sub->add_option("--d-seq", a->opt.d_seq, "keys per sequence")->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  sub->add_option("--d-head", a->opt.d_head, "head size")->check(CLI::Range(int64_t(1), int64_t(4096)));
  sub->add_option("--samples", a->opt.samples, "independent heads")->check(CLI::Range(int64_t(1), int64_t(1) << 16));
  sub->add_option("--seed", a->opt.seed, "seed of q, k, v")->check(integer_in(0, std::numeric_limits<uint64_t>::max()));
  sub->add_option("--out", a->out, "directory for the CSV tables and SVG plots");
  return {sub, [a] {
            const AttentionScaleProbe p = probe_attention_scale(a->opt);
            const auto& o = a->opt;
            std::printf("attention output std, q, k, v ~ N(0, 1), d_seq %lld, d_head %lld, %lld heads, seed %llu\n\n",
                        (long long)o.d_seq, (long long)o.d_head, (long long)o.samples, (unsigned long long)o.seed);
            std::printf("non-causal, logits q·k/sqrt(d_head):\n");
            std::printf("  output_scale none              %.4f   (sqrt(e/d_seq) = %.4f)\n", p.sigma_plain,
                        std::sqrt(std::exp(1.0) / double(o.d_seq)));
            std::printf("  output_scale sqrt_dseq_over_e  %.4f\n\n", p.sigma_scaled);
            std::printf("causal, std at query position i:\n  %8s %10s %18s %10s\n", "i", "none", "sqrt_dseq_over_e",
                        "causal");
            for (size_t t = 0; t < p.causal_none.size(); t = t < 4 ? t + 1 : t * 2)
              std::printf("  %8zu %10.4f %18.4f %10.4f\n", t, p.causal_none[t], p.causal_dseq[t], p.causal_causal[t]);
            std::printf("\nnon-causal over temperature t (logits t·q·k/sqrt(d_head)):\n  %8s %10s %18s %16s\n", "t",
                        "none", "sqrt_dseq_over_e", "log-normal model");
            for (size_t i = 0; i < p.temperatures.size(); i += 2)
              std::printf("  %8.4g %10.4f %18.4f %16.4f\n", p.temperatures[i], p.temp_none[i], p.temp_scaled[i],
                          p.temp_model[i]);
            write_attention_scale_probe(p, o, a->out);
            std::printf("\nwrote %s/attention_scale_{position,temperature}.{csv,svg}\n", a->out.c_str());
            return kExitOk;
          }};
}

}  // namespace attnlab::cli
