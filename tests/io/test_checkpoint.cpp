#include <array>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <hdf5.h>

#include "io/checkpoint.h"
#include "io/h5.h"
#include "io_testing.h"

using namespace attnlab;
using Catch::Matchers::Contains;
using io_testing::TempDir;
using io_testing::checkpoint_error;

namespace {

using Shape = std::vector<int64_t>;


template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::vector<float> special_floats() {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          -2.5f,
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::lowest(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::bit_cast<float>(0x7fc12345u),   // quiet NaN with a payload
                          std::bit_cast<float>(0xffa00001u)};  // negative signalling NaN
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  while (v.size() < 30) v.push_back(normal(rng));
  return v;
}

}  // namespace

TEST_CASE("checkpoint: tensors and attributes and byte strings round-trip bit-exactly", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  const std::vector<float> w = special_floats();  // 30 values as [3, 5, 2]
  const std::vector<double> d = {
      0.0, -0.0, 1e-310, std::numeric_limits<double>::max(), std::bit_cast<double>(0x7ff8000000000abcull), -1.0 / 3.0};
  const std::vector<int64_t> i = {std::numeric_limits<int64_t>::min(), -1, 0, 1, std::numeric_limits<int64_t>::max()};
  const std::vector<uint64_t> u = {0, 1, uint64_t{1} << 63, std::numeric_limits<uint64_t>::max()};
  const std::vector<std::string> vocab = {"",
                                          "a",
                                          "\n",
                                          std::string("a\0b", 3),
                                          std::string(1, '\0'),
                                          "\xff\xfe\x80",
                                          "h\xc3\xa9llo",
                                          std::string(10000, 'x') + "\x01"};
  const std::string yaml = "model:\n  n_layer: 2\nrun:\n  name: \"h\xc3\xa9\"\n";
  const float scalar = 0.125f;
  {
    CheckpointWriter wr(path);
    wr.tensor("params/blocks.0.attn.wq", Shape{3, 5, 2}, w.data());
    wr.tensor("optim/adamw/m/blocks.0.attn.wq", Shape{30}, w.data());
    wr.tensor("params/scale", Shape{}, &scalar);
    wr.tensor("params/empty", Shape{0, 4}, nullptr);
    wr.tensor_f64("stats/d", Shape{6}, d.data());
    wr.tensor_i64("step_history", Shape{5, 1}, i.data());
    wr.tensor_u64("rng", Shape{2, 2}, u.data());
    wr.strings("vocab", vocab);
    wr.strings("empty_list", {});
    wr.attr("config", yaml);
    wr.attr("step", int64_t{-7});
    wr.attr("n_tokens", size_t{123456789012});
    wr.attr("n_layer", 2);
    wr.attr("lr", 3e-4);
    wr.attr("nan", std::bit_cast<double>(0x7ff8000000000001ull));
    wr.attr_u64("seed", std::numeric_limits<uint64_t>::max());
    wr.attr("replaced", int64_t{1});
    wr.attr("replaced", std::string_view("now a string"));
    wr.commit();
  }
  CheckpointReader rd(path);
  std::vector<float> w2(30), w3(30);
  rd.read("params/blocks.0.attn.wq", Shape{3, 5, 2}, w2.data());
  rd.read("optim/adamw/m/blocks.0.attn.wq", Shape{30}, w3.data());
  CHECK(same_bits(w, w2));
  CHECK(same_bits(w, w3));
  float s2 = 0;
  rd.read("params/scale", Shape{}, &s2);
  CHECK(s2 == scalar);
  CHECK(rd.shape("params/scale").empty());
  CHECK(rd.shape("params/empty") == Shape{0, 4});
  rd.read("params/empty", Shape{0, 4}, nullptr);
  std::vector<double> d2(6);
  rd.read_f64("stats/d", Shape{6}, d2.data());
  CHECK(same_bits(d, d2));
  std::vector<int64_t> i2(5);
  rd.read_i64("step_history", Shape{5, 1}, i2.data());
  CHECK(i2 == i);
  std::vector<uint64_t> u2(4);
  rd.read_u64("rng", Shape{2, 2}, u2.data());
  CHECK(u2 == u);
  CHECK(rd.strings("vocab") == vocab);
  CHECK(rd.strings("empty_list").empty());
  CHECK(rd.attr_string("config") == yaml);
  CHECK(rd.attr_i64("step") == -7);
  CHECK(rd.attr_i64("n_tokens") == 123456789012);
  CHECK(rd.attr_i64("n_layer") == 2);
  CHECK(rd.attr_f64("lr") == 3e-4);
  CHECK(std::bit_cast<uint64_t>(rd.attr_f64("nan")) == 0x7ff8000000000001ull);
  CHECK(rd.attr_u64("seed") == std::numeric_limits<uint64_t>::max());
  CHECK(rd.attr_u64("n_layer") == 2);
  CHECK(rd.attr_string("replaced") == "now a string");
  CHECK(rd.has_attr("seed"));
  CHECK_FALSE(rd.has_attr("nope"));
}

