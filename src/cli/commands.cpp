#include "cli/commands.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "config/config.h"
#include "data/batch_sampler.h"
#include "io/checkpoint.h"
#include "io/run_lock.h"
#include "io/run_log.h"
#include "train/bench.h"
#include "train/sample.h"
#include "train/distributed.h"
#include "train/session.h"
#include "train/setup.h"
#include "train/trainer.h"
#include "util/check.h"
#include "util/log.h"

namespace attnlab::cli {

constexpr const char* kGradsKind = "attnlab grads";

Command add_train(CLI::App& app, const Globals& g) {
  struct Args {
    std::string config;
    std::vector<std::string> overrides;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("train", "train a model from a YAML config");
  sub->add_option("config", a->config, "config file (YAML), e.g. configs/shakespeare_char.yaml")->required();
  sub->add_option("overrides", a->overrides, "key.path=value overrides, applied after the file");
  sub->footer("Writes <run.out_dir>/<run.name>/{metrics.h5,checkpoint.h5,config.yaml}.\n"
              "Exit codes: 0 done, 1 runtime error, 2 bad usage/config/data, 3 diverged, 130 interrupted.");
  return {sub, [a, &g] {
            LoadedConfig cfg = load_config(a->config, a->overrides);
            TrainOptions opt;
            opt.quiet = g.quiet;
            opt.print_config = true;
            opt.live_progress = isatty(STDERR_FILENO);
            TrainResult r = train(cfg, opt);
            return r.status == TrainResult::interrupted ? kExitInterrupted : kExitOk;
          }};
}

Command add_eval(CLI::App& app, const Globals& g) {
  struct Args {
    std::string checkpoint;
    std::vector<std::string> overrides;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("eval", "train and val loss of a checkpoint (eval.iters batches of each)");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint.h5 of a run")->required();
  sub->add_option("overrides", a->overrides, "key.path=value overrides of the stored config (e.g. data.path=...)");
  return {sub, [a] {
            auto s = Session::from_checkpoint(a->checkpoint, a->overrides, /*load_data=*/true);
            apply_runtime(s->config.cfg);
            const int iters = s->config.cfg.eval.iters;
            const double tl = s->evaluate(s->split.train, "eval.train", iters);
            const double vl = s->evaluate(s->split.val, "eval.val", iters);
            std::printf("step %lld\ntrain_loss %.6f\nval_loss %.6f\n", (long long)s->progress.step, tl, vl);
            return kExitOk;
          }};
}

Command add_sample(CLI::App& app, const Globals&) {
  struct Args {
    std::string checkpoint, prompt;
    int tokens = 200, top_k = 0;
    float temperature = 1.f;
    uint64_t seed = 0;
    bool given_prompt = false, no_cache = false;
    int shift = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("sample", "generate text from a checkpoint");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint.h5 of a run")->required();
  sub->add_option("--prompt", a->prompt,
                  "text to continue (every symbol must be in the vocabulary); default: a newline, or the "
                  "vocabulary's first symbol when it has no newline");
  sub->add_option("--tokens", a->tokens, "tokens to generate")->check(CLI::Range(0, 1 << 20));
  sub->add_option("--temperature", a->temperature, "softmax temperature; 0 = greedy")
      ->check(CLI::Validator(
          [](std::string& v) {  // CLI::Range lets NaN through: every comparison with it is false
            try {
              const float t = std::stof(v);
              return t >= 0.f && t <= 100.f ? std::string() : "Value " + v + " not in range [0 - 100]";
            } catch (const std::exception&) {
              return "Value " + v + " is not a number";
            }
          },
          "FLOAT in [0 - 100]"));
  sub->add_option("--top-k", a->top_k, "sample among the k most likely tokens; 0 = all")->check(CLI::Range(0, 1 << 20));
  sub->add_option("--seed", a->seed, "random seed of the draws")
      ->check(integer_in(0, std::numeric_limits<uint64_t>::max()));
  sub->add_flag("--no-cache", a->no_cache, "recompute the whole window for every token instead of decoding with a KV cache");
  sub->add_option("--shift", a->shift,
                  "when the sequence outgrows the context, drop this many oldest tokens at a time and rebuild "
                  "the cache; 1 = the classic sliding window; default context/4")
      ->check(CLI::Range(1, 1 << 20));
  CLI::Option* prompt_opt = sub->get_option("--prompt");
  return {sub, [a, prompt_opt] {
            a->given_prompt = prompt_opt->count() > 0;
            auto s = Session::from_checkpoint(a->checkpoint, {}, /*load_data=*/false);
            apply_runtime(s->config.cfg);
            std::vector<int32_t> prompt;
            if (!a->given_prompt) {
              const auto& sym = s->vocab.symbols();
              const auto nl = std::find(sym.begin(), sym.end(), std::string("\n"));
              prompt = {nl == sym.end() ? 0 : int32_t(nl - sym.begin())};
            } else {
              if (a->prompt.empty()) throw ConfigError("--prompt: must hold at least one symbol");
              try {
                prompt = s->vocab.encode(a->prompt);
              } catch (const DataError& e) {
                throw ConfigError(std::string("--prompt: ") + e.what());
              }
            }
            SampleOptions so{a->tokens, a->temperature, a->top_k, a->seed, !a->no_cache, a->shift};
            const Transformer& m = *s->model;
            const int context = m.spec().context;
            if (prompt.size() > size_t(context))
              log::warn("sample: the prompt's {} tokens are longer than the context ({}): the model sees its last {}",
                           prompt.size(), context, context);
            SampleResult r = sample(*s->model, prompt, so);
            std::printf("%s\n", s->vocab.decode(r.ids).c_str());
            if (r.slides > 0)
              log::info("sample: the sequence outgrew the context ({}): the window slid {} times, {} tokens at a "
                           "time (--shift){}",
                           context, r.slides, r.shift, so.cache ? ", each time rebuilding the cache" : "");
            const int64_t floats = m.cache_floats_per_token(0);
            log::info("sample: {} tokens in {:.3f} s, {:.1f} tokens/s ({}; cache {} bytes per token per layer = {} "
                         "floats{})",
                         a->tokens, r.seconds, r.seconds > 0 ? a->tokens / r.seconds : 0.0,
                         so.cache ? "KV cache" : "no cache, every window recomputed", floats * 4, floats,
                         m.spec().attention == AttentionType::mla ? ": kv_lora_rank + qk_rope_head_dim" : ": k and v");
            return kExitOk;
          }};
}

Command add_seal(CLI::App& app, const Globals& g) {
  auto path = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand(
      "seal", "rewrite a checkpoint's header (size and CRC-32C) after editing the checkpoint in place, e.g. with h5py");
  sub->add_option("checkpoint", *path, "checkpoint file written by attnlab")->required();
  return {sub, [path, &g] {
            seal_checkpoint(*path);
            CheckpointReader check(*path);  // reads back: the header now matches
            if (!g.quiet) std::printf("sealed %s\n", path->c_str());
            return kExitOk;
          }};
}

Command add_inspect(CLI::App& app, const Globals&) {
  auto path = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("inspect", "summary of a run log: config, status, steps, last and best losses");
  sub->add_option("run", *path, "metrics.h5 of a run (or its run directory)")->required();
  return {sub, [path] {
            std::string p = *path;
            if (std::filesystem::is_directory(p)) p = (std::filesystem::path(p) / "metrics.h5").string();
            bool checkpoint = false;  // given the checkpoint: its run's log, beside it
            try {
              const CheckpointReader c(p);
              checkpoint = c.has_attr("format") && !c.has_attr("format_version");
            } catch (const Error&) {
              // read_run_summary says what is wrong with it
            }
            if (checkpoint) {
              const std::string log = (std::filesystem::path(p).parent_path() / "metrics.h5").string();
              if (!std::filesystem::exists(log))
                throw CheckpointError(p + ": is a checkpoint; inspect reads a run log (metrics.h5), and " + log +
                                      " does not exist");
              p = log;
            }
            RunSummary r = read_run_summary(p);
            // A log left "running" by a process that is gone (kill -9, power loss) was interrupted.
            r.status = effective_status(r.status, std::filesystem::path(p).parent_path().string());
            auto opt = [](const std::optional<double>& v) { return v ? std::to_string(*v) : std::string("-"); };
            std::printf("run log     %s\nstatus      %s\nversion     %s (%s)\nseed        %llu\n", p.c_str(),
                        r.status.c_str(), r.version.c_str(), r.git_commit.c_str(), (unsigned long long)r.seed);
            std::printf("steps       %lld (%lld train points)\n", (long long)r.last_step, (long long)r.train_points);
            std::printf("train loss  last %s  best %s\n", opt(r.last_train_loss).c_str(), opt(r.best_train_loss).c_str());
            std::printf("val loss    last %s  best %s", opt(r.last_val_loss).c_str(), opt(r.best_val_loss).c_str());
            if (r.best_val_step >= 0) std::printf(" (step %lld)", (long long)r.best_val_step);
            if (r.max_logit_step >= 0) {
              std::printf("\nmax logit   step %lld, per layer (largest head):", (long long)r.max_logit_step);
              for (float v : r.last_max_logit_per_layer) std::printf(" %.4g", v);
              std::printf("\n            peak over the log %.4g; QK-Clip clipped heads at %lld logged steps",
                          r.peak_max_logit, (long long)r.clipped_steps);
            }
            std::printf("\n--- config ---\n%s\n", r.config.c_str());
            return kExitOk;
          }};
}

// grads' output replaces only an earlier output of grads (kind attribute "attnlab grads", or,
// from before that attribute, a loss and a config without a checkpoint's or run log's format):
// never the input checkpoint, a run's files or anything else that happens to be there.
static void check_grads_output(const std::string& out, const std::string& input) {
  std::error_code ec;
  if (!std::filesystem::exists(out, ec)) return;
  if (std::filesystem::equivalent(out, input, ec))
    throw ConfigError("--out " + out + ": is the input checkpoint; write the output elsewhere");
  bool earlier_grads = false;
  try {
    const CheckpointReader r(out);
    earlier_grads = r.has_attr("kind") ? r.attr_string("kind") == kGradsKind
                                       : r.has_attr("loss") && r.has_attr("config") && !r.has_attr("format") &&
                                             !r.has_attr("format_version");
  } catch (const Error&) {
    // not HDF5 or unreadable: not ours to replace
  }
  if (!earlier_grads)
    throw ConfigError("--out " + out + ": exists and is not an earlier output of attnlab grads; write the output to a "
                      "new path (or remove the file)");
}

Command add_grads(CLI::App& app, const Globals&) {
  struct Args {
    std::string checkpoint, out;
    int64_t seed = -1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "grads", "one training batch's tokens, loss and every parameter's gradient, for cross-checking");
  sub->add_option("--checkpoint", a->checkpoint, "checkpoint.h5 of a run")->required();
  sub->add_option("--out", a->out, "output HDF5 file (a new file, or an earlier output of grads)")
      ->required()
      ->check(CLI::Validator([](std::string& v) { return v.empty() ? std::string("empty path") : std::string(); },
                             "PATH"));
  sub->add_option("--seed", a->seed, "seed of the batch draw (default: run.seed)")
      ->check(integer_in(0, uint64_t(std::numeric_limits<int64_t>::max())));
  sub->footer("Output: x, y [B, T] int64 (inputs, targets), loss (scalar, also attribute), params/<name>,\n"
              "grads/<name> (frozen parameters included). Dropout is off; see docs/model.md for exactly what is computed.");
  return {sub, [a] {
            check_grads_output(a->out, a->checkpoint);
            // Frozen parameters get their gradient too: this is a cross-check of the model, not a step.
            auto s = Session::from_checkpoint(a->checkpoint, {"model.dropout=0.0", "train.freeze=[]"},
                                              /*load_data=*/true);
            apply_runtime(s->config.cfg);
            const RunConfig& c = s->config.cfg;
            const int B = c.train.batch_size, T = c.model.context;
            const uint64_t seed = a->seed >= 0 ? uint64_t(a->seed) : uint64_t(c.run.seed);
            BatchSampler sampler(s->split.train, seed, "grads");
            std::vector<int32_t> x(size_t(B) * T), y(size_t(B) * T);
            sampler.next(x.data(), y.data(), B, T);
            Arena arena;
            Tape tape;
            ArenaScope as(arena);
            TapeScope ts(tape);
            s->store.zero_grad();
            Tensor loss = s->model->loss(x.data(), y.data(), B, T);
            backward(loss);
            s->store.settle_grads();
            CheckpointWriter w(a->out);
            const std::vector<int64_t> bt{B, T};
            std::vector<int64_t> xi(x.begin(), x.end()), yi(y.begin(), y.end());
            w.tensor_i64("x", bt, xi.data());
            w.tensor_i64("y", bt, yi.data());
            const double l = loss.item();
            w.tensor_f64("loss", std::vector<int64_t>{}, &l);
            w.attr("kind", std::string(kGradsKind));
            w.attr("loss", l);
            w.attr("config", s->config.resolved_yaml);
            w.attr("step", s->progress.step);
            w.attr_u64("seed", seed);
            for (const Param* p : s->store.params()) {
              const auto shape = p->shape.vec();
              w.tensor("params/" + p->name, shape, p->data);
              w.tensor("grads/" + p->name, shape, p->grad);
            }
            w.commit();
            std::printf("loss %.6f\nwrote %s (%zu parameters)\n", l, a->out.c_str(), s->store.params().size());
            return kExitOk;
          }};
}

Command add_bench(CLI::App& app, const Globals& g) {
  struct Args {
    std::string config;
    std::vector<std::string> overrides;
    int steps = 20, warmup = 5;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("bench", "time full training steps of a config, with a per-phase breakdown");
  sub->add_option("config", a->config, "config file (YAML)")->required();
  sub->add_option("overrides", a->overrides, "key.path=value overrides");
  sub->add_option("--steps", a->steps, "timed steps")->check(CLI::Range(1, 100000));
  sub->add_option("--warmup", a->warmup, "untimed steps first (the first one chooses the products' forms)")
      ->check(CLI::Range(0, 100000));
  sub->add_flag("--json", a->json, "print one JSON object");
  return {sub, [a, &g] {
            LoadedConfig cfg = load_config(a->config, a->overrides);
            BenchResult r = bench(cfg, a->steps, a->warmup);
            if (dist::root()) std::printf("%s\n", a->json ? bench_json(r).c_str() : bench_text(r).c_str());
            return kExitOk;
          }};
}

}  // namespace attnlab::cli
