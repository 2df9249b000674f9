#pragma once
// A text corpus: the file's bytes encoded with its own vocabulary, and the train/val split.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/vocab.h"

namespace attnlab {

struct Corpus {
  std::string path;
  Vocab vocab;                  // built from the whole file (NOTE [vocab modes])
  std::vector<int32_t> tokens;  // one id per symbol of the file, in order
};

// Reads `path` whole and encodes it with Vocab::from_text (or, with all_bytes, Vocab::all_bytes:
// data.vocab bytes). DataError (one line, naming the path) when the file does not exist, is a
// directory, cannot be read, or is empty.
Corpus load_corpus(const std::string& path, bool all_bytes = false);

// Views into a Corpus's tokens (which must outlive them): train = tokens[0, n_train),
// val = tokens[n_train, len).
struct Split {
  std::span<const int32_t> train;
  std::span<const int32_t> val;
  int64_t n_train = 0;  // offset of val in the corpus
};

// n_train = int64((1 - val_fraction) * len), as Python's int(0.9 * len) for val_fraction 0.1
// (tiny Shakespeare: 1003854 of 1115394). val_fraction outside [0, 1] is an InternalError (the
// config schema range-checks data.val_fraction).
Split split_corpus(const Corpus& corpus, double val_fraction);

}  // namespace attnlab
