#include "util/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace attnlab::log {

void init(bool quiet) {
  auto logger = spdlog::stderr_color_mt("attnlab");
  logger->set_pattern("[%H:%M:%S] %^%l%$ %v");
  logger->set_level(quiet ? spdlog::level::warn : spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace attnlab::log
