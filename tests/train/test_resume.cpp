// Resume, determinism and in-process interruption of attnlab::train: a run stopped after N steps
// and resumed from its checkpoint must reproduce a straight run bit for bit (losses, parameters,
// optimizer state and the metrics.h5 series), also with gradient accumulation and dropout.
#include <hdf5.h>

#include <csignal>
#include <thread>

#include "io/run_log.h"
#include "kernels/gemm.h"
#include "util/profile.h"
#include "train/session.h"
#include "train/signals.h"
#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

namespace {

// Every params/<name> and optim/<opt>/<slot>/<name> of two checkpoints, bit for bit, and the
// counters that say where training stands.
void require_same_state(const std::string& a, const std::string& b) {
  INFO("checkpoints " << a << " and " << b);
  const auto params_a = list_datasets(a, "params"), params_b = list_datasets(b, "params");
  REQUIRE(!params_a.empty());
  REQUIRE(params_a == params_b);
  for (const auto& n : params_a) {
    INFO("params/" << n);
    CHECK(same_bits(read_f32(a, "params/" + n), read_f32(b, "params/" + n)));
  }
  const auto optim_a = list_datasets(a, "optim"), optim_b = list_datasets(b, "optim");
  REQUIRE(!optim_a.empty());
  REQUIRE(optim_a == optim_b);
  for (const auto& n : optim_a) {
    INFO("optim/" << n);
    CHECK(same_bits(read_f32(a, "optim/" + n), read_f32(b, "optim/" + n)));
  }
  CheckpointReader ra(a), rb(b);
  CHECK(ra.attr_i64("step") == rb.attr_i64("step"));
  CHECK(ra.attr_u64("train_batches") == rb.attr_u64("train_batches"));
  CHECK(ra.attr_i64("optimizer_t") == rb.attr_i64("optimizer_t"));
}

// The deterministic series of two run logs (not wall_s and tokens_per_s), bit for bit.
void require_same_log(const std::string& a, const std::string& b, int64_t train_points) {
  INFO("run logs " << a << " and " << b);
  const auto steps = read_i64(a, "train/step");
  REQUIRE(int64_t(steps.size()) == train_points);
  for (int64_t i = 0; i < train_points; ++i) CHECK(steps[size_t(i)] == i + 1);
  for (const char* name : {"train/step", "eval/step", "attention/step"}) {
    INFO(name);
    CHECK(read_i64(a, name) == read_i64(b, name));
  }
  for (const char* name : {"train/loss", "train/lr", "train/grad_norm", "eval/train_loss", "eval/val_loss"}) {
    INFO(name);
    CHECK(same_bits(read_f64(a, name), read_f64(b, name)));
  }
  CHECK(same_bits(read_f32(a, "attention/max_logits"), read_f32(b, "attention/max_logits")));
  CHECK(read_i64(a, "attention/clipped_heads") == read_i64(b, "attention/clipped_heads"));
  CHECK(same_bits(read_f32(a, "attention/gamma_deficit"), read_f32(b, "attention/gamma_deficit")));
  CHECK(!read_i64(a, "eval/step").empty());
}

std::vector<double> concat(std::vector<double> a, const std::vector<double>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Straight run "a" of 2N steps versus run "b" stopped after N steps and resumed.
void check_resume_is_exact(const std::vector<std::string>& extra, int N) {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 2 * N);
  auto with = [&](std::vector<std::string> o) {
    o.insert(o.begin(), extra.begin(), extra.end());
    return load_config(cfg, o);
  };

  const TrainResult a = train(with({"run.name=a"}), quiet_options());
  REQUIRE(a.status == TrainResult::completed);
  REQUIRE(a.steps == 2 * N);
  REQUIRE(a.losses.size() == size_t(2 * N));

  const TrainResult b1 = train(with({"run.name=b"}), quiet_options(N));
  REQUIRE(b1.status == TrainResult::interrupted);
  REQUIRE(b1.steps == N);
  REQUIRE(b1.losses.size() == size_t(N));
  REQUIRE(std::filesystem::exists(b1.checkpoint_path));
  CHECK(CheckpointReader(b1.checkpoint_path).attr_i64("step") == N);
  const RunSummary s1 = read_run_summary(b1.metrics_path);
  CHECK(s1.status == "interrupted");
  CHECK(s1.train_points == N);
  CHECK(s1.last_step == N);

  const TrainResult b2 = train(with({"run.name=b", "train.resume=" + b1.checkpoint_path}), quiet_options());
  REQUIRE(b2.status == TrainResult::completed);
  REQUIRE(b2.steps == 2 * N);
  REQUIRE(b2.losses.size() == size_t(N));

  const std::vector<double> b_losses = concat(b1.losses, b2.losses);
  CHECK(same_bits(b_losses, a.losses));
  CHECK(b2.final_train_loss == a.final_train_loss);
  CHECK(b2.final_val_loss == a.final_val_loss);
  require_same_state(a.checkpoint_path, b2.checkpoint_path);
  require_same_log(a.metrics_path, b2.metrics_path, 2 * N);
  const auto logged = read_f64(b2.metrics_path, "train/loss");
  CHECK(same_bits(logged, a.losses));  // the log holds exactly the losses train() returned
  const RunSummary s2 = read_run_summary(b2.metrics_path);
  CHECK(s2.status == "completed");
  CHECK(s2.train_points == 2 * N);
}

}  // namespace

