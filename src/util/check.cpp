#include "util/check.h"

#include <cstring>

namespace attnlab::detail {

void throw_check(const char* file, int line, const char* cond, const std::string& msg) {
  const char* base = std::strstr(file, "src/");
  throw InternalError(concat(msg, " [check ", cond, " failed at ", base ? base : file, ":", line, "]"));
}

}  // namespace attnlab::detail
