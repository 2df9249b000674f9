#include "io/checkpoint.h"

#include "io/atomic_file.h"
#include "io/h5.h"

namespace attnlab {

// ---------------------------------------------------------------------------------------------
// CheckpointWriter

CheckpointWriter::CheckpointWriter(std::string path)
    : path_(std::move(path)), file_(std::make_unique<h5::File>(h5::File::create(path_ + ".tmp"))) {}

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
    fsync_and_rename(path_ + ".tmp", path_);
  } catch (...) {
    remove_quietly(path_ + ".tmp");
    throw;
  }
}

// ---------------------------------------------------------------------------------------------
// CheckpointReader

CheckpointReader::CheckpointReader(std::string path) : file_(std::make_unique<h5::File>(h5::File::open(path))) {}

CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;
CheckpointReader::~CheckpointReader() = default;

const std::string& CheckpointReader::path() const { return file_->path(); }

bool CheckpointReader::has(const std::string& name) const { return file_->exists(name); }

std::vector<std::string> CheckpointReader::list(const std::string& group) const { return file_->list_datasets(group); }

std::vector<int64_t> CheckpointReader::shape(const std::string& name) const {
  h5::File::Info i = file_->info(name);
  if (i.is_null) file_->fail(name, "has a null dataspace (no shape)");
  return i.shape;
}

void CheckpointReader::read(const std::string& name, std::span<const int64_t> expected_shape, float* out) const {
  file_->read(name, h5::Dtype::f32, expected_shape, out);
}
void CheckpointReader::read_f64(const std::string& name, std::span<const int64_t> expected_shape, double* out) const {
  file_->read(name, h5::Dtype::f64, expected_shape, out);
}
void CheckpointReader::read_i64(const std::string& name, std::span<const int64_t> expected_shape, int64_t* out) const {
  file_->read(name, h5::Dtype::i64, expected_shape, out);
}
void CheckpointReader::read_u64(const std::string& name, std::span<const int64_t> expected_shape, uint64_t* out) const {
  file_->read(name, h5::Dtype::u64, expected_shape, out);
}

std::vector<std::string> CheckpointReader::strings(const std::string& name) const { return file_->read_bytes(name); }

bool CheckpointReader::has_attr(const std::string& key) const { return file_->has_attr(key); }
std::string CheckpointReader::attr_string(const std::string& key) const { return file_->attr_string(key); }
int64_t CheckpointReader::attr_i64(const std::string& key) const { return file_->attr_i64(key); }
uint64_t CheckpointReader::attr_u64(const std::string& key) const { return file_->attr_u64(key); }
double CheckpointReader::attr_f64(const std::string& key) const { return file_->attr_f64(key); }

}  // namespace attnlab
