// attnlab probe attention-scale: the figures of the almost-scaled attention post, from the op.
#include <catch2/catch.hpp>
#include <cmath>

#include "train/probe.h"

using namespace attnlab;

TEST_CASE("probe attention-scale: sigma sqrt(e/d_seq) unscaled, about 1 with sqrt(d_seq/e), and the limits",
          "[probe]") {
  AttentionScaleProbeOptions o;
  o.samples = 32;
  o.temperatures = {1.0 / 64, 1.0, 64.0};
  const AttentionScaleProbe p = probe_attention_scale(o);
  const double S = double(o.d_seq);
  CHECK(p.sigma_plain == Approx(std::sqrt(std::exp(1.0) / S)).epsilon(0.08));  // 0.103 at d_seq 256
  CHECK(p.sigma_scaled == Approx(1.0).epsilon(0.06));
  REQUIRE(p.causal_none.size() == size_t(o.d_seq));
  // Causal: position 0 sees one key, y = v (σ 1) or c·v; later rows average more keys.
  CHECK(p.causal_none[0] == Approx(1.0).epsilon(0.05));
  CHECK(p.causal_dseq[0] == Approx(std::sqrt(S / std::exp(1.0))).epsilon(0.05));
  CHECK(p.causal_causal[0] == Approx(std::sqrt(1 / std::exp(1.0))).epsilon(0.05));
  CHECK(p.causal_causal[o.d_seq - 1] == Approx(1.0).epsilon(0.1));
  CHECK(p.causal_none[o.d_seq - 1] < 0.15);
  // Temperature: uniform weights as t → 0 (the mean of d_seq values), one-hot as t → ∞.
  CHECK(p.temp_none[0] == Approx(1 / std::sqrt(S)).epsilon(0.05));
  CHECK(p.temp_none[1] == Approx(p.sigma_plain).epsilon(1e-6));
  CHECK(p.temp_none[2] == Approx(1.0).epsilon(0.05));
  CHECK(p.temp_model[0] == Approx(1 / std::sqrt(S)).epsilon(1e-3));
  CHECK(p.temp_model[2] == 1.0);
}
