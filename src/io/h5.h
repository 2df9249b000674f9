#pragma once
// The HDF5 layer under src/io: an owning hid_t handle, and a File that performs the few
// operations run logs and checkpoints need. Only src/io/*.cpp include this header (the HDF5
// include path is private to attnlab_io). HDF5's own error printing is switched off; every
// failure becomes one CheckpointError line "<file>: <object>: <what>".
// NOTE [hdf5 threads]: Debian's HDF5 is built without thread safety. Use src/io from one thread
// at a time (the trainer's main thread).
#include <hdf5.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace attnlab::h5 {

// Owns one hid_t: file, group, dataset, dataspace, datatype, attribute or property list.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      close();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { close(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes with the call matching the handle's type; returns HDF5's status (negative = failed).
  herr_t close();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// The element types attnlab stores; on disk always little-endian IEEE / two's complement.
enum class Dtype { f32, f64, i64, u64 };
const char* dtype_name(Dtype t);  // "float32", "float64", "int64", "uint64"

// NOTE [h5 layout]: both layouts store data chunked with a Fletcher32 checksum filter, so a
// flipped byte in the data fails the read instead of returning wrong numbers. fixed: the extent
// is final (checkpoint tensors; chunks of up to 64 MiB along the first dimension). extendable:
// the first dimension is unlimited (run-log series, which other tools may append to). Scalars and
// empty tensors cannot be chunked and are stored contiguous, without a checksum.
enum class Layout { fixed, extendable };

// "[2, 3]"; "[]" for a scalar.
std::string shape_str(std::span<const int64_t> shape);

// Closes every open HDF5 object and the library itself, freeing its caches (what a process that
// tried a read in a forked child does before it exits).
void shutdown_library();

class File {
 public:
  // Creates (truncates) path for writing. userblock > 0 (a power of two >= 512) reserves that many
  // bytes at the start of the file, which HDF5 leaves alone (CheckpointWriter's header).
  static File create(const std::string& path, int64_t userblock = 0);
  // Opens path read-only. Checks first that it is an existing, non-empty regular file with the
  // HDF5 signature, so that each kind of bad path gets its own message.
  static File open(const std::string& path);

  File(File&&) noexcept = default;
  File& operator=(File&&) noexcept = default;
  ~File() = default;  // closes, ignoring errors; writers call close() to see them

  const std::string& path() const { return path_; }
  // Checked close: writers call it before fsync_and_rename (NOTE [atomic replace]).
  void close();
  // Throws CheckpointError "<path>: <object>: <what>" (no object part when object is empty).
  [[noreturn]] void fail(std::string_view object, std::string_view what) const;

  // --- writing. Names are relative paths "a/b.c/d"; parent groups are created as needed. ---
  void write(const std::string& name, Dtype t, std::span<const int64_t> shape, const void* data,
             Layout layout = Layout::fixed);
  // Each value as a variable-length sequence of uint8: any byte string round-trips.
  void write_bytes(const std::string& name, const std::vector<std::string>& values);
  // Root attributes; an existing attribute of the same name is replaced.
  void set_attr(const std::string& key, std::string_view value);  // variable-length UTF-8 string
  void set_attr(const std::string& key, int64_t value);
  void set_attr_u64(const std::string& key, uint64_t value);
  void set_attr(const std::string& key, double value);

  // --- reading ---
  bool exists(const std::string& name) const;  // any object (group or dataset) at name
  // The dataset's element type, described for messages ("float32", "string", ...), and shape.
  struct Info {
    std::string type;
    std::vector<int64_t> shape;
    bool is_null = false;  // H5S_NULL dataspace (no shape at all)
  };
  Info info(const std::string& name) const;  // missing or not a dataset -> fail
  bool has_dtype(const std::string& name, Dtype t) const;
  // Checks type and shape, then reads all elements into out.
  void read(const std::string& name, Dtype t, std::span<const int64_t> expected_shape, void* out) const;
  // Reads a 1-D series of any length.
  template <class T>
  std::vector<T> read_series(const std::string& name, Dtype t) const {
    Info i = info(name);
    if (i.is_null || i.shape.size() != 1)
      fail(name, "expected a 1-D " + std::string(dtype_name(t)) + " series, found " + i.type + " " +
                     (i.is_null ? "null dataspace" : shape_str(i.shape)));
    std::vector<T> v(static_cast<size_t>(i.shape[0]));
    read(name, t, i.shape, v.data());
    return v;
  }
  // Reads a 1-D dataset of variable-length byte sequences (as written by write_bytes) or of
  // strings (variable- or fixed-length, as h5py writes them).
  std::vector<std::string> read_bytes(const std::string& name) const;
  // Dataset names under group (recursively, relative to it, sorted); empty if group is absent.
  std::vector<std::string> list_datasets(const std::string& group) const;

  bool has_attr(const std::string& key) const;
  std::string attr_string(const std::string& key) const;
  int64_t attr_i64(const std::string& key) const;
  uint64_t attr_u64(const std::string& key) const;
  double attr_f64(const std::string& key) const;

 private:
  File(std::string path, hid_t id) : path_(std::move(path)), id_(id) {}
  hid_t id() const { return id_.get(); }
  Handle open_dataset(const std::string& name) const;
  Handle open_attr(const std::string& key, std::string& type) const;
  void make_parent_groups(const std::string& name);
  void replace_attr(const std::string& key, hid_t file_type, hid_t mem_type, const void* value);

  std::string path_;
  Handle id_;
};

}  // namespace attnlab::h5
