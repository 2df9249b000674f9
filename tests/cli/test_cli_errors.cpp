// Bad input through the `attnlab` binary: exit code 2 and one error line that names the key,
// file, path, parameter or option at fault. --help exits 0.
#include <limits>
#include <regex>

#include <hdf5.h>

#include "io/run_log.h"
#include "train/session.h"

#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

namespace {

struct BadInput {
  std::string what;
  std::vector<std::string> args;
  std::vector<std::string> words;  // each must appear in the error line
};

// attnlab's own errors: exit 2, nothing on stdout, exactly one stderr line "attnlab: error: ..."
// holding every expected word.
void check_usage_error(const BadInput& c) {
  const RunOutput r = run_attnlab(c.args);
  INFO(c.what << "\nargs: " << ::Catch::Detail::stringify(c.args) << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == kExitUsage);
  const auto lines = lines_of(r.err);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].rfind("attnlab: error: ", 0) == 0);
  for (const auto& w : c.words) {
    INFO("expected word: " << w);
    CHECK(contains(lines[0], w));
  }
}

// CLI11's parse errors: exit 2, and the first stderr line names the option or argument.
void check_parse_error(const BadInput& c) {
  const RunOutput r = run_attnlab(c.args);
  INFO(c.what << "\nargs: " << ::Catch::Detail::stringify(c.args) << "\nstdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == kExitUsage);
  const auto lines = lines_of(r.err);
  REQUIRE(!lines.empty());
  for (const auto& w : c.words) {
    INFO("expected word: " << w);
    CHECK(contains(lines[0], w));
  }
}

// A completed tiny run in a temp dir: its config, corpus and checkpoint.
struct Fixture {
  TempDir dir;
  std::string cfg = write_tiny_config(dir, 2);
  std::string ckpt;
  std::string metrics;
  Fixture() {
    const TrainResult r = train(load_config(cfg, {"run.name=base"}), quiet_options());
    REQUIRE(r.status == TrainResult::completed);
    ckpt = r.checkpoint_path;
    metrics = r.metrics_path;
  }
};

}  // namespace

TEST_CASE("config mistakes exit 2 with the key, the place and a suggestion", "[cli][errors]") {
  Fixture f;
  const std::string bad_key = f.dir.write("bad_key.yaml", "model:\n  n_layers: 2\n");
  const std::string bad_type = f.dir.write("bad_type.yaml", "model:\n  n_layer: two\n");
  const std::string bad_section = f.dir.write("bad_section.yaml", "modle:\n  n_layer: 2\n");
  const std::string bad_yaml = f.dir.write("bad_yaml.yaml", "model:\n  n_layer: [1,\n");
  const std::vector<BadInput> cases{
      {"unknown key (override)", {"-q", "train", f.cfg, "model.n_layers=2"},
       {"model.n_layers", "did you mean model.n_layer?"}},
      {"unknown key (file)", {"-q", "train", bad_key}, {bad_key + ":2:3", "model.n_layers", "did you mean model.n_layer?"}},
      {"unknown section", {"-q", "train", bad_section}, {bad_section + ":1:1", "modle", "did you mean model?"}},
      {"wrong type (file)", {"-q", "train", bad_type}, {bad_type + ":2:", "model.n_layer", "\"two\""}},
      {"wrong type (override)", {"-q", "train", f.cfg, "train.steps=many"},
       {"override train.steps=many", "train.steps", "\"many\""}},
      {"out of range (override)", {"-q", "train", f.cfg, "optimizer.lr=-1"}, {"optimizer.lr", "positive"}},
      {"override without '='", {"-q", "train", f.cfg, "model.n_layer"}, {"override model.n_layer", "KEY=VALUE"}},
      {"YAML syntax error", {"-q", "train", bad_yaml}, {bad_yaml + ":", "YAML"}},
      {"missing config file", {"-q", "train", f.dir.file("none.yaml")}, {f.dir.file("none.yaml"), "cannot read"}},
      {"config is a directory", {"-q", "train", f.dir.file("runs")}, {f.dir.file("runs"), "directory"}},
      {"cross-key check", {"-q", "train", f.cfg, "model.n_head=3"}, {"model.n_head", "divisible"}},
  };
  for (const auto& c : cases) check_usage_error(c);
}

