#pragma once
// Character vocabulary: the sorted set of distinct symbols of a corpus.
// NOTE [vocab modes]: if the whole text is valid UTF-8, a symbol is one Unicode code point
// (stored as its UTF-8 bytes) and symbols sort by code point; otherwise a symbol is one byte and
// symbols sort by byte value. For ASCII text both give Python's sorted(set(text)): for tiny
// Shakespeare, 65 symbols with '\n' = 0 and ' ' = 1. A UTF-8 BOM is an ordinary symbol (U+FEFF).
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attnlab {

enum class VocabMode { utf8, bytes };

class Vocab {
 public:
  Vocab() = default;  // empty (size 0): a placeholder until assigned

  // The vocabulary of `text`, in utf8 mode when the whole text is valid UTF-8, bytes otherwise.
  static Vocab from_text(std::string_view text);
  // Every byte value, id = the byte (256 symbols, mode "all_bytes"; data.vocab: bytes): the
  // vocabulary of a byte-level model, whatever the text holds.
  static Vocab all_bytes();
  // Rebuilds a stored vocabulary (checkpoints); `mode` is "utf8", "bytes" or "all_bytes" (whose
  // symbols are not read: a NUL byte does not survive as a stored string). DataError
  // "vocabulary: ..." when empty, unsorted, duplicated, a symbol is not one code point (utf8) or
  // one byte (bytes), or the mode is unknown.
  static Vocab from_symbols(std::vector<std::string> symbols, std::string_view mode);

  int size() const { return static_cast<int>(symbols_.size()); }
  const std::vector<std::string>& symbols() const { return symbols_; }
  std::string_view mode() const { return all_bytes_ ? "all_bytes" : mode_ == VocabMode::utf8 ? "utf8" : "bytes"; }
  VocabMode mode_kind() const { return mode_; }

  // text -> ids, one per symbol. DataError naming the symbol and its byte offset for a symbol
  // not in the vocabulary (or, in utf8 mode, for invalid UTF-8).
  std::vector<int32_t> encode(std::string_view text) const;
  // ids -> text (the concatenated symbols). An id outside [0, size()) is an InternalError.
  std::string decode(std::span<const int32_t> ids) const;

 private:
  int32_t id_of_code_point(uint32_t cp) const;  // -1 when absent

  VocabMode mode_ = VocabMode::utf8;
  bool all_bytes_ = false;
  std::vector<std::string> symbols_;
  std::vector<uint32_t> code_points_;  // symbols_ as code points (utf8) or byte values (bytes)
  // bytes mode: id of each byte; utf8 mode: id of each code point < 128 (the fast path); -1 absent
  std::vector<int32_t> byte_ids_ = std::vector<int32_t>(256, -1);
};

// UTF-8 helpers (strict: no overlong forms, no surrogates, nothing above U+10FFFF).
// Decodes one code point at text[pos]: returns its byte length (1-4) and sets *cp, or returns 0
// when the bytes there are not valid UTF-8.
int utf8_decode_one(std::string_view text, size_t pos, uint32_t* cp);
// Byte offset of the first invalid UTF-8 sequence, or npos when the whole text is valid.
size_t utf8_first_invalid(std::string_view text);
// A symbol for messages: printable ASCII as-is in quotes, others as escapes plus U+XXXX / 0xXX.
std::string describe_symbol(std::string_view symbol, VocabMode mode);

}  // namespace attnlab
