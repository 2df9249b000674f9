#pragma once
// Tensor: a non-owning handle (data, grad, shape, strides) to float32 memory owned by an Arena
// (activations, reset every step) or by the ParamStore (parameters). Copying a handle copies
// pointers, so op closures capture tensors by value and recording an op allocates nothing.
//
// NOTE [grad buffers]: a tensor that requires grad refers to a GradBuffer, and its grad has the same
// layout (shape and strides) as its data at element offset `grad_offset` in that buffer. A view
// (reshape, slice, head split) shares the buffer and offsets both alike, so a view's grad is the
// matching view of its base's grad. Buffers come in two kinds:
//  - an op's output (new_output): no storage in the forward pass. The first backward write takes
//    storage from the tape's GradPool and *overwrites* it (no zeroing, no read of old values);
//    later writes accumulate. After the producing op's backward has run the buffer is dead and its
//    storage goes back to the pool, so at any time only the gradients in flight occupy memory.
//  - persistent (leaves from empty/zeros with requires_grad, and parameters): storage exists
//    from the start. A parameter's buffer is marked unwritten by ParamStore::zero_grad(), so the
//    first write of a step overwrites it too.
// A buffer that some view covers only in part (a slice) is zero-filled at first access and then
// only accumulated into, since no single writer covers it. See NOTE [grad accumulation] in
// autograd/tape.h for the write rules ops follow.
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <ostream>
#include <span>
#include <type_traits>
#include <vector>

namespace attnlab {

inline constexpr int kMaxRank = 4;
inline constexpr size_t kAlign = 64;

struct Shape {
  std::array<int64_t, kMaxRank> dims{};
  int rank = 0;

  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  explicit Shape(std::span<const int64_t> d);
  int64_t operator[](int i) const { return dims[i < 0 ? rank + i : i]; }
  int64_t& operator[](int i) { return dims[i < 0 ? rank + i : i]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  std::vector<int64_t> vec() const { return {dims.begin(), dims.begin() + rank}; }
};
std::ostream& operator<<(std::ostream& os, const Shape& s);

struct GradBuffer {
  float* ptr = nullptr;         // storage; null until first written for op outputs
  int64_t numel = 0;
  bool written = false;         // false: the gradient is zero and ptr's contents are stale
  bool pooled = false;          // an op output: storage from the GradPool, returned after use
  bool partial_views = false;   // a view covers it in part: zero-fill at first access
};

// Where one backward write goes: overwrite (first write to a whole buffer) or accumulate.
struct GradSink {
  float* ptr = nullptr;
  bool accumulate = true;
};

struct Tensor {
  float* data = nullptr;
  GradBuffer* gbuf = nullptr;  // nullptr: no gradient wanted for this tensor
  int64_t grad_offset = 0;     // of this view's first grad element in gbuf
  Shape shape;
  std::array<int64_t, kMaxRank> strides{};

  Tensor() = default;
  Tensor(float* data_, GradBuffer* gbuf_, const Shape& shape_);  // contiguous strides

  int rank() const { return shape.rank; }
  int64_t size(int i) const { return shape[i]; }
  int64_t stride(int i) const { return strides[i < 0 ? shape.rank + i : i]; }
  int64_t numel() const { return shape.numel(); }
  bool requires_grad() const { return gbuf != nullptr; }
  bool is_contiguous() const;
  bool defined() const { return data != nullptr; }
  // Rows when viewed as a matrix [numel / last, last].
  int64_t rows() const { return shape.rank ? numel() / shape[-1] : 1; }
  int64_t cols() const { return shape.rank ? shape[-1] : 1; }

  // Views (no copy). reshape needs a contiguous tensor.
  Tensor reshape(const Shape& s) const;
  // Elements [start, start + len) along dim; strides unchanged.
  Tensor slice(int dim, int64_t start, int64_t len) const;
  // [..., n*d] -> [..., n, d]: split the last dimension (heads).
  Tensor split_last(int64_t n) const;
  Tensor detach() const {
    Tensor t = *this;
    t.gbuf = nullptr;
    return t;
  }
  float item() const { return data[0]; }

