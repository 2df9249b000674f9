#pragma once
// The run configuration: typed sections mirroring the YAML sections, and the loader.
// Every key (name, default, allowed values, help) is defined once, in the schema rows of
// src/config/schema.cpp; the structs below only hold values. A default-constructed RunConfig
// holds the schema defaults. Every problem with user input throws ConfigError (one line, naming
// file:line:col or the override, the key, what is allowed and what was found).
#include <string>
#include <vector>

namespace attnlab {

struct RunSection {
  std::string name;     // files go to <out_dir>/<name>/
  std::string out_dir;
  int seed{};
  bool operator==(const RunSection&) const = default;
};

struct DataSection {
  std::string path;     // relative paths are relative to the current directory
  double val_fraction{};
  std::string vocab;      // corpus | bytes
  std::string packing;    // none | separator
  std::string separator;  // ends a document when packing is separator
  bool operator==(const DataSection&) const = default;
};

struct ModelSection {
  int n_layer{}, n_head{}, d_model{};
  int d_head{};         // 0: d_model / n_head (use resolved_d_head)
  int d_ff{};           // 0: 4 * d_model (use resolved_d_ff)
  int context{};
  std::string norm;     // layernorm | rmsnorm
  double norm_eps{};
  std::string mlp;      // gelu | swiglu
  std::string positions;  // learned | rope
  double rope_base{};
  double dropout{};
  double init_std{};
  std::string residual;  // sum | weighted
  std::string init;      // normal | pytorch
  bool bias{}, embed_norm{}, tie_embeddings{};
  double tau_attn{}, tau_mlp{};
  bool operator==(const ModelSection&) const = default;
};

// attention.scale: a named rule, or a number when `name` is empty (use attention_scale_value).
struct AttentionScale {
  std::string name;     // "rsqrt_dhead" | "inv_dhead" | "" (then `value` is the scale)
  double value{};
  bool operator==(const AttentionScale&) const = default;
};

// attention.output_scale: a named rule (none, sqrt_dseq_over_e, causal), or a number when `name` is
// empty (src/ops/attention.h, docs/almost_scaled.md).
struct OutputScaleRule {
  std::string name;
  double value{};
  bool operator==(const OutputScaleRule&) const = default;
};

// The block softmax (src/ops/attention.h, docs/learned_softmax.md).
struct BlockSoftmaxSection {
  std::string mode;  // exact | none | learned
  int blocks{};      // key blocks over the context; 1 with exact: the plain softmax
  bool per_head{};   // learned: one scale tensor per head
  bool operator==(const BlockSoftmaxSection&) const = default;
};

struct AttentionSection {
  std::string type;           // mha | mla (sizes in MlaSection)
  std::string kernel;         // flash
  std::string query_scaling;  // init | query | logits | none | both: where the scale is applied
  AttentionScale scale;
  int n_kv_heads{};           // 0: n_head (use resolved_n_kv_heads)
  double softcap{};           // 0: off
  bool sinks{};               // a learned sink logit per head
  int window{}, chunk{};      // local masks; 0: off
  std::vector<std::string> layer_pattern;  // local | global per layer, repeated; empty: all local
  OutputScaleRule output_scale;
  BlockSoftmaxSection block_softmax;
  bool operator==(const AttentionSection&) const = default;
};

// MLA's sizes (used when attention.type is mla; src/nn/attention.h, docs/mla.md).
struct MlaSection {
  int q_lora_rank{};          // 0: q = h·wq
  int kv_lora_rank{}, qk_nope_head_dim{}, qk_rope_head_dim{}, v_head_dim{};
  bool operator==(const MlaSection&) const = default;
};

struct OptimizerSection {
  std::string name;     // adamw | adafactor | muon
  double lr{}, beta1{}, beta2{}, eps{}, weight_decay{};
  std::vector<std::string> decay_roles;  // parameter roles weight decay applies to (matrix, ...)
  bool operator==(const OptimizerSection&) const = default;
};

// Muon's knobs (used when optimizer.name is muon; src/optim/muon.h).
struct MuonSection {
  double lr{}, momentum{};
  bool nesterov{};
  int ns_steps{};
  bool operator==(const MuonSection&) const = default;
};

// Adafactor's knobs (used when optimizer.name is adafactor; src/optim/adafactor.h).
struct AdafactorSection {
  double decay_rate{}, eps1{}, eps2{}, clipping_threshold{};
  bool multiply_by_parameter_scale{};
  bool relative_step{};
  int min_dim_size_to_factor{};
  double beta1{};
  bool operator==(const AdafactorSection&) const = default;
};

struct ScheduleSection {
  std::string kind;     // cosine | linear | constant
  int warmup_steps{};
  double min_lr{};
  bool operator==(const ScheduleSection&) const = default;
};

// QK-Clip after each optimizer step (src/train/qk_clip.h, docs/qk_clip.md).
struct QkClipSection {
  bool enabled{};
  double tau{}, alpha{};
  int until_step{};  // 0: every step; else only steps 1..until_step
  bool operator==(const QkClipSection&) const = default;
};

struct TrainSection {
  int steps{}, batch_size{}, grad_accum{};
  double grad_clip{};   // 0: off
  std::string resume;   // "" : start fresh
  int log_interval{};
  int checkpoint_interval{};  // 0: only at the end
  std::vector<std::string> freeze;  // glob patterns of parameter names not trained
  std::vector<std::string> trainable;  // when not empty: only parameters matching one of these train
  std::string init_from;  // checkpoint whose parameters initialise the model ("": none)
  QkClipSection qk_clip;
  bool operator==(const TrainSection&) const = default;
};

struct EvalSection {
  int interval{}, iters{}, sample_tokens{};
  bool operator==(const EvalSection&) const = default;
};

struct PrecisionSection {
  std::string matmul;   // f32
  bool operator==(const PrecisionSection&) const = default;
};

struct RuntimeSection {
  int threads{};        // 0: all cores (use resolved_threads)
  std::string matmul_forms;       // measure | direct (kernels/gemm.h, matmul forms)
  std::string matmul_forms_file;  // "" = the user's cache directory, "none" = this process only
  std::string attention_tiles;    // auto | avx512 | amx (kernels/amx.h, the flash kernel's bf16 products)
  bool operator==(const RuntimeSection&) const = default;
};

struct RunConfig {
  RunSection run;
  DataSection data;
  ModelSection model;
  AttentionSection attention;
  MlaSection mla;
  OptimizerSection optimizer;
  AdafactorSection adafactor;
  MuonSection muon;
  ScheduleSection schedule;
  TrainSection train;
  EvalSection eval;
  PrecisionSection precision;
  RuntimeSection runtime;
  RunConfig();  // the schema defaults (no validation needed: the defaults pass every check)
  bool operator==(const RunConfig&) const = default;
};

struct LoadedConfig {
  RunConfig cfg;
  std::string resolved_yaml;         // every key with its final value, in base.yaml's layout
  std::vector<std::string> sources;  // files read, base first
};

// Reads `path` (following base_config chains), then applies "key.path=value" overrides, then
// runs the cross-key checks.
LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// NOTE [relative paths]: a relative data.path (or train.init_from) is relative to the working
// directory of the command that loads the config. Everything a run stores (config.yaml, the run log's and the checkpoint's
// config, a sweep's point.yaml) holds it made absolute by this function, so eval, sample, grads, a
// resume or a Slurm task read the same file from any working directory. run.out_dir stays as
// written: relative to the working directory (a sweep's emitted scripts cd to where they were made).
LoadedConfig with_absolute_data_path(LoadedConfig c);
// The schema defaults, as if loaded from an empty file.
LoadedConfig default_config();
// Parses YAML text (e.g. a checkpoint's stored resolved_yaml); `origin_name` names it in errors
// and a relative base_config in it is taken relative to origin_name's directory.
LoadedConfig config_from_yaml_text(const std::string& yaml_text, const std::string& origin_name,
                                   const std::vector<std::string>& overrides = {});
// Every section and key with its value, in base.yaml's layout (no comments).
std::string config_yaml(const RunConfig& cfg);
// The keys whose values differ between two configs, in base.yaml's order, each with its value in
// a and in b as config_yaml writes them.
struct ConfigDifference {
  std::string key;  // "optimizer.lr"
  std::string a, b;
};
std::vector<ConfigDifference> config_differences(const RunConfig& a, const RunConfig& b);
// Header comment, then every section and key with its default and a "# help [allowed]"
// comment: the content of configs/base.yaml.
std::string schema_reference_yaml();
// The allowed words of a key that takes one of a list ("attention.type": mha, mla); empty for
// other keys. Lets tests check that every choice maps to something.
std::vector<std::string> config_choices(const std::string& key);
// Every key that takes one of a list.
std::vector<std::string> choice_keys();

// Derived values: the "0 means ..." rules in one place.
// rsqrt_dhead: 1/sqrt(d), inv_dhead: 1/d, d = resolved_qk_head_dim
double attention_scale_value(const RunConfig&);
int resolved_d_head(const RunConfig&);           // model.d_head, or d_model / n_head when 0
int resolved_qk_head_dim(const RunConfig&);      // the q·k size: d_head, or MLA's qk_nope + qk_rope
int resolved_d_ff(const RunConfig&);             // model.d_ff, or 4 * d_model when 0
int resolved_n_kv_heads(const RunConfig&);       // attention.n_kv_heads, or n_head when 0
int resolved_threads(const RunConfig&);          // runtime.threads, or all hardware threads when 0

}  // namespace attnlab
