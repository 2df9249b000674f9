// `attnlab grads`, `sample`, `eval` and `inspect` on a checkpoint of a tiny run.
#include <cmath>
#include <regex>

#include "autograd/tape.h"
#include "io/run_log.h"
#include "train/session.h"
#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

namespace {

struct TrainedRun {
  TempDir dir;
  std::string cfg = write_tiny_config(dir, 6);
  TrainResult result;
  TrainedRun() {
    result = train(load_config(cfg, {"run.name=base"}), quiet_options());
    REQUIRE(result.status == TrainResult::completed);
  }
};

// The model's loss on x, y [B, T] without grad (what `eval` computes per batch).
double forward_loss(Session& s, const std::vector<int32_t>& x, const std::vector<int32_t>& y, int B, int T) {
  NoGrad no_grad;
  Arena arena;
  ArenaScope scope(arena);
  return s.model->loss(x.data(), y.data(), B, T).item();
}

// Central difference of the loss along the unit vector g/|g| over `params` (g[i] is params[i]'s
// part), with step eps; the parameters are restored afterwards. For a true gradient it equals |g|.
double slope_along(Session& s, const std::vector<Param*>& params, const std::vector<std::vector<float>>& g,
                   const std::vector<int32_t>& x, const std::vector<int32_t>& y, int B, int T, double eps) {
  double sq = 0;
  for (const auto& gi : g)
    for (float v : gi) sq += double(v) * v;
  const double norm = std::sqrt(sq);
  std::vector<std::vector<float>> saved;
  for (const Param* p : params) saved.emplace_back(p->data, p->data + p->numel());
  auto shifted_loss = [&](double sign) {
    for (size_t i = 0; i < params.size(); ++i)
      for (int64_t k = 0; k < params[i]->numel(); ++k)
        params[i]->data[k] = saved[i][size_t(k)] + float(sign * eps * g[i][size_t(k)] / norm);
    const double l = forward_loss(s, x, y, B, T);
    for (size_t i = 0; i < params.size(); ++i) std::copy(saved[i].begin(), saved[i].end(), params[i]->data);
    return l;
  };
  return (shifted_loss(+1) - shifted_loss(-1)) / (2 * eps);
}

}  // namespace

