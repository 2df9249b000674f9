#pragma once
// Parameters: owned by the ParamStore under stable hierarchical names ("blocks.3.attn.wq"), the
// one key used by optimizers, checkpoints, freezing, QK-Clip and `attnlab grads`.
//
// NOTE [param layout]: parameters are registered while modules are built, then finalize() sorts
// them by name and places them in one 64-byte aligned block (grads in a twin block, optimizer
// slots in further twins with the same offsets). The layout depends only on names and shapes,
// so it is deterministic, and global-norm clipping, NaN scans and optimizer updates run over
// flat spans.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"

namespace attnlab {

// What a parameter is for: optimizers choose behaviour from this, not from names.
// scale: a learned multiplier that is not a norm gain (the block softmax's scales).
enum class Role { matrix, embedding, gain, bias, scale };
const char* role_name(Role r);

// A named range inside every head: head h's part covers columns (axis 1) or rows (axis 0)
// [h·dim + offset, h·dim + offset + size). MLA's query head is [q_nope | q_rope] (docs/mla.md).
struct HeadPart {
  std::string name;
  int offset = 0;
  int size = 0;
};

// Head structure of a projection: head h owns the `dim` columns (axis 1) or rows (axis 0)
// [h·dim, (h+1)·dim) of the matrix; `parts`, when given, tile each head in order.
struct Heads {
  int n = 0;
  int dim = 0;
  int axis = 1;
  std::vector<HeadPart> parts;
};

struct Init {
  enum Kind { normal, ones, zeros, uniform } kind = zeros;
  float std = 0.f;  // normal: N(0, std²); uniform: U(−std, std); drawn from the stream named after the parameter
};

// A strided block of a parameter matrix (one head's rows or columns), scaled in place.
struct MatrixView {
  float* data;
  int64_t rows, cols, row_stride;
  void scale_(float s) const;
  // Frobenius norm squared.
  double sum_squares() const;
};

struct Param {
  std::string name;
  Shape shape;
  Role role;
  Heads heads;
  Init init;
  bool frozen = false;
  int64_t offset = 0;  // into the store's blocks
  float* data = nullptr;
  float* grad = nullptr;  // valid after ParamStore::settle_grads() (NOTE [param grads])
  GradBuffer grad_buffer{};

  int64_t numel() const { return shape.numel(); }
  // The tensor ops see: no grad buffer when frozen, so nothing flows into it.
  Tensor tensor() { return Tensor(data, frozen ? nullptr : &grad_buffer, shape); }
  // Head h's block: columns (axis 1) or rows (axis 0) [h·dim, (h+1)·dim).
  MatrixView head(int h) const;
  // The named part of head h (InternalError naming the parameter and part when there is none).
  MatrixView head_part(int h, std::string_view part) const;
  const HeadPart& part(std::string_view part) const;
};

class ParamStore {
 public:
  ParamStore() = default;
  ~ParamStore();
  ParamStore(const ParamStore&) = delete;
  ParamStore& operator=(const ParamStore&) = delete;

  // Registers a parameter; rejects duplicate names. Returns a handle valid for the store's life.
  Param* add(std::string name, const Shape& shape, Role role, Init init, Heads heads = {});
  // Sorts by name, allocates the blocks and initialises every parameter from `seed`: parameter
  // `name` draws from the stream (seed, name) alone, so adding or renaming another parameter
  // never changes it.
  void finalize(uint64_t seed);
  bool finalized() const { return data_ != nullptr; }

  Param& at(std::string_view name);    // InternalError naming the parameter when missing
  Param* find(std::string_view name);  // nullptr when missing
  const std::vector<Param*>& params() const { return sorted_; }  // by name
  int64_t total() const { return total_; }
  float* data() const { return data_; }
  float* grad() const { return grad_; }

  // NOTE [param grads]: zero_grad() only marks every grad unwritten, so the first backward write
  // of a step overwrites (no memset, no read). settle_grads() then zero-fills the grads no op
  // wrote (parameters the step did not use); call it after the backward passes and before
  // reading grads (clipping, the optimizer, `attnlab grads`).
  void zero_grad();
  void settle_grads();
  // Freezes every parameter whose name matches a glob pattern (* and ?). Returns, per pattern,
  // how many parameters it matched (a pattern matching none is usually a typo).
  std::vector<int> freeze(const std::vector<std::string>& patterns);
  // Freezes every parameter that matches none of the glob patterns; returns each pattern's matches.
  std::vector<int> train_only(const std::vector<std::string>& patterns);
  int64_t trainable_count() const;

 private:
  std::vector<Param*> sorted_;
  float* data_ = nullptr;
  float* grad_ = nullptr;
  int64_t total_ = 0;
};

// Glob match: * any run, ? one character.
bool glob_match(std::string_view pattern, std::string_view name);

// Joins module path parts: name("blocks", 3, "attn", "wq") == "blocks.3.attn.wq".
template <class... Parts>
std::string name(const Parts&... parts) {
  std::string s;
  ((s += (s.empty() ? "" : "."), s += [](const auto& p) {
     if constexpr (std::is_arithmetic_v<std::decay_t<decltype(p)>>)
       return std::to_string(p);
     else
       return std::string(p);
   }(parts)),
   ...);
  return s;
}

}  // namespace attnlab
