#include "train/setup.h"

#include <cmath>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "kernels/amx.h"
#include "kernels/gemm.h"
#include "optim/adafactor.h"
#include "optim/muon.h"
#include "util/check.h"

namespace attnlab {
namespace {

// One table per config choice. A word the schema allows but no table maps (a choice added to the
// schema and not here) is an InternalError naming the key, never a silent default.
template <class E>
E choice(const char* key, const std::string& word, std::initializer_list<std::pair<std::string_view, E>> table) {
  for (const auto& [w, e] : table)
    if (w == word) return e;
  ATTN_CHECK(false, "config key ", key, ": the schema allows \"", word, "\" but setup maps no value to it");
  return table.begin()->second;
}

}  // namespace

ModelSpec model_spec(const RunConfig& cfg, int vocab_size) {
  const auto& m = cfg.model;
  const auto& a = cfg.attention;
  ModelSpec s;
  s.vocab = vocab_size;
  s.context = m.context;
  s.n_layer = m.n_layer;
  s.n_head = m.n_head;
  s.n_kv_head = resolved_n_kv_heads(cfg);
  s.d_model = m.d_model;
  s.d_head = resolved_d_head(cfg);
  s.d_ff = resolved_d_ff(cfg);
  s.norm = choice<NormKind>("model.norm", m.norm, {{"layernorm", NormKind::layernorm}, {"rmsnorm", NormKind::rmsnorm}});
  s.norm_eps = float(m.norm_eps);
  s.mlp = choice<MlpKind>("model.mlp", m.mlp, {{"gelu", MlpKind::gelu}, {"swiglu", MlpKind::swiglu}});
  s.positions = choice<Positions>("model.positions", m.positions, {{"learned", Positions::learned}, {"rope", Positions::rope}});
  s.rope_base = float(m.rope_base);
  s.dropout = float(m.dropout);
  s.init_std = float(m.init_std);
  s.weighted_residual = m.residual == "weighted";
  s.pytorch_init = m.init == "pytorch";
  s.bias = m.bias;
  s.embed_norm = m.embed_norm;
  s.tied_head = m.tie_embeddings;
  s.tau_attn = float(m.tau_attn);
  s.tau_mlp = float(m.tau_mlp);
  s.query_scaling = choice<QueryScaling>("attention.query_scaling", a.query_scaling,
                           {{"init", QueryScaling::init},
                            {"query", QueryScaling::query},
                            {"logits", QueryScaling::logits},
                            {"none", QueryScaling::none},
                            {"both", QueryScaling::both}});
  s.attn_scale = float(attention_scale_value(cfg));
  s.softcap = float(a.softcap);
  s.sinks = a.sinks;
  s.kernel = choice<AttentionKernel>("attention.kernel", a.kernel, {{"dense", AttentionKernel::dense}, {"flash", AttentionKernel::flash}});
  s.attention = choice<AttentionType>("attention.type", a.type, {{"mha", AttentionType::mha}, {"mla", AttentionType::mla}});
  s.block.mode = choice<BlockSoftmaxMode>("attention.block_softmax.mode", a.block_softmax.mode,
                                         {{"exact", BlockSoftmaxMode::exact},
                                          {"none", BlockSoftmaxMode::none},
                                          {"learned", BlockSoftmaxMode::learned}});
  s.block.blocks = a.block_softmax.blocks;
  s.mask = {a.window, a.chunk};
  for (const std::string& w : a.layer_pattern) s.layer_local.push_back(w == "local");
  const OutputScaleRule& os = a.output_scale;
  if (os.name == "none") {
    s.output_scale = {};
  } else if (os.name == "sqrt_dseq_over_e") {  // the source's constant, with d_seq = the context
    s.output_scale = {OutputScale::constant, float(std::sqrt(double(m.context) / std::exp(1.0)))};
  } else if (os.name == "causal") {
    s.output_scale = {OutputScale::causal, 1.f};
  } else {
    ATTN_CHECK(os.name.empty(), "attention.output_scale: the schema allows \"", os.name, "\" but setup maps nothing to it");
    s.output_scale = {OutputScale::constant, float(os.value)};
  }
  s.block_per_head = a.block_softmax.per_head;
  s.mla.q_lora_rank = cfg.mla.q_lora_rank;
  s.mla.kv_lora_rank = cfg.mla.kv_lora_rank;
  s.mla.qk_nope_head_dim = cfg.mla.qk_nope_head_dim;
  s.mla.qk_rope_head_dim = cfg.mla.qk_rope_head_dim;
  s.mla.v_head_dim = cfg.mla.v_head_dim;
  return s;
}

std::unique_ptr<Optimizer> make_optimizer(const RunConfig& cfg, ParamStore& store) {
  const auto& o = cfg.optimizer;
  std::vector<Role> decay_roles;
  for (const std::string& r : o.decay_roles)
    decay_roles.push_back(choice<Role>("optimizer.decay_roles", r,
                                       {{"matrix", Role::matrix},
                                        {"embedding", Role::embedding},
                                        {"gain", Role::gain},
                                        {"bias", Role::bias},
                                        {"scale", Role::scale}}));
  AdamWConfig adamw;  // AdamW itself, and Muon's AdamW group
  adamw.beta1 = float(o.beta1);
  adamw.beta2 = float(o.beta2);
  adamw.eps = float(o.eps);
  adamw.weight_decay = float(o.weight_decay);
  adamw.decay_roles = decay_roles;
  if (o.name == "muon") {
    MuonConfig c;
    c.lr_ratio = float(cfg.muon.lr / o.lr);
    c.momentum = float(cfg.muon.momentum);
    c.nesterov = cfg.muon.nesterov;
    c.ns_steps = cfg.muon.ns_steps;
    c.adamw = adamw;
    return std::make_unique<Muon>(store, c);
  }
  if (o.name == "adafactor") {
    const auto& a = cfg.adafactor;
    AdafactorConfig c;
    c.decay_rate = float(a.decay_rate);
    c.eps1 = float(a.eps1);
    c.eps2 = float(a.eps2);
    c.clipping_threshold = float(a.clipping_threshold);
    c.multiply_by_parameter_scale = a.multiply_by_parameter_scale;
    c.relative_step = a.relative_step;
    c.min_dim_size_to_factor = a.min_dim_size_to_factor;
    c.beta1 = float(a.beta1);
    c.weight_decay = float(o.weight_decay);
    c.decay_roles = decay_roles;
    return std::make_unique<Adafactor>(store, c);
  }
  ATTN_CHECK(o.name == "adamw", "config key optimizer.name: the schema allows \"", o.name,
             "\" but setup maps no optimizer to it");
  return std::make_unique<AdamW>(store, adamw);
}

Schedule make_schedule(const RunConfig& cfg) {
  Schedule s;
  const auto& k = cfg.schedule.kind;
  s.kind = choice<ScheduleKind>("schedule.kind", k,
                  {{"cosine", ScheduleKind::cosine}, {"linear", ScheduleKind::linear}, {"constant", ScheduleKind::constant}});
  s.lr = cfg.optimizer.lr;
  s.min_lr = cfg.schedule.min_lr;
  s.warmup = cfg.schedule.warmup_steps;
  s.total = cfg.train.steps;
  return s;
}

int apply_runtime(const RunConfig& cfg) {
  const int n = resolved_threads(cfg);
  kernels::set_num_threads(n);
  kernels::set_matmul_precision(choice<kernels::MatmulPrecision>("precision.matmul", cfg.precision.matmul,
                                       {{"f32", kernels::MatmulPrecision::f32}, {"bf16", kernels::MatmulPrecision::bf16}}));
  kernels::set_matmul_forms(cfg.runtime.matmul_forms == "measure", matmul_forms_file(cfg));
  const std::string& tiles = cfg.runtime.attention_tiles;
  if (tiles == "amx" && !kernels::amx_bf16_usable())
    throw ConfigError("runtime.attention_tiles: amx, but this CPU has no AMX-BF16 (or the kernel did not grant its tile "
                      "state); use auto or avx512");
  kernels::set_flash_bf16_path(tiles == "avx512" || !kernels::amx_bf16_usable() ? kernels::FlashBf16Path::avx512
                                                                                 : kernels::FlashBf16Path::amx);
  return n;
}

std::string matmul_forms_file(const RunConfig& cfg) {
  const std::string& f = cfg.runtime.matmul_forms_file;
  if (f == "none") return "";
  if (!f.empty()) return f;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/attnlab/matmul_forms.tsv";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/attnlab/matmul_forms.tsv";
  return "";
}

}  // namespace attnlab
