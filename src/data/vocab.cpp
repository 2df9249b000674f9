#include "data/vocab.h"

#include <algorithm>
#include <cstdio>

#include "util/check.h"

namespace attnlab {

namespace {

bool is_cont(unsigned char b) { return (b & 0xC0) == 0x80; }

std::string hex(uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%0*X", digits, static_cast<unsigned>(v));
  return buf;
}

// A C escape for the control characters people meet in text files, else nullptr.
const char* c_escape(uint32_t c) {
  switch (c) {
    case '\n': return "\\n";
    case '\t': return "\\t";
    case '\r': return "\\r";
    case '\0': return "\\0";
    default: return nullptr;
  }
}

std::string encode_utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

}  // namespace

int utf8_decode_one(std::string_view text, size_t pos, uint32_t* cp) {
  const size_t n = text.size();
  if (pos >= n) return 0;
  const auto at = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char b0 = at(pos);
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates D800-DFFF
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlong forms
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;  // a continuation byte, C0/C1 (overlong) or F5-FF
  }
  if (pos + len > n) return 0;
  const unsigned char b1 = at(pos + 1);
  if (b1 < lo || b1 > hi) return 0;
  uint32_t c = b0 & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    const unsigned char b = at(pos + k);
    if (!is_cont(b)) return 0;
    c = (c << 6) | (b & 0x3F);
  }
  *cp = c;
  return len;
}

size_t utf8_first_invalid(std::string_view text) {
  size_t pos = 0;
  uint32_t cp;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {  // ASCII fast path
      ++pos;
      continue;
    }
    const int len = utf8_decode_one(text, pos, &cp);
    if (len == 0) return pos;
    pos += len;
  }
  return std::string_view::npos;
}

std::string describe_symbol(std::string_view symbol, VocabMode mode) {
  // Built by appending only (GCC 12 warns falsely on "literal" + std::string temporaries).
  const auto quoted = [](std::string_view shown, const std::string& code) {
    std::string out;
    out.append("'").append(shown).append("' (").append(code).append(")");
    return out;
  };
  uint32_t cp = 0;
  const bool one_code_point = mode == VocabMode::utf8 && !symbol.empty() &&
                              utf8_decode_one(symbol, 0, &cp) == static_cast<int>(symbol.size());
  if (one_code_point) {
    const std::string code = std::string("U+").append(hex(cp, 4));
    if (const char* e = c_escape(cp)) return quoted(e, code);
    // Controls and line/paragraph separators would garble a one-line message: code only.
    if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0) || cp == 0x2028 || cp == 0x2029) return code;
    return quoted(symbol, code);
  }
  if (symbol.size() == 1) {
    const auto b = static_cast<unsigned char>(symbol[0]);
    const std::string code = std::string("byte 0x").append(hex(b, 2));
    if (const char* e = c_escape(b)) return quoted(e, code);
    if (b >= 0x20 && b < 0x7F) return quoted(symbol, code);
    return code;
  }
  if (symbol.empty()) return "an empty string";
  std::string out = "bytes";  // not one symbol (only in validation messages)
  for (unsigned char b : symbol) out.append(" 0x").append(hex(b, 2));
  return out;
}

Vocab Vocab::from_text(std::string_view text) {
  Vocab v;
  if (utf8_first_invalid(text) == std::string_view::npos) {
    v.mode_ = VocabMode::utf8;
    std::vector<bool> seen(0x110000, false);
    uint32_t cp = 0;
    for (size_t pos = 0; pos < text.size();) {
      pos += utf8_decode_one(text, pos, &cp);
      seen[cp] = true;
    }
    for (uint32_t c = 0; c < seen.size(); ++c)
      if (seen[c]) v.code_points_.push_back(c);
  } else {
    v.mode_ = VocabMode::bytes;
    bool seen[256] = {};
    for (unsigned char b : text) seen[b] = true;
    for (uint32_t b = 0; b < 256; ++b)
      if (seen[b]) v.code_points_.push_back(b);
  }
  for (uint32_t c : v.code_points_)
    v.symbols_.push_back(v.mode_ == VocabMode::utf8 ? encode_utf8(c) : std::string(1, char(c)));
  for (size_t i = 0; i < v.code_points_.size(); ++i)
    if (v.code_points_[i] < (v.mode_ == VocabMode::utf8 ? 0x80u : 0x100u))
      v.byte_ids_[v.code_points_[i]] = static_cast<int32_t>(i);
  return v;
}

Vocab Vocab::all_bytes() {
  Vocab v;
  v.mode_ = VocabMode::bytes;
  v.all_bytes_ = true;
  for (uint32_t b = 0; b < 256; ++b) {
    v.code_points_.push_back(b);
    v.symbols_.push_back(std::string(1, char(b)));
    v.byte_ids_[b] = int32_t(b);
  }
  return v;
}

