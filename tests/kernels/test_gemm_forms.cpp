// Matmul forms (kernels/gemm.h): every form computes the product; a choice is made once and kept;
// the forms file and the presets (a checkpoint's) decide ahead of measurement.
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "kernels/gemm.h"
#include "testing/gradcheck.h"
#include "util/check.h"
#include "util/profile.h"

using namespace attnlab;
using testing::PrecisionScope;
using testing::Vec;

namespace {

struct ThreadsScope {
  int prev = kernels::num_threads();
  explicit ThreadsScope(int n) { kernels::set_num_threads(n); }
  ~ThreadsScope() { kernels::set_num_threads(prev); }
};

// Leaves the process's forms as the test found them: measured, no file, nothing chosen.
struct FormsScope {
  FormsScope(bool measure, const std::string& file) {
    kernels::forget_matmul_forms();
    kernels::set_matmul_forms(measure, file);
  }
  ~FormsScope() {
    kernels::forget_matmul_forms();
    kernels::set_matmul_forms(true, "");
  }
};

std::string key(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool ta, bool tb, bool acc,
                bool bf16, bool pb, int threads) {
  std::ostringstream s;
  s << "M=" << M << " N=" << N << " K=" << K << " lda=" << lda << " ldb=" << ldb << " ldc=" << ldc << " ta=" << ta
    << " tb=" << tb << " acc=" << acc << " bf16=" << bf16 << " pb=" << pb << " threads=" << threads;
  return s.str();
}

// The form the last profiled calls of the (only) product ran in.
std::string profiled_form(const std::function<void()>& call) {
  kernels::reset_product_stats();
  set_profiling(true);
  call();
  set_profiling(false);
  const auto stats = kernels::product_stats();
  REQUIRE(stats.size() == 1);
  return stats[0].form;
}

}  // namespace

TEST_CASE("gemm forms: each form, forced, computes the product (strided, transposed, accumulating, f32 and bf16)",
          "[kernels]") {
  ThreadsScope threads(2);
  FormsScope scope(false, "");  // presets only: nothing measured
  const int64_t M = 37, N = 29, K = 301, pad = 3;
  for (auto prec : {kernels::MatmulPrecision::f32, kernels::MatmulPrecision::bf16})
    for (const char* form : {"direct", "packed_b", "split_k", "transposed"})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (bool acc : {false, true})
            for (int copies = 0; copies < 4; ++copies) {  // the caller's bf16 copies: bit 0 of B, bit 1 of A
              const bool bf16 = prec == kernels::MatmulPrecision::bf16;
              const bool give_b16 = copies & 1, give_a16 = copies & 2;
              if (copies && !bf16) continue;
              INFO("form " << form << " bf16 " << bf16 << " ta " << ta << " tb " << tb << " acc " << acc
                           << " bf16 copy of B " << give_b16 << " of A " << give_a16);
              PrecisionScope ps(prec);
              // Stored operands with row strides past their widths.
              const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
              Vec A = testing::randn((ta ? K : M) * lda, 21), B = testing::randn((tb ? N : K) * ldb, 22),
                  C0 = testing::randn(M * ldc, 23);
              std::vector<float> a(A.begin(), A.end()), b(B.begin(), B.end()), c0(C0.begin(), C0.end());
              kernels::Bf16Copy a16, b16;
              const uint16_t* pa = give_a16 ? a16.pack(a.data(), ta ? K : M, ta ? M : K, lda) : nullptr;
              const uint16_t* pb = give_b16 ? b16.pack(b.data(), tb ? N : K, tb ? K : N, ldb) : nullptr;
              kernels::preset_matmul_forms(key(M, N, K, lda, ldb, ldc, ta, tb, acc, bf16, pb != nullptr, 2) + "\t" +
                                           form + "\n");
              std::vector<float> got = c0;
              auto call = [&] {
                got = c0;
                kernels::gemm(ta, tb, M, N, K, a.data(), lda, b.data(), ldb, got.data(), ldc, acc, {pa, pb});
              };
              CHECK(profiled_form(call) == form);
              // The reference: double, from the operands as the kernel sees them (bf16-rounded or not).
              double worst = 0, scale = 0;
              for (int64_t m = 0; m < M; ++m)
                for (int64_t n = 0; n < N; ++n) {
                  double s = acc ? double(c0[m * ldc + n]) : 0.0;
                  for (int64_t k = 0; k < K; ++k) {
                    float x = ta ? a[k * lda + m] : a[m * lda + k], y = tb ? b[n * ldb + k] : b[k * ldb + n];
                    if (bf16)
                      x = std::bit_cast<float>(uint32_t(kernels::to_bf16(x)) << 16),
                      y = std::bit_cast<float>(uint32_t(kernels::to_bf16(y)) << 16);
                    s += double(x) * double(y);
                  }
                  worst = std::max(worst, std::abs(s - double(got[m * ldc + n])));
                  scale = std::max(scale, std::abs(s));
                }
              CHECK(worst <= 1e-5 * scale);
              // The padding of C is not written.
              for (int64_t m = 0; m < M; ++m)
                for (int64_t n = N; n < ldc; ++n) CHECK(got[m * ldc + n] == c0[m * ldc + n]);
              kernels::forget_matmul_forms();
            }
}

