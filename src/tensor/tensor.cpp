#include "tensor/tensor.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "util/check.h"

namespace attnlab {

Shape::Shape(std::initializer_list<int64_t> d) : Shape(std::span<const int64_t>(d.begin(), d.size())) {}

Shape::Shape(std::span<const int64_t> d) {
  ATTN_CHECK(d.size() <= size_t(kMaxRank), "Shape: rank ", d.size(), " > ", kMaxRank);
  rank = int(d.size());
  for (int i = 0; i < rank; ++i) {
    ATTN_CHECK(d[i] >= 0, "Shape: negative dimension ", d[i]);
    dims[i] = d[i];
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank; ++i) n *= dims[i];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank != o.rank) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  os << '[';
  for (int i = 0; i < s.rank; ++i) os << (i ? ", " : "") << s.dims[i];
  return os << ']';
}

Tensor::Tensor(float* data_, GradBuffer* gbuf_, const Shape& shape_) : data(data_), gbuf(gbuf_), shape(shape_) {
  int64_t s = 1;
  for (int i = shape.rank - 1; i >= 0; --i) {
    strides[i] = s;
    s *= shape.dims[i];
  }
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (int i = shape.rank - 1; i >= 0; --i) {
    if (shape.dims[i] != 1 && strides[i] != s) return false;
    s *= shape.dims[i];
  }
  return true;
}

Tensor Tensor::reshape(const Shape& s) const {
  ATTN_CHECK(is_contiguous(), "reshape: tensor ", shape, " is not contiguous");
  ATTN_CHECK(s.numel() == numel(), "reshape: ", shape, " -> ", s, " changes the element count");
  Tensor t(data, gbuf, s);
  t.grad_offset = grad_offset;
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t len) const {
  if (dim < 0) dim += shape.rank;
  ATTN_CHECK(dim >= 0 && dim < shape.rank, "slice: dim ", dim, " out of range for ", shape);
  ATTN_CHECK(start >= 0 && len >= 0 && start + len <= shape.dims[dim], "slice: [", start, ", ", start + len,
             ") out of range for dim ", dim, " of ", shape);
  Tensor t = *this;
  t.data += start * strides[dim];
  t.grad_offset += start * strides[dim];
  if (gbuf && len < shape.dims[dim]) gbuf->partial_views = true;
  t.shape.dims[dim] = len;
  return t;
}

Tensor Tensor::split_last(int64_t n) const {
  ATTN_CHECK(shape.rank < kMaxRank, "split_last: rank ", shape.rank, " is already the maximum");
  int64_t last = shape[-1];
  ATTN_CHECK(n > 0 && last % n == 0, "split_last: ", last, " is not divisible by ", n);
  ATTN_CHECK(stride(-1) == 1, "split_last: last dimension must be dense");
  Tensor t = *this;
  t.shape.rank++;
  t.shape.dims[shape.rank - 1] = n;
  t.shape.dims[shape.rank] = last / n;
  t.strides[shape.rank - 1] = last / n;
  t.strides[shape.rank] = 1;
  return t;
}

void* aligned_alloc_bytes(size_t bytes) {
  // Blocks of 2 MiB and more (weights, their gradients and moments, the step's activations) go on
  // transparent huge pages where the kernel offers them on request: a step streams tens of MB, and
  // with 4 KiB pages every page of that is a TLB miss (one-row decoding products read each weight
  // page once per token).
  constexpr size_t huge = size_t(1) << 21;
  const size_t align = bytes >= huge ? huge : kAlign;
  const size_t rounded = std::max((bytes + align - 1) / align * align, align);
  void* p = std::aligned_alloc(align, rounded);
  if (!p) throw Error(detail::concat("out of memory allocating ", bytes, " bytes"));
#ifdef MADV_HUGEPAGE
  if (align == huge) ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: ignored where unsupported
#endif
  return p;
}

void aligned_free(void* p) { std::free(p); }

Arena::Arena(size_t initial_bytes) {
  if (initial_bytes) add_chunk(initial_bytes);
}

Arena::~Arena() {
  for (auto& c : chunks_) aligned_free(c.base);
}

void Arena::add_chunk(size_t bytes) {
  chunks_.push_back({static_cast<std::byte*>(aligned_alloc_bytes(bytes)), bytes, 0});
  chunk_allocations_++;
}

size_t Arena::capacity() const {
  size_t c = 0;
  for (auto& ch : chunks_) c += ch.size;
  return c;
}

void* Arena::alloc_bytes(size_t bytes) {
  size_t need = (bytes + kAlign - 1) / kAlign * kAlign;
  if (need == 0) need = kAlign;
  if (chunks_.empty() || chunks_.back().used + need > chunks_.back().size)
    add_chunk(std::max(need, std::max<size_t>(size_t(1) << 24, capacity())));
  Chunk& c = chunks_.back();
  void* p = c.base + c.used;
  c.used += need;
  used_total_ += need;
  high_water_ = std::max(high_water_, used_total_);
  return p;
}