TEST_CASE("grads writes x, y, loss and a gradient for every parameter, reproducibly", "[cli][grads]") {
  TrainedRun run;
  const std::string ckpt = run.result.checkpoint_path;
  const std::string g1 = run.dir.file("g1.h5"), g2 = run.dir.file("g2.h5");
  const RunOutput r1 = run_attnlab({"grads", "--checkpoint", ckpt, "--out", g1});
  INFO(r1.all());
  REQUIRE(r1.exit_code == 0);
  CHECK(std::regex_search(r1.out, std::regex("^loss [0-9.]+\nwrote ")));
  const RunOutput r2 = run_attnlab({"grads", "--checkpoint", ckpt, "--out", g2});
  REQUIRE(r2.exit_code == 0);
  CHECK(r1.out.substr(0, r1.out.find('\n')) == r2.out.substr(0, r2.out.find('\n')));
  CHECK(read_text(g1) == read_text(g2));  // byte-identical files

  // Every params/<name> of the checkpoint, unchanged, with a finite grad of its shape.
  const auto names = list_datasets(ckpt, "params");
  REQUIRE(!names.empty());
  CHECK(list_datasets(g1, "params") == names);
  CHECK(list_datasets(g1, "grads") == names);
  CheckpointReader gr(g1);
  double sq = 0;
  for (const auto& n : names) {
    INFO(n);
    CHECK(same_bits(read_f32(g1, "params/" + n), read_f32(ckpt, "params/" + n)));
    CHECK(gr.shape("grads/" + n) == CheckpointReader(ckpt).shape("params/" + n));
    for (float v : read_f32(g1, "grads/" + n)) {
      CHECK(std::isfinite(v));
      sq += double(v) * v;
    }
  }
  CHECK(sq > 0);

  // x, y: [B, T] int64 with y the next tokens of x's windows; loss scalar and attribute.
  const int B = 2, T = 8;
  CHECK(gr.shape("x") == std::vector<int64_t>{B, T});
  CHECK(gr.shape("y") == std::vector<int64_t>{B, T});
  const auto x64 = read_i64(g1, "x"), y64 = read_i64(g1, "y");
  for (int b = 0; b < B; ++b)
    for (int t = 0; t + 1 < T; ++t) CHECK(y64[size_t(b * T + t)] == x64[size_t(b * T + t + 1)]);
  CHECK(gr.shape("loss").empty());
  const double loss = read_f64(g1, "loss").at(0);
  CHECK(gr.attr_f64("loss") == loss);
  CHECK(std::isfinite(loss));
  CHECK(loss > 0);
  CHECK(gr.attr_i64("step") == 6);

  // The stored loss is the model's loss on the stored x, y; the stored grads point downhill:
  // the directional derivative along g is |g| (central difference in the session's model).
  auto s = Session::from_checkpoint(ckpt, {"model.dropout=0.0"}, /*load_data=*/false);
  std::vector<int32_t> x(x64.begin(), x64.end()), y(y64.begin(), y64.end());
  for (size_t i = 0; i < x.size(); ++i) {
    REQUIRE(x64[i] >= 0);
    REQUIRE(x64[i] < int64_t(s->vocab.size()));
  }
  CHECK(forward_loss(*s, x, y, B, T) == Approx(loss).epsilon(1e-6));
  std::vector<std::vector<float>> grads;
  for (const Param* p : s->store.params()) grads.push_back(read_f32(g1, "grads/" + p->name));
  CHECK(slope_along(*s, s->store.params(), grads, x, y, B, T, 1e-2) == Approx(std::sqrt(sq)).epsilon(0.02));

  // --seed picks another batch.
  const std::string g3 = run.dir.file("g3.h5");
  REQUIRE(run_attnlab({"grads", "--checkpoint", ckpt, "--out", g3, "--seed", "99"}).exit_code == 0);
  CHECK(read_i64(g3, "x") != x64);
  CHECK(CheckpointReader(g3).attr_u64("seed") == 99);
}

TEST_CASE("grads ignores the run's dropout", "[cli][grads]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 2);
  const TrainResult r = train(load_config(cfg, {"run.name=drop", "model.dropout=0.5"}), quiet_options());
  const std::string g = dir.file("g.h5");
  REQUIRE(run_attnlab({"grads", "--checkpoint", r.checkpoint_path, "--out", g}).exit_code == 0);
  auto s = Session::from_checkpoint(r.checkpoint_path, {"model.dropout=0.0"}, false);
  const auto x64 = read_i64(g, "x"), y64 = read_i64(g, "y");
  std::vector<int32_t> x(x64.begin(), x64.end()), y(y64.begin(), y64.end());
  CHECK(forward_loss(*s, x, y, 2, 8) == Approx(read_f64(g, "loss").at(0)).epsilon(1e-6));
}

TEST_CASE("grads gives parameters the run froze their true gradient", "[cli][grads]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 2);
  const TrainResult r =
      train(load_config(cfg, {"run.name=frozen", R"(train.freeze=["tok_emb", "*.wk"])"}), quiet_options());
  REQUIRE(r.status == TrainResult::completed);
  const std::string g = dir.file("g.h5");
  REQUIRE(run_attnlab({"grads", "--checkpoint", r.checkpoint_path, "--out", g}).exit_code == 0);
  auto s = Session::from_checkpoint(r.checkpoint_path, {"model.dropout=0.0"}, false);
  const auto x64 = read_i64(g, "x"), y64 = read_i64(g, "y");
  std::vector<int32_t> x(x64.begin(), x64.end()), y(y64.begin(), y64.end());
  // For each frozen parameter alone: nonzero, and the loss's slope along it is its norm.
  for (Param* p : s->store.params()) {
    if (!p->frozen) continue;
    INFO(p->name);
    const auto grad = read_f32(g, "grads/" + p->name);
    double sq = 0;
    for (float v : grad) sq += double(v) * v;
    REQUIRE(sq > 0);
    // A step of 0.05 keeps the float32 loss difference well above rounding for wk's small gradient;
    // the central difference's curvature error at that step is under 2% (tok_emb: 1.6%).
    CHECK(slope_along(*s, {p}, {grad}, x, y, 2, 8, 5e-2) == Approx(std::sqrt(sq)).epsilon(0.03));
  }
  CHECK(s->store.trainable_count() < s->store.total());  // the session did load the run's freeze
}