TEST_CASE("gemm forms: a measured choice is made once, kept, and written to the forms file", "[kernels]") {
  ThreadsScope threads(2);
  const std::string file =
      (std::filesystem::temp_directory_path() / ("attnlab_forms_" + std::to_string(::getpid()) + ".tsv")).string();
  std::filesystem::remove(file);
  // Large enough to be measured (kFormMinFlops): the dW product of a [4096 x 128] activation.
  const int64_t M = 128, N = 256, K = 4096;
  static_assert(2.0 * 128 * 256 * 4096 >= kernels::kFormMinFlops);
  Vec A = testing::randn(K * M, 31), B = testing::randn(K * N, 32);
  std::vector<float> a(A.begin(), A.end()), b(B.begin(), B.end()), c1(M * N), c2(M * N);
  std::string chosen;
  {
    FormsScope scope(true, file);
    chosen = profiled_form([&] { kernels::gemm(true, false, M, N, K, a.data(), M, b.data(), N, c1.data(), N, false); });
    // Kept: the next call runs the same form and gives the same bits.
    CHECK(profiled_form([&] { kernels::gemm(true, false, M, N, K, a.data(), M, b.data(), N, c2.data(), N, false); }) ==
          chosen);
    CHECK(c1 == c2);
    const auto news = kernels::take_new_matmul_forms();
    REQUIRE(news.size() == 1);
    CHECK(news[0] == key(M, N, K, M, N, N, true, false, false, false, false, 2) + ": " + chosen + " (measured)");
    CHECK(kernels::matmul_forms_text() == key(M, N, K, M, N, N, true, false, false, false, false, 2) + "\t" + chosen + "\n");
  }
  std::ifstream in(file);
  std::string line, all;
  int lines = 0;
  while (std::getline(in, line)) lines++, all = line;
  CHECK(lines == 1);
  CHECK(all == kernels::matmul_forms_machine() + "\t" + key(M, N, K, M, N, N, true, false, false, false, false, 2) +
                   "\t" + chosen);
  // Another process (here: a fresh table) takes the file's choice without measuring; a line of
  // another machine is ignored.
  const std::string other = chosen == "split_k" ? "direct" : "split_k";
  {
    std::ofstream out(file);
    out << "cpu=some other CPU;isa=1;onednn=0.0.0\t" << key(M, N, K, M, N, N, true, false, false, false, false, 2)
        << "\t" << chosen << "\n";
    out << kernels::matmul_forms_machine() << "\t" << key(M, N, K, M, N, N, true, false, false, false, false, 2) << "\t"
        << other << "\n";
  }
  {
    FormsScope scope(true, file);
    CHECK(profiled_form([&] { kernels::gemm(true, false, M, N, K, a.data(), M, b.data(), N, c2.data(), N, false); }) ==
          other);
    const auto news = kernels::take_new_matmul_forms();
    REQUIRE(news.size() == 1);
    CHECK(news[0].find("(forms file)") != std::string::npos);
  }
  // A forms file that cannot be opened: nothing measured, the product runs direct.
  {
    FormsScope scope(true, "/dev/null/forms.tsv");
    kernels::preset_matmul_forms("");
    CHECK(profiled_form([&] { kernels::gemm(true, false, M, N, K, a.data(), M, b.data(), N, c2.data(), N, false); }) ==
          "direct");
    CHECK(kernels::take_new_matmul_forms().empty());
  }
  // measure: direct ignores the file and every form.
  {
    FormsScope scope(false, file);
    CHECK(profiled_form([&] { kernels::gemm(true, false, M, N, K, a.data(), M, b.data(), N, c2.data(), N, false); }) ==
          "direct");
    CHECK(kernels::matmul_forms_text().empty() == false);  // large products are listed, direct included
  }
  std::filesystem::remove(file);
}

TEST_CASE("gemm forms: presets override the file, and a malformed preset names its line", "[kernels]") {
  FormsScope scope(false, "");
  std::string text = "\n";  // blank lines are skipped
  text += key(4, 4, 4, 4, 4, 4, false, false, false, false, false, 1);
  text += "\tpacked_b\n";
  CHECK_NOTHROW(kernels::preset_matmul_forms(text));
  CHECK(kernels::matmul_forms_text() == key(4, 4, 4, 4, 4, 4, false, false, false, false, false, 1) + "\tpacked_b\n");
  const std::vector<std::string> bads{
        key(4, 4, 4, 4, 4, 4, false, false, false, false, false, 1) + "\tfastest",           // unknown form
        key(4, 4, 4, 4, 4, 4, false, false, false, false, false, 1) + " packed_b",           // no tab
        std::string("M=4 N=4 K=4\tdirect"),                                                   // short key
        key(4, 4, 0, 4, 4, 4, false, false, false, false, false, 1) + "\tdirect",            // K = 0
        key(4, 8, 4, 4, 4, 4, false, false, false, false, false, 1) + "\tdirect"};          // ldc < N
  for (const std::string& bad : bads) {
    INFO(bad);
    try {
      kernels::preset_matmul_forms(key(2, 2, 2, 2, 2, 2, false, false, false, false, false, 1) + "\tdirect\n" + bad);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("line 2") != std::string::npos);
    }
  }
}
