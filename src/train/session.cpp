#include "train/session.h"

#include <cmath>
#include <set>

#include "autograd/tape.h"
#include "io/checkpoint.h"
#include "kernels/gemm.h"
#include "train/distributed.h"
#include "train/setup.h"
#include "util/check.h"
#include "util/version.h"

namespace attnlab {

namespace {
constexpr const char* kFormat = "attnlab-checkpoint/1";
// Where an optimizer slot lives in a checkpoint: optim/<optimizer>/<slot>/<parameter name>.
std::string slot_dataset(const std::string& optimizer, const Optimizer::Slot& slot) {
  return "optim/" + optimizer + "/" + slot.name + "/" + slot.param->name;
}

std::span<const int64_t> dims(const Shape& s, std::vector<int64_t>& buf) {
  buf = s.vec();
  return buf;
}
}  // namespace

Session::Session(const LoadedConfig& cfg, Vocab v, std::optional<Corpus> c)
    : config(cfg), vocab(std::move(v)), corpus(std::move(c)) {
  const RunConfig& rc = config.cfg;
  if (corpus) {
    split = split_corpus(*corpus, rc.data.val_fraction);
    BatchSampler(split.train, 0, "data.train").check_fits(rc.model.context, "train", corpus->path);
    BatchSampler(split.val, 0, "data.val").check_fits(rc.model.context, "val", corpus->path);
  }
  ModelSpec spec = model_spec(rc, vocab.size());
  if (rc.data.packing == "separator") {
    try {
      spec.doc_separator = vocab.encode(rc.data.separator);
    } catch (const DataError& e) {
      throw ConfigError(std::string("data.separator: not in the vocabulary of ") + rc.data.path + ": " + e.what());
    }
  }
  model = std::make_unique<Transformer>(spec, store);
  store.finalize(uint64_t(rc.run.seed));
  auto check_matched = [](const char* key, const std::vector<std::string>& patterns, const std::vector<int>& counts) {
    for (size_t i = 0; i < counts.size(); ++i)
      if (counts[i] == 0)
        throw ConfigError(detail::concat(key, ": pattern \"", patterns[i],
                                         "\" matches no parameter (names look like blocks.0.attn.wq)"));
  };
  if (!rc.train.trainable.empty())
    check_matched("train.trainable", rc.train.trainable, store.train_only(rc.train.trainable));
  if (!rc.train.freeze.empty()) check_matched("train.freeze", rc.train.freeze, store.freeze(rc.train.freeze));
  optimizer = make_optimizer(rc, store);
  schedule = make_schedule(rc);
}

std::unique_ptr<Session> Session::from_config(const LoadedConfig& cfg) {
  Corpus c = load_corpus(cfg.cfg.data.path, cfg.cfg.data.vocab == "bytes");
  Vocab v = c.vocab;
  return std::make_unique<Session>(cfg, std::move(v), std::move(c));
}

std::unique_ptr<Session> Session::from_checkpoint(const std::string& path, const std::vector<std::string>& overrides,
                                                  bool load_data) {
  CheckpointReader r(path);
  if (!r.has_attr("format") || r.attr_string("format") != kFormat)
    throw CheckpointError(path + ": not an attnlab checkpoint (no format attribute \"" + kFormat + "\")");
  LoadedConfig cfg = config_from_yaml_text(r.attr_string("config"), path + " (stored config)", overrides);
  Vocab v = Vocab::from_symbols(r.strings("vocab"), r.attr_string("vocab_mode"));
  std::optional<Corpus> c;
  if (load_data) {
    c = load_corpus(cfg.cfg.data.path, cfg.cfg.data.vocab == "bytes");
    if (c->vocab.symbols() != v.symbols())
      throw DataError(detail::concat(cfg.cfg.data.path, ": its vocabulary (", c->vocab.size(),
                                     " symbols) differs from the checkpoint's (", v.size(), " symbols, ", path, ")"));
  }
  auto s = std::make_unique<Session>(cfg, std::move(v), std::move(c));
  s->load_checkpoint(path);
  return s;
}

void Session::save_checkpoint(const std::string& path) const {
  CheckpointWriter w(path);
  std::vector<int64_t> buf;
  w.attr("format", kFormat);
  w.attr("config", config.resolved_yaml);
  w.attr("version", kVersion);
  w.attr("git_commit", kGitCommit);
  w.attr("step", progress.step);
  w.attr_u64("train_batches", progress.train_batches);
  w.attr_u64("seed", uint64_t(config.cfg.run.seed));
  w.attr("optimizer", optimizer->name());
  w.attr("optimizer_t", optimizer->t());
  w.attr("vocab_mode", vocab.mode());
  w.strings("vocab", vocab.symbols());
  std::vector<std::string> frozen;
  for (const Param* p : store.params())
    if (p->frozen) frozen.push_back(p->name);
  w.strings("frozen", frozen);  // what train.freeze / train.trainable left untrained
  w.attr("matmul_forms", kernels::matmul_forms_text());  // a resume computes its products the same way
  for (const Param* p : store.params()) w.tensor("params/" + p->name, dims(p->shape, buf), p->data);
  // A frozen parameter's optimizer state is never touched (it stays at its zero start): not stored.
  for (const auto& slot : optimizer->slots())
    if (!slot.param->frozen) w.tensor(slot_dataset(optimizer->name(), slot), dims(slot.shape, buf), slot.data);
  w.commit();
}

void Session::load_checkpoint(const std::string& path) {
  CheckpointReader r(path);
  if (!r.has_attr("format") || r.attr_string("format") != kFormat)
    throw CheckpointError(path + ": not an attnlab checkpoint (no format attribute \"" + kFormat + "\")");
  const std::vector<std::string> saved_vocab = r.strings("vocab");
  if (saved_vocab != vocab.symbols())
    throw CheckpointError(detail::concat(path, ": vocabulary of ", saved_vocab.size(),
                                         " symbols differs from the data's ", vocab.size(), " symbols"));
  // Every parameter by name and shape; report missing and unexpected names.
  std::vector<std::string> stored = r.list("params");
  for (const std::string& n : stored)
    if (!store.find(n))
      throw CheckpointError(path + ": parameter " + n + " is not in this model (different model config?)");
  std::vector<int64_t> buf;
  const std::string opt_name = r.attr_string("optimizer");
  if (opt_name != optimizer->name())
    throw CheckpointError(path + ": optimizer state is for " + opt_name + ", the config uses " + optimizer->name());
  // A non-finite value would otherwise surface only as a NaN loss, steps later; name it here.
  auto check_values = [&](const std::string& name, const float* x, int64_t n, bool second_moment) {
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(x[i]) || (second_moment && x[i] < 0))
        throw CheckpointError(detail::concat(path, ": ", name, ": element ", i, " is ", x[i],
                                             second_moment ? " (a second moment must be finite and >= 0)"
                                                           : " (must be finite)"));
  };
  for (Param* p : store.params()) {
    const std::string n = "params/" + p->name;
    if (!r.has(n)) throw CheckpointError(path + ": missing parameter " + p->name);
    r.read(n, dims(p->shape, buf), p->data);
    check_values(n, p->data, p->numel(), false);
  }
  // The parameters the writing run froze have no optimizer state stored (save_checkpoint): theirs
  // is the zero it started at, whether or not this run trains them.
  std::set<std::string> stored_frozen;
  if (r.has("frozen"))
    for (const std::string& n : r.strings("frozen")) stored_frozen.insert(n);
  for (const auto& slot : optimizer->slots()) {
    if (stored_frozen.count(slot.param->name)) {
      std::fill(slot.data, slot.data + slot.shape.numel(), 0.f);
      continue;
    }
    const std::string n = slot_dataset(opt_name, slot);
    r.read(n, dims(slot.shape, buf), slot.data);
    check_values(n, slot.data, slot.shape.numel(), slot.name[0] == 'v');
  }
  if (r.has_attr("matmul_forms")) {
    try {
      kernels::preset_matmul_forms(r.attr_string("matmul_forms"));
    } catch (const Error& e) {
      throw CheckpointError(path + ": attribute matmul_forms: " + e.what());
    }
  } else {
    kernels::set_matmul_forms(false, "");  // written before products had forms: every one was direct
  }
  checkpoint_config = r.has_attr("config") ? r.attr_string("config") : "";
  progress.step = r.attr_i64("step");
  progress.train_batches = r.attr_u64("train_batches");
  if (progress.step < 0) throw CheckpointError(detail::concat(path, ": negative step ", progress.step));
  const int64_t t = r.attr_i64("optimizer_t");
  if (t < 0) throw CheckpointError(detail::concat(path, ": negative optimizer_t ", t));
  optimizer->set_t(t);
}