TEST_CASE("sample with a fixed seed is reproducible and continues the prompt", "[cli][sample]") {
  TrainedRun run;
  const std::vector<std::string> args{"sample", "--checkpoint", run.result.checkpoint_path, "--prompt", "ab",
                                      "--tokens",  "20",           "--seed",                      "3"};
  const RunOutput r1 = run_attnlab(args), r2 = run_attnlab(args);
  INFO(r1.all());
  REQUIRE(r1.exit_code == 0);
  REQUIRE(r2.exit_code == 0);
  CHECK(r1.out == r2.out);
  CHECK(r1.out.rfind("ab", 0) == 0);
  // The prompt, 20 symbols of the corpus's alphabet, and a newline (all symbols are one byte).
  REQUIRE(r1.out.size() == 2 + 20 + 1);
  CHECK(r1.out.back() == '\n');
  const std::string alphabet = "abcdefgh .,\n";
  for (char c : r1.out.substr(0, 22)) CHECK(alphabet.find(c) != std::string::npos);

  const RunOutput other = run_attnlab({"sample", "--checkpoint", run.result.checkpoint_path, "--prompt", "ab",
                                       "--tokens", "20", "--seed", "4"});
  REQUIRE(other.exit_code == 0);
  CHECK(other.out != r1.out);  // another seed, other draws (20 draws over 12 symbols)

  // Greedy decoding ignores the seed.
  const RunOutput g1 = run_attnlab({"sample", "--checkpoint", run.result.checkpoint_path, "--prompt", "ab",
                                    "--tokens", "10", "--temperature", "0", "--seed", "1"});
  const RunOutput g2 = run_attnlab({"sample", "--checkpoint", run.result.checkpoint_path, "--prompt", "ab",
                                    "--tokens", "10", "--temperature", "0", "--seed", "2"});
  REQUIRE(g1.exit_code == 0);
  CHECK(g1.out == g2.out);
  // More tokens than the context (8): the model sees only the last window.
  const RunOutput longer = run_attnlab({"sample", "--checkpoint", run.result.checkpoint_path, "--prompt", "abc",
                                        "--tokens", "30", "--seed", "3"});
  REQUIRE(longer.exit_code == 0);
  CHECK(longer.out.size() == 3 + 30 + 1);
  // The cache's figures on stderr; without the cache the same text (greedy), and the window slid.
  CHECK(std::regex_search(longer.err, std::regex("tokens/s \\(KV cache; cache [0-9]+ bytes per token per layer")));
  CHECK(longer.err.find("the window slid") != std::string::npos);
  const RunOutput cached = run_attnlab({"sample", "--checkpoint", run.result.checkpoint_path, "--prompt", "abc",
                                        "--tokens", "30", "--temperature", "0"});
  const RunOutput plain = run_attnlab({"sample", "--checkpoint", run.result.checkpoint_path, "--prompt", "abc",
                                       "--tokens", "30", "--temperature", "0", "--no-cache"});
  REQUIRE(cached.exit_code == 0);
  REQUIRE(plain.exit_code == 0);
  CHECK(cached.out == plain.out);
  CHECK(plain.err.find("no cache") != std::string::npos);
}

TEST_CASE("probe attention-scale prints the figures and writes their tables and plots", "[cli][probe]") {
  TempDir tmp;
  const std::string out = (tmp.path() / "probe").string();
  const RunOutput r = run_attnlab({"probe", "attention-scale", "--samples", "8", "--d-seq", "64", "--out", out});
  INFO(r.all());
  REQUIRE(r.exit_code == 0);
  CHECK(std::regex_search(r.out, std::regex("output_scale sqrt_dseq_over_e +0\\.9|output_scale sqrt_dseq_over_e +1\\.0")));
  for (const char* f : {"attention_scale_position.csv", "attention_scale_position.svg",
                        "attention_scale_temperature.csv", "attention_scale_temperature.svg"})
    CHECK(std::filesystem::exists(out + "/" + f));
  CHECK(run_attnlab({"probe", "softmax"}).exit_code == 2);
}

