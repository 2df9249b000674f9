#pragma once
// One registration function per subcommand: it declares the subcommand's options on `app` and
// returns the function that runs it, which returns the exit code (NOTE [exit codes]).
#include <CLI/CLI.hpp>
#include <functional>

namespace attnlab::cli {

struct Command {
  CLI::App* app;
  std::function<int()> run;
};

struct Globals {
  bool quiet = false;
};

Command add_train(CLI::App& app, const Globals& g);
Command add_eval(CLI::App& app, const Globals& g);
Command add_sample(CLI::App& app, const Globals& g);
Command add_inspect(CLI::App& app, const Globals& g);
Command add_grads(CLI::App& app, const Globals& g);
Command add_bench(CLI::App& app, const Globals& g);
Command add_sweep(CLI::App& app, const Globals& g);
Command add_report(CLI::App& app, const Globals& g);
Command add_probe(CLI::App& app, const Globals& g);

}  // namespace attnlab::cli
