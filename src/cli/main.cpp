// attnlab: the command-line front end, and the only place errors turn into exit codes.
#include <cstdio>
#include <exception>
#include <vector>

#include "cli/commands.h"
#include "train/distributed.h"
#include "util/check.h"
#include "util/log.h"

int main(int argc, char** argv) {
  CLI::App app{"attnlab: train small transformers on CPU and see what attention-scaling choices do"};
  app.require_subcommand(1);
  app.fallthrough();  // -q/--quiet is accepted after the subcommand too
  attnlab::cli::Globals globals;
  app.add_flag("-q,--quiet", globals.quiet, "only warnings and errors");
  std::vector<attnlab::cli::Command> commands{
      attnlab::cli::add_train(app, globals), attnlab::cli::add_eval(app, globals),
      attnlab::cli::add_sample(app, globals), attnlab::cli::add_inspect(app, globals),
      attnlab::cli::add_seal(app, globals),
      attnlab::cli::add_grads(app, globals), attnlab::cli::add_bench(app, globals),
      attnlab::cli::add_sweep(app, globals), attnlab::cli::add_report(app, globals),
      attnlab::cli::add_probe(app, globals)};
  // A first word that is neither an option nor a subcommand: name it (CLI11 only says one is required).
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (auto& c : commands) known = known || c.app->get_name() == argv[1];
    if (!known) {
      std::fprintf(stderr, "attnlab: error: unknown subcommand '%s' (expected train, eval, sample, inspect, seal, grads, bench, sweep, report or probe; see --help)\n", argv[1]);
      return attnlab::kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? attnlab::kExitOk : attnlab::kExitUsage;
  }
  attnlab::log::init(globals.quiet);
  attnlab::dist::init(&argc, &argv);  // a no-op unless built with MPI and started by mpirun
  struct Finalize {
    ~Finalize() { attnlab::dist::finalize(); }
  } finalize;
  try {
    for (auto& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const attnlab::Error& e) {
    std::fprintf(stderr, "attnlab: error: %s\n", e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attnlab: error: %s\n", e.what());
    return attnlab::kExitRuntime;
  }
  return attnlab::kExitUsage;
}