TEST_CASE("inspect prints the status and the step count of a run", "[cli][inspect]") {
  TrainedRun run;
  for (const std::string& target : {run.result.run_dir, run.result.metrics_path}) {
    const RunOutput r = run_attnlab({"inspect", target});
    INFO(r.all());
    REQUIRE(r.exit_code == 0);
    CHECK(std::regex_search(r.out, std::regex("\nstatus +completed\n")));
    CHECK(std::regex_search(r.out, std::regex("\nsteps +6 \\(6 train points\\)\n")));
    CHECK(contains(r.out, "seed        7\n"));
    CHECK(contains(r.out, "--- config ---"));
    CHECK(contains(r.out, "name: base"));
  }
  // An interrupted run says so.
  const TrainResult b = train(load_config(run.cfg, {"run.name=stopped"}), quiet_options(3));
  REQUIRE(b.status == TrainResult::interrupted);
  const RunOutput r = run_attnlab({"inspect", b.run_dir});
  REQUIRE(r.exit_code == 0);
  CHECK(std::regex_search(r.out, std::regex("\nstatus +interrupted\n")));
  CHECK(std::regex_search(r.out, std::regex("\nsteps +3 \\(3 train points\\)\n")));
}

TEST_CASE("eval of a checkpoint reproduces the run's final evaluation", "[cli][eval]") {
  TrainedRun run;
  const RunOutput r = run_attnlab({"eval", "--checkpoint", run.result.checkpoint_path});
  INFO(r.all());
  REQUIRE(r.exit_code == 0);
  std::smatch m;
  REQUIRE(std::regex_search(r.out, m, std::regex("^step 6\ntrain_loss ([0-9.]+)\nval_loss ([0-9.]+)\n$")));
  CHECK(std::stod(m[1]) == Approx(run.result.final_train_loss).margin(1e-6));
  CHECK(std::stod(m[2]) == Approx(run.result.final_val_loss).margin(1e-6));
  // Overrides of the stored config apply: more eval batches, another estimate.
  const RunOutput more = run_attnlab({"eval", "--checkpoint", run.result.checkpoint_path, "eval.iters=5"});
  REQUIRE(more.exit_code == 0);
  CHECK(more.out != r.out);
}

// `sample` without --prompt continues "\n" (the option's default), which is not a symbol of a
// corpus without newlines: the command then fails with an error about a --prompt never given.
TEST_CASE("sample without --prompt works for a corpus without newlines", "[cli][sample]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 2);
  std::string text = tiny_corpus();
  for (char& c : text)
    if (c == '\n') c = ' ';
  const std::string corpus = dir.write("no_newline.txt", text);
  const TrainResult r = train(load_config(cfg, {"run.name=nonl", "data.path=" + corpus}), quiet_options());
  REQUIRE(r.status == TrainResult::completed);
  const RunOutput s = run_attnlab({"sample", "--checkpoint", r.checkpoint_path, "--tokens", "5"});
  INFO(s.all());
  CHECK(s.exit_code == 0);
}

// NOTE [relative paths]: a relative data.path means the working directory of the command that
// loaded the config; what the run stores holds it absolute, so the checkpoint works from anywhere.
TEST_CASE("a relative data.path is stored absolute: the checkpoint evaluates from another directory", "[cli][paths]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 3);
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  const TrainResult r = train(load_config(cfg, {"run.name=rel", "data.path=corpus.txt", "run.out_dir=" + dir.file("runs")}),
                              quiet_options());
  std::filesystem::current_path("/");
  const std::string stored = read_text(dir.file("runs/rel/config.yaml"));
  CHECK(contains(stored, "path: " + dir.file("corpus.txt")));
  auto session = Session::from_checkpoint(r.checkpoint_path, {}, /*load_data=*/true);
  CHECK(session->config.cfg.data.path == dir.file("corpus.txt"));
  CHECK(session->corpus->tokens.size() > 0);
  std::filesystem::current_path(cwd);
}
