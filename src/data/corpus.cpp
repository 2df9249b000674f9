#include "data/corpus.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <system_error>

#include "util/check.h"

namespace attnlab {

namespace {

constexpr size_t kMaxCorpusBytes = size_t(1) << 31;

// The whole file as bytes; DataError naming the path for every way this can fail.
std::string read_file_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found)
    throw DataError("data file " + path + " does not exist; run data/fetch.sh or set data.path");
  if (ec) throw DataError("data file " + path + " cannot be inspected: " + ec.message());
  if (st.type() == fs::file_type::directory)
    throw DataError("data file " + path + " is a directory, not a text file; set data.path to a file");

  errno = 0;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw DataError("data file " + path + " cannot be opened: " + std::strerror(errno));
  std::string bytes;
  char buf[1 << 16];
  for (;;) {  // read in chunks: also works for pipes and files whose size changes
    const size_t got = std::fread(buf, 1, sizeof buf, f.get());
    bytes.append(buf, got);
    if (got < sizeof buf) break;
    if (bytes.size() > kMaxCorpusBytes)  // /dev/zero, an endless pipe: stop before memory runs out
      throw DataError("data file " + path + " holds more than " + std::to_string(kMaxCorpusBytes >> 30) +
                      " GiB; attnlab keeps a corpus in memory as 32-bit token ids (is it a device or an endless pipe?)");
  }
  if (std::ferror(f.get())) throw DataError("data file " + path + " cannot be read: " + std::strerror(errno));
  if (bytes.empty()) throw DataError("data file " + path + " is empty; a corpus needs at least one symbol");
  return bytes;
}

}  // namespace

Corpus load_corpus(const std::string& path, bool all_bytes) {
  Corpus c;
  c.path = path;
  const std::string text = read_file_bytes(path);
  c.vocab = all_bytes ? Vocab::all_bytes() : Vocab::from_text(text);
  try {
    c.tokens = c.vocab.encode(text);
  } catch (const DataError& e) {  // cannot happen for a vocabulary built from the same text
    throw DataError(path + ": " + e.what());
  }
  return c;
}

Split split_corpus(const Corpus& corpus, double val_fraction) {
  ATTN_CHECK(val_fraction >= 0.0 && val_fraction <= 1.0, "split_corpus: data.val_fraction ", val_fraction,
             " is outside [0, 1]");
  const auto len = static_cast<int64_t>(corpus.tokens.size());
  const auto n_train = static_cast<int64_t>((1.0 - val_fraction) * static_cast<double>(len));
  ATTN_CHECK(n_train >= 0 && n_train <= len, "split_corpus: n_train ", n_train, " of ", len);
  Split s;
  const std::span<const int32_t> all(corpus.tokens);
  s.train = all.first(static_cast<size_t>(n_train));
  s.val = all.subspan(static_cast<size_t>(n_train));
  s.n_train = n_train;
  return s;
}

}  // namespace attnlab
