#include "io/checkpoint.h"

#include <fcntl.h>
#include <immintrin.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

#include "io/atomic_file.h"
#include "io/h5.h"
#include "io/h5_trial.h"
#include "util/log.h"

namespace attnlab {

// ---------------------------------------------------------------------------------------------
// The seal: HDF5 trusts a file's internal addresses, and a few flipped bytes in its metadata can
// crash the library (seen: a corrupt variable-length heap read out of bounds). So each checkpoint
// starts with a 512-byte header, HDF5's user block (which HDF5 and h5py skip), holding the size
// and the CRC-32C of every byte after it, which the reader checks before HDF5 sees the file:
//   attnlab checkpoint\nbytes <n>\ncrc32c <8 hex digits>\n, then zeros
// A file that no longer matches was damaged or edited in place (h5py); one that starts with the
// HDF5 signature has no header (an older build's, a run log, another program's). In both, each
// read is tried in a child process first (io/h5_trial.h) and refused if it crashes there; what
// reads is used (a damaged tensor still fails its own Fletcher32 checksum).

namespace {

constexpr int64_t kHeaderBytes = 512;
constexpr char kMagic[] = "attnlab checkpoint\n";
constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

__attribute__((target("sse4.2"))) uint32_t crc32c_update(uint32_t crc, const unsigned char* p, size_t n) {
  uint64_t c = crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
  }
  for (; n > 0; --n, ++p) c = _mm_crc32_u8(uint32_t(c), *p);
  return uint32_t(c);
}

struct FileCrc {
  int64_t bytes = 0;  // after the header
  uint32_t crc = 0;
};

// The size and CRC-32C of fd's bytes from kHeaderBytes on.
FileCrc crc_after_header(int fd, const std::string& path) {
  std::vector<unsigned char> buf(size_t(4) << 20);
  FileCrc r;
  uint32_t c = 0xFFFFFFFFu;
  for (off_t off = kHeaderBytes;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw CheckpointError(path + ": cannot read: " + std::strerror(errno));
    }
    if (n == 0) break;
    c = crc32c_update(c, buf.data(), size_t(n));
    off += n;
    r.bytes += n;
  }
  r.crc = ~c;
  return r;
}

