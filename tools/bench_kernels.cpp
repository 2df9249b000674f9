// Building-block speed: GFLOP/s of attnlab's linear (forward + both backward products) next to
// raw oneDNN matmul primitives on the same shapes, and of the attention op forward + backward.
//   build/bench_kernels [--reps N] [--threads N] [--attention-only] [--bf16 [--tiles avx512|amx]] [--shape B,H,T,D]
//   build/bench_kernels --window W [--shape B,H,T,D]   flash with a sliding window of W against causal
//   build/bench_kernels --newton-schulz [--bf16]   Muon's NS5 on the mid and baby-gpt matrices
// --bf16 runs the attention table with bf16 products (precision.matmul=bf16); the linear table
// compares f32 products with f32 primitives either way. --tiles forces the flash kernel's bf16
// products onto AVX-512 BF16 registers or AMX tiles (default: AMX where the CPU has it).
// Prints a Markdown table (docs/performance.md records one with the command that produced it).
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <span>
#include <utility>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

#include "autograd/tape.h"
#include "kernels/amx.h"
#include "kernels/gemm.h"
#include "ops/ops.h"
#include "optim/muon.h"
#include "util/rng.h"
#include "util/timer.h"

using namespace attnlab;

namespace {

// Median seconds of `reps` calls after 3 warm-up calls.
double time_median(int reps, const std::function<void()>& f) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    Timer timer;
    f();
    t.push_back(timer.seconds());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void fill(float* p, int64_t n, uint64_t seed) {
  Rng r(seed, 1);
  for (int64_t i = 0; i < n; ++i) p[i] = float(r.normal());
}

// Median seconds of f and of g, timed alternately (f, g, f, g, ...) so that drifts in clock speed
// and background load hit both alike.
std::pair<double, double> time_alternating(int reps, const std::function<void()>& f, const std::function<void()>& g) {
  for (int i = 0; i < 3; ++i) f(), g();
  std::vector<double> tf, tg;
  for (int i = 0; i < reps; ++i) {
    Timer a;
    f();
    tf.push_back(a.seconds());
    Timer b;
    g();
    tg.push_back(b.seconds());
  }
  std::sort(tf.begin(), tf.end());
  std::sort(tg.begin(), tg.end());
  return {tf[tf.size() / 2], tg[tg.size() / 2]};
}

// attnlab's linear (forward, then backward into dx and the accumulated dW) against raw oneDNN
// (y = x·W, dx = dy·Wᵀ, dW = xᵀ·dy as three plain primitives, memory objects made once).
std::pair<double, double> linear_vs_raw_seconds(int64_t M, int64_t K, int64_t N, int reps) {
  using dt = dnnl::memory::data_type;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  auto md = [](int64_t r, int64_t c, bool t) {
    return dnnl::memory::desc({r, c}, dt::f32, t ? dnnl::memory::dims{1, r} : dnnl::memory::dims{c, 1});
  };
  std::vector<float> x(M * K), w(K * N), y(M * N), dy(M * N), dx(M * K), dw(K * N);
  fill(x.data(), M * K, 1);
  fill(w.data(), K * N, 2);
  fill(dy.data(), M * N, 3);
  struct Prim {
    dnnl::matmul p;
    std::unordered_map<int, dnnl::memory> args;
  };
  auto make = [&](dnnl::memory::desc a, dnnl::memory::desc b, dnnl::memory::desc c, float* pa, float* pb, float* pc) {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), eng);
    return Prim{dnnl::matmul(pd),
                {{DNNL_ARG_SRC, dnnl::memory(a, eng, pa)},
                 {DNNL_ARG_WEIGHTS, dnnl::memory(b, eng, pb)},
                 {DNNL_ARG_DST, dnnl::memory(c, eng, pc)}}};
  };
  Prim fwd = make(md(M, K, false), md(K, N, false), md(M, N, false), x.data(), w.data(), y.data());
  // dx[M,K] = dy[M,N] · Wᵀ: W stored [K,N], read as [N,K] transposed.
  Prim bx = make(md(M, N, false), dnnl::memory::desc({N, K}, dt::f32, dnnl::memory::dims{1, N}), md(M, K, false),
                 dy.data(), w.data(), dx.data());
  // dW[K,N] = xᵀ · dy: x stored [M,K], read as [K,M] transposed.
  Prim bw = make(dnnl::memory::desc({K, M}, dt::f32, dnnl::memory::dims{1, K}), md(M, N, false), md(K, N, false),
                 x.data(), dy.data(), dw.data());
  auto raw = [&] {
    fwd.p.execute(s, fwd.args);
    bx.p.execute(s, bx.args);
    bw.p.execute(s, bw.args);
    s.wait();
  };
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  // As in a training step: x's grad is an activation gradient and W's a parameter gradient after
  // zero_grad(), so both products write into unwritten buffers (NOTE [grad buffers]).
  std::vector<float> xg(M * K), wg(K * N);
  GradBuffer xb{xg.data(), M * K}, wb{wg.data(), K * N};
  Tensor xt(x.data(), &xb, {M, K}), wt(w.data(), &wb, {K, N});
  auto ours = [&] {
    arena.reset();
    xb.written = wb.written = false;
    Tensor yt = linear(xt, wt);
    backward_from(yt, dy.data());
  };
  return time_alternating(reps, ours, raw);
}