TEST_CASE("resume after stop_after is bit-identical to a straight run", "[train][resume]") {
  check_resume_is_exact({}, 6);
}

TEST_CASE("resume is bit-identical with grad_accum 2 and dropout 0.1", "[train][resume]") {
  check_resume_is_exact({"train.grad_accum=2", "model.dropout=0.1"}, 6);
}

TEST_CASE("resume is bit-identical for rope, swiglu, rmsnorm and GQA", "[train][resume]") {
  check_resume_is_exact({"model.positions=rope", "model.mlp=swiglu", "model.norm=rmsnorm", "model.n_head=4",
                         "attention.n_kv_heads=2", "model.dropout=0.1"},
                        5);
}

TEST_CASE("resume is bit-identical when the stop step is also an eval and checkpoint step", "[train][resume]") {
  check_resume_is_exact({"eval.interval=3", "train.checkpoint_interval=2", "train.log_interval=3"}, 6);
}

// What `kill -9` right after a checkpoint leaves: the checkpoint and the run log as they are on disk
// then (copied by the after-checkpoint hook). Resumed from there, the log must be the straight
// run's: every point up to the checkpoint was written before it, whatever the log interval.
TEST_CASE("a run killed right after a checkpoint resumes with a complete, bit-identical log", "[train][resume]") {
  for (const char* log_interval : {"train.log_interval=7", "train.log_interval=3"}) {
    INFO(log_interval);
    TempDir dir;
    const std::string cfg = write_tiny_config(dir, 12);
    const std::vector<std::string> common{log_interval, "train.checkpoint_interval=5", "eval.interval=5"};
    auto with = [&](std::string name, std::vector<std::string> extra = {}) {
      std::vector<std::string> o = common;
      o.push_back("run.name=" + name);
      o.insert(o.end(), extra.begin(), extra.end());
      return load_config(cfg, o);
    };
    const TrainResult a = train(with("a"), quiet_options());
    REQUIRE(a.status == TrainResult::completed);

    const std::string killed = dir.file("killed");
    TrainOptions o = quiet_options();
    o.after_checkpoint = [&](int64_t step) {
      if (step != 5) return;
      std::filesystem::create_directories(killed);
      for (const char* f : {"metrics.h5", "checkpoint.h5"})
        std::filesystem::copy_file(dir.file("runs/b/") + f, killed + "/" + f,
                                   std::filesystem::copy_options::overwrite_existing);
    };
    REQUIRE(train(with("b"), o).status == TrainResult::completed);
    // The run directory as the kill left it, then the resume.
    std::filesystem::remove_all(dir.file("runs/b"));
    std::filesystem::create_directories(dir.file("runs/b"));
    for (const char* f : {"metrics.h5", "checkpoint.h5"})
      std::filesystem::copy_file(killed + "/" + f, dir.file("runs/b/") + f);
    CHECK(read_i64(dir.file("runs/b/metrics.h5"), "train/step").size() == 5);
    CHECK(read_i64(dir.file("runs/b/metrics.h5"), "eval/step") == std::vector<int64_t>{5});
    const TrainResult b = train(with("b", {"train.resume=" + dir.file("runs/b/checkpoint.h5")}), quiet_options());
    REQUIRE(b.status == TrainResult::completed);
    require_same_log(a.metrics_path, b.metrics_path, 12);
    CHECK(read_i64(b.metrics_path, "eval/step") == read_i64(a.metrics_path, "eval/step"));
  }
}

