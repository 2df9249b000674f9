// Vocab: symbol sets in utf8 and bytes modes, encode/decode, from_symbols validation.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "data/vocab.h"
#include "util/check.h"

using namespace attnlab;
using Catch::Matchers::Contains;
using Catch::Matchers::Message;
using Catch::Matchers::StartsWith;
using Ids = std::vector<int32_t>;
using Syms = std::vector<std::string>;

TEST_CASE("utf8 vocab: symbols are code points sorted by code point", "[data][vocab]") {
  const Vocab v = Vocab::from_text("h\xC3\xA9llo");  // "héllo"
  CHECK(v.mode() == "utf8");
  CHECK(v.symbols() == Syms{"h", "l", "o", "\xC3\xA9"});  // é = U+00E9 sorts after ASCII
  CHECK(v.encode("h\xC3\xA9llo") == Ids{0, 3, 1, 1, 2});

  // 1-, 3- and 4-byte code points: a, € (U+20AC), 😀 (U+1F600), é (U+00E9).
  const Vocab w = Vocab::from_text("\xF0\x9F\x98\x80" "a\xE2\x82\xAC\xC3\xA9");
  CHECK(w.symbols() == Syms{"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"});
  CHECK(w.encode("\xE2\x82\xAC\xF0\x9F\x98\x80") == Ids{2, 3});
}

TEST_CASE("newline and space get the first ids, as Python sorted(set(text))", "[data][vocab]") {
  const Vocab v = Vocab::from_text("To be,\nor not!");
  REQUIRE(v.size() == 11);
  CHECK(v.symbols()[0] == "\n");
  CHECK(v.symbols()[1] == " ");
  CHECK(v.symbols()[2] == "!");
  CHECK(v.symbols()[3] == ",");
  CHECK(v.symbols()[4] == "T");
}

TEST_CASE("invalid utf8 falls back to byte symbols", "[data][vocab]") {
  const Vocab v = Vocab::from_text("\xFF\xFE abc");
  CHECK(v.mode() == "bytes");
  CHECK(v.mode_kind() == VocabMode::bytes);
  CHECK(v.symbols() == Syms{" ", "a", "b", "c", "\xFE", "\xFF"});
  CHECK(v.encode("\xFF\xFE abc") == Ids{5, 4, 0, 1, 2, 3});

  // A valid multi-byte character in an otherwise invalid file is split into its bytes.
  const Vocab w = Vocab::from_text("\xC3\xA9\xFF");
  CHECK(w.mode() == "bytes");
  CHECK(w.symbols() == Syms{"\xA9", "\xC3", "\xFF"});
}

TEST_CASE("strict utf8 validation", "[data][vocab]") {
  CHECK(utf8_first_invalid("plain ascii") == std::string_view::npos);
  CHECK(utf8_first_invalid("h\xC3\xA9\xE2\x82\xAC\xF4\x8F\xBF\xBF") == std::string_view::npos);  // up to U+10FFFF
  CHECK(utf8_first_invalid("ab\xC0\xAF") == 2);          // overlong '/'
  CHECK(utf8_first_invalid("\xE0\x80\xAF") == 0);        // overlong, 3 bytes
  CHECK(utf8_first_invalid("x\xED\xA0\x80") == 1);       // surrogate U+D800
  CHECK(utf8_first_invalid("\xF4\x90\x80\x80") == 0);    // above U+10FFFF
  CHECK(utf8_first_invalid("abc\xE2\x82") == 3);         // truncated at the end
  CHECK(utf8_first_invalid("\xE2\x28\xA1") == 0);        // bad continuation byte
  CHECK(utf8_first_invalid("a\x80") == 1);               // lone continuation byte
  for (const char* bad : {"ab\xC0\xAF", "x\xED\xA0\x80", "\xF4\x90\x80\x80", "abc\xE2\x82"})
    CHECK(Vocab::from_text(bad).mode() == "bytes");

  uint32_t cp = 0;
  CHECK(utf8_decode_one("\xF0\x9F\x98\x80", 0, &cp) == 4);
  CHECK(cp == 0x1F600);
  CHECK(utf8_decode_one("a\xE2\x82\xAC", 1, &cp) == 3);
  CHECK(cp == 0x20AC);
}

TEST_CASE("a UTF-8 BOM is kept as an ordinary symbol", "[data][vocab]") {
  const Vocab v = Vocab::from_text("\xEF\xBB\xBF" "ab");
  CHECK(v.mode() == "utf8");
  CHECK(v.symbols() == Syms{"a", "b", "\xEF\xBB\xBF"});  // U+FEFF sorts last
  CHECK(v.encode("\xEF\xBB\xBF" "ab") == Ids{2, 0, 1});
}

TEST_CASE("encode and decode round trip", "[data][vocab]") {
  for (const std::string& text : {std::string("First Citizen:\nBefore we proceed any further, hear me speak.\n"),
                                 std::string("h\xC3\xA9llo w\xC3\xB6rld \xF0\x9F\x98\x80\n"),
                                 std::string("\xFF\xFE abc\x00\x01 z", 10)}) {
    const Vocab v = Vocab::from_text(text);
    const Ids ids = v.encode(text);
    for (int32_t id : ids) REQUIRE((id >= 0 && id < v.size()));
    CHECK(v.decode(ids) == text);
    // Any id sequence decodes and re-encodes to itself.
    Ids rev(ids.rbegin(), ids.rend());
    CHECK(v.encode(v.decode(rev)) == rev);
  }
}