// One attention forward + backward on fixed inputs, as in a training step.
class AttentionCase {
 public:
  AttentionCase(int64_t B, int64_t T, int64_t H, int64_t D, AttentionKernel kernel, int64_t window)
      : n_(B * T * H * D), kernel_(kernel), window_(window), q_(n_), k_(n_), v_(n_), dy_(n_), dq_(n_), dk_(n_),
        dv_(n_), qb_{dq_.data(), n_}, kb_{dk_.data(), n_}, vb_{dv_.data(), n_},
        qt_(q_.data(), &qb_, {B, T, H, D}), kt_(k_.data(), &kb_, {B, T, H, D}), vt_(v_.data(), &vb_, {B, T, H, D}) {
    fill(q_.data(), n_, 1);
    fill(k_.data(), n_, 2);
    fill(v_.data(), n_, 3);
    fill(dy_.data(), n_, 4);
  }
  void run() {
    ArenaScope as(arena_);
    Tape tape;
    TapeScope ts(tape);
    arena_.reset();
    // As in a training step, where q, k and v are the projections' outputs: their grads are
    // written for the first time by the attention's backward (NOTE [grad buffers]).
    qb_.written = kb_.written = vb_.written = false;
    AttentionOptions o(1.f / 8.f);
    o.kernel = kernel_;
    o.mask.window = window_;
    Tensor y = attention(qt_, kt_, vt_, o);
    backward_from(y, dy_.data());
  }
  // The arena's high water with q, k and v: inputs, output and what the kernel keeps for backward.
  double arena_mb() const { return double(arena_.high_water() + 3 * size_t(n_) * sizeof(float)) / (1 << 20); }

 private:
  int64_t n_;
  AttentionKernel kernel_;
  int64_t window_;
  Arena arena_;
  std::vector<float> q_, k_, v_, dy_, dq_, dk_, dv_;
  GradBuffer qb_, kb_, vb_;
  Tensor qt_, kt_, vt_;
};

// Median seconds of attention forward + backward; `arena_mb` receives the arena's high water.
double attention_seconds(int64_t B, int64_t T, int64_t H, int64_t D, int reps, AttentionKernel kernel,
                         double& arena_mb, int64_t window = 0) {
  AttentionCase c(B, T, H, D, kernel, window);
  const double t = time_median(reps, [&] { c.run(); });
  arena_mb = c.arena_mb();
  return t;
}