std::vector<std::string> Session::init_from_checkpoint(const std::string& path) {
  CheckpointReader r(path);
  if (!r.has_attr("format") || r.attr_string("format") != kFormat)
    throw CheckpointError(path + ": not an attnlab checkpoint (no format attribute \"" + kFormat + "\")");
  const std::vector<std::string> saved_vocab = r.strings("vocab");
  if (saved_vocab != vocab.symbols())
    throw CheckpointError(detail::concat(path, ": vocabulary of ", saved_vocab.size(),
                                         " symbols differs from the data's ", vocab.size(), " symbols"));
  // The model may add parameters (they keep their init); every stored one must fit.
  for (const std::string& n : r.list("params"))
    if (!store.find(n))
      throw CheckpointError(path + ": parameter " + n + " is not in this model (different model config?)");
  std::vector<int64_t> buf;
  std::vector<std::string> fresh;
  for (Param* p : store.params()) {
    const std::string n = "params/" + p->name;
    if (!r.has(n)) {
      fresh.push_back(p->name);
      continue;
    }
    r.read(n, dims(p->shape, buf), p->data);
    for (int64_t i = 0; i < p->numel(); ++i)
      if (!std::isfinite(p->data[i]))
        throw CheckpointError(detail::concat(path, ": ", n, ": element ", i, " is ", p->data[i], " (must be finite)"));
  }
  return fresh;
}

Batch draw_batch(BatchSampler& sampler, int B, int T) {
  Batch b{arena_ints(int64_t(B) * T), arena_ints(int64_t(B) * T)};
  sampler.next(b.x, b.y, B, T);
  return b;
}

double Session::evaluate(std::span<const int32_t> tokens, const std::string& stream, int iters) {
  const int B = config.cfg.train.batch_size, T = config.cfg.model.context;
  BatchSampler sampler(tokens, uint64_t(config.cfg.run.seed), stream);
  NoGrad no_grad;
  ArenaScope scope(eval_arena_);
  double total = 0;
  // Over MPI each rank evaluates its share of the batches one process with world·B sequences
  // draws, and the ranks' means are averaged: the same number as that process (train/distributed.h).
  const int world = dist::size();
  const int64_t share = int64_t(dist::rank()) * B * T;
  for (int i = 0; i < iters; ++i) {
    eval_arena_.reset();
    const Batch b = draw_batch(sampler, B * world, T);
    total += model->loss(b.x + share, b.y + share, B, T).item();
  }
  return dist::mean(total / iters);
}

}  // namespace attnlab
