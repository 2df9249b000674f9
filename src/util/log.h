#pragma once
// The only spdlog include. Messages go to stderr; results (JSON, tables) go to stdout.
#include <spdlog/spdlog.h>

namespace attnlab::log {

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

// quiet: warnings and errors only.
void init(bool quiet);

}  // namespace attnlab::log
