#pragma once
// One registration function per subcommand: it declares the subcommand's options on `app` and
// returns the function that runs it, which returns the exit code (NOTE [exit codes]).
#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>

namespace attnlab::cli {

struct Command {
  CLI::App* app;
  std::function<int()> run;
};

struct Globals {
  bool quiet = false;
};

// A whole unsigned integer in [lo, hi], checked on the text itself: CLI11 would wrap "-1" into an
// unsigned option and clamp a value past the type's range.
inline CLI::Validator integer_in(uint64_t lo, uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) {
        uint64_t x = 0;
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
        if (ec != std::errc() || end != v.data() + v.size() || x < lo || x > hi)
          return "Value " + v + " is not an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
        return std::string();
      },
      "INT in " + std::to_string(lo) + ".." + std::to_string(hi));
}

Command add_train(CLI::App& app, const Globals& g);
Command add_eval(CLI::App& app, const Globals& g);
Command add_sample(CLI::App& app, const Globals& g);
Command add_inspect(CLI::App& app, const Globals& g);
Command add_seal(CLI::App& app, const Globals& g);
Command add_grads(CLI::App& app, const Globals& g);
Command add_bench(CLI::App& app, const Globals& g);
Command add_sweep(CLI::App& app, const Globals& g);
Command add_report(CLI::App& app, const Globals& g);
Command add_probe(CLI::App& app, const Globals& g);

}  // namespace attnlab::cli
