// load_corpus errors and contents, split_corpus sizes, and the tiny-Shakespeare numbers.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "data/corpus.h"
#include "testing/temp_dir.h"
#include "util/check.h"

using namespace attnlab;
using Catch::Matchers::Contains;
using attnlab::testing::TempDir;
using Ids = std::vector<int32_t>;

TEST_CASE("load_corpus reads and encodes a file", "[data][corpus]") {
  TempDir dir;
  const std::string path = dir.write("tiny.txt", "ab\nba\n");
  const Corpus c = load_corpus(path);
  CHECK(c.path == path);
  CHECK(c.vocab.mode() == "utf8");
  CHECK(c.vocab.symbols() == std::vector<std::string>{"\n", "a", "b"});
  CHECK(c.tokens == Ids{1, 2, 0, 2, 1, 0});
}

TEST_CASE("load_corpus falls back to bytes and keeps every byte", "[data][corpus]") {
  TempDir dir;
  const std::string bytes("\xFF\xFE a\x00" "b", 6);
  const Corpus c = load_corpus(dir.write("bin.txt", bytes));
  CHECK(c.vocab.mode() == "bytes");
  CHECK(c.tokens.size() == 6);
  CHECK(c.vocab.decode(c.tokens) == bytes);
}

TEST_CASE("load_corpus accepts a one-symbol file and a BOM", "[data][corpus]") {
  TempDir dir;
  const Corpus one = load_corpus(dir.write("one.txt", "aaaa"));
  CHECK(one.vocab.size() == 1);
  CHECK(one.tokens == Ids{0, 0, 0, 0});

  const Corpus bom = load_corpus(dir.write("bom.txt", "\xEF\xBB\xBF" "ba"));
  CHECK(bom.vocab.mode() == "utf8");
  CHECK(bom.vocab.size() == 3);
  CHECK(bom.tokens == Ids{2, 1, 0});
}

TEST_CASE("load_corpus errors name the path, on one line", "[data][corpus]") {
  TempDir dir;
  const auto fails_with = [](const std::string& path, const std::string& expected) {
    try {
      load_corpus(path);
      FAIL("no DataError for " << path);
    } catch (const DataError& e) {
      const std::string w = e.what();
      CHECK_THAT(w, Contains(path) && Contains(expected));
      CHECK(w.find('\n') == std::string::npos);
      CHECK(e.exit_code() == kExitUsage);
    }
  };
  const std::string missing = (dir.path() / "nope.txt").string();
  fails_with(missing, "data file " + missing + " does not exist; run data/fetch.sh or set data.path");
  fails_with(dir.write("empty.txt", ""), " is empty");
  std::filesystem::create_directory(dir.path() / "sub");
  fails_with((dir.path() / "sub").string(), " is a directory");
}

TEST_CASE("split_corpus: train is the first int((1 - f) * len) tokens", "[data][corpus]") {
  Corpus c;
  for (int i = 0; i < 10; ++i) c.tokens.push_back(i);
  const Split s = split_corpus(c, 0.1);
  CHECK(s.n_train == 9);
  CHECK(s.train.size() == 9);
  CHECK(s.val.size() == 1);
  CHECK(s.train.data() == c.tokens.data());  // views, not copies
  CHECK(s.val.data() == c.tokens.data() + 9);
  CHECK(s.val[0] == 9);

  const Split all_train = split_corpus(c, 0.0);
  CHECK(all_train.train.size() == 10);
  CHECK(all_train.val.empty());
  CHECK(split_corpus(c, 0.25).n_train == 7);  // int(7.5)
  CHECK_THROWS_AS(split_corpus(c, -0.1), InternalError);
  CHECK_THROWS_AS(split_corpus(c, 1.5), InternalError);

  // Python: int(0.9 * 1115394) == 1003854 (floating point included).
  Corpus big;
  big.tokens.assign(1115394, 0);
  const Split b = split_corpus(big, 0.1);
  CHECK(b.n_train == 1003854);
  CHECK(b.val.size() == 1115394 - 1003854);
}

TEST_CASE("tiny shakespeare: 65 symbols, 1115394 tokens, 1003854 train", "[data][corpus][shakespeare]") {
  const std::string path = std::string(ATTNLAB_SOURCE_DIR) + "/data/tinyshakespeare.txt";
  if (!std::filesystem::exists(path)) {
    WARN("skipped: " << path << " is absent (run data/fetch.sh)");
    return;
  }
  const Corpus c = load_corpus(path);
  CHECK(c.vocab.mode() == "utf8");
  CHECK(c.vocab.size() == 65);
  CHECK(c.tokens.size() == 1115394);
  REQUIRE(c.vocab.size() >= 2);
  CHECK(c.vocab.symbols()[0] == "\n");
  CHECK(c.vocab.symbols()[1] == " ");
  CHECK(c.vocab.encode("First Citizen:") == Ids(c.tokens.begin(), c.tokens.begin() + 14));
  const Split s = split_corpus(c, 0.1);
  CHECK(s.train.size() == 1003854);
  CHECK(s.val.size() == 111540);
}

TEST_CASE("corpus with data.vocab bytes: every byte value in the vocabulary, ids are the bytes", "[data]") {
  TempDir dir;
  const Corpus c = load_corpus(dir.write("t.txt", "hello"), /*all_bytes=*/true);
  CHECK(c.vocab.size() == 256);
  CHECK(c.tokens == std::vector<int32_t>{'h', 'e', 'l', 'l', 'o'});
}
