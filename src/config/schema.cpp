// The schema: one row per config key, binding the key path to its RunConfig field with default,
// allowed values and help. Adding a key = one row here (+ the struct field in config.h); adding
// a choice = one word in its one_of list. configs/base.yaml is generated from these rows.
#include "config/schema.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <set>
#include <type_traits>

#include "util/check.h"

namespace attnlab::config {
namespace {

// ---- scalar parsing: strict, so a typo never silently becomes a different value ----

bool parse_value(const YAML::Node& n, int& out) {
  if (!n.IsScalar()) return false;
  const std::string& s = n.Scalar();
  size_t start = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  if (start == s.size()) return false;
  for (size_t i = start; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;  // rejects 2.5, 1e3, true, 0x10
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data() + (s[0] == '+'), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < INT_MIN || v > INT_MAX) return false;
  out = static_cast<int>(v);
  return true;
}

bool parse_value(const YAML::Node& n, bool& out) {
  if (!n.IsScalar()) return false;
  const std::string& s = n.Scalar();
  if (s == "true" || s == "True" || s == "TRUE") return out = true, true;
  if (s == "false" || s == "False" || s == "FALSE") return out = false, true;
  return false;  // YAML 1.2 core booleans only: no yes/no/on/off/1/0
}

bool parse_number(const std::string& s, double& out) {
  // Decimal and exponent forms only: no .nan/.inf/nan/inf, hex floats or booleans.
  bool digit = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') digit = true;
    else if (c != '+' && c != '-' && c != '.' && c != 'e' && c != 'E') return false;
  }
  if (!digit) return false;
  const char* begin = s.data() + (s[0] == '+');
  double v = 0;
  auto [end, ec] = std::from_chars(begin, s.data() + s.size(), v);  // locale-independent
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v)) return false;
  out = v;
  return true;
}

bool parse_value(const YAML::Node& n, double& out) { return n.IsScalar() && parse_number(n.Scalar(), out); }

bool parse_value(const YAML::Node& n, std::string& out) {
  if (n.IsNull()) {  // `resume:` with nothing after it
    out.clear();
    return true;
  }
  if (!n.IsScalar()) return false;
  out = n.Scalar();
  return true;
}

// A single scalar is a one-pattern list, so `freeze: blocks.0.*` works as well as a list.
bool parse_value(const YAML::Node& n, std::vector<std::string>& out) {
  std::vector<std::string> v;
  if (n.IsScalar()) {
    v.push_back(n.Scalar());
  } else if (n.IsSequence()) {
    for (const auto& item : n) {
      if (!item.IsScalar()) return false;
      v.push_back(item.Scalar());
    }
  } else if (!n.IsNull()) {
    return false;
  }
  out = std::move(v);
  return true;
}

const std::vector<std::string> kScaleNames = {"rsqrt_dhead", "inv_dhead"};

const std::vector<std::string> kOutputScaleNames = {"none", "sqrt_dseq_over_e", "causal"};

bool parse_value(const YAML::Node& n, OutputScaleRule& out) {
  if (!n.IsScalar()) return false;
  const std::string& s = n.Scalar();
  if (std::find(kOutputScaleNames.begin(), kOutputScaleNames.end(), s) != kOutputScaleNames.end()) {
    out = {s, 0.0};
    return true;
  }
  double v = 0;
  if (!parse_number(s, v)) return false;
  out = {"", v};
  return true;
}

bool parse_value(const YAML::Node& n, AttentionScale& out) {
  if (!n.IsScalar()) return false;
  const std::string& s = n.Scalar();
  if (std::find(kScaleNames.begin(), kScaleNames.end(), s) != kScaleNames.end()) {
    out = {s, 0.0};
    return true;
  }
  double v = 0;
  if (!parse_number(s, v)) return false;
  out = {"", v};
  return true;
}

// ---- emitting: the inverse of parse_value, so resolved YAML round-trips exactly ----

