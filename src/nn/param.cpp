#include "nn/param.h"

#include <algorithm>
#include <cstring>

#include "util/check.h"
#include "util/rng.h"

namespace attnlab {

const char* role_name(Role r) {
  switch (r) {
    case Role::matrix: return "matrix";
    case Role::embedding: return "embedding";
    case Role::gain: return "gain";
    case Role::bias: return "bias";
    case Role::scale: return "scale";
  }
  return "?";
}

void MatrixView::scale_(float s) const {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) data[r * row_stride + c] *= s;
}

double MatrixView::sum_squares() const {
  double s = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) s += double(data[r * row_stride + c]) * data[r * row_stride + c];
  return s;
}

MatrixView Param::head(int h) const {
  ATTN_CHECK(heads.n > 0, "parameter ", name, " has no head structure");
  ATTN_CHECK(h >= 0 && h < heads.n, "parameter ", name, ": head ", h, " outside [0, ", heads.n, ")");
  ATTN_CHECK(shape.rank == 2, "parameter ", name, ": heads need a matrix, shape is ", shape);
  if (heads.axis == 1) return {data + int64_t(h) * heads.dim, shape[0], heads.dim, shape[1]};
  return {data + int64_t(h) * heads.dim * shape[1], heads.dim, shape[1], shape[1]};
}

const HeadPart& Param::part(std::string_view part) const {
  for (const HeadPart& hp : heads.parts)
    if (hp.name == part) return hp;
  ATTN_CHECK(false, "parameter ", name, " has no head part ", std::string(part));
  return heads.parts.front();
}

MatrixView Param::head_part(int h, std::string_view part_name) const {
  const HeadPart& hp = part(part_name);
  MatrixView v = head(h);
  if (heads.axis == 1) return {v.data + hp.offset, v.rows, hp.size, v.row_stride};
  return {v.data + int64_t(hp.offset) * v.row_stride, hp.size, v.cols, v.row_stride};
}

ParamStore::~ParamStore() {
  for (Param* p : sorted_) delete p;
  aligned_free(data_);
  aligned_free(grad_);
}

Param* ParamStore::add(std::string name, const Shape& shape, Role role, Init init, Heads heads) {
  ATTN_CHECK(!finalized(), "ParamStore::add(", name, ") after finalize()");
  ATTN_CHECK(!name.empty(), "ParamStore::add: empty parameter name");
  ATTN_CHECK(find(name) == nullptr, "duplicate parameter name ", name);
  if (heads.n > 0) {
    ATTN_CHECK(shape.rank == 2 && (heads.axis == 0 || heads.axis == 1) &&
                   int64_t(heads.n) * heads.dim == shape[heads.axis],
               "parameter ", name, ": ", heads.n, " heads of ", heads.dim, " do not tile axis ", heads.axis, " of ",
               shape);
    int next = 0;
    for (const HeadPart& hp : heads.parts) {
      ATTN_CHECK(hp.offset == next && hp.size > 0, "parameter ", name, ": head part ", hp.name, " at ", hp.offset,
                 " does not follow the previous part (ends at ", next, ")");
      next += hp.size;
    }
    ATTN_CHECK(heads.parts.empty() || next == heads.dim, "parameter ", name, ": head parts cover ", next, " of ",
               heads.dim);
  }
  auto* p = new Param{std::move(name), shape, role, heads, init};
  sorted_.push_back(p);
  return p;
}

void ParamStore::finalize(uint64_t seed) {
  ATTN_CHECK(!finalized(), "ParamStore::finalize called twice");
  std::sort(sorted_.begin(), sorted_.end(), [](const Param* a, const Param* b) { return a->name < b->name; });
  constexpr int64_t kAlignFloats = kAlign / sizeof(float);
  total_ = 0;
  for (Param* p : sorted_) {
    p->offset = total_;
    total_ += (p->numel() + kAlignFloats - 1) / kAlignFloats * kAlignFloats;
  }
  data_ = static_cast<float*>(aligned_alloc_bytes(std::max<int64_t>(total_, 1) * sizeof(float)));
  grad_ = static_cast<float*>(aligned_alloc_bytes(std::max<int64_t>(total_, 1) * sizeof(float)));
  std::memset(data_, 0, total_ * sizeof(float));  // padding included: flat scans see zeros
  std::memset(grad_, 0, total_ * sizeof(float));
  for (Param* p : sorted_) {
    p->data = data_ + p->offset;
    p->grad = grad_ + p->offset;
    p->grad_buffer = GradBuffer{p->grad, p->numel(), true, false, false};
    Rng rng(seed, p->name);
    for (int64_t i = 0; i < p->numel(); ++i) {
      switch (p->init.kind) {
        case Init::normal: p->data[i] = float(p->init.std * rng.normal()); break;
        case Init::ones: p->data[i] = 1.f; break;
        case Init::zeros: p->data[i] = 0.f; break;
        case Init::uniform: p->data[i] = float(p->init.std * (2.0 * rng.uniform() - 1.0)); break;
      }
    }
  }
}

Param* ParamStore::find(std::string_view name) {
  for (Param* p : sorted_)
    if (p->name == name) return p;
  return nullptr;
}

Param& ParamStore::at(std::string_view name) {
  Param* p = find(name);
  ATTN_CHECK(p != nullptr, "no parameter named ", name);
  return *p;
}

void ParamStore::zero_grad() {
  for (Param* p : sorted_) p->grad_buffer.written = false;
}

void ParamStore::settle_grads() {
  for (Param* p : sorted_) {
    GradBuffer& b = p->grad_buffer;
    if (b.written) continue;
    std::memset(b.ptr, 0, size_t(b.numel) * sizeof(float));
    b.written = true;
  }
}

std::vector<int> ParamStore::freeze(const std::vector<std::string>& patterns) {
  std::vector<int> counts;
  for (const auto& pat : patterns) {
    int n = 0;
    for (Param* p : sorted_)
      if (glob_match(pat, p->name)) {
        p->frozen = true;
        n++;
      }
    counts.push_back(n);
  }
  return counts;
}

std::vector<int> ParamStore::train_only(const std::vector<std::string>& patterns) {
  std::vector<int> counts(patterns.size(), 0);
  for (Param* p : sorted_) {
    bool keep = false;
    for (size_t i = 0; i < patterns.size(); ++i)
      if (glob_match(patterns[i], p->name)) {
        keep = true;
        counts[i]++;
      }
    if (!keep) p->frozen = true;
  }
  return counts;
}

int64_t ParamStore::trainable_count() const {
  int64_t n = 0;
  for (const Param* p : sorted_)
    if (!p->frozen) n += p->numel();
  return n;
}

bool glob_match(std::string_view pat, std::string_view s) {
  size_t p = 0, i = 0, star = std::string_view::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && (pat[p] == '?' || pat[p] == s[i])) {
      ++p;
      ++i;
    } else if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

}  // namespace attnlab