Vocab Vocab::from_symbols(std::vector<std::string> symbols, std::string_view mode) {
  Vocab v;
  if (mode == "all_bytes") {
    if (symbols.size() != 256)
      throw DataError(detail::concat("vocabulary: mode all_bytes with ", symbols.size(), " symbols (expected 256)"));
    return all_bytes();
  }
  if (mode == "utf8") {
    v.mode_ = VocabMode::utf8;
  } else if (mode == "bytes") {
    v.mode_ = VocabMode::bytes;
  } else {
    throw DataError("vocabulary: unknown mode \"" + std::string(mode) + "\" (expected utf8, bytes or all_bytes)");
  }
  if (symbols.empty()) throw DataError("vocabulary: no symbols (a vocabulary needs at least one)");
  for (size_t i = 0; i < symbols.size(); ++i) {
    const std::string& s = symbols[i];
    uint32_t cp = 0;
    if (v.mode_ == VocabMode::utf8) {
      if (s.empty() || utf8_decode_one(s, 0, &cp) != static_cast<int>(s.size()))
        throw DataError(detail::concat("vocabulary: symbol ", i, " (", describe_symbol(s, VocabMode::bytes),
                                       ") is not exactly one UTF-8 code point"));
    } else {
      if (s.size() != 1)
        throw DataError(detail::concat("vocabulary: symbol ", i, " has ", s.size(),
                                       " bytes; a bytes-mode symbol is exactly one byte"));
      cp = static_cast<unsigned char>(s[0]);
    }
    v.code_points_.push_back(cp);
  }
  std::vector<uint32_t> sorted = v.code_points_;
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end()); dup != sorted.end()) {
    const auto first = std::find(v.code_points_.begin(), v.code_points_.end(), *dup);
    const auto second = std::find(first + 1, v.code_points_.end(), *dup);
    throw DataError(detail::concat("vocabulary: symbol ", describe_symbol(symbols[first - v.code_points_.begin()], v.mode_),
                                   " appears twice (ids ", first - v.code_points_.begin(), " and ",
                                   second - v.code_points_.begin(), ")"));
  }
  for (size_t i = 1; i < symbols.size(); ++i)
    if (v.code_points_[i] < v.code_points_[i - 1])
      throw DataError(detail::concat("vocabulary: symbols are not sorted: id ", i, " ",
                                     describe_symbol(symbols[i], v.mode_), " comes after id ", i - 1, " ",
                                     describe_symbol(symbols[i - 1], v.mode_)));
  v.symbols_ = std::move(symbols);
  for (size_t i = 0; i < v.code_points_.size(); ++i)
    if (v.code_points_[i] < (v.mode_ == VocabMode::utf8 ? 0x80u : 0x100u))
      v.byte_ids_[v.code_points_[i]] = static_cast<int32_t>(i);
  return v;
}

int32_t Vocab::id_of_code_point(uint32_t cp) const {
  const auto it = std::lower_bound(code_points_.begin(), code_points_.end(), cp);
  return it != code_points_.end() && *it == cp ? static_cast<int32_t>(it - code_points_.begin()) : -1;
}

std::vector<int32_t> Vocab::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  const auto unknown = [&](size_t pos, size_t len) {
    return DataError(detail::concat("vocabulary: symbol ", describe_symbol(text.substr(pos, len), mode_),
                                    " at byte ", pos, " is not in the vocabulary (", size(), " symbols)"));
  };
  if (mode_ == VocabMode::bytes) {
    for (size_t pos = 0; pos < text.size(); ++pos) {
      const int32_t id = byte_ids_[static_cast<unsigned char>(text[pos])];
      if (id < 0) throw unknown(pos, 1);
      ids.push_back(id);
    }
    return ids;
  }
  uint32_t cp = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto b = static_cast<unsigned char>(text[pos]);
    int32_t id;
    int len = 1;
    if (b < 0x80) {
      id = byte_ids_[b];
    } else {
      len = utf8_decode_one(text, pos, &cp);
      if (len == 0)
        throw DataError(detail::concat("vocabulary: invalid UTF-8 (", describe_symbol(text.substr(pos, 1), VocabMode::bytes),
                                       ") at byte ", pos, " for a utf8-mode vocabulary"));
      id = id_of_code_point(cp);
    }
    if (id < 0) throw unknown(pos, len);
    ids.push_back(id);
    pos += len;
  }
  return ids;
}

std::string Vocab::decode(std::span<const int32_t> ids) const {
  std::string out;
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    ATTN_CHECK(id >= 0 && id < size(), "Vocab::decode: id ", id, " at position ", i, " is outside [0, ", size(), ")");
    out += symbols_[id];
  }
  return out;
}

}  // namespace attnlab