// Double-quoted YAML; its escapes (\\ \" \n \t \xNN) are also what errors show.
std::string quoted(const std::string& s) {
  std::string r = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') r += '\\', r += static_cast<char>(c);
    else if (c == '\n') r += "\\n";
    else if (c == '\t') r += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      const char* hex = "0123456789abcdef";
      r += "\\x", r += hex[c >> 4], r += hex[c & 15];
    } else r += static_cast<char>(c);
  }
  return r + "\"";
}

// Plain when YAML reads it back as the same string (string fields take any scalar's text, so
// only null-like words and syntax characters need quotes), else double-quoted.
std::string emit_string(const std::string& s) {
  static const std::set<std::string> null_words = {"~", "null", "Null", "NULL"};
  bool plain = !s.empty() && !null_words.count(s) && s[0] != '-';
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '/' || c == '-';
    plain = plain && ok;
  }
  return plain ? s : quoted(s);
}

std::string emit_value(int v) { return std::to_string(v); }
std::string emit_value(bool v) { return v ? "true" : "false"; }
// "1.0", not "1": a reader of base.yaml sees the key takes a float. "1.0e-5", not "1e-5": YAML 1.1
// readers (PyYAML, reading a run's config attribute) take a float only with a '.' and a signed exponent.
std::string emit_float(double v) {
  std::string s = format_number(v);
  if (!std::isfinite(v)) return s;
  const size_t e = s.find('e');
  std::string mant = s.substr(0, e), exp = e == std::string::npos ? "" : s.substr(e + 1);
  if (mant.find('.') == std::string::npos) mant += ".0";
  if (!exp.empty() && exp[0] != '-') exp = "+" + exp;
  return exp.empty() ? mant : mant + "e" + exp;
}
std::string emit_value(double v) { return emit_float(v); }
std::string emit_value(const std::string& v) { return emit_string(v); }
std::string emit_value(const AttentionScale& v) { return v.name.empty() ? emit_float(v.value) : v.name; }
std::string emit_value(const OutputScaleRule& v) { return v.name.empty() ? emit_float(v.value) : v.name; }
std::string emit_value(const std::vector<std::string>& v) {
  std::string r = "[";
  for (size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + quoted(v[i]);  // '*' starts an alias
  return r + "]";
}

// ---- rules: the allowed values, and their wording in errors and base.yaml ----

template <class T>
struct Rule {
  std::string expected;
  std::function<bool(const T&)> ok;
  std::vector<std::string> choices = {};  // one_of's words
};

Rule<int> int_at_least(int lo) { return {"an integer >= " + std::to_string(lo), [lo](int v) { return v >= lo; }}; }
Rule<int> int_in(int lo, int hi) {
  return {"an integer in " + std::to_string(lo) + ".." + std::to_string(hi),
          [lo, hi](int v) { return v >= lo && v <= hi; }};
}
Rule<int> even_at_least(int lo) {
  return {"an even integer >= " + std::to_string(lo), [lo](int v) { return v >= lo && v % 2 == 0; }};
}
Rule<double> positive() { return {"a positive number", [](double v) { return v > 0; }}; }
Rule<double> non_negative() { return {"a number >= 0", [](double v) { return v >= 0; }}; }
Rule<double> open_unit() { return {"a number in (0, 1)", [](double v) { return v > 0 && v < 1; }}; }
Rule<double> unit_interval() { return {"a number in [0, 1]", [](double v) { return v >= 0 && v <= 1; }}; }
Rule<double> unit_from_zero() { return {"a number in [0, 1)", [](double v) { return v >= 0 && v < 1; }}; }
Rule<bool> boolean() { return {"true or false", [](bool) { return true; }}; }
Rule<std::string> any_text() { return {"a string", [](const std::string&) { return true; }}; }
Rule<std::string> non_empty_text() {
  return {"a non-empty string", [](const std::string& s) { return !s.empty(); }};
}
Rule<std::string> one_of(std::vector<std::string> choices) {
  std::string desc = "one of ";
  for (size_t i = 0; i < choices.size(); ++i) desc += (i ? ", " : "") + choices[i];
  return {desc,
          [choices](const std::string& v) { return std::find(choices.begin(), choices.end(), v) != choices.end(); },
          choices};
}
// Run names become directory names, so no '/', spaces or shell-special characters ('=' and ','
// name sweep points: optimizer.name=muon,seed=1).
Rule<std::string> file_name() {
  // 200: a directory name must fit the file system's 255 bytes, with room for a sweep's suffix.
  return {"a non-empty name of at most 200 letters, digits, '_', '.', '-', '=', ','", [](const std::string& v) {
            if (v.empty() || v.size() > 200 || v == "." || v == "..") return false;
            return std::all_of(v.begin(), v.end(), [](char c) {
              return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                     c == '.' || c == '-' || c == '=' || c == ',';
            });
          }};
}
Rule<std::vector<std::string>> globs() {
  return {"a list of non-empty glob patterns (* and ?)", [](const std::vector<std::string>& v) {
            return std::none_of(v.begin(), v.end(), [](const std::string& p) { return p.empty(); });
          }};
}
// Parameter roles (nn/param.h), each at most once.
Rule<std::vector<std::string>> roles() {
  return {"a list of parameter roles from matrix, embedding, gain, bias, scale", [](const std::vector<std::string>& v) {
            static const std::vector<std::string> known = {"matrix", "embedding", "gain", "bias", "scale"};
            for (size_t i = 0; i < v.size(); ++i) {
              if (std::find(known.begin(), known.end(), v[i]) == known.end()) return false;
              if (std::find(v.begin(), v.begin() + i, v[i]) != v.begin() + i) return false;
            }
            return true;
          }};
}
// attention.layer_pattern: local and global, repeated over the layers.
Rule<std::vector<std::string>> layer_pattern() {
  return {"a list of local, global", [](const std::vector<std::string>& v) {
            for (const auto& w : v)
              if (w != "local" && w != "global") return false;
            return true;
          }};
}
Rule<OutputScaleRule> output_scale_rule() {
  return {"none, sqrt_dseq_over_e, causal or a positive number",
          [](const OutputScaleRule& s) { return !s.name.empty() || s.value > 0; }};
}
Rule<AttentionScale> scale_rule() {
  return {"rsqrt_dhead, inv_dhead or a positive number",
          [](const AttentionScale& s) { return !s.name.empty() || s.value > 0; }};
}

// ---- rows ----

template <class F>
using field_t = std::remove_reference_t<std::invoke_result_t<F, RunConfig&>>;

// The key path is spelled from the field's own names, so path and field cannot drift apart.
#define KEY(sec, name) #sec "." #name, [](RunConfig& c) -> auto& { return c.sec.name; }

struct Rows {
  std::vector<KeyDef> rows;

  template <class F>
  void operator()(const char* path, F field, field_t<F> def, Rule<field_t<F>> rule, const char* help) {
    using T = field_t<F>;
    ATTN_CHECK(rule.ok(def), "config schema: default of ", path, " is not ", rule.expected);
    std::string p = path;
    KeyDef k;
    k.path = p;
    k.section = p.substr(0, p.find('.'));
    k.expected = rule.expected;
    k.help = help;
    k.choices = rule.choices;
    k.assign = [field, ok = rule.ok](RunConfig& c, const YAML::Node& n) {
      T v{};
      if (!parse_value(n, v) || !ok(v)) return false;
      field(c) = std::move(v);
      return true;
    };
    k.emit = [field](const RunConfig& c) { return emit_value(field(const_cast<RunConfig&>(c))); };
    k.set_default = [field, def](RunConfig& c) { field(c) = def; };
    rows.push_back(std::move(k));
  }
};

std::vector<KeyDef> build_schema() {
  Rows key;
  key(KEY(run, name), "shakespeare_char", file_name(), "run name; files go to <run.out_dir>/<run.name>/");
  key(KEY(run, out_dir), "runs", any_text(), "directory holding runs");
  key(KEY(run, seed), 1337, int_at_least(0), "seed for init, batches, dropout");

  key(KEY(data, path), "data/tinyshakespeare.txt", any_text(),
      "any UTF-8 or byte text file; relative to the working directory, stored absolute in a run's files");
  key(KEY(data, val_fraction), 0.1, open_unit(), "tail fraction of the corpus held out for validation");
  key(KEY(data, vocab), "corpus", one_of({"corpus", "bytes"}),
      "corpus: the file's own symbols (code points, or bytes when not UTF-8); bytes: all 256 byte values, "
      "id = byte");
  key(KEY(data, packing), "none", one_of({"none", "separator"}),
      "none: a training sequence is one stream; separator: documents end at each data.separator, and "
      "attention never crosses a document's start");
  key(KEY(data, separator), "\n\n", non_empty_text(),
      "packing separator: symbols of the vocabulary that end a document (default: a blank line)");

  key(KEY(model, n_layer), 4, int_in(1, 1024), "transformer blocks");
  key(KEY(model, n_head), 4, int_in(1, 1 << 16), "attention (query) heads");
  key(KEY(model, d_model), 128, int_in(1, 1 << 20), "residual stream width");
  key(KEY(model, d_head), 0, int_in(0, 1 << 20), "size of one head; 0 means d_model / n_head");
  key(KEY(model, d_ff), 0, int_in(0, 1 << 22), "MLP hidden size; 0 means 4 * d_model");
  key(KEY(model, context), 64, int_at_least(1), "sequence length (block size)");
  key(KEY(model, norm), "layernorm", one_of({"layernorm", "rmsnorm"}), "normalisation layer");
  key(KEY(model, norm_eps), 1e-5, positive(), "epsilon inside the norms' square root");
  key(KEY(model, mlp), "gelu", one_of({"gelu", "swiglu"}), "MLP kind (swiglu: gated, three matrices)");
  key(KEY(model, positions), "learned", one_of({"learned", "rope"}), "learned position embedding or rotary (RoPE)");
  key(KEY(model, rope_base), 10000.0, positive(), "RoPE frequency base (positions: rope, and MLA's rotary part always)");
  key(KEY(model, dropout), 0.0, unit_from_zero(), "dropout probability; 0 = off");
  key(KEY(model, init_std), 0.02, positive(), "std of the normal init of weight matrices");
  key(KEY(model, init), "normal", one_of({"normal", "pytorch"}),
      "normal: N(0, init_std^2) matrices and embeddings, zero biases; pytorch: PyTorch's defaults, "
      "projections and biases U(-1/sqrt(in), 1/sqrt(in)), embeddings N(0, 1) (MHA only)");
  key(KEY(model, bias), false, boolean(), "a bias on every projection, and on the head when untied (MHA only)");
  key(KEY(model, embed_norm), false, boolean(), "a norm (model.norm) after the token and position embeddings");
  key(KEY(model, tie_embeddings), true, boolean(),
      "true: logits = x tok_emb^T; false: an output head of its own (head [d_model, vocab])");
  key(KEY(model, residual), "sum", one_of({"sum", "weighted"}),
      "residual branches: sum = x + f(x); weighted = sqrt(1 - tau) * x + sqrt(tau) * f(x)");
  key(KEY(model, tau_attn), 0.01, open_unit(), "weighted residual: tau of the attention branch");
  key(KEY(model, tau_mlp), 0.5, open_unit(), "weighted residual: tau of the MLP branch");

  key(KEY(attention, type), "mha", one_of({"mha", "mla"}),
      "mha: multi-head (GQA with n_kv_heads < n_head); mla: multi-head latent attention, sizes in the mla section");
  key(KEY(attention, kernel), "flash", one_of({"dense", "flash"}),
      "flash: tiled online softmax, memory linear in context (the faster); dense: probabilities kept for backward");
  key(KEY(attention, query_scaling), "logits", one_of({"init", "query", "logits", "none", "both"}),
      "where the scale is applied: init = W_q init * scale; query = q * scale in the forward; "
      "logits = QK^T * scale; none; both = init and query (doubly scaled)");
  key(KEY(attention, scale), AttentionScale{"rsqrt_dhead", 0.0}, scale_rule(),
      "rsqrt_dhead = 1/sqrt(d_head), inv_dhead = 1/d_head, or the number itself");
  key(KEY(attention, n_kv_heads), 0, int_at_least(0), "key/value heads; 0 means n_head (MHA), fewer = GQA");
  key(KEY(attention, softcap), 0.0, non_negative(), "tanh soft-cap of the attention logits; 0 = off");
  key(KEY(attention, sinks), false, boolean(),
      "a learned logit per head (blocks.l.attn.sinks) in every softmax's sum, with no value; needs "
      "block_softmax.mode exact");
  key(KEY(attention, window), 0, int_at_least(0),
      "sliding window: a query sees the last this many positions (itself included); 0 = off");
  key(KEY(attention, chunk), 0, int_at_least(0),
      "chunked attention: causal inside chunks of this many positions, nothing across; 0 = off");
  key(KEY(attention, layer_pattern), {}, layer_pattern(),
      "per layer, repeated: local = window/chunk apply, global = causal only; [] = every layer local");
  key(KEY(attention, output_scale), OutputScaleRule{"none", 0.0}, output_scale_rule(),
      "multiplier on each row of softmax(s)·V: sqrt_dseq_over_e = sqrt(context/e) (unit variance for "
      "unit-normal q, k, v without a mask); causal = sqrt(n_i/e), n_i the keys row i sees; or the number");
  key(KEY(attention, block_softmax.mode), "exact", one_of({"exact", "none", "learned"}),
      "softmax per key block, then: exact = merged by their max/sum statistics (the full softmax); "
      "none = summed; learned = summed weighted by |softmax_scales[block, position]|");
  key(KEY(attention, block_softmax.blocks), 1, int_at_least(1),
      "key blocks the context is cut into (contiguous, sizes differ by at most 1); <= model.context");
  key(KEY(attention, block_softmax.per_head), false, boolean(),
      "learned: scales per head [n_head, blocks, context] instead of shared [blocks, context]");

  key(KEY(mla, q_lora_rank), 0, int_at_least(0),
      "query low rank: 0 = q from one matrix wq; > 0 = wq_a, RMSNorm, wq_b through this rank");
  key(KEY(mla, kv_lora_rank), 64, int_at_least(1), "width of the latent c_kv shared by every head's k^C and v");
  key(KEY(mla, qk_nope_head_dim), 32, int_at_least(1), "per-head q/k features without position (q^C, k^C)");
  key(KEY(mla, qk_rope_head_dim), 16, even_at_least(2),
      "per-head rotary q^R, and the one rotary key k^R all heads share");
  key(KEY(mla, v_head_dim), 32, int_at_least(1), "per-head value (and attention output) size");

  key(KEY(optimizer, name), "adamw", one_of({"adamw", "adafactor", "muon"}),
      "adamw; adafactor (knobs in the adafactor section); muon: Muon on the blocks' matrices, AdamW on the rest "
      "(knobs in the muon section)");
  key(KEY(optimizer, lr), 1e-3, positive(), "peak learning rate (with muon: of the AdamW parameters)");
  key(KEY(optimizer, beta1), 0.9, unit_from_zero(), "AdamW first-moment decay");
  key(KEY(optimizer, beta2), 0.99, unit_from_zero(), "AdamW second-moment decay");
  key(KEY(optimizer, eps), 1e-8, positive(), "AdamW: added to the second-moment root");
  key(KEY(optimizer, weight_decay), 0.1, non_negative(),
      "decoupled weight decay: theta *= 1 - lr * weight_decay before the update (every optimizer)");
  key(KEY(optimizer, decay_roles), {"matrix"}, roles(),
      "parameter roles weight decay applies to (embeddings, norm gains and biases are not matrices)");

  key(KEY(adafactor, decay_rate), 0.8, positive(), "second-moment decay beta2_t = 1 - t^(-decay_rate)");
  key(KEY(adafactor, eps1), 1e-30, positive(), "added to g^2 before the second-moment statistics");
  key(KEY(adafactor, eps2), 1e-3, non_negative(), "floor of the parameter scale max(eps2, RMS(param))");
  key(KEY(adafactor, clipping_threshold), 1.0, positive(), "updates are scaled down to RMS <= this");
  key(KEY(adafactor, multiply_by_parameter_scale), true, boolean(),
      "step size times max(eps2, RMS(param)) (relative updates)");
  key(KEY(adafactor, relative_step), false, boolean(),
      "step size min(1e-2, 1/sqrt(t)) instead of optimizer.lr and the schedule");
  key(KEY(adafactor, min_dim_size_to_factor), 128, int_at_least(1),
      "factor the second moment of a matrix when both of its last two dims are >= this");
  key(KEY(adafactor, beta1), 0.0, unit_from_zero(), "momentum on the scaled updates; 0 = none");

  key(KEY(muon, lr), 0.02, positive(),
      "Muon's peak learning rate; the schedule scales it as it scales optimizer.lr");
  key(KEY(muon, momentum), 0.95, unit_from_zero(), "momentum of the gradient buffer");
  key(KEY(muon, nesterov), true, boolean(), "orthogonalise g + momentum * buffer (Nesterov) instead of the buffer");
  key(KEY(muon, ns_steps), 5, int_in(0, 100), "Newton-Schulz iterations");

  key(KEY(schedule, kind), "cosine", one_of({"cosine", "linear", "constant"}), "LR decay after the warmup");
  key(KEY(schedule, warmup_steps), 100, int_at_least(0), "steps of linear warmup from 0 to optimizer.lr");
  key(KEY(schedule, min_lr), 1e-4, non_negative(), "LR at the end of cosine/linear decay");

  key(KEY(train, steps), 2000, int_at_least(1), "optimizer steps");
  key(KEY(train, batch_size), 12, int_at_least(1), "sequences per micro-batch");
  key(KEY(train, grad_accum), 1, int_at_least(1), "micro-batches per optimizer step");
  key(KEY(train, grad_clip), 1.0, non_negative(), "global-norm gradient clip; 0 = off");
  key(KEY(train, resume), "", any_text(), "checkpoint path to continue from; empty = start fresh");
  key(KEY(train, log_interval), 10, int_at_least(1), "steps between log lines");
  key(KEY(train, checkpoint_interval), 500, int_at_least(0), "steps between checkpoints; 0 = only at the end");
  key(KEY(train, freeze), {}, globs(), "parameter names not trained");
  key(KEY(train, trainable), {}, globs(),
      "when set, only parameters matching one of these train (e.g. [\"*.softmax_scales\"]); freeze still applies");
  key(KEY(train, init_from), "", any_text(),
      "checkpoint whose parameters start the run (by name; the model may add parameters it lacks); "
      "step, optimizer state and data position start fresh; ignored when resuming");
  key(KEY(train, qk_clip.enabled), false, boolean(),
      "QK-Clip after each optimizer step: rescale W_q/W_k heads whose max logit exceeded tau");
  key(KEY(train, qk_clip.tau), 100.0, positive(), "QK-Clip threshold on each head's pre-cap max attention logit");
  key(KEY(train, qk_clip.alpha), 0.5, unit_interval(),
      "QK-Clip: the query's share of the rescaling (gamma^alpha on W_q, gamma^(1-alpha) on W_k)");
  key(KEY(train, qk_clip.until_step), 0, int_at_least(0), "QK-Clip only through this step; 0 = every step");

  key(KEY(eval, interval), 250, int_at_least(1), "steps between validation-loss evaluations");
  key(KEY(eval, iters), 20, int_at_least(1), "batches per evaluation");
  key(KEY(eval, sample_tokens), 200, int_at_least(0), "tokens of text sampled at the end of training");

  key(KEY(precision, matmul), "f32", one_of({"f32", "bf16"}),
      "matmul operands: f32, or bf16 with f32 accumulation (weights, grads, optimizer state stay f32)");

  key(KEY(runtime, threads), 0, int_in(0, 1024), "OpenMP and oneDNN threads; 0 = all cores");
  key(KEY(runtime, matmul_forms), "measure", one_of({"measure", "direct"}),
      "each large product's form (direct, packed_b, split_k, transposed): measured once per machine, or always direct");
  key(KEY(runtime, matmul_forms_file), "", any_text(),
      "where measured forms are remembered; empty = the user cache (~/.cache/attnlab), none = this process only");
  key(KEY(runtime, attention_tiles), "auto", one_of({"auto", "avx512", "amx"}),
      "the flash kernel's bf16 products: AMX tiles where the CPU has them (auto), or AVX-512 BF16 registers");
  return std::move(key.rows);
}
#undef KEY

}  // namespace