// Muon's Newton–Schulz (5 iterations) on the groups of same-shaped matrices Muon forms for the mid
// and baby-gpt presets (6 layers: 24 attention projections, 12 MLP matrices oriented wide): one
// batched product per iteration step against one call per matrix. GFLOP/s of the 15 products per
// matrix (per iteration 2·m²n + 2·m³ + 2·m²n, m ≤ n).
int newton_schulz_table(int reps, bool bf16) {
  if (bf16) kernels::set_matmul_precision(kernels::MatmulPrecision::bf16);
  std::printf("| NS5 on B × [m×n]%s | batched ms | GFLOP/s | one at a time ms | GFLOP/s |\n|---|---|---|---|---|\n",
              bf16 ? " (bf16 products)" : "");
  const int64_t groups[][3] = {{24, 256, 256}, {12, 256, 1024}, {24, 384, 384}, {12, 384, 1536}};
  for (auto [B, m, n] : groups) {
    std::vector<float> x(B * m * n), init(B * m * n), scratch(ns_batch_scratch_floats(B, m, n));
    fill(init.data(), B * m * n, 9);
    const auto [t_batch, t_single] = time_alternating(
        reps,
        [&] {
          std::copy(init.begin(), init.end(), x.begin());
          newton_schulz5_wide(x.data(), B, m, n, 5, scratch.data());
        },
        [&] {
          std::copy(init.begin(), init.end(), x.begin());
          for (int64_t i = 0; i < B; ++i) newton_schulz5_wide(x.data() + i * m * n, 1, m, n, 5, scratch.data());
        });
    const double flops = double(B) * 5 * (4.0 * m * m * n + 2.0 * m * m * m);
    std::printf("| %lld × [%lld×%lld] | %.1f | %.1f | %.1f | %.1f |\n", (long long)B, (long long)m, (long long)n,
                t_batch * 1e3, flops / t_batch / 1e9, t_single * 1e3, flops / t_single / 1e9);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 20, threads = omp_get_max_threads();
  bool linear_table = true, bf16_attention = false, newton_schulz = false;
  int64_t window = 0;
  // Attention B, H, T, D: the default run's shape (batch 12, 4 heads of 32, context 64), 8192
  // tokens at growing context, then one layer of the mid and baby-gpt benchmark presets.
  std::vector<std::array<int64_t, 4>> attn_shapes = {{12, 4, 64, 32}, {128, 4, 64, 64}, {32, 4, 256, 64},
                                                     {8, 4, 1024, 64}, {32, 8, 128, 32}, {64, 6, 256, 64}};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--attention-only")) linear_table = false;
    else if (i + 1 < argc && !std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[++i]);
    else if (i + 1 < argc && !std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--bf16")) bf16_attention = true;
    else if (i + 1 < argc && !std::strcmp(argv[i], "--tiles") && !std::strcmp(argv[i + 1], "avx512"))
      kernels::set_flash_bf16_path(kernels::FlashBf16Path::avx512), ++i;
    else if (i + 1 < argc && !std::strcmp(argv[i], "--tiles") && !std::strcmp(argv[i + 1], "amx"))
      kernels::set_flash_bf16_path(kernels::FlashBf16Path::amx), ++i;
    else if (!std::strcmp(argv[i], "--newton-schulz")) newton_schulz = true;
    else if (i + 1 < argc && !std::strcmp(argv[i], "--window")) window = std::atoll(argv[++i]);
    else if (std::array<long long, 4> s; i + 1 < argc && !std::strcmp(argv[i], "--shape") &&
             std::sscanf(argv[i + 1], "%lld,%lld,%lld,%lld", &s[0], &s[1], &s[2], &s[3]) == 4 && s[0] > 0 &&
             s[1] > 0 && s[2] > 0 && s[3] > 0) {
      attn_shapes = {{s[0], s[1], s[2], s[3]}};  // one attention shape only, no linear table
      linear_table = false;
      ++i;
    } else {
      std::fprintf(stderr, "usage: bench_kernels [--reps N] [--threads N] [--attention-only] [--bf16] [--shape B,H,T,D] "
                           "[--tiles avx512|amx] [--newton-schulz] [--window W]\n");
      return 2;
    }
  }
  kernels::set_num_threads(threads);
  if (newton_schulz) {
    std::printf("threads %d, median of %d repetitions\n\n", threads, reps);
    return newton_schulz_table(reps, bf16_attention);
  }
  if (window > 0) {  // the flash kernel with a sliding window against the causal mask, growing T
    if (bf16_attention) kernels::set_matmul_precision(kernels::MatmulPrecision::bf16);
    // Every shape's causal and window runs take turns within each repetition, so that a change in
    // the machine's speed during the measurement moves all of them alike; medians per run.
    const std::vector<std::array<int64_t, 4>> window_shapes = {{1, 4, 1024, 64}, {1, 4, 2048, 64}, {1, 4, 4096, 64}};
    const auto& shapes = attn_shapes.size() == 1 ? attn_shapes : window_shapes;
    std::vector<std::unique_ptr<AttentionCase>> cases;
    for (auto [B, H, T, D] : shapes) {
      cases.push_back(std::make_unique<AttentionCase>(B, T, H, D, AttentionKernel::flash, 0));
      cases.push_back(std::make_unique<AttentionCase>(B, T, H, D, AttentionKernel::flash, window));
    }
    std::vector<std::vector<double>> seconds(cases.size());
    for (auto& c : cases) c->run();  // warm-up
    for (int r = 0; r < reps; ++r)
      for (size_t i = 0; i < cases.size(); ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        cases[i]->run();
        seconds[i].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    auto median = [](std::vector<double> x) {
      std::sort(x.begin(), x.end());
      return x[x.size() / 2];
    };
    std::printf("threads %d, median of %d repetitions, the shapes interleaved\n\n| flash fwd+bwd%s B×H, T, D | "
                "causal ms | window %lld ms | causal / window | window ms / first row's |\n|---|---|---|---|---|\n",
                threads, reps, bf16_attention ? " (bf16 products)" : "", (long long)window);
    const double first_window = median(seconds[1]);
    for (size_t x = 0; x < shapes.size(); ++x) {
      const auto [B, H, T, D] = shapes[x];
      const double causal = median(seconds[2 * x]), local = median(seconds[2 * x + 1]);
      std::printf("| %lld×%lld, %lld, %lld | %.2f | %.2f | %.2f× | %.2f× |\n", (long long)B, (long long)H,
                  (long long)T, (long long)D, causal * 1e3, local * 1e3, causal / local, local / first_window);
    }
    return 0;
  }
  std::printf("threads %d, median of %d repetitions (attnlab and raw oneDNN timed alternately)\n\n", threads, reps);
  const int64_t shapes[][3] = {{768, 128, 384}, {8192, 256, 1024}, {16384, 384, 1536},
                               {768, 384, 128}, {8192, 1024, 256}, {16384, 1536, 384}};
  if (linear_table)
    std::printf("| linear x[M,K]·W[K,N], fwd + dx + dW | attnlab GFLOP/s | raw oneDNN GFLOP/s | ratio |\n|---|---|---|---|\n");
  for (auto& s : linear_table ? std::span(shapes) : std::span(shapes).first(0)) {
    const double flops = 3.0 * 2.0 * double(s[0]) * s[1] * s[2];
    const auto [t_ours, t_raw] = linear_vs_raw_seconds(s[0], s[1], s[2], reps);
    const double ours = flops / t_ours / 1e9, raw = flops / t_raw / 1e9;
    std::printf("| [%lld×%lld]·[%lld×%lld] | %.1f | %.1f | %.0f%% |\n", (long long)s[0], (long long)s[1],
                (long long)s[1], (long long)s[2], ours, raw, 100.0 * ours / raw);
  }
  std::printf("%s| attention (causal%s) B×H, T, D | dense fwd+bwd ms | dense GFLOP/s | dense arena MB | flash fwd+bwd ms "
              "| flash GFLOP/s | flash arena MB |\n|---|---|---|---|---|---|---|\n", linear_table ? "\n" : "",
              bf16_attention ? ", flash with bf16 products" : "");
  if (bf16_attention) kernels::set_matmul_precision(kernels::MatmulPrecision::bf16);  // flash only: dense is f32
  for (auto [B, H, T, D] : attn_shapes) {
    double dense_mb = 0, flash_mb = 0;
    const double dense = attention_seconds(B, T, H, D, std::max(3, reps / 4), AttentionKernel::dense, dense_mb);
    const double flash = attention_seconds(B, T, H, D, std::max(3, reps / 4), AttentionKernel::flash, flash_mb);
    // causal: T(T+1)/2 score pairs; forward 2 matmuls, backward 4: 6 · 2 · pairs · D
    const double flops = 12.0 * double(B * H) * double(T) * double(T + 1) / 2.0 * double(D);
    std::printf("| %lld×%lld, %lld, %lld | %.2f | %.1f | %.0f | %.2f | %.1f | %.0f |\n", (long long)B, (long long)H,
                (long long)T, (long long)D, dense * 1e3, flops / dense / 1e9, dense_mb, flash * 1e3, flops / flash / 1e9,
                flash_mb);
  }
  return 0;
}
