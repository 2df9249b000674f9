#include "io/h5.h"

#include <algorithm>
#include <filesystem>
#include <limits>
#include <mutex>

#include "util/check.h"

namespace attnlab::h5 {
namespace {

namespace fs = std::filesystem;

// HDF5 prints its error stack to stderr by default; we report errors ourselves, in one line.
void silence_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

// The innermost message of HDF5's error stack, where the problem was detected (e.g. "truncated
// file: eof = ..."; for a failed system call just its strerror text), then clears the stack.
std::string hdf5_error() {
  std::string msg;
  H5Ewalk2(  // downward = from the API call to the innermost function: keep the last
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        if (e->desc != nullptr && *e->desc != '\0') *static_cast<std::string*>(data) = e->desc;
        return 0;
      },
      &msg);
  H5Eclear2(H5E_DEFAULT);
  const std::string errno_tag = "error message = '";
  if (size_t at = msg.find(errno_tag); at != std::string::npos) {
    const size_t b = at + errno_tag.size();
    msg = msg.substr(b, msg.find('\'', b) - b);
  }
  std::replace(msg.begin(), msg.end(), '\n', ' ');
  return msg.empty() ? "unknown HDF5 error" : msg;
}

[[noreturn]] void fail_path(const std::string& path, std::string_view object, std::string_view what) {
  std::string msg = path + ": ";
  if (!object.empty()) msg.append(object).append(": ");
  msg.append(what);
  throw CheckpointError(msg);
}

Handle file_access() {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS));
  // Closing the file fails while any object in it is still open: a checked close then really
  // means "everything is written".
  H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_SEMI);
#if H5_VERSION_GE(1, 10, 7)
  // Lock as usual, but do not fail on file systems without flock (some network mounts).
  H5Pset_file_locking(fapl.get(), true, true);
#endif
  return fapl;
}

hid_t file_type(Dtype t) {
  switch (t) {
    case Dtype::f32:
      return H5T_IEEE_F32LE;
    case Dtype::f64:
      return H5T_IEEE_F64LE;
    case Dtype::i64:
      return H5T_STD_I64LE;
    case Dtype::u64:
      return H5T_STD_U64LE;
  }
  return H5I_INVALID_HID;
}

hid_t mem_type(Dtype t) {
  switch (t) {
    case Dtype::f32:
      return H5T_NATIVE_FLOAT;
    case Dtype::f64:
      return H5T_NATIVE_DOUBLE;
    case Dtype::i64:
      return H5T_NATIVE_INT64;
    case Dtype::u64:
      return H5T_NATIVE_UINT64;
  }
  return H5I_INVALID_HID;
}

size_t dtype_size(Dtype t) { return t == Dtype::f32 ? 4 : 8; }