const std::vector<KeyDef>& schema() {
  static const std::vector<KeyDef> rows = build_schema();
  return rows;
}

const KeyDef* find_key(const std::string& path) {
  for (const auto& k : schema())
    if (k.path == path) return &k;
  return nullptr;
}

std::vector<std::string> section_names() {
  std::vector<std::string> out;
  for (const auto& k : schema())
    if (out.empty() || out.back() != k.section) out.push_back(k.section);
  return out;
}

std::string emit_yaml(const RunConfig& cfg, bool with_help) {
  const size_t comment_col = 34;  // aligns the help comments of base.yaml
  std::string out, section, group;
  for (const auto& k : schema()) {
    if (k.section != section) {
      out += (section.empty() ? "" : "\n") + k.section + ":\n";
      section = k.section;
      group.clear();
    }
    // A key with a group (train.qk_clip.tau) is written nested under the group's name.
    const std::string rel = k.path.substr(k.section.size() + 1);
    const size_t dot = rel.find('.');
    const std::string key_group = dot == std::string::npos ? "" : rel.substr(0, dot);
    if (key_group != group && !key_group.empty()) out += "  " + key_group + ":\n";
    group = key_group;
    std::string line = (group.empty() ? "  " + rel : "    " + rel.substr(dot + 1)) + ": " + k.emit(cfg);
    if (with_help) {
      line.resize(std::max(line.size() + 1, comment_col), ' ');
      line += "# " + k.help;
      if (k.expected != "a string") line += " [" + k.expected + "]";
    }
    out += line + "\n";
  }
  return out;
}