TEST_CASE("checkpoint: a tensor larger than one 64 MiB chunk round-trips", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("big.h5");
  const Shape shape = {17, 1 << 20};  // 68 MiB of float32: two chunks
  std::vector<float> w(size_t{17} << 20);
  for (size_t k = 0; k < w.size(); ++k) w[k] = static_cast<float>(k % 1000003) * 0.5f;
  CheckpointWriter wr(path);
  wr.tensor("params/big", shape, w.data());
  wr.commit();
  std::vector<float> back(w.size(), -1.0f);
  CheckpointReader(path).read("params/big", shape, back.data());
  CHECK(same_bits(w, back));
}

TEST_CASE("checkpoint: list and has and shape follow the group hierarchy", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  const float x[6] = {};
  {
    CheckpointWriter wr(path);
    for (const char* name : {"params/blocks.1.attn.wq", "params/blocks.0.attn.wq", "params/blocks.10.mlp.w1",
                             "optim/adamw/v/blocks.0.attn.wq", "optim/adamw/m/blocks.0.attn.wq", "step"})
      wr.tensor(name, Shape{2, 3}, x);
    wr.commit();
  }
  CheckpointReader rd(path);
  CHECK(rd.list("params") == std::vector<std::string>{"blocks.0.attn.wq", "blocks.1.attn.wq", "blocks.10.mlp.w1"});
  CHECK(rd.list("params/") == rd.list("params"));
  CHECK(rd.list("optim/adamw") == std::vector<std::string>{"m/blocks.0.attn.wq", "v/blocks.0.attn.wq"});
  CHECK(rd.list("") == std::vector<std::string>{"optim/adamw/m/blocks.0.attn.wq", "optim/adamw/v/blocks.0.attn.wq",
                                                "params/blocks.0.attn.wq", "params/blocks.1.attn.wq",
                                                "params/blocks.10.mlp.w1", "step"});
  CHECK(rd.list("optim/muon").empty());
  CHECK(rd.has("params"));
  CHECK(rd.has("params/blocks.0.attn.wq"));
  CHECK(rd.has("optim/adamw/m"));
  CHECK_FALSE(rd.has("params/blocks.2.attn.wq"));
  CHECK_FALSE(rd.has("params/blocks.0.attn.wq/x"));
  CHECK_FALSE(rd.has("nope/deeper/still"));
  CHECK_FALSE(rd.has(""));
  CHECK(rd.shape("step") == Shape{2, 3});
  CHECK_THAT(checkpoint_error([&] { rd.list("step"); }), Contains("step: is not a group"));
}