std::string describe_type(hid_t t) {
  const size_t bits = H5Tget_size(t) * 8;
  switch (H5Tget_class(t)) {
    case H5T_INTEGER:
      return (H5Tget_sign(t) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_FLOAT:
      return "float" + std::to_string(bits);
    case H5T_STRING:
      return H5Tis_variable_str(t) > 0 ? std::string("variable-length string")
                                       : "fixed-length string of " + std::to_string(bits / 8) + " bytes";
    case H5T_VLEN: {
      Handle base(H5Tget_super(t));
      return "variable-length sequence of " + (base.valid() ? describe_type(base.get()) : "?");
    }
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_REFERENCE:
      return "reference";
    default:
      return "unknown type";
  }
}

bool matches(hid_t t, Dtype d) {
  const H5T_class_t c = H5Tget_class(t);
  const size_t size = H5Tget_size(t);
  switch (d) {
    case Dtype::f32:
      return c == H5T_FLOAT && size == 4;
    case Dtype::f64:
      return c == H5T_FLOAT && size == 8;
    case Dtype::i64:
      return c == H5T_INTEGER && size == 8 && H5Tget_sign(t) == H5T_SGN_2;
    case Dtype::u64:
      return c == H5T_INTEGER && size == 8 && H5Tget_sign(t) == H5T_SGN_NONE;
  }
  return false;
}

// Frees what HDF5 allocated for variable-length data read into buf.
struct VlenReclaim {
  hid_t type, space;
  void* buf;
  ~VlenReclaim() {
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
    H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
  }
};

// The stored bytes of a fixed-length string, without its padding.
std::string unpad(const char* p, size_t size, H5T_str_t pad) {
  std::string s(p, size);
  if (pad == H5T_STR_NULLTERM) {
    s.resize(std::min(s.find('\0'), s.size()));
  } else {
    const char fill = pad == H5T_STR_SPACEPAD ? ' ' : '\0';
    s.resize(s.find_last_not_of(fill) == std::string::npos ? 0 : s.find_last_not_of(fill) + 1);
  }
  return s;
}

// Names are relative paths of non-empty components: "params/blocks.0.attn.wq".
void check_name(const std::string& name) {
  bool ok = !name.empty() && name.front() != '/' && name.back() != '/' && name.find("//") == std::string::npos;
  for (size_t b = 0; ok && b < name.size();) {
    size_t e = std::min(name.find('/', b), name.size());
    std::string_view part(name.data() + b, e - b);
    ok = part != "." && part != "..";
    b = e + 1;
  }
  ATTN_CHECK(ok, "hdf5 name \"", name, "\": expected a relative path like params/blocks.0.attn.wq");
}

template <class LinkInfo>  // H5L_info_t (HDF5 1.10) or H5L_info2_t (1.12+)
herr_t collect_dataset(hid_t group, const char* name, const LinkInfo* info, void* data) {
  if (info->type != H5L_TYPE_HARD) return 0;  // soft and external links are not tensors
  Handle obj(H5Oopen(group, name, H5P_DEFAULT));
  if (obj.valid() && H5Iget_type(obj.get()) == H5I_DATASET)
    static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}

}  // namespace

herr_t Handle::close() {
  if (id_ < 0) return 0;
  const hid_t id = std::exchange(id_, H5I_INVALID_HID);
  switch (H5Iget_type(id)) {
    case H5I_FILE:
      return H5Fclose(id);
    case H5I_GROUP:
      return H5Gclose(id);
    case H5I_DATASET:
      return H5Dclose(id);
    case H5I_DATASPACE:
      return H5Sclose(id);
    case H5I_DATATYPE:
      return H5Tclose(id);
    case H5I_ATTR:
      return H5Aclose(id);
    case H5I_GENPROP_LST:
      return H5Pclose(id);
    default:
      return H5Idec_ref(id) < 0 ? -1 : 0;
  }
}

const char* dtype_name(Dtype t) {
  switch (t) {
    case Dtype::f32:
      return "float32";
    case Dtype::f64:
      return "float64";
    case Dtype::i64:
      return "int64";
    case Dtype::u64:
      return "uint64";
  }
  return "?";
}

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---------------------------------------------------------------------------------------------
// Opening and closing

void shutdown_library() { H5close(); }

File File::create(const std::string& path, int64_t userblock) {
  silence_errors();
  Handle fapl = file_access();
  Handle fcpl(H5Pcreate(H5P_FILE_CREATE));
  if (userblock > 0 && H5Pset_userblock(fcpl.get(), hsize_t(userblock)) < 0)
    fail_path(path, "", "cannot reserve a user block: " + hdf5_error());
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get());
  if (id < 0) fail_path(path, "", "cannot create HDF5 file: " + hdf5_error());
  return File(path, id);
}

File File::open(const std::string& path) {
  silence_errors();
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) fail_path(path, "", "no such file");
  if (ec) fail_path(path, "", "cannot access: " + ec.message());
  if (fs::is_directory(st)) fail_path(path, "", "is a directory, not an HDF5 file");
  if (!fs::is_regular_file(st)) fail_path(path, "", "is not a regular file");
  if (fs::file_size(path, ec) == 0 && !ec) fail_path(path, "", "is empty (0 bytes), not an HDF5 file");
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_hdf5 == 0) fail_path(path, "", "is not an HDF5 file (no HDF5 signature)");
  if (is_hdf5 < 0) fail_path(path, "", "cannot read: " + hdf5_error());
  Handle fapl = file_access();
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get());
  if (id < 0) fail_path(path, "", "corrupt or truncated HDF5 file: " + hdf5_error());
  return File(path, id);
}