// Writes the header into the user block of a closed checkpoint file.
void seal(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(path + ": cannot open to seal: " + std::strerror(errno));
  try {
    const FileCrc fc = crc_after_header(fd, path);
    char header[kHeaderBytes] = {};
    std::snprintf(header, sizeof header, "%sbytes %" PRId64 "\ncrc32c %08" PRIx32 "\n", kMagic, fc.bytes, fc.crc);
    if (::pwrite(fd, header, sizeof header, 0) != ssize_t(sizeof header))
      throw CheckpointError(path + ": cannot write its header: " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

// What is wrong with a sealed checkpoint's header, size or CRC ("" when it matches; also "" for a
// file without the header, or one that cannot be read at all, which h5::File::open then names).
// sealed: the file has the header (damaged or not).
std::string seal_mismatch(const std::string& path, bool& sealed) {
  sealed = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return "";
  char header[kHeaderBytes] = {};
  const ssize_t n = ::pread(fd, header, sizeof header, 0);
  if (n < ssize_t(sizeof kHdf5Signature) || std::memcmp(header, kHdf5Signature, sizeof kHdf5Signature) == 0) return "";
  const std::string damaged = "its header (the first " + std::to_string(kHeaderBytes) + " bytes) is damaged";
  if (std::strncmp(header, kMagic, sizeof kMagic - 1) != 0) {
    unsigned char at_block[sizeof kHdf5Signature] = {};
    const bool hdf5_after = ::pread(fd, at_block, sizeof at_block, kHeaderBytes) == ssize_t(sizeof at_block) &&
                            std::memcmp(at_block, kHdf5Signature, sizeof at_block) == 0;
    sealed = hdf5_after;
    return hdf5_after ? damaged : "";  // else not a checkpoint at all: h5::File::open names what it is
  }
  sealed = true;
  int64_t bytes = -1;
  uint32_t crc = 0;
  if (n != ssize_t(sizeof header) ||
      std::sscanf(header + sizeof kMagic - 1, "bytes %" SCNd64 "\ncrc32c %" SCNx32, &bytes, &crc) != 2 || bytes < 0)
    return damaged;
  const FileCrc actual = crc_after_header(fd, path);
  if (actual.bytes != bytes)
    return std::to_string(actual.bytes) + " bytes follow its header, which says " + std::to_string(bytes);
  if (actual.crc == crc) return "";
  char what[128];
  std::snprintf(what, sizeof what, "its CRC-32C is %08" PRIx32 ", its header says %08" PRIx32, actual.crc, crc);
  return what;
}

}  // namespace

void seal_checkpoint(const std::string& path) {
  unsigned char at_block[sizeof kHdf5Signature] = {};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError(path + ": cannot open: " + std::strerror(errno));
  const bool room = ::pread(fd, at_block, sizeof at_block, kHeaderBytes) == ssize_t(sizeof at_block) &&
                    std::memcmp(at_block, kHdf5Signature, sizeof at_block) == 0;
  ::close(fd);
  if (!room)
    throw CheckpointError(path + ": has no room for a header (its HDF5 data does not start at byte " +
                          std::to_string(kHeaderBytes) + "): not a checkpoint written by attnlab");
  seal(path);
}

// ---------------------------------------------------------------------------------------------
// CheckpointWriter

CheckpointWriter::CheckpointWriter(std::string path)
    : path_(std::move(path)), file_(std::make_unique<h5::File>(h5::File::create(path_ + ".tmp", kHeaderBytes))) {}

CheckpointWriter::CheckpointWriter(CheckpointWriter&&) noexcept = default;

CheckpointWriter& CheckpointWriter::operator=(CheckpointWriter&& o) noexcept {
  if (this != &o) {
    abandon();
    path_ = std::move(o.path_);
    file_ = std::move(o.file_);
  }
  return *this;
}

CheckpointWriter::~CheckpointWriter() { abandon(); }

void CheckpointWriter::abandon() noexcept {
  if (!file_) return;  // committed (or moved from)
  file_.reset();       // closes, ignoring errors
  remove_quietly(path_ + ".tmp");
}

h5::File& CheckpointWriter::file() {
  ATTN_CHECK(file_ != nullptr, path_, ": checkpoint writer used after commit()");
  return *file_;
}

void CheckpointWriter::tensor(const std::string& name, std::span<const int64_t> shape, const float* data) {
  file().write(name, h5::Dtype::f32, shape, data);
}
void CheckpointWriter::tensor_f64(const std::string& name, std::span<const int64_t> shape, const double* data) {
  file().write(name, h5::Dtype::f64, shape, data);
}
void CheckpointWriter::tensor_i64(const std::string& name, std::span<const int64_t> shape, const int64_t* data) {
  file().write(name, h5::Dtype::i64, shape, data);
}
void CheckpointWriter::tensor_u64(const std::string& name, std::span<const int64_t> shape, const uint64_t* data) {
  file().write(name, h5::Dtype::u64, shape, data);
}

void CheckpointWriter::attr(const std::string& key, std::string_view value) { file().set_attr(key, value); }
void CheckpointWriter::attr(const std::string& key, int64_t value) { file().set_attr(key, value); }
void CheckpointWriter::attr(const std::string& key, double value) { file().set_attr(key, value); }
void CheckpointWriter::attr_u64(const std::string& key, uint64_t value) { file().set_attr_u64(key, value); }

void CheckpointWriter::strings(const std::string& name, const std::vector<std::string>& values) {
  file().write_bytes(name, values);
}

void CheckpointWriter::commit() {
  file().close();  // on failure the destructor removes the tmp file
  file_.reset();
  try {
    seal(path_ + ".tmp");
    fsync_and_rename(path_ + ".tmp", path_);
  } catch (...) {
    remove_quietly(path_ + ".tmp");
    throw;
  }
}

// ---------------------------------------------------------------------------------------------
// CheckpointReader

CheckpointReader::CheckpointReader(std::string path) {
  bool sealed = false;
  mismatch_ = seal_mismatch(path, sealed);
  trial_reads_ = !sealed || !mismatch_.empty();
  guarded(path, "", [&] { file_ = std::make_unique<h5::File>(h5::File::open(path)); });
}

template <class Read>
void CheckpointReader::guarded(const std::string& path, const std::string& object, Read read) const {
  const std::string changed = mismatch_.empty() ? "" : "it changed after it was written (" + mismatch_ + ")";
  if (trial_reads_) {
    const std::string failed = h5::try_read_in_child(path, read);
    if (!failed.empty()) {
      failed_ = true;
      throw CheckpointError(path + ": " + (object.empty() ? "" : object + ": ") +
                            (changed.empty() ? "corrupt file: " : "corrupt checkpoint: " + changed + ", and ") + failed);
    }
  }
  try {
    read();
  } catch (const CheckpointError& e) {
    failed_ = true;
    if (changed.empty()) throw;
    throw CheckpointError(std::string(e.what()) + " (" + changed + ")");
  }
}

CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;

// Said once the reading is over, and only if nothing failed: an error already says it.
CheckpointReader::~CheckpointReader() {
  if (file_ && !mismatch_.empty() && !failed_ && std::uncaught_exceptions() == 0)
    log::warn("{}: changed after it was written ({}); it read without errors and was used as it is (edited in "
              "place on purpose? `attnlab seal {}` records the edit)",
              file_->path(), mismatch_, file_->path());
}

const std::string& CheckpointReader::path() const { return file_->path(); }

// Each reader runs through guarded(): directly for an intact file, after a trial in a child process
// for a changed one.
bool CheckpointReader::has(const std::string& name) const {
  bool r = false;
  guarded(path(), name, [&] { r = file_->exists(name); });
  return r;
}

std::vector<std::string> CheckpointReader::list(const std::string& group) const {
  std::vector<std::string> r;
  guarded(path(), group, [&] { r = file_->list_datasets(group); });
  return r;
}

std::vector<int64_t> CheckpointReader::shape(const std::string& name) const {
  h5::File::Info i;
  guarded(path(), name, [&] { i = file_->info(name); });
  if (i.is_null) file_->fail(name, "has a null dataspace (no shape)");
  return i.shape;
}

void CheckpointReader::read(const std::string& name, std::span<const int64_t> expected_shape, float* out) const {
  guarded(path(), name, [&] { file_->read(name, h5::Dtype::f32, expected_shape, out); });
}
void CheckpointReader::read_f64(const std::string& name, std::span<const int64_t> expected_shape, double* out) const {
  guarded(path(), name, [&] { file_->read(name, h5::Dtype::f64, expected_shape, out); });
}
void CheckpointReader::read_i64(const std::string& name, std::span<const int64_t> expected_shape, int64_t* out) const {
  guarded(path(), name, [&] { file_->read(name, h5::Dtype::i64, expected_shape, out); });
}
void CheckpointReader::read_u64(const std::string& name, std::span<const int64_t> expected_shape, uint64_t* out) const {
  guarded(path(), name, [&] { file_->read(name, h5::Dtype::u64, expected_shape, out); });
}

std::vector<std::string> CheckpointReader::strings(const std::string& name) const {
  std::vector<std::string> r;
  guarded(path(), name, [&] { r = file_->read_bytes(name); });
  return r;
}

bool CheckpointReader::has_attr(const std::string& key) const {
  bool r = false;
  guarded(path(), "attribute " + key, [&] { r = file_->has_attr(key); });
  return r;
}
std::string CheckpointReader::attr_string(const std::string& key) const {
  std::string r;
  guarded(path(), "attribute " + key, [&] { r = file_->attr_string(key); });
  return r;
}
int64_t CheckpointReader::attr_i64(const std::string& key) const {
  int64_t r = 0;
  guarded(path(), "attribute " + key, [&] { r = file_->attr_i64(key); });
  return r;
}
uint64_t CheckpointReader::attr_u64(const std::string& key) const {
  uint64_t r = 0;
  guarded(path(), "attribute " + key, [&] { r = file_->attr_u64(key); });
  return r;
}
double CheckpointReader::attr_f64(const std::string& key) const {
  double r = 0;
  guarded(path(), "attribute " + key, [&] { r = file_->attr_f64(key); });
  return r;
}

}  // namespace attnlab