TEST_CASE("checkpoint: a wrong dtype or rank or shape and a missing dataset are named", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  const int64_t ints[6] = {1, 2, 3, 4, 5, 6};
  const float floats[6] = {1, 2, 3, 4, 5, 6};
  {
    CheckpointWriter wr(path);
    wr.tensor_i64("params/blocks.0.attn.wq", Shape{2, 3}, ints);
    wr.tensor("params/blocks.0.attn.wk", Shape{2, 3}, floats);
    wr.commit();
  }
  CheckpointReader rd(path);
  float out[6];
  double dout[6];
  uint64_t uout[6];
  std::string msg = checkpoint_error([&] { rd.read("params/blocks.0.attn.wq", Shape{2, 3}, out); });
  CHECK_THAT(msg, Contains(path) && Contains("params/blocks.0.attn.wq") &&
                      Contains("expected float32 [2, 3], found int64 [2, 3]"));
  msg = checkpoint_error([&] { rd.read("params/blocks.0.attn.wk", Shape{6}, out); });
  CHECK_THAT(msg, Contains("params/blocks.0.attn.wk: expected float32 [6], found float32 [2, 3]"));
  msg = checkpoint_error([&] { rd.read("params/blocks.0.attn.wk", Shape{3, 2}, out); });
  CHECK_THAT(msg, Contains("expected float32 [3, 2], found float32 [2, 3]"));
  msg = checkpoint_error([&] { rd.read_f64("params/blocks.0.attn.wk", Shape{2, 3}, dout); });
  CHECK_THAT(msg, Contains("expected float64 [2, 3], found float32 [2, 3]"));
  msg = checkpoint_error([&] { rd.read_u64("params/blocks.0.attn.wq", Shape{2, 3}, uout); });
  CHECK_THAT(msg, Contains("expected uint64 [2, 3], found int64 [2, 3]"));
  msg = checkpoint_error([&] { rd.read("params/blocks.0.attn.wv", Shape{2, 3}, out); });
  CHECK_THAT(msg, Contains(path) && Contains("params/blocks.0.attn.wv: missing dataset"));
  msg = checkpoint_error([&] { rd.shape("params/blocks.0.attn.wv"); });
  CHECK_THAT(msg, Contains("params/blocks.0.attn.wv: missing dataset"));
  msg = checkpoint_error([&] { rd.read("params", Shape{2, 3}, out); });
  CHECK_THAT(msg, Contains("params: is a group, not a dataset"));
  msg = checkpoint_error([&] { rd.strings("params/blocks.0.attn.wk"); });
  CHECK_THAT(msg, Contains("params/blocks.0.attn.wk: expected a 1-D list of byte strings, found float32 [2, 3]"));
  CHECK(msg.find('\n') == std::string::npos);
}

TEST_CASE("checkpoint: missing attributes and attributes of the wrong kind are named", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  {
    CheckpointWriter wr(path);
    wr.attr("step", int64_t{-3});
    wr.attr("name", std::string_view("run"));
    wr.attr("lr", 0.5);
    wr.attr_u64("seed", std::numeric_limits<uint64_t>::max());
    wr.commit();
  }
  CheckpointReader rd(path);
  CHECK_THAT(checkpoint_error([&] { rd.attr_i64("n_layer"); }),
             Contains(path) && Contains("attribute n_layer: missing"));
  CHECK_THAT(checkpoint_error([&] { rd.attr_string("step"); }),
             Contains("attribute step: expected a string, found int64"));
  CHECK_THAT(checkpoint_error([&] { rd.attr_i64("name"); }), Contains("attribute name: expected an integer"));
  CHECK_THAT(checkpoint_error([&] { rd.attr_f64("step"); }), Contains("attribute step: expected a float, found int64"));
  CHECK_THAT(checkpoint_error([&] { rd.attr_u64("step"); }),
             Contains("attribute step: expected a non-negative integer"));
  CHECK_THAT(checkpoint_error([&] { rd.attr_i64("seed"); }),
             Contains("attribute seed: value 18446744073709551615 does not fit int64"));
}

TEST_CASE("checkpoint: bad files are rejected with one-line errors naming the file", "[io][checkpoint]") {
  TempDir dir;
  const auto open_error = [](const std::string& p) {
    std::string msg = checkpoint_error([&] { CheckpointReader rd(p); });
    CHECK_THAT(msg, Contains(p));
    CHECK(msg.find('\n') == std::string::npos);
    return msg;
  };
  CHECK_THAT(open_error(dir.file("absent.h5")), Contains("no such file"));
  CHECK_THAT(open_error(dir.path().string()), Contains("is a directory"));
  io_testing::spit(dir.file("empty.h5"), "");
  CHECK_THAT(open_error(dir.file("empty.h5")), Contains("is empty"));
  io_testing::spit(dir.file("text.h5"), "model:\n  n_layer: 2\n");
  CHECK_THAT(open_error(dir.file("text.h5")), Contains("not an HDF5 file"));
  std::string noise(8192, '\0');
  std::mt19937 rng(7);
  for (char& c : noise) c = static_cast<char>(rng());
  io_testing::spit(dir.file("noise.h5"), noise);
  CHECK_THAT(open_error(dir.file("noise.h5")), Contains("not an HDF5 file"));

  // A valid file, then truncated copies of it: at every cut the open (or a read) must fail.
  const std::string good = dir.file("good.h5");
  std::vector<float> w(4096);
  for (size_t k = 0; k < w.size(); ++k) w[k] = static_cast<float>(k);
  {
    CheckpointWriter wr(good);
    wr.tensor("params/w", Shape{64, 64}, w.data());
    wr.strings("vocab", {"a", "b"});
    wr.attr("step", int64_t{10});
    wr.commit();
  }
  const std::string bytes = io_testing::slurp(good);
  REQUIRE(bytes.size() > 16384);
  CheckpointReader(good).read("params/w", Shape{64, 64}, w.data());  // the intact file reads fine
  for (double frac : {0.5, 0.1, 0.9, 0.99}) {
    const std::string cut = dir.file("cut.h5");
    io_testing::spit(cut, bytes.substr(0, static_cast<size_t>(static_cast<double>(bytes.size()) * frac)));
    INFO("truncated to " << frac);
    const std::string msg = checkpoint_error([&] {
      CheckpointReader rd(cut);
      rd.read("params/w", Shape{64, 64}, w.data());
    });
    CHECK_THAT(msg, Contains(cut) && Contains("truncated"));
  }
}

