#pragma once
// Intel AMX tiles for the flash kernel's bf16 products (kernels/flash_amx.h): the hardware, and an
// emulation of the same instructions in plain C++ that runs on any CPU.
//
// A tile unit is a policy of static functions over eight tile registers, each configured with its
// rows (≤ 16) and bytes per row (≤ 64) by configure():
//   load<t>(p, stride)  tile t's rows from p, p + stride, ... (stride in bytes)
//   store<t>(p, stride) the reverse
//   zero<t>()
//   dp<c, a, b>()       c[m][n] += Σ_k a[m][2k]·b[k][2n] + a[m][2k+1]·b[k][2n+1]: a holds bf16 rows,
//                       b bf16 pairs along the summed index ("VNNI"), c f32 (TDPBF16PS)
// AmxHw issues the instructions (inline assembly: the compiler needs no AMX flags, and the program
// runs on CPUs without AMX as long as it never calls them); AmxEmu computes the same with scalar
// code and checks the shapes that the hardware would refuse, so the kernel's layouts and loops are
// tested on every machine, the hardware path only where the CPU has AMX.
#include <cstdint>
#include <cstring>

namespace attnlab::kernels {

// The 64-byte operand of LDTILECFG (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  void set(int t, int nrows, int bytes_per_row) {
    rows[t] = uint8_t(nrows);
    colsb[t] = uint16_t(bytes_per_row);
  }
};
static_assert(sizeof(TileConfig) == 64);

// True when the CPU has AMX-TILE and AMX-BF16 and the kernel granted this process the tile data
// state (Linux ≥ 5.16 asks for it per process); asked once.
bool amx_bf16_usable();

struct AmxHw {
  static void configure(const TileConfig& c) { asm volatile("ldtilecfg %0" ::"m"(c) : "memory"); }
  static void release() { asm volatile("tilerelease" ::: "memory"); }
  template <int T>
  static void zero() {
    asm volatile("tilezero %%tmm%c0" ::"i"(T));
  }
  template <int T>
  static void load(const void* p, int64_t stride) {
    asm volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(p), "r"(stride), "i"(T) : "memory");
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    asm volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(p), "r"(stride), "i"(T) : "memory");
  }
  template <int C, int A, int B>
  static void dp() {
    asm volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B));
  }
};

// The same instructions in scalar code, over per-thread tile registers.
struct AmxEmu {
  static void configure(const TileConfig& c);
  static void release();
  static void zero_tile(int t);
  static void load_tile(int t, const void* p, int64_t stride);
  static void store_tile(int t, void* p, int64_t stride);
  static void dp_tiles(int c, int a, int b);
  template <int T>
  static void zero() {
    zero_tile(T);
  }
  template <int T>
  static void load(const void* p, int64_t stride) {
    load_tile(T, p, stride);
  }
  template <int T>
  static void store(void* p, int64_t stride) {
    store_tile(T, p, stride);
  }
  template <int C, int A, int B>
  static void dp() {
    dp_tiles(C, A, B);
  }
};

// Which bf16 products the flash kernel runs (with precision.matmul=bf16): AVX-512 BF16 registers,
// AMX tiles, or AMX emulated (tests). The default is AMX where amx_bf16_usable(), else AVX-512.
enum class FlashBf16Path { avx512, amx, amx_emulated };
FlashBf16Path flash_bf16_path();
// Forces a path (tests); amx where the CPU cannot is refused with an error.
void set_flash_bf16_path(FlashBf16Path p);
const char* flash_bf16_path_name(FlashBf16Path p);

}  // namespace attnlab::kernels