void File::close() {
  if (id_.valid() && id_.close() < 0) fail("", "cannot close (data may be incomplete): " + hdf5_error());
}

void File::fail(std::string_view object, std::string_view what) const { fail_path(path_, object, what); }

// ---------------------------------------------------------------------------------------------
// Writing

void File::make_parent_groups(const std::string& name) {
  for (size_t end = name.find('/'); end != std::string::npos; end = name.find('/', end + 1)) {
    const std::string prefix = name.substr(0, end);
    const htri_t e = H5Lexists(id(), prefix.c_str(), H5P_DEFAULT);
    if (e < 0) fail(prefix, "cannot look up group: " + hdf5_error());
    if (e > 0) {
      Handle obj(H5Oopen(id(), prefix.c_str(), H5P_DEFAULT));
      ATTN_CHECK(obj.valid() && H5Iget_type(obj.get()) == H5I_GROUP, "hdf5 name \"", name, "\": ", prefix,
                 " is already a dataset, not a group");
      continue;
    }
    Handle gcpl(H5Pcreate(H5P_GROUP_CREATE));
    H5Pset_obj_track_times(gcpl.get(), false);  // no timestamps: same content, same bytes
    Handle g(H5Gcreate2(id(), prefix.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT));
    if (!g.valid()) fail(prefix, "cannot create group: " + hdf5_error());
  }
}