TEST_CASE("checkpoint: a flipped byte in tensor data fails the read (checksum)", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  std::vector<float> w(256, 1.1f);
  {
    CheckpointWriter wr(path);
    wr.tensor("params/w", Shape{16, 16}, w.data());
    wr.commit();
  }
  std::string bytes = io_testing::slurp(path);
  const std::string pattern(reinterpret_cast<const char*>(w.data()), 64);
  const size_t at = bytes.find(pattern);
  REQUIRE(at != std::string::npos);
  bytes[at + 130] ^= 0x10;  // one bit of one float, well inside the data
  io_testing::spit(path, bytes);
  // The header's CRC no longer matches, but HDF5 reads the file (a warning): the dataset's own
  // Fletcher32 checksum fails the read.
  CheckpointReader rd(path);
  CHECK_THAT(checkpoint_error([&] {
               rd.read("params/w", Shape{16, 16}, w.data());
             }),
             Contains(path) && Contains("params/w: cannot read") && Contains("checksum"));
}

// HDF5 trusts the file's internal addresses: a corrupt length in a byte-list's heap made the
// library read out of bounds and crash the process. The header holds the size and CRC-32C of
// every byte after it; in a file that no longer matches, each read is tried in a child process
// first and refused if it crashes there; what reads is used (an edit in place, e.g. with h5py).
TEST_CASE("checkpoint: a read that crashes HDF5 in a changed file is refused, what reads is used", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  std::vector<float> w(64, 0.5f);
  {
    CheckpointWriter wr(path);
    wr.tensor("params/w", Shape{8, 8}, w.data());
    wr.strings("vocab", {"a", "b", "\n"});
    wr.attr("step", int64_t{3});
    wr.commit();
  }
  const std::string good = io_testing::slurp(path);
  REQUIRE(good.size() > 1024);
  CHECK(good.compare(0, 19, "attnlab checkpoint\n") == 0);
  CHECK(good.compare(512, 4, "\x89HDF") == 0);  // HDF5 (and h5py) skip the header: a user block
  CHECK(CheckpointReader(path).strings("vocab") == std::vector<std::string>{"a", "b", "\n"});
  // The first object of the byte lists' global heap ("GCOL" + 16 bytes) claims 2^40 bytes.
  std::string bad = good;
  const size_t heap = bad.find("GCOL");
  REQUIRE(heap != std::string::npos);
  const uint64_t huge = uint64_t(1) << 40;
  std::memcpy(bad.data() + heap + 16 + 8, &huge, sizeof huge);
  io_testing::spit(path, bad);
  {
    CheckpointReader rd(path);  // opens: the damage is in the heap
    CHECK(rd.attr_i64("step") == 3);
    CHECK_THAT(checkpoint_error([&] { rd.strings("vocab"); }),
               Contains(path + ": vocab: corrupt checkpoint: it changed after it was written (its CRC-32C is") &&
                   Contains("reading it crashes the HDF5 library"));
  }
  // A damaged header, a truncated file: refused when HDF5 cannot read the rest either.
  bad = good;
  bad[3] = 'X';
  io_testing::spit(path, bad);
  CHECK(CheckpointReader(path).attr_i64("step") == 3);  // the header only: the file reads
  io_testing::spit(path, good.substr(0, good.size() - 100));
  CHECK_THAT(checkpoint_error([&] { CheckpointReader{path}; }), Contains("truncated"));
  // An edit in place through HDF5 (as h5py's "r+"): the new value is read; seal records the edit.
  io_testing::spit(path, good);
  {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    REQUIRE(f >= 0);
    const hid_t ds = H5Dopen2(f, "params/w", H5P_DEFAULT);
    std::vector<float> twice(64, 1.0f);
    CHECK(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, twice.data()) >= 0);
    H5Dclose(ds);
    H5Fclose(f);
  }
  CHECK(io_testing::slurp(path).compare(0, 512, good, 0, 512) == 0);  // the header is as written
  {
    CheckpointReader rd(path);
    rd.read("params/w", Shape{8, 8}, w.data());
    CHECK(w[17] == 1.0f);
  }
  seal_checkpoint(path);
  CHECK(io_testing::slurp(path).compare(0, 512, good, 0, 512) != 0);
  CHECK(CheckpointReader(path).attr_i64("step") == 3);
  // A file without the header (written before it existed, or by h5py) is read as it is, and
  // cannot be sealed (no room).
  const std::string plain = dir.file("plain.h5");
  {
    h5::File f = h5::File::create(plain);
    f.set_attr("step", int64_t{5});
    f.close();
  }
  CHECK(CheckpointReader(plain).attr_i64("step") == 5);
  CHECK_THAT(checkpoint_error([&] { seal_checkpoint(plain); }), Contains("has no room for a header"));
}

