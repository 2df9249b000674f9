// Divergence: a non-finite loss or gradient stops training with a DivergedError (exit code 3)
// that names the step (and the parameter for a gradient), after the run log is written with
// status "diverged".
#include <cmath>

#include "io/run_log.h"
#include "train/session.h"
#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

namespace {

// The DivergedError message train() throws for these overrides; fails if it returns instead.
std::string diverged_message(const std::string& cfg, const std::vector<std::string>& overrides) {
  const LoadedConfig c = load_config(cfg, overrides);
  try {
    train(c, quiet_options());
  } catch (const DivergedError& e) {
    CHECK(e.exit_code() == kExitDiverged);
    return e.what();
  }
  FAIL("training did not diverge with " << ::Catch::Detail::stringify(overrides));
  return "";
}

// lr 1e30: the first update sends the weights to ~1e30, and the next forward overflows.
const std::vector<std::string> kNanLoss{"run.name=nan", "optimizer.lr=1e30", "schedule.kind=constant",
                                        "schedule.warmup_steps=0", "train.grad_clip=0"};
// lr 1e6 with weight decay 0.1 multiplies the weights by ~1e5 a step: the attention gradient
// overflows first.
const std::vector<std::string> kNanGrad{"run.name=grad", "optimizer.lr=1e6", "schedule.warmup_steps=0",
                                        "train.grad_clip=0"};

}  // namespace

TEST_CASE("a non-finite loss throws DivergedError naming the step, the log says diverged", "[train][diverge]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 50);
  const std::string msg = diverged_message(cfg, kNanLoss);
  INFO(msg);
  CHECK(contains(msg, "non-finite loss"));
  CHECK(contains(msg, "at step "));
  CHECK(msg.find('\n') == std::string::npos);
  const std::string metrics = dir.file("runs/nan/metrics.h5");
  const RunSummary s = read_run_summary(metrics);
  CHECK(s.status == "diverged");
  CHECK(s.last_step >= 1);
  CHECK(s.last_step < 50);
  CHECK(contains(msg, "metrics.h5"));
}

TEST_CASE("a non-finite gradient throws DivergedError naming the parameter and step", "[train][diverge]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 50);
  const std::string msg = diverged_message(cfg, kNanGrad);
  INFO(msg);
  CHECK(contains(msg, "non-finite"));
  CHECK(contains(msg, "at step "));
  // The message names one of the model's parameters.
  auto session = Session::from_config(load_config(cfg, kNanGrad));
  bool named = false;
  for (const Param* p : session->store.params()) named |= contains(msg, " in " + p->name + " ");
  CHECK(named);
  CHECK(read_run_summary(dir.file("runs/grad/metrics.h5")).status == "diverged");
}

// docs/run_files.md: "A NaN loss is stored as NaN: a diverged run keeps its last, non-finite
// point", and RunSummary::last_train_loss is "NaN after a divergence".
TEST_CASE("a diverged run log keeps the non-finite loss of the step that diverged", "[train][diverge]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 50);
  const std::string msg = diverged_message(cfg, kNanLoss);
  INFO(msg);
  const std::string metrics = dir.file("runs/nan/metrics.h5");
  const auto steps = read_i64(metrics, "train/step");
  const auto losses = read_f64(metrics, "train/loss");
  REQUIRE(!losses.empty());
  CHECK(contains(msg, "at step " + std::to_string(steps.back())));
  CHECK(!std::isfinite(losses.back()));
  const RunSummary s = read_run_summary(metrics);
  REQUIRE(s.last_train_loss.has_value());
  CHECK(!std::isfinite(*s.last_train_loss));
}
