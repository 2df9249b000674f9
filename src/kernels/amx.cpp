#include "kernels/amx.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/check.h"

namespace attnlab::kernels {

bool amx_bf16_usable() {
  static const bool usable = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;  // CPUID.(7, 0).EDX
    if ((d & kAmxBf16) == 0 || (d & kAmxTile) == 0) return false;
    // ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA (Linux's asm/prctl.h): without it the first tile
    // instruction faults.
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return usable;
}

namespace {

struct EmuTiles {
  TileConfig config;
  bool configured = false;
  alignas(64) uint8_t data[8][16][64];
};
thread_local EmuTiles emu;

float bf16_to_float(uint16_t x) {
  const uint32_t bits = uint32_t(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The shapes the hardware checks before it runs an instruction (a fault there; an error here).
void check_tile(int t) {
  ATTN_CHECK(emu.configured, "AMX emulation: tile instruction before the tiles were configured");
  ATTN_CHECK(t >= 0 && t < 8 && emu.config.rows[t] >= 1 && emu.config.rows[t] <= 16 && emu.config.colsb[t] >= 4 &&
                 emu.config.colsb[t] <= 64 && emu.config.colsb[t] % 4 == 0,
             "AMX emulation: tile ", t, " is not configured for use");
}

}  // namespace

void AmxEmu::configure(const TileConfig& c) {
  ATTN_CHECK(c.palette == 1, "AMX emulation: only palette 1");
  emu.config = c;
  emu.configured = true;
  std::memset(emu.data, 0, sizeof emu.data);
}

void AmxEmu::release() {
  emu.configured = false;
  std::memset(emu.data, 0, sizeof emu.data);
}

void AmxEmu::zero_tile(int t) {
  check_tile(t);
  std::memset(emu.data[t], 0, sizeof emu.data[t]);
}

void AmxEmu::load_tile(int t, const void* p, int64_t stride) {
  check_tile(t);
  std::memset(emu.data[t], 0, sizeof emu.data[t]);  // past the configured shape: zero, as loaded
  for (int r = 0; r < emu.config.rows[t]; ++r)
    std::memcpy(emu.data[t][r], static_cast<const uint8_t*>(p) + r * stride, emu.config.colsb[t]);
}

void AmxEmu::store_tile(int t, void* p, int64_t stride) {
  check_tile(t);
  for (int r = 0; r < emu.config.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(p) + r * stride, emu.data[t][r], emu.config.colsb[t]);
}

void AmxEmu::dp_tiles(int c, int a, int b) {
  check_tile(c);
  check_tile(a);
  check_tile(b);
  const TileConfig& k = emu.config;
  ATTN_CHECK(c != a && c != b && a != b, "AMX emulation: TDPBF16PS needs three different tiles");
  ATTN_CHECK(k.rows[c] == k.rows[a] && k.colsb[c] == k.colsb[b] && k.colsb[a] / 4 == k.rows[b],
             "AMX emulation: TDPBF16PS shapes do not match: c ", int(k.rows[c]), "x", k.colsb[c], "B, a ",
             int(k.rows[a]), "x", k.colsb[a], "B, b ", int(k.rows[b]), "x", k.colsb[b], "B");
  for (int m = 0; m < k.rows[c]; ++m)
    for (int n = 0; n < k.colsb[c] / 4; ++n) {
      float acc;
      std::memcpy(&acc, emu.data[c][m] + 4 * n, sizeof acc);
      for (int kk = 0; kk < k.colsb[a] / 4; ++kk)
        for (int half = 0; half < 2; ++half) {
          uint16_t x, y;
          std::memcpy(&x, emu.data[a][m] + 4 * kk + 2 * half, sizeof x);
          std::memcpy(&y, emu.data[b][kk] + 4 * n + 2 * half, sizeof y);
          acc += bf16_to_float(x) * bf16_to_float(y);
        }
      std::memcpy(emu.data[c][m] + 4 * n, &acc, sizeof acc);
    }
}

namespace {
FlashBf16Path& current_path() {
  static FlashBf16Path p = amx_bf16_usable() ? FlashBf16Path::amx : FlashBf16Path::avx512;
  return p;
}
}  // namespace

FlashBf16Path flash_bf16_path() { return current_path(); }

void set_flash_bf16_path(FlashBf16Path p) {
  ATTN_CHECK(p != FlashBf16Path::amx || amx_bf16_usable(), "AMX tiles asked for on a CPU without AMX-BF16");
  current_path() = p;
}

const char* flash_bf16_path_name(FlashBf16Path p) {
  switch (p) {
    case FlashBf16Path::avx512:
      return "avx512-bf16";
    case FlashBf16Path::amx:
      return "amx";
    case FlashBf16Path::amx_emulated:
      return "amx-emulated";
  }
  return "?";
}

}  // namespace attnlab::kernels
