#pragma once
// Checkpoint files: a generic container of named tensors, byte strings and root attributes in
// HDF5. The trainer chooses the names ("params/blocks.0.attn.wq", "optim/adamw/m/...": '/'
// separates groups, dots are ordinary characters). Layout and conventions: docs/run_files.md.
// Every problem with a file is a CheckpointError naming the file, the object and what is wrong;
// API misuse (a name written twice, a malformed name) is an InternalError. NOTE [hdf5 threads].
#include <concepts>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "util/check.h"

namespace attnlab {

namespace h5 {
class File;
}

// Writes path + ".tmp"; commit() makes it appear at path atomically (fsync + rename), so a
// crash never leaves a half-written checkpoint at path. Without commit() the tmp file is removed.
class CheckpointWriter {
 public:
  explicit CheckpointWriter(std::string path);
  CheckpointWriter(CheckpointWriter&&) noexcept;
  CheckpointWriter& operator=(CheckpointWriter&&) noexcept;
  ~CheckpointWriter();

  // Contiguous row-major data of the given shape ({} = scalar); parent groups are created.
  void tensor(const std::string& name, std::span<const int64_t> shape, const float* data);
  void tensor_f64(const std::string& name, std::span<const int64_t> shape, const double* data);
  void tensor_i64(const std::string& name, std::span<const int64_t> shape, const int64_t* data);
  void tensor_u64(const std::string& name, std::span<const int64_t> shape, const uint64_t* data);

  // Root attributes; setting a key again replaces it. Text is UTF-8 without NUL bytes.
  void attr(const std::string& key, std::string_view value);
  void attr(const std::string& key, int64_t value);
  void attr(const std::string& key, double value);
  void attr_u64(const std::string& key, uint64_t value);  // seeds: the full uint64 range
  // Any other integer (int, size_t, ...) is stored as int64.
  template <std::integral T>
    requires(!std::same_as<T, bool> && !std::same_as<T, int64_t>)
  void attr(const std::string& key, T value) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(int64_t))
      ATTN_CHECK(value <= static_cast<uint64_t>(INT64_MAX), "attribute ", key, ": ", value,
                 " does not fit int64; use attr_u64");
    attr(key, static_cast<int64_t>(value));
  }

  // A list of byte strings (e.g. the vocabulary). Stored as variable-length sequences of uint8,
  // not as HDF5 strings, so any bytes round-trip: "\n", "\0", invalid UTF-8, "".
  void strings(const std::string& name, const std::vector<std::string>& values);

  // Closes, fsyncs and renames the tmp file over path. Nothing may be written afterwards.
  void commit();

  const std::string& path() const { return path_; }

 private:
  h5::File& file();
  void abandon() noexcept;  // closes and removes the tmp file unless committed
  std::string path_;
  std::unique_ptr<h5::File> file_;  // null after commit
};

// Rewrites the header of a checkpoint that CheckpointWriter wrote and something else then edited in
// place (h5py in "r+" mode): its size and CRC-32C become those of the current contents, which the
// reader otherwise refuses as corrupt. A file without the header's room (not written by
// CheckpointWriter) is a CheckpointError.
void seal_checkpoint(const std::string& path);

// Opens a checkpoint (or any HDF5 file, e.g. metrics.h5) read-only. A checkpoint's header (its size
// and CRC-32C, written by commit()) is checked first. A file that changed after it was written
// (damaged, or edited in place) has that said in each error, or, when every read succeeded, in a
// warning when the reader is destroyed. In such a file, and in one without the header
// (metrics.h5, a checkpoint of an older build, h5py's files), each read is tried in a child
// process before it runs here: one that crashes HDF5 there is a CheckpointError, not a crash. The constructor rejects a
// missing path, a directory, an empty, non-HDF5, truncated or otherwise unreadable file.
class CheckpointReader {
 public:
  explicit CheckpointReader(std::string path);
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;
  ~CheckpointReader();

  bool has(const std::string& name) const;  // a dataset or group exists at name
  // Dataset names under group ("" = everything), recursively, relative to it, sorted bytewise.
  // An absent group lists nothing.
  std::vector<std::string> list(const std::string& group) const;
  std::vector<int64_t> shape(const std::string& name) const;  // {} for a scalar

  // Checks the dtype and that the shape equals expected_shape, then reads every element.
  // Errors: "<file>: <name>: expected float32 [64, 64], found float64 [64, 32]", missing dataset.
  void read(const std::string& name, std::span<const int64_t> expected_shape, float* out) const;
  void read_f64(const std::string& name, std::span<const int64_t> expected_shape, double* out) const;
  void read_i64(const std::string& name, std::span<const int64_t> expected_shape, int64_t* out) const;
  void read_u64(const std::string& name, std::span<const int64_t> expected_shape, uint64_t* out) const;
  // What strings() wrote; also reads 1-D HDF5 string datasets (h5py's lists of str or bytes).
  std::vector<std::string> strings(const std::string& name) const;

  // Root attributes; a missing key or a value of another kind is a CheckpointError naming it.
  bool has_attr(const std::string& key) const;
  std::string attr_string(const std::string& key) const;
  int64_t attr_i64(const std::string& key) const;
  uint64_t attr_u64(const std::string& key) const;
  double attr_f64(const std::string& key) const;

  const std::string& path() const;

 private:
  template <class Read>
  void guarded(const std::string& path, const std::string& object, Read read) const;
  std::string mismatch_;  // what the header says is wrong; empty: intact, or no header
  bool trial_reads_ = false;  // each read tried in a child first: a changed file, or one without a header
  mutable bool failed_ = false;  // a read threw: the error named the change, no warning at the end
  std::unique_ptr<h5::File> file_;
};

}  // namespace attnlab