TEST_CASE("resuming a checkpoint past train.steps is an error naming both", "[train][resume]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 6);
  const TrainResult a = train(load_config(cfg, {"run.name=a"}), quiet_options());
  REQUIRE(a.status == TrainResult::completed);
  try {
    train(load_config(cfg, {"run.name=b", "train.steps=4", "schedule.warmup_steps=1", "train.resume=" + a.checkpoint_path}),
          quiet_options());
    FAIL("no error");
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    CHECK(m.find("at step 6") != std::string::npos);
    CHECK(m.find("train.steps 4") != std::string::npos);
  }
  CHECK(!std::filesystem::exists(dir.file("runs/b/metrics.h5")));  // nothing written
}

TEST_CASE("resume is bit-identical with Adafactor (factored, momentum, relative step)", "[train][resume]") {
  check_resume_is_exact({"optimizer.name=adafactor", "adafactor.min_dim_size_to_factor=8", "adafactor.beta1=0.9",
                         "adafactor.relative_step=true"},
                        5);
  check_resume_is_exact({"optimizer.name=adafactor", "adafactor.min_dim_size_to_factor=8"}, 5);
}

TEST_CASE("resume is bit-identical with MLA and with Muon (momentum and AdamW state in the checkpoint)",
          "[train][resume]") {
  check_resume_is_exact({"attention.type=mla", "mla.kv_lora_rank=8", "mla.qk_nope_head_dim=4", "mla.qk_rope_head_dim=2",
                         "mla.v_head_dim=6", "mla.q_lora_rank=5"},
                        5);
  check_resume_is_exact({"optimizer.name=muon", "muon.lr=0.05"}, 5);
}

// QK-Clip rescales weights after every step from that step's max logits: a resumed run repeats it
// exactly, and every step's max logits and clip counts are in the log.
TEST_CASE("resume is bit-identical with QK-Clip on, MHA and MLA", "[train][resume][qk_clip]") {
  check_resume_is_exact({"optimizer.name=muon", "muon.lr=0.1", "train.qk_clip.enabled=true", "train.qk_clip.tau=2",
                         "model.init_std=0.2"},
                        5);
  check_resume_is_exact({"attention.type=mla", "mla.kv_lora_rank=8", "mla.qk_nope_head_dim=4", "mla.qk_rope_head_dim=2",
                         "mla.v_head_dim=6", "train.qk_clip.enabled=true", "train.qk_clip.tau=2", "model.init_std=0.2"},
                        5);
  // The settings above do clip: every step is logged, with heads clipped, and the logged max logits
  // of the steps after the first clip stay near τ.
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 10);
  const TrainResult r = train(load_config(cfg, {"optimizer.name=muon", "muon.lr=0.1", "train.qk_clip.enabled=true",
                                                "train.qk_clip.tau=2", "model.init_std=0.2", "train.log_interval=5"}),
                              quiet_options());
  const auto steps = read_i64(r.metrics_path, "attention/step");
  CHECK(steps.size() == 10);
  int64_t clipped = 0;
  for (int64_t c : read_i64(r.metrics_path, "attention/clipped_heads")) clipped += c;
  CHECK(clipped > 0);
}