TEST_CASE("encode rejects unknown symbols, naming them", "[data][vocab]") {
  const Vocab v = Vocab::from_text("abc\n");
  CHECK_THROWS_MATCHES(v.encode("abz"), DataError, Message("vocabulary: symbol 'z' (U+007A) at byte 2 is not in the vocabulary (4 symbols)"));
  CHECK_THROWS_WITH(v.encode("a\t"), Contains("'\\t' (U+0009)") && Contains("at byte 1"));
  CHECK_THROWS_WITH(v.encode("a\xC3\xA9"), Contains("'\xC3\xA9' (U+00E9)"));
  CHECK_THROWS_WITH(v.encode("a\xFF"), StartsWith("vocabulary: invalid UTF-8 (byte 0xFF) at byte 1"));

  const Vocab b = Vocab::from_text("\xFF" "a");
  CHECK(b.encode("a\xFF") == Ids{0, 1});
  CHECK_THROWS_WITH(b.encode("a\xFE"), Contains("byte 0xFE") && Contains("not in the vocabulary"));
}

TEST_CASE("decode rejects ids outside the vocabulary", "[data][vocab]") {
  const Vocab v = Vocab::from_text("ab");
  CHECK(v.decode(Ids{1, 0}) == "ba");
  CHECK_THROWS_AS(v.decode(Ids{0, 2}), InternalError);
  CHECK_THROWS_AS(v.decode(Ids{-1}), InternalError);
}

TEST_CASE("from_symbols rebuilds a vocabulary", "[data][vocab]") {
  for (const std::string& text : {std::string("h\xC3\xA9llo\n"), std::string("\xFF\xFE abc")}) {
    const Vocab v = Vocab::from_text(text);
    const Vocab r = Vocab::from_symbols(v.symbols(), v.mode());
    CHECK(r.mode() == v.mode());
    CHECK(r.symbols() == v.symbols());
    CHECK(r.encode(text) == v.encode(text));
    CHECK(r.decode(v.encode(text)) == text);
  }
}

TEST_CASE("from_symbols validates its input", "[data][vocab]") {
  const auto fails = [](Syms s, std::string_view mode, const std::string& part) {
    CHECK_THROWS_MATCHES(Vocab::from_symbols(std::move(s), mode), DataError,
                         Catch::Matchers::Predicate<DataError>([&](const DataError& e) {
                           const std::string w = e.what();
                           return w.rfind("vocabulary: ", 0) == 0 && w.find(part) != std::string::npos &&
                                  w.find('\n') == std::string::npos;
                         }, "vocabulary: ... " + part));
  };
  fails({}, "utf8", "no symbols");
  fails({"a", "b", "a"}, "utf8", "'a' (U+0061) appears twice (ids 0 and 2)");
  fails({"\n", "\n"}, "bytes", "appears twice");
  fails({"b", "a"}, "utf8", "not sorted: id 1 'a' (U+0061) comes after id 0 'b' (U+0062)");
  fails({"\xC3\xA9", "z"}, "utf8", "not sorted");  // code point order, not insertion order
  fails({"a", "ab"}, "utf8", "symbol 1 (bytes 0x61 0x62) is not exactly one UTF-8 code point");
  fails({"a", ""}, "utf8", "not exactly one UTF-8 code point");
  fails({"\xFF"}, "utf8", "not exactly one UTF-8 code point");
  fails({"a", "\xC3\xA9"}, "bytes", "symbol 1 has 2 bytes");
  fails({"a"}, "latin1", "unknown mode \"latin1\"");
  CHECK(Vocab::from_symbols({"\n", " ", "\xC3\xA9"}, "utf8").size() == 3);
  CHECK(Vocab::from_symbols({"a", "\xC3", "\xFF"}, "bytes").size() == 3);
}

TEST_CASE("describe_symbol keeps messages on one line", "[data][vocab]") {
  CHECK(describe_symbol("\n", VocabMode::utf8) == "'\\n' (U+000A)");
  CHECK(describe_symbol("\x01", VocabMode::utf8) == "U+0001");
  CHECK(describe_symbol("\xE2\x80\xA8", VocabMode::utf8) == "U+2028");  // line separator
  CHECK(describe_symbol("\xFF", VocabMode::bytes) == "byte 0xFF");
  CHECK(describe_symbol("q", VocabMode::bytes) == "'q' (byte 0x71)");
}

TEST_CASE("vocab all_bytes: 256 symbols, id = byte, stored and rebuilt by its mode", "[data][vocab]") {
  const Vocab v = Vocab::all_bytes();
  REQUIRE(v.size() == 256);
  CHECK(v.mode() == "all_bytes");
  const std::string text("a\n\xff\x00z", 5);
  const std::vector<int32_t> ids = v.encode(text);
  CHECK(ids == std::vector<int32_t>{'a', '\n', 255, 0, 'z'});
  CHECK(v.decode(ids) == text);
  const Vocab back = Vocab::from_symbols(v.symbols(), v.mode());
  CHECK(back.size() == 256);
  CHECK(back.encode(text) == ids);
  CHECK_THROWS_AS(Vocab::from_symbols({"a", "b"}, "all_bytes"), DataError);
}