TEST_CASE("checkpoint: commit replaces the file atomically and no commit leaves no trace", "[io][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.h5");
  const auto step_of = [&] { return CheckpointReader(path).attr_i64("step"); };
  {
    CheckpointWriter wr(path);
    wr.attr("step", int64_t{1});
    wr.commit();
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  }
  REQUIRE(step_of() == 1);
  {
    CheckpointWriter wr(path);
    wr.attr("step", int64_t{2});
    CHECK(std::filesystem::exists(path + ".tmp"));
    CHECK(step_of() == 1);  // the old file stays readable until commit
    CheckpointWriter moved(std::move(wr));
    moved.commit();
    CHECK(step_of() == 2);
    CHECK_THROWS_AS(moved.attr("step", int64_t{3}), InternalError);  // nothing after commit
  }
  {
    CheckpointWriter wr(path);
    wr.attr("step", int64_t{3});
  }  // abandoned
  CHECK(step_of() == 2);
  CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1);

  const std::string nowhere = dir.file("no/such/dir/ckpt.h5");
  CHECK_THAT(checkpoint_error([&] { CheckpointWriter wr(nowhere); }), Contains(nowhere + ".tmp: cannot create"));
}

TEST_CASE("checkpoint: malformed or repeated names are API misuse", "[io][checkpoint]") {
  TempDir dir;
  CheckpointWriter wr(dir.file("ckpt.h5"));
  const float x[2] = {1, 2};
  wr.tensor("params/w", Shape{2}, x);
  CHECK_THROWS_AS(wr.tensor("params/w", Shape{2}, x), InternalError);
  CHECK_THROWS_AS(wr.tensor("params/w/child", Shape{2}, x), InternalError);
  for (const char* bad : {"", "/params/v", "params/", "params//v", "params/./v", "../v"})
    CHECK_THROWS_AS(wr.tensor(bad, Shape{2}, x), InternalError);
  CHECK_THROWS_AS(wr.tensor("params/neg", Shape{-1}, x), InternalError);
  CHECK_THROWS_AS(wr.attr("text", std::string_view("a\0b", 3)), InternalError);
  CHECK_THROWS_AS(wr.attr("big", uint64_t{1} << 63), InternalError);
}

TEST_CASE("checkpoint: the same content gives byte-identical files", "[io][checkpoint]") {
  TempDir dir;
  const std::vector<float> w = special_floats();
  for (const char* name : {"a.h5", "b.h5"}) {
    CheckpointWriter wr(dir.file(name));
    wr.tensor("params/blocks.0.attn.wq", Shape{3, 10}, w.data());
    wr.strings("vocab", {"x", "y"});
    wr.attr("step", int64_t{5});
    wr.attr("config", std::string_view("a: 1\n"));
    wr.commit();
  }
  const std::string a = io_testing::slurp(dir.file("a.h5")), b = io_testing::slurp(dir.file("b.h5"));
  CHECK(!a.empty());
  CHECK(a == b);
}