// The max-logit series is recorded every train.log_interval steps, and also at the step where a
// run stops: a run stopped between two log steps and resumed has one record more (at the stop
// step) than the straight run, so its metrics.h5 is not the straight run's.
TEST_CASE("a stopped and resumed run logs the same max-logit records as a straight run", "[train][resume]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 12);
  const LoadedConfig a_cfg = load_config(cfg, {"run.name=a", "train.log_interval=4"});
  const TrainResult a = train(a_cfg, quiet_options());
  const TrainResult b1 = train(load_config(cfg, {"run.name=b", "train.log_interval=4"}), quiet_options(6));
  REQUIRE(b1.status == TrainResult::interrupted);
  const TrainResult b2 =
      train(load_config(cfg, {"run.name=b", "train.log_interval=4", "train.resume=" + b1.checkpoint_path}),
            quiet_options());
  REQUIRE(b2.status == TrainResult::completed);
  CHECK(read_i64(b2.metrics_path, "attention/step") == read_i64(a.metrics_path, "attention/step"));
  CHECK(same_bits(read_f32(b2.metrics_path, "attention/max_logits"), read_f32(a.metrics_path, "attention/max_logits")));
  CHECK(same_bits(read_f64(b2.metrics_path, "train/loss"), read_f64(a.metrics_path, "train/loss")));
}

TEST_CASE("resume is bit-identical with frozen parameters", "[train][resume]") {
  check_resume_is_exact({"train.freeze=[pos_emb, blocks.0.attn.wq]"}, 4);
}

TEST_CASE("resume from an older checkpoint drops the later log points and relogs them", "[train][resume]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 12);
  const TrainResult a = train(load_config(cfg, {"run.name=a"}), quiet_options());
  REQUIRE(a.status == TrainResult::completed);

  // b: stop at 4, keep that checkpoint, go on to 7 (as if killed after the step-4 checkpoint
  // while the log already had steps 5..7), then resume from the step-4 checkpoint.
  const TrainResult b1 = train(load_config(cfg, {"run.name=b"}), quiet_options(4));
  REQUIRE(b1.status == TrainResult::interrupted);
  const std::string old_ckpt = dir.file("b_step4.h5");
  std::filesystem::copy_file(b1.checkpoint_path, old_ckpt);
  const TrainResult b2 = train(load_config(cfg, {"run.name=b", "train.resume=" + b1.checkpoint_path}), quiet_options(7));
  REQUIRE(b2.status == TrainResult::interrupted);
  REQUIRE(read_run_summary(b2.metrics_path).train_points == 7);
  const TrainResult b3 = train(load_config(cfg, {"run.name=b", "train.resume=" + old_ckpt}), quiet_options());
  REQUIRE(b3.status == TrainResult::completed);
  REQUIRE(b3.losses.size() == 8);
  // The relogged steps 5..7 equal the first attempt's: the same state gives the same steps.
  CHECK(same_bits(std::vector<double>(b3.losses.begin(), b3.losses.begin() + 3), b2.losses));
  CHECK(same_bits(concat(b1.losses, b3.losses), a.losses));
  require_same_state(a.checkpoint_path, b3.checkpoint_path);
  require_same_log(a.metrics_path, b3.metrics_path, 12);
}

