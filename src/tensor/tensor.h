#pragma once
// Tensor: a non-owning handle (data, grad, shape, strides) to float32 memory owned by an Arena
// (activations, reset every step) or by the ParamStore (parameters). Copying a handle copies
// pointers, so op closures capture tensors by value and recording an op allocates nothing.
//
// NOTE [grad buffers]: a tensor that requires grad carries a zero-initialised grad buffer with the
// same layout (shape and strides) as its data. A view (reshape, slice, head split) offsets both
// pointers alike, so a view's grad is the matching view of its base's grad. Backward passes
// accumulate into grad buffers (`+=`, NOTE [grad accumulation] in autograd/tape.h).
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <span>
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

struct Tensor {
  float* data = nullptr;
  float* grad = nullptr;  // nullptr: no gradient wanted for this tensor
  Shape shape;
  std::array<int64_t, kMaxRank> strides{};

  Tensor() = default;
  Tensor(float* data_, float* grad_, const Shape& shape_);  // contiguous strides

  int rank() const { return shape.rank; }
  int64_t size(int i) const { return shape[i]; }
  int64_t stride(int i) const { return strides[i < 0 ? shape.rank + i : i]; }
  int64_t numel() const { return shape.numel(); }
  bool requires_grad() const { return grad != nullptr; }
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
    t.grad = nullptr;
    return t;
  }
  float item() const { return data[0]; }
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

// New tensors in the current arena. With requires_grad, a zeroed grad buffer comes along.
Tensor empty(const Shape& s, bool requires_grad = false);
Tensor zeros(const Shape& s, bool requires_grad = false);
// Int32 index buffer (token ids, targets) in the current arena.
int32_t* arena_ints(int64_t n);

}  // namespace attnlab