bool integer_out_of_range(const YAML::Node& n) {
  if (!n.IsScalar()) return false;
  const std::string& s = n.Scalar();
  const size_t start = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  if (start == s.size() || s.find_first_not_of("0123456789", start) != std::string::npos) return false;
  int v;
  return !parse_value(n, v);
}

std::string format_number(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that round-trips
  std::string s(buf, end);
  // "1e-05" -> "1e-5", "1e+20" -> "1e20": same value, reads better.
  size_t e = s.find('e');
  if (e != std::string::npos) {
    std::string mant = s.substr(0, e), exp = s.substr(e + 1);
    bool neg = exp[0] == '-';
    size_t i = (exp[0] == '-' || exp[0] == '+') ? 1 : 0;
    while (i + 1 < exp.size() && exp[i] == '0') ++i;
    s = mant + "e" + (neg ? "-" : "") + exp.substr(i);
  }
  return s;
}

std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null: return "an empty value";
    case YAML::NodeType::Scalar: return quoted(node.Scalar());
    case YAML::NodeType::Sequence: {  // its items, so that the bad one shows: ["local", "foo"]
      if (node.size() == 0) return "an empty list";
      std::string items;
      for (const auto& item : node) {
        if (items.size() > 200) return "the list [" + items + ", ...]";
        items += (items.empty() ? "" : ", ") + describe_node(item);
      }
      return "the list [" + items + "]";
    }
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

namespace {
// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("modle").
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}
std::string leaf(const std::string& path) { return path.substr(path.rfind('.') + 1); }
}  // namespace

std::string closest_name(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(name, c);
    // The right key in the wrong section (model.lr -> optimizer.lr) counts as close.
    if (name.find('.') != std::string::npos && leaf(name) == leaf(c)) d = std::min<size_t>(d, 1);
    if (d < best_d) best_d = d, best = c;
  }
  return best_d <= std::max<size_t>(2, name.size() / 3) ? best : "";
}

}  // namespace attnlab::config

namespace attnlab {

RunConfig::RunConfig() {
  for (const auto& k : config::schema()) k.set_default(*this);
}

}  // namespace attnlab
