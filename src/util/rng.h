#pragma once
// Counter-based random numbers: value i of stream (seed, stream) is a pure function
// mix(seed, stream, i). Any element can be drawn independently of the others (dropout masks are
// the same for any thread count), and the whole state is two integers (checkpoints store it).
#include <cmath>
#include <cstdint>
#include <string_view>

namespace attnlab {

// splitmix64's finalizer: a bijective 64-bit mixer with full avalanche.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

constexpr uint64_t hash3(uint64_t seed, uint64_t stream, uint64_t i) {
  return mix64(mix64(seed * 0x9e3779b97f4a7c15ULL + stream) ^ (i + 0x632be59bd9b4e019ULL));
}

// FNV-1a: a stream id from a name, so "blocks.0.attn.wq" always draws the same numbers.
constexpr uint64_t stream_id(std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Uniform in [0, 1) with 24 random bits: exact in float, as used by dropout.
inline float u01f(uint64_t bits) { return float(bits >> 40) * 0x1.0p-24f; }

struct Rng {
  uint64_t seed = 0;
  uint64_t stream = 0;
  uint64_t counter = 0;

  Rng() = default;
  Rng(uint64_t seed_, uint64_t stream_) : seed(seed_), stream(stream_) {}
  Rng(uint64_t seed_, std::string_view name) : seed(seed_), stream(stream_id(name)) {}

  uint64_t next_u64() { return hash3(seed, stream, counter++); }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < n / 2^64).
  uint64_t below(uint64_t n) { return uint64_t((unsigned __int128)next_u64() * n >> 64); }
  // Standard normal by Box-Muller (uses two draws; no cached spare, so state stays two numbers).
  double normal() {
    double u1 = 1.0 - uniform();  // (0, 1]
    double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

}  // namespace attnlab
