#include "train/setup.h"

#include "kernels/gemm.h"
#include "optim/adafactor.h"
#include "util/check.h"

namespace attnlab {

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
  s.norm = m.norm == "rmsnorm" ? NormKind::rmsnorm : NormKind::layernorm;
  s.norm_eps = float(m.norm_eps);
  s.mlp = m.mlp == "swiglu" ? MlpKind::swiglu : MlpKind::gelu;
  s.positions = m.positions == "rope" ? Positions::rope : Positions::learned;
  s.rope_base = float(m.rope_base);
  s.dropout = float(m.dropout);
  s.init_std = float(m.init_std);
  const std::string& q = a.query_scaling;
  s.query_scaling = q == "init"    ? QueryScaling::init
                    : q == "query" ? QueryScaling::query
                    : q == "none"  ? QueryScaling::none
                    : q == "both"  ? QueryScaling::both
                                   : QueryScaling::logits;
  s.attn_scale = float(attention_scale_value(cfg));
  s.softcap = float(a.softcap);
  s.kernel = a.kernel == "flash" ? AttentionKernel::flash : AttentionKernel::dense;
  return s;
}

std::unique_ptr<Optimizer> make_optimizer(const RunConfig& cfg, ParamStore& store) {
  const auto& o = cfg.optimizer;
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
    c.no_decay = o.no_decay;
    return std::make_unique<Adafactor>(store, c);
  }
  ATTN_CHECK(o.name == "adamw", "unknown optimizer ", o.name);
  AdamWConfig c;
  c.beta1 = float(o.beta1);
  c.beta2 = float(o.beta2);
  c.eps = float(o.eps);
  c.weight_decay = float(o.weight_decay);
  c.no_decay = o.no_decay;
  return std::make_unique<AdamW>(store, c);
}

Schedule make_schedule(const RunConfig& cfg) {
  Schedule s;
  const auto& k = cfg.schedule.kind;
  s.kind = k == "linear" ? ScheduleKind::linear : k == "constant" ? ScheduleKind::constant : ScheduleKind::cosine;
  s.lr = cfg.optimizer.lr;
  s.min_lr = cfg.schedule.min_lr;
  s.warmup = cfg.schedule.warmup_steps;
  s.total = cfg.train.steps;
  return s;
}

int apply_runtime(const RunConfig& cfg) {
  const int n = resolved_threads(cfg);
  kernels::set_num_threads(n);
  kernels::set_matmul_precision(cfg.precision.matmul == "bf16" ? kernels::MatmulPrecision::bf16
                                                               : kernels::MatmulPrecision::f32);
  return n;
}

}  // namespace attnlab
