// The training step allocates nothing once warm: activations come from the step Arena (reset and
// reused), the tape keeps its capacity, oneDNN primitives are cached. A counting operator new
// checks it. oneDNN 2.6's dnnl_primitive_execute builds its argument map on the heap at every
// call (a few small allocations per matmul, outside attnlab's control); those are counted
// separately by looking for libdnnl in the allocation's call stack.
#include <atomic>
#include <cstdlib>
#include <dlfcn.h>
#include <execinfo.h>
#include <new>

#include <oneapi/dnnl/dnnl.h>

#include "autograd/tape.h"
#include "kernels/gemm.h"
#include "nn/model.h"
#include "optim/muon.h"
#include "optim/optimizer.h"
#include "testing/gradcheck.h"

// AddressSanitizer owns operator new and delete (it tracks which allocator made each block): under
// it the count is not taken, and the primitive and arena checks still run.
namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0}, g_onednn_allocations{0};
}  // namespace

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCountAllocations = false;
#else
constexpr bool kCountAllocations = true;
namespace {
// True when a frame of the current call stack is inside libdnnl.
bool called_from_onednn() {
  static const void* dnnl_base = [] {
    Dl_info info{};
    dladdr(reinterpret_cast<void*>(&dnnl_primitive_execute), &info);
    return info.dli_fbase;
  }();
  void* frames[16];
  const int n = backtrace(frames, 16);
  for (int i = 1; i < n; ++i) {
    Dl_info info{};
    if (dladdr(frames[i], &info) && info.dli_fbase == dnnl_base) return true;
  }
  return false;
}
}  // namespace

// The replacement new uses malloc, so free is the matching release.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_counting = false;  // backtrace and dladdr may allocate themselves
    (called_from_onednn() ? g_onednn_allocations : g_allocations).fetch_add(1);
    g_counting = true;
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

using namespace attnlab;

TEST_CASE("training step: no heap allocation and no new oneDNN primitive after the first steps", "[model][alloc]") {
  // MHA with AdamW, and MLA with Muon (its Newton-Schulz products and scratch included).
  for (bool mla : {false, true}) {
  INFO((mla ? "MLA + Muon" : "MHA + AdamW"));
  ModelSpec s;
  s.vocab = 65;
  s.context = 32;
  s.n_layer = 2;
  s.n_head = 4;
  s.n_kv_head = 4;
  s.d_model = 64;
  s.d_head = 16;
  s.d_ff = 256;
  s.dropout = 0.1f;
  s.attn_scale = 0.25f;
  if (mla) {
    s.attention = AttentionType::mla;
    s.mla = {8, 24, 12, 4, 16};
  }
  ParamStore store;
  Transformer model(s, store);
  store.finalize(1);
  std::unique_ptr<Optimizer> opt = mla ? std::unique_ptr<Optimizer>(new Muon(store, MuonConfig{}))
                                       : std::unique_ptr<Optimizer>(new AdamW(store, AdamWConfig{}));
  std::vector<int32_t> ids(8 * 32), targets(8 * 32);
  for (size_t i = 0; i < ids.size(); ++i) {
    ids[i] = int32_t(i * 7 % 65);
    targets[i] = int32_t(i * 11 % 65);
  }
  Arena arena;
  Tape tape;
  ArenaScope as(arena);
  TapeScope ts(tape);
  auto step = [&](int i) {
    arena.reset();
    store.zero_grad();
    Tensor loss = model.loss(ids.data(), targets.data(), 8, 32, 3, uint64_t(i));
    backward(loss);
    store.settle_grads();
    clip_grad_norm(store, global_grad_norm(store), 1.f);
    opt->step(1e-3f);
  };
  for (int i = 0; i < 3; ++i) step(i);  // warm-up: arena sized, primitives created, tape grown
  const int64_t primitives = kernels::gemm_primitives_created();
  const int64_t chunks = arena.chunk_allocations();
  g_allocations = 0;
  g_counting = true;
  for (int i = 3; i < 6; ++i) step(i);
  g_counting = false;
  INFO("allocations inside oneDNN's execute: " << g_onednn_allocations.load());
  if (kCountAllocations) CHECK(g_allocations.load() == 0);
  CHECK(kernels::gemm_primitives_created() == primitives);
  CHECK(arena.chunk_allocations() == chunks);
  }
}