TEST_CASE("data file problems exit 2 naming the path", "[cli][errors]") {
  Fixture f;
  const std::string empty = f.dir.write("empty.txt", "");
  const std::string short_train = f.dir.write("short.txt", "abcdefghij");     // train split 8 < 9
  const std::string short_val = f.dir.write("short_val.txt", tiny_corpus(40));  // val split 8 < 9
  const std::vector<BadInput> cases{
      {"missing data file", {"-q", "train", f.cfg, "data.path=/nonexistent/corpus.txt"},
       {"/nonexistent/corpus.txt", "does not exist"}},
      {"empty data file", {"-q", "train", f.cfg, "data.path=" + empty}, {empty, "empty"}},
      {"data file shorter than one window", {"-q", "train", f.cfg, "data.path=" + short_train},
       {short_train, "fewer than one window", "train"}},
      {"val split shorter than one window", {"-q", "train", f.cfg, "data.path=" + short_val},
       {short_val, "fewer than one window", "val"}},
      {"data path is a directory", {"-q", "train", f.cfg, "data.path=" + f.dir.file("runs")},
       {f.dir.file("runs"), "directory"}},
      {"eval with a missing data file", {"eval", "--checkpoint", f.ckpt, "data.path=/nonexistent/corpus.txt"},
       {"/nonexistent/corpus.txt"}},
      // Without -q the resolved config is printed only once every input passed: the error stands alone.
      {"missing data file, not quiet", {"train", f.cfg, "run.name=loud", "data.path=/nonexistent/corpus.txt"},
       {"/nonexistent/corpus.txt", "does not exist"}},
  };
  for (const auto& c : cases) check_usage_error(c);
}

TEST_CASE("bad checkpoints exit 2 naming the file for eval, sample, grads and train.resume", "[cli][errors]") {
  Fixture f;
  const std::string text = f.dir.write("text.h5", "this is not a checkpoint\n");
  const std::string bytes = read_text(f.ckpt);
  REQUIRE(bytes.size() > 4096);
  const std::string truncated = f.dir.write("truncated.h5", bytes.substr(0, bytes.size() / 2));
  const std::string empty = f.dir.write("empty.h5", "");
  const std::string missing = f.dir.file("missing.h5");
  struct Bad {
    std::string file, word;
  };
  const std::vector<Bad> bad{{text, "not an HDF5 file"},
                             {truncated, "truncated"},
                             {empty, "empty"},
                             {missing, "no such file"},
                             {f.metrics, "not an attnlab checkpoint"},
                             {f.dir.file("runs"), "directory"}};
  for (const auto& b : bad) {
    check_usage_error({"eval", {"eval", "--checkpoint", b.file}, {b.file, b.word}});
    check_usage_error({"sample", {"sample", "--checkpoint", b.file}, {b.file, b.word}});
    check_usage_error({"grads", {"grads", "--checkpoint", b.file, "--out", f.dir.file("g.h5")}, {b.file, b.word}});
    check_usage_error({"train.resume", {"-q", "train", f.cfg, "run.name=r", "train.resume=" + b.file}, {b.file, b.word}});
    check_usage_error({"train.resume, not quiet", {"train", f.cfg, "run.name=r2", "train.resume=" + b.file}, {b.file, b.word}});
  }
  // A bad checkpoint to resume from is found before the run directory is made.
  CHECK(!std::filesystem::exists(f.dir.file("runs/r2")));
  CHECK(!std::filesystem::exists(f.dir.file("g.h5")));
}