void File::write(const std::string& name, Dtype t, std::span<const int64_t> shape, const void* data, Layout layout) {
  check_name(name);
  ATTN_CHECK(shape.size() <= H5S_MAX_RANK, name, ": rank ", shape.size(), " exceeds HDF5's ", H5S_MAX_RANK);
  ATTN_CHECK(layout == Layout::fixed || !shape.empty(), name, ": an extendable dataset needs rank >= 1");
  std::vector<hsize_t> dims;
  size_t numel = 1;
  for (int64_t d : shape) {
    ATTN_CHECK(d >= 0, name, ": negative dimension in shape ", shape_str(shape));
    dims.push_back(static_cast<hsize_t>(d));
    numel *= static_cast<size_t>(d);
  }
  ATTN_CHECK(numel == 0 || data != nullptr, name, ": null data for shape ", shape_str(shape));
  make_parent_groups(name);
  ATTN_CHECK(H5Lexists(id(), name.c_str(), H5P_DEFAULT) == 0, "hdf5 name \"", name, "\" written twice");

  // NOTE [h5 layout]
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_obj_track_times(dcpl.get(), false);
  std::vector<hsize_t> maxdims = dims;
  size_t row_bytes = dtype_size(t);
  for (size_t i = 1; i < dims.size(); ++i) row_bytes *= dims[i];
  if (layout == Layout::extendable) {
    ATTN_CHECK(row_bytes > 0, name, ": an extendable dataset needs non-zero trailing dimensions, got ",
               shape_str(shape));
    maxdims[0] = H5S_UNLIMITED;
    std::vector<hsize_t> chunk = dims;
    // The whole series in one chunk up to ~1 MiB; at least 64 rows, so that appends by other
    // tools do not make tiny chunks.
    const hsize_t cap = std::max<hsize_t>(1, (hsize_t{1} << 20) / row_bytes);
    chunk[0] = std::min(std::max<hsize_t>(dims[0], 64), cap);
    H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
    H5Pset_fletcher32(dcpl.get());
  } else if (!dims.empty() && numel > 0 && row_bytes < (size_t{1} << 32)) {
    std::vector<hsize_t> chunk = dims;
    chunk[0] = std::min<hsize_t>(dims[0], std::max<hsize_t>(1, (size_t{64} << 20) / row_bytes));
    H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
    H5Pset_fletcher32(dcpl.get());
  }
  Handle space(dims.empty() ? H5Screate(H5S_SCALAR)
                            : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data()));
  if (!space.valid()) fail(name, "cannot create dataspace " + shape_str(shape) + ": " + hdf5_error());
  Handle ds(H5Dcreate2(id(), name.c_str(), file_type(t), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  if (!ds.valid()) fail(name, "cannot create dataset: " + hdf5_error());
  if (numel > 0 && H5Dwrite(ds.get(), mem_type(t), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail(name, "cannot write: " + hdf5_error());
}

void File::write_bytes(const std::string& name, const std::vector<std::string>& values) {
  check_name(name);
  make_parent_groups(name);
  ATTN_CHECK(H5Lexists(id(), name.c_str(), H5P_DEFAULT) == 0, "hdf5 name \"", name, "\" written twice");
  Handle ftype(H5Tvlen_create(H5T_STD_U8LE)), mtype(H5Tvlen_create(H5T_NATIVE_UINT8));
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr));
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
  H5Pset_obj_track_times(dcpl.get(), false);
  Handle ds(H5Dcreate2(id(), name.c_str(), ftype.get(), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  if (!ds.valid()) fail(name, "cannot create dataset: " + hdf5_error());
  std::vector<hvl_t> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = hvl_t{values[i].size(), const_cast<char*>(values[i].data())};
  if (n > 0 && H5Dwrite(ds.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
    fail(name, "cannot write: " + hdf5_error());
}

void File::replace_attr(const std::string& key, hid_t file_type, hid_t mem_type, const void* value) {
  ATTN_CHECK(!key.empty() && key.find('/') == std::string::npos, "attribute name \"", key,
             "\" must be non-empty, without '/'");
  const std::string object = "attribute " + key;
  const htri_t e = H5Aexists(id(), key.c_str());
  if (e < 0 || (e > 0 && H5Adelete(id(), key.c_str()) < 0)) fail(object, "cannot replace: " + hdf5_error());
  Handle space(H5Screate(H5S_SCALAR));
  Handle a(H5Acreate2(id(), key.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid()) fail(object, "cannot create: " + hdf5_error());
  if (H5Awrite(a.get(), mem_type, value) < 0) fail(object, "cannot write: " + hdf5_error());
}

void File::set_attr(const std::string& key, std::string_view value) {
  ATTN_CHECK(value.find('\0') == std::string_view::npos, "attribute ", key,
             ": text attributes cannot hold NUL bytes (store byte strings with strings())");
  Handle t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  const std::string s(value);
  const char* p = s.c_str();
  replace_attr(key, t.get(), t.get(), &p);
}

void File::set_attr(const std::string& key, int64_t value) {
  replace_attr(key, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}
void File::set_attr_u64(const std::string& key, uint64_t value) {
  replace_attr(key, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}
void File::set_attr(const std::string& key, double value) {
  replace_attr(key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

// ---------------------------------------------------------------------------------------------
// Reading

bool File::exists(const std::string& name) const {
  // H5Lexists needs every parent to exist, so walk down the path.
  for (size_t end = name.find('/');; end = name.find('/', end + 1)) {
    const std::string prefix = name.substr(0, end);
    if (prefix.empty() || H5Lexists(id(), prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (end == std::string::npos) break;
  }
  const bool ok = H5Oexists_by_name(id(), name.c_str(), H5P_DEFAULT) > 0;  // false for dangling links
  H5Eclear2(H5E_DEFAULT);
  return ok;
}

Handle File::open_dataset(const std::string& name) const {
  if (!exists(name)) fail(name, "missing dataset");
  Handle obj(H5Oopen(id(), name.c_str(), H5P_DEFAULT));
  if (!obj.valid()) fail(name, "cannot open: " + hdf5_error());
  const H5I_type_t type = H5Iget_type(obj.get());
  if (type != H5I_DATASET) fail(name, type == H5I_GROUP ? "is a group, not a dataset" : "is not a dataset");
  return obj;
}

File::Info File::info(const std::string& name) const {
  Handle ds = open_dataset(name);
  Handle type(H5Dget_type(ds.get())), space(H5Dget_space(ds.get()));
  if (!type.valid() || !space.valid()) fail(name, "cannot read type or shape: " + hdf5_error());
  Info i;
  i.type = describe_type(type.get());
  if (H5Sget_simple_extent_type(space.get()) == H5S_NULL) {
    i.is_null = true;
    return i;
  }
  const int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
  if (rank < 0 || H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    fail(name, "cannot read shape: " + hdf5_error());
  for (hsize_t d : dims) i.shape.push_back(static_cast<int64_t>(d));
  return i;
}

bool File::has_dtype(const std::string& name, Dtype t) const {
  Handle ds = open_dataset(name);
  Handle type(H5Dget_type(ds.get()));
  return type.valid() && matches(type.get(), t);
}

void File::read(const std::string& name, Dtype t, std::span<const int64_t> expected_shape, void* out) const {
  const Info found = info(name);
  Handle ds = open_dataset(name);
  Handle type(H5Dget_type(ds.get()));
  const bool same_shape = !found.is_null && std::ranges::equal(found.shape, expected_shape);
  if (!type.valid() || !matches(type.get(), t) || !same_shape)
    fail(name, "expected " + std::string(dtype_name(t)) + " " + shape_str(expected_shape) + ", found " + found.type +
                   " " + (found.is_null ? std::string("null dataspace") : shape_str(found.shape)));
  size_t numel = 1;
  for (int64_t d : found.shape) numel *= static_cast<size_t>(d);
  if (numel > 0 && H5Dread(ds.get(), mem_type(t), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
    fail(name, "cannot read (corrupt data?): " + hdf5_error());
}

std::vector<std::string> File::read_bytes(const std::string& name) const {
  const Info found = info(name);
  Handle ds = open_dataset(name);
  Handle type(H5Dget_type(ds.get())), space(H5Dget_space(ds.get()));
  const auto wrong = [&] {
    fail(name, "expected a 1-D list of byte strings, found " + found.type + " " +
                   (found.is_null ? std::string("null dataspace") : shape_str(found.shape)));
  };
  if (found.is_null || found.shape.size() != 1) wrong();
  const size_t n = static_cast<size_t>(found.shape[0]);
  std::vector<std::string> out(n);
  if (n == 0) return out;
  const auto read_into = [&](hid_t mtype, void* buf) {
    if (H5Dread(ds.get(), mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
      fail(name, "cannot read (corrupt data?): " + hdf5_error());
  };
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls == H5T_VLEN) {  // what write_bytes stores
    Handle base(H5Tget_super(type.get()));
    if (H5Tget_class(base.get()) != H5T_INTEGER || H5Tget_size(base.get()) != 1) wrong();
    Handle mtype(H5Tvlen_create(H5Tget_sign(base.get()) == H5T_SGN_NONE ? H5T_NATIVE_UCHAR : H5T_NATIVE_SCHAR));
    std::vector<hvl_t> buf(n);
    read_into(mtype.get(), buf.data());
    VlenReclaim reclaim{mtype.get(), space.get(), buf.data()};
    for (size_t i = 0; i < n; ++i) out[i].assign(static_cast<const char*>(buf[i].p), buf[i].len);
  } else if (cls == H5T_STRING && H5Tis_variable_str(type.get()) > 0) {  // h5py's default for str
    Handle mtype(H5Tcopy(H5T_C_S1));
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(type.get()));
    std::vector<char*> buf(n);
    read_into(mtype.get(), buf.data());
    VlenReclaim reclaim{mtype.get(), space.get(), buf.data()};
    for (size_t i = 0; i < n; ++i) out[i] = buf[i] ? buf[i] : "";
  } else if (cls == H5T_STRING) {  // fixed-length (numpy "S<n>")
    const size_t size = H5Tget_size(type.get());
    std::vector<char> buf(n * size);
    read_into(type.get(), buf.data());
    for (size_t i = 0; i < n; ++i) out[i] = unpad(buf.data() + i * size, size, H5Tget_strpad(type.get()));
  } else {
    wrong();
  }
  return out;
}

std::vector<std::string> File::list_datasets(const std::string& group) const {
  std::string g = group;
  while (!g.empty() && g.back() == '/') g.pop_back();
  if (!g.empty() && !exists(g)) return {};
  Handle obj(H5Oopen(id(), g.empty() ? "/" : g.c_str(), H5P_DEFAULT));
  if (!obj.valid()) fail(group, "cannot open: " + hdf5_error());
  if (H5Iget_type(obj.get()) != H5I_GROUP) fail(group, "is not a group");
  std::vector<std::string> names;
  if (H5Lvisit(obj.get(), H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names) < 0)
    fail(group, "cannot list: " + hdf5_error());
  std::sort(names.begin(), names.end());
  return names;
}

// ---------------------------------------------------------------------------------------------
// Attributes

bool File::has_attr(const std::string& key) const {
  const bool ok = H5Aexists(id(), key.c_str()) > 0;
  H5Eclear2(H5E_DEFAULT);
  return ok;
}

Handle File::open_attr(const std::string& key, std::string& type) const {
  const std::string object = "attribute " + key;
  if (!has_attr(key)) fail(object, "missing");
  Handle a(H5Aopen(id(), key.c_str(), H5P_DEFAULT));
  if (!a.valid()) fail(object, "cannot open: " + hdf5_error());
  Handle t(H5Aget_type(a.get())), space(H5Aget_space(a.get()));
  if (!t.valid() || !space.valid()) fail(object, "cannot read type: " + hdf5_error());
  type = describe_type(t.get());
  if (H5Sget_simple_extent_npoints(space.get()) != 1) fail(object, "expected a single value, found " + type + " array");
  return a;
}

std::string File::attr_string(const std::string& key) const {
  std::string desc;
  Handle a = open_attr(key, desc);
  Handle t(H5Aget_type(a.get()));
  if (H5Tget_class(t.get()) != H5T_STRING) fail("attribute " + key, "expected a string, found " + desc);
  if (H5Tis_variable_str(t.get()) > 0) {
    Handle mtype(H5Tcopy(H5T_C_S1));
    H5Tset_size(mtype.get(), H5T_VARIABLE);
    H5Tset_cset(mtype.get(), H5Tget_cset(t.get()));
    char* p = nullptr;
    if (H5Aread(a.get(), mtype.get(), &p) < 0) fail("attribute " + key, "cannot read: " + hdf5_error());
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  const size_t size = H5Tget_size(t.get());
  std::vector<char> buf(size);
  if (H5Aread(a.get(), t.get(), buf.data()) < 0) fail("attribute " + key, "cannot read: " + hdf5_error());
  return unpad(buf.data(), size, H5Tget_strpad(t.get()));
}

int64_t File::attr_i64(const std::string& key) const {
  std::string desc;
  Handle a = open_attr(key, desc);
  Handle t(H5Aget_type(a.get()));
  if (H5Tget_class(t.get()) != H5T_INTEGER) fail("attribute " + key, "expected an integer, found " + desc);
  if (H5Tget_sign(t.get()) == H5T_SGN_NONE && H5Tget_size(t.get()) >= 8) {  // may not fit
    const uint64_t v = attr_u64(key);
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("attribute " + key, "value " + std::to_string(v) + " does not fit int64");
    return static_cast<int64_t>(v);
  }
  int64_t v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) fail("attribute " + key, "cannot read: " + hdf5_error());
  return v;
}

uint64_t File::attr_u64(const std::string& key) const {
  std::string desc;
  Handle a = open_attr(key, desc);
  Handle t(H5Aget_type(a.get()));
  if (H5Tget_class(t.get()) != H5T_INTEGER) fail("attribute " + key, "expected an integer, found " + desc);
  if (H5Tget_sign(t.get()) != H5T_SGN_NONE) {
    const int64_t v = attr_i64(key);
    if (v < 0) fail("attribute " + key, "expected a non-negative integer, found " + std::to_string(v));
    return static_cast<uint64_t>(v);
  }
  uint64_t v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_UINT64, &v) < 0) fail("attribute " + key, "cannot read: " + hdf5_error());
  return v;
}

double File::attr_f64(const std::string& key) const {
  std::string desc;
  Handle a = open_attr(key, desc);
  Handle t(H5Aget_type(a.get()));
  if (H5Tget_class(t.get()) != H5T_FLOAT) fail("attribute " + key, "expected a float, found " + desc);
  double v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_DOUBLE, &v) < 0) fail("attribute " + key, "cannot read: " + hdf5_error());
  return v;
}

}  // namespace attnlab::h5