TEST_CASE("resuming a finished run trains nothing and keeps its log", "[train][resume]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 8);
  const TrainResult a = train(load_config(cfg, {"run.name=a"}), quiet_options());
  REQUIRE(a.status == TrainResult::completed);
  const auto eval_steps_before = read_i64(a.metrics_path, "eval/step");
  const TrainResult again = train(load_config(cfg, {"run.name=a", "train.resume=" + a.checkpoint_path}), quiet_options());
  CHECK(again.status == TrainResult::completed);
  CHECK(again.steps == 8);
  CHECK(again.losses.empty());
  CHECK(again.final_val_loss == a.final_val_loss);
  const RunSummary s = read_run_summary(again.metrics_path);
  CHECK(s.status == "completed");
  CHECK(s.train_points == 8);
  // Each step is evaluated at most once: no second eval point for step 8.
  const auto eval_steps = read_i64(again.metrics_path, "eval/step");
  INFO("eval/step before: " << ::Catch::Detail::stringify(eval_steps_before)
                            << ", after: " << ::Catch::Detail::stringify(eval_steps));
  CHECK(eval_steps == eval_steps_before);
}

TEST_CASE("two identical runs give identical losses, parameters and checkpoint bytes", "[train][determinism]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 6);
  // Two threads and dropout: a thread-count-dependent reduction or mask would show here.
  const std::vector<std::string> o{"run.name=d", "runtime.threads=2", "model.dropout=0.1", "train.grad_accum=2"};
  const TrainResult r1 = train(load_config(cfg, o), quiet_options());
  const std::string first = dir.file("first.h5");
  std::filesystem::copy_file(r1.checkpoint_path, first);
  const TrainResult r2 = train(load_config(cfg, o), quiet_options());
  REQUIRE(r1.losses.size() == 6);
  CHECK(same_bits(r1.losses, r2.losses));
  CHECK(r1.final_val_loss == r2.final_val_loss);
  require_same_state(first, r2.checkpoint_path);
  CHECK(read_text(first) == read_text(r2.checkpoint_path));  // "deterministic bytes"
  // And training did something: the loss is finite and the parameters moved off their init.
  for (double l : r1.losses) CHECK(std::isfinite(l));
  auto s0 = Session::from_config(load_config(cfg, o));
  const Param* p = s0->store.params().front();
  const auto trained = read_f32(first, "params/" + p->name);
  CHECK(!same_bits(trained, std::vector<float>(p->data, p->data + p->numel())));
}

TEST_CASE("a different seed gives a different run", "[train][determinism]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 2);
  const TrainResult r1 = train(load_config(cfg, {"run.name=s1"}), quiet_options());
  const TrainResult r2 = train(load_config(cfg, {"run.name=s2", "run.seed=8"}), quiet_options());
  CHECK(!same_bits(r1.losses, r2.losses));
}

TEST_CASE("request_interrupt from another thread stops after a step with a loadable checkpoint", "[train][interrupt]") {
  TempDir dir;
  const int64_t total = 1000000;
  const std::string cfg = write_tiny_config(dir, int(total));
  struct sigaction before {};
  sigaction(SIGINT, nullptr, &before);

  std::atomic<bool> done{false};
  // InterruptGuard clears earlier requests when train() starts, so keep asking until it stops.
  std::thread asker([&] {
    while (!done) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      request_interrupt();
    }
  });
  TrainResult r;
  try {
    // stop_after is only a safety net, should request_interrupt() fail to stop the run.
    r = train(load_config(cfg, {"run.name=int", "train.log_interval=50"}), quiet_options(5000));
  } catch (...) {
    done = true;
    asker.join();
    throw;
  }
  done = true;
  asker.join();

  struct sigaction after {};
  sigaction(SIGINT, nullptr, &after);
  CHECK(after.sa_handler == before.sa_handler);  // the trainer restored the previous handler

  REQUIRE(r.status == TrainResult::interrupted);
  REQUIRE(r.steps >= 1);
  REQUIRE(r.steps < 5000);
  CHECK(r.losses.size() == size_t(r.steps));
  CHECK(CheckpointReader(r.checkpoint_path).attr_i64("step") == r.steps);
  const RunSummary s = read_run_summary(r.metrics_path);
  CHECK(s.status == "interrupted");
  CHECK(s.last_step == r.steps);
  CHECK(s.train_points == r.steps);
  auto session = Session::from_checkpoint(r.checkpoint_path, {}, /*load_data=*/true);
  CHECK(session->progress.step == r.steps);
}