float* Arena::alloc_zeroed(int64_t n) {
  float* p = alloc_floats(n);
  std::memset(p, 0, size_t(n) * sizeof(float));
  return p;
}

void Arena::reset() {
  if (chunks_.size() > 1) {  // merge: one block as large as the last step needed
    size_t total = std::max(high_water_, capacity());
    for (auto& c : chunks_) aligned_free(c.base);
    chunks_.clear();
    add_chunk(total);
  }
  if (!chunks_.empty()) chunks_.back().used = 0;
  used_total_ = 0;
}

namespace {
thread_local Arena* g_arena = nullptr;
Arena& default_arena() {
  thread_local Arena a;
  return a;
}
}  // namespace

Arena& current_arena() { return g_arena ? *g_arena : default_arena(); }

ArenaScope::ArenaScope(Arena& a) : prev_(g_arena) { g_arena = &a; }
ArenaScope::~ArenaScope() { g_arena = prev_; }

namespace {
// A tensor in the current arena; with requires_grad, a persistent zeroed grad buffer or a pooled
// one without storage (NOTE [grad buffers]).
Tensor arena_tensor(const Shape& s, bool requires_grad, bool pooled) {
  Arena& a = current_arena();
  float* d = a.alloc_floats(s.numel());
  GradBuffer* g = nullptr;
  if (requires_grad) {
    g = a.make<GradBuffer>();
    g->numel = s.numel();
    g->pooled = pooled;
    if (!pooled) {
      g->ptr = a.alloc_zeroed(s.numel());
      g->written = true;
    }
  }
  return Tensor(d, g, s);
}
}  // namespace

Tensor empty(const Shape& s, bool requires_grad) { return arena_tensor(s, requires_grad, false); }

Tensor new_output(const Shape& s, bool requires_grad) { return arena_tensor(s, requires_grad, true); }

// ---- gradient writes (NOTE [grad buffers]) ----

namespace {
thread_local GradPool* g_pool = nullptr;

// Makes sure the buffer has storage; returns true when this is its first write.
bool open_for_write(GradBuffer& b) {
  if (b.written) return false;
  if (!b.ptr) {
    ATTN_CHECK(g_pool, "gradient write outside backward (no GradPool in scope)");
    b.ptr = g_pool->acquire(b.numel);
  }
  b.written = true;
  if (b.partial_views) {
    std::memset(b.ptr, 0, size_t(b.numel) * sizeof(float));
    return false;
  }
  return true;
}
}  // namespace

GradSink Tensor::grad_out() const {
  ATTN_CHECK(gbuf, "grad_out: tensor ", shape, " does not require grad");
  const bool first = open_for_write(*gbuf);
  // A first write through a view that covers the whole buffer overwrites; views covering a part
  // set partial_views, which open_for_write has already zero-filled.
  return {gbuf->ptr + grad_offset, !first};
}

float* Tensor::grad_accum() const {
  if (!gbuf) return nullptr;
  GradSink s = grad_out();
  if (!s.accumulate) std::memset(gbuf->ptr, 0, size_t(gbuf->numel) * sizeof(float));
  return s.ptr;
}

bool Tensor::take_grad_of(const Tensor& y) const {
  GradBuffer *mine = gbuf, *theirs = y.gbuf;
  if (!mine || !theirs || mine == theirs) return false;
  const auto whole = [](const Tensor& t) { return t.grad_offset == 0 && t.numel() == t.gbuf->numel && t.is_contiguous(); };
  if (!mine->pooled || mine->written || mine->ptr || mine->partial_views || !whole(*this)) return false;
  if (!theirs->pooled || !theirs->written || !theirs->ptr || theirs->partial_views || !whole(y)) return false;
  if (mine->numel != theirs->numel) return false;
  // The storage changes owner: the tape returns it to the pool after this input's producer has
  // run its backward, and finds none to return for y.
  mine->ptr = theirs->ptr;
  mine->written = true;
  theirs->ptr = nullptr;
  theirs->written = false;
  return true;
}

GradPool::GradPool() { free_.reserve(256); }

float* GradPool::acquire(int64_t n) {
  for (size_t i = free_.size(); i-- > 0;)
    if (free_[i].n == n) {
      float* p = free_[i].p;
      free_.erase(free_.begin() + int64_t(i));
      return p;
    }
  return storage_.alloc_floats(n);
}

void GradPool::release(float* p, int64_t n) { free_.push_back({p, n}); }

void GradPool::reset() {
  free_.clear();
  storage_.reset();
}

GradPool* current_grad_pool() { return g_pool; }
GradPoolScope::GradPoolScope(GradPool& p) : prev_(g_pool) { g_pool = &p; }
GradPoolScope::~GradPoolScope() { g_pool = prev_; }

Tensor zeros(const Shape& s, bool requires_grad) {
  Tensor t = empty(s, requires_grad);
  std::memset(t.data, 0, size_t(s.numel()) * sizeof(float));
  return t;
}

int32_t* arena_ints(int64_t n) {
  return static_cast<int32_t*>(current_arena().alloc_bytes(size_t(n) * sizeof(int32_t)));
}

}  // namespace attnlab