// A checkpoint edited in place (h5py "r+"; here HDF5 itself) no longer matches its header: it is
// used with one warning naming the change, `attnlab seal` records the edit, and a run log (no
// header) cannot be sealed.
TEST_CASE("an edited checkpoint is used with a warning and attnlab seal records the edit", "[cli][errors]") {
  Fixture f;
  {
    const hid_t file = H5Fopen(f.ckpt.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(file >= 0);
    const int64_t step = 7;
    const hid_t a = H5Aopen(file, "step", H5P_DEFAULT);
    CHECK(H5Awrite(a, H5T_NATIVE_INT64, &step) >= 0);
    H5Aclose(a);
    H5Fclose(file);
  }
  const RunOutput edited = run_attnlab({"eval", "--checkpoint", f.ckpt});
  INFO(edited.err);
  CHECK(edited.exit_code == 0);
  CHECK(contains(edited.err, f.ckpt + ": changed after it was written (its CRC-32C is"));
  CHECK(contains(edited.err, "attnlab seal " + f.ckpt));
  const RunOutput sealed = run_attnlab({"seal", f.ckpt});
  CHECK(sealed.exit_code == 0);
  CHECK(contains(sealed.out, "sealed " + f.ckpt));
  const RunOutput after = run_attnlab({"eval", "--checkpoint", f.ckpt});
  CHECK(after.exit_code == 0);
  CHECK_FALSE(contains(after.err, "changed after it was written"));
  check_usage_error({"seal a run log", {"seal", f.metrics}, {f.metrics, "has no room for a header"}});
}

TEST_CASE("checkpoints holding non-finite values or negative second moments exit 2 naming the tensor",
          "[cli][errors]") {
  Fixture f;
  auto s = Session::from_checkpoint(f.ckpt, {}, /*load_data=*/false);
  Param* wq = s->store.find("blocks.0.attn.wq");
  REQUIRE(wq);
  const float saved = wq->data[5];
  wq->data[5] = std::numeric_limits<float>::quiet_NaN();
  const std::string nan_param = f.dir.file("nan_param.h5");
  s->save_checkpoint(nan_param);
  wq->data[5] = saved;
  float* v = nullptr;
  for (const auto& slot : s->optimizer->slots())
    if (slot.name == "v" && slot.param == wq) v = slot.data;
  REQUIRE(v);
  v[3] = -1.f;
  const std::string negative_v = f.dir.file("negative_v.h5");
  s->save_checkpoint(negative_v);
  const std::vector<std::string> nan_words{nan_param, "params/blocks.0.attn.wq", "element 5", "nan", "finite"};
  const std::vector<std::string> v_words{negative_v, "optim/adamw/v/blocks.0.attn.wq", "element 3", ">= 0"};
  check_usage_error({"eval, NaN parameter", {"eval", "--checkpoint", nan_param}, nan_words});
  check_usage_error({"resume, NaN parameter", {"-q", "train", f.cfg, "run.name=r", "train.resume=" + nan_param}, nan_words});
  check_usage_error({"resume, negative second moment", {"-q", "train", f.cfg, "run.name=r", "train.resume=" + negative_v},
                     v_words});
}

TEST_CASE("resuming with another model shape or vocabulary exits 2 naming what differs", "[cli][errors]") {
  Fixture f;
  const std::vector<BadInput> cases{
      {"wider model", {"-q", "train", f.cfg, "run.name=r", "model.d_model=32", "train.resume=" + f.ckpt},
       {f.ckpt, "params/blocks.0.", "[16"}},
      {"deeper model", {"-q", "train", f.cfg, "run.name=r", "model.n_layer=2", "train.resume=" + f.ckpt},
       {f.ckpt, "blocks.1."}},
      {"swiglu instead of gelu", {"-q", "train", f.cfg, "run.name=r", "model.mlp=swiglu", "train.resume=" + f.ckpt},
       {f.ckpt, "blocks.0.mlp"}},
  };
  for (const auto& c : cases) check_usage_error(c);
  const std::string other = f.dir.write("other.txt", std::string(200, 'x') + std::string(200, 'y'));
  check_usage_error({"other vocabulary", {"-q", "train", f.cfg, "run.name=r", "data.path=" + other, "train.resume=" + f.ckpt},
                     {"vocabulary"}});
}

TEST_CASE("sample and command-line mistakes exit 2 naming the option", "[cli][errors]") {
  Fixture f;
  check_usage_error({"prompt symbol outside the vocabulary", {"sample", "--checkpoint", f.ckpt, "--prompt", "abZ"},
                     {"--prompt", "'Z'", "not in the vocabulary"}});
  check_usage_error({"empty prompt", {"sample", "--checkpoint", f.ckpt, "--prompt", ""}, {"--prompt"}});
  check_usage_error({"inspect a missing run", {"inspect", f.dir.file("runs/nope")}, {f.dir.file("runs/nope")}});

  const std::vector<BadInput> parse_errors{
      {"eval without --checkpoint", {"eval"}, {"--checkpoint", "required"}},
      {"sample without --checkpoint", {"sample", "--prompt", "ab"}, {"--checkpoint", "required"}},
      {"grads without --out", {"grads", "--checkpoint", f.ckpt}, {"--out", "required"}},
      {"grads without --checkpoint", {"grads", "--out", f.dir.file("g.h5")}, {"--checkpoint", "required"}},
      {"train without a config", {"train"}, {"config", "required"}},
      {"inspect without a run", {"inspect"}, {"run", "required"}},
      {"negative --tokens", {"sample", "--checkpoint", f.ckpt, "--tokens", "-5"}, {"--tokens"}},
      {"non-numeric --seed", {"sample", "--checkpoint", f.ckpt, "--seed", "abc"}, {"--seed"}},
      {"unknown option", {"eval", "--checkpoint", f.ckpt, "--bogus"}, {"--bogus"}},
      {"no subcommand", {}, {"subcommand"}},
  };
  for (const auto& c : parse_errors) check_parse_error(c);
}

// CLI11 reports "A subcommand is required" for `attnlab frobnicate`: the message does not say
// which word was not understood.
TEST_CASE("an unknown subcommand exits 2 and names it", "[cli][errors]") {
  check_parse_error({"unknown subcommand", {"frobnicate"}, {"frobnicate"}});
}

TEST_CASE("help on attnlab and on each subcommand exits 0 and describes it", "[cli][help]") {
  struct Help {
    std::vector<std::string> args;
    std::vector<std::string> words;
  };
  const std::vector<Help> helps{
      {{"--help"}, {"train", "eval", "sample", "inspect", "grads", "--quiet"}},
      {{"train", "--help"}, {"config", "overrides", "130"}},
      {{"eval", "--help"}, {"--checkpoint"}},
      {{"sample", "--help"}, {"--checkpoint", "--prompt", "--tokens", "--temperature", "--top-k", "--seed"}},
      {{"inspect", "--help"}, {"run"}},
      {{"grads", "--help"}, {"--checkpoint", "--out", "--seed"}},
  };
  for (const auto& h : helps) {
    const RunOutput r = run_attnlab(h.args);
    INFO(::Catch::Detail::stringify(h.args) << "\n" << r.all());
    CHECK(r.exit_code == 0);
    for (const auto& w : h.words) {
      INFO("expected word: " << w);
      CHECK(contains(r.all(), w));
    }
  }
}

TEST_CASE("grads --out replaces only an earlier grads output", "[cli][errors]") {
  Fixture f;
  const std::string text = f.dir.write("notes.txt", "keep me\n");
  check_usage_error({"grads over the input checkpoint", {"grads", "--checkpoint", f.ckpt, "--out", f.ckpt},
                     {"is the input checkpoint"}});
  check_usage_error({"grads over a run log", {"grads", "--checkpoint", f.ckpt, "--out", f.metrics},
                     {"not an earlier output of attnlab grads"}});
  check_usage_error({"grads over any other file", {"grads", "--checkpoint", f.ckpt, "--out", text},
                     {"not an earlier output of attnlab grads"}});
  CHECK(read_text(text) == "keep me\n");
  CHECK(read_run_summary(f.metrics).train_points == 2);  // still a run log
  const std::string g = f.dir.file("g.h5");
  REQUIRE(run_attnlab({"-q", "grads", "--checkpoint", f.ckpt, "--out", g}).exit_code == 0);
  const RunOutput again = run_attnlab({"-q", "grads", "--checkpoint", f.ckpt, "--out", g, "--seed", "3"});
  INFO(again.all());
  CHECK(again.exit_code == 0);
}