TEST_CASE("a resumed run computes its products in the forms its checkpoint records", "[train][resume]") {
  // Products large enough to have their form measured (kernels::kFormMinFlops), on two threads.
  TempDir dir;
  const int N = 2;
  const std::string cfg = write_tiny_config(dir, 2 * N);
  auto with = [&](std::string name, std::vector<std::string> o = {}) {
    for (const char* x : {"model.d_model=64", "model.context=32", "train.batch_size=64", "runtime.threads=2",
                          "runtime.matmul_forms=measure", "runtime.matmul_forms_file=none"})
      o.push_back(x);
    o.push_back("run.name=" + name);
    return load_config(cfg, o);
  };
  kernels::forget_matmul_forms();
  const TrainResult a = train(with("a"), quiet_options());
  const std::string forms = kernels::matmul_forms_text();
  REQUIRE(!forms.empty());
  CHECK(CheckpointReader(a.checkpoint_path).attr_string("matmul_forms") == forms);
  CHECK(CheckpointReader(a.metrics_path).attr_string("matmul_forms") == forms);
  const TrainResult b1 = train(with("b"), quiet_options(N));
  REQUIRE(b1.status == TrainResult::interrupted);
  // Another process would hold other choices: give every product another form, so that only the
  // checkpoint can bring the run's back.
  kernels::forget_matmul_forms();
  std::string other;
  for (size_t pos = 0; pos < forms.size();) {
    const size_t tab = forms.find('\t', pos), eol = forms.find('\n', pos);
    const std::string form = forms.substr(tab + 1, eol - tab - 1);
    other += forms.substr(pos, tab - pos) + "\t" + (form == "split_k" ? "packed_b" : "split_k") + "\n";
    pos = eol + 1;
  }
  kernels::preset_matmul_forms(other);
  REQUIRE(kernels::matmul_forms_text() != forms);
  const TrainResult b2 = train(with("b", {"train.resume=" + b1.checkpoint_path}), quiet_options());
  REQUIRE(b2.status == TrainResult::completed);
  CHECK(kernels::matmul_forms_text() == forms);
  CHECK(same_bits(concat(b1.losses, b2.losses), a.losses));
  require_same_state(a.checkpoint_path, b2.checkpoint_path);
  kernels::forget_matmul_forms();
}

TEST_CASE("a checkpoint written before products had forms makes every product direct", "[train][resume]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 2);
  const TrainResult a = train(load_config(cfg, {"runtime.matmul_forms_file=none"}), quiet_options());
  REQUIRE(a.status == TrainResult::completed);
  {  // the older layout: no matmul_forms attribute
    const hid_t f = H5Fopen(a.checkpoint_path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    CHECK(H5Adelete(f, "matmul_forms") >= 0);
    H5Fclose(f);  // edited in place: the header's CRC no longer matches, and the file reads
  }
  kernels::forget_matmul_forms();
  kernels::set_matmul_forms(true, "");
  auto s = Session::from_checkpoint(a.checkpoint_path, {}, false);
  // A product that would otherwise be measured runs direct, and nothing is measured.
  kernels::set_num_threads(2);
  const int64_t M = 128, N = 256, K = 4096;
  std::vector<float> x(M * K, 0.5f), y(K * N, 0.25f), c(M * N);
  kernels::reset_product_stats();
  set_profiling(true);
  kernels::gemm(true, false, M, N, K, x.data(), M, y.data(), N, c.data(), N, false);
  set_profiling(false);
  const auto stats = kernels::product_stats();
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].form == "direct");
  CHECK(kernels::take_new_matmul_forms().empty());
  kernels::set_num_threads(1);
  kernels::forget_matmul_forms();
  kernels::set_matmul_forms(true, "");
}
