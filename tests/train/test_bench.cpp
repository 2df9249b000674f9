// `attnlab bench`: the step's products, each with its form, calls and time, in text and JSON.
#include "kernels/gemm.h"
#include "train/bench.h"
#include "train/train_testing.h"

using namespace attnlab;
using namespace attnlab::testing;

TEST_CASE("bench lists every product of the step with its form, calls and GFLOP/s", "[train][bench]") {
  TempDir dir;
  const std::string cfg = write_tiny_config(dir, 4);
  kernels::forget_matmul_forms();
  // Large enough products for their forms to be measured (kernels::kFormMinFlops), on two threads.
  const BenchResult r = bench(load_config(cfg, {"model.d_model=64", "model.context=32", "train.batch_size=64",
                                                "runtime.threads=2", "runtime.matmul_forms_file=none"}),
                              2, 1);
  REQUIRE(!r.products.empty());
  double product_seconds = 0;
  bool has_mlp_dw = false;
  for (const kernels::ProductStat& p : r.products) {
    INFO(p.product);
    CHECK((p.form == "direct" || p.form == "packed_b" || p.form == "split_k" || p.form == "transposed"));
    CHECK(p.calls % 2 == 0);  // every product runs the same number of times in each of the 2 steps
    CHECK(p.seconds > 0);
    CHECK(p.flops > 0);
    product_seconds += p.seconds;
    if (p.product == "[64x2048](stored T) . [2048x256] f32") has_mlp_dw = true;
  }
  // The MLP's first weight gradient, xᵀ·dh = [64 x 2048]·[2048 x 256] (67 MFLOP), had its form measured.
  CHECK(has_mlp_dw);
  CHECK(kernels::matmul_forms_text().find("M=64 N=256 K=2048 ") != std::string::npos);
  // Largest time first; the products are the matmul phase's time.
  for (size_t i = 1; i < r.products.size(); ++i) CHECK(r.products[i - 1].seconds >= r.products[i].seconds);
  CHECK(product_seconds <= r.phase_ms[size_t(Phase::matmul)] * r.steps / 1e3 * 1.001);
  const std::string text = bench_text(r), json = bench_json(r);
  CHECK(text.find("products (per step") != std::string::npos);
  CHECK(text.find(r.products[0].product) != std::string::npos);
  CHECK(json.find("\"products\": [{\"product\": \"" + r.products[0].product + "\", \"form\": \"" +
                  r.products[0].form + "\"") != std::string::npos);
  CHECK(json.back() == '}');
  kernels::forget_matmul_forms();
}