  // The gradient after backward, or nullptr when none was written (it is zero) or none is wanted.
  float* grad() const { return gbuf && gbuf->written ? gbuf->ptr + grad_offset : nullptr; }
  // Backward: dy of an op's output, read-only; nullptr when nothing reached it (dy = 0).
  const float* grad_in() const { return grad(); }
  // Backward: where to put this input's gradient contribution. The first write to a whole,
  // unwritten buffer overwrites (accumulate == false); every later one accumulates. Fetch the
  // sink right before writing through it: fetching marks the buffer written.
  GradSink grad_out() const;
  // Backward, for kernels that only accumulate (scatter-adds, attention): the grad pointer,
  // zero-filled first when this is the first write; nullptr when no gradient is wanted.
  float* grad_accum() const;
  // Backward of an op whose output y passes its gradient to this input unchanged (the residual
  // stream of y = r + f(...)): when this input's buffer is a whole, unwritten op-output buffer of
  // y's size, it takes over dy's storage instead of copying it, and true is returned. Call after
  // the op's last read of dy. False: nothing changed, write the contribution through grad_out().
  bool take_grad_of(const Tensor& y) const;
};

// Storage for op-output gradients during one backward pass (NOTE [grad buffers]). Blocks are
// reused by exact size, last released first; reset() at the end of backward makes all storage
// reusable, so each step requests the same sequence of blocks and gets the same addresses.
class GradPool;
GradPool* current_grad_pool();
class GradPoolScope {
 public:
  explicit GradPoolScope(GradPool& p);
  ~GradPoolScope();

 private:
  GradPool* prev_;
};

// Bump allocator for one training step's activations and their grads. reset() makes all memory
// reusable; the same sequence of requests then returns the same addresses. When a step needs more
// than the capacity, the arena grows by a new chunk, and the next reset() merges the chunks into
// one block, so from the second step on the hot path never calls malloc.
class Arena {
 public:
  explicit Arena(size_t initial_bytes = 0);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  void* alloc_bytes(size_t bytes);  // kAlign-aligned, uninitialised
  float* alloc_floats(int64_t n) { return static_cast<float*>(alloc_bytes(size_t(n) * sizeof(float))); }
  float* alloc_zeroed(int64_t n);
  template <class T>
  T* make() {  // a value-initialised T (trivially destructible: the arena never runs destructors)
    static_assert(std::is_trivially_destructible_v<T>);
    return new (alloc_bytes(sizeof(T))) T();
  }
  void reset();
  size_t used() const { return used_total_; }
  size_t high_water() const { return high_water_; }
  size_t capacity() const;
  int64_t chunk_allocations() const { return chunk_allocations_; }

 private:
  struct Chunk {
    std::byte* base;
    size_t size;
    size_t used;
  };
  std::vector<Chunk> chunks_;
  size_t used_total_ = 0;
  size_t high_water_ = 0;
  int64_t chunk_allocations_ = 0;
  void add_chunk(size_t bytes);
};

class GradPool {
 public:
  GradPool();
  float* acquire(int64_t n);
  void release(float* p, int64_t n);
  void reset();
  size_t high_water() const { return storage_.high_water(); }

 private:
  struct Block {
    float* p;
    int64_t n;
  };
  Arena storage_;
  std::vector<Block> free_;
};

// The arena ops allocate from (one per thread; a default exists). ArenaScope switches it.
Arena& current_arena();
class ArenaScope {
 public:
  explicit ArenaScope(Arena& a);
  ~ArenaScope();

 private:
  Arena* prev_;
};

void* aligned_alloc_bytes(size_t bytes);  // kAlign-aligned, for long-lived blocks
void aligned_free(void* p);

// New tensors in the current arena. With requires_grad, a persistent zeroed grad buffer comes
// along (a leaf whose gradient is read after backward).
Tensor empty(const Shape& s, bool requires_grad = false);
Tensor zeros(const Shape& s, bool requires_grad = false);
// An op's output (uninitialised data). With requires_grad its grad buffer is pooled: storage is
// taken at the first backward write and returned after the op's own backward.
Tensor new_output(const Shape& s, bool requires_grad);
// Int32 index buffer (token ids, targets) in the current arena.
int32_t* arena_ints(int64_t n);

}  // namespace attnlab
