// tools/cli_util.h — what every `tessera` subcommand prints the same way: an error line and
// byte counts.
#pragma once
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

namespace tessera::tools {

// "tessera: error: WHAT" on stderr; returns 1, the exit code of a failed command.
inline int fail(const std::string& what) {
  std::cerr << "tessera: error: " << what << std::endl;
  return 1;
}

// 1536 → "1.5 KiB".
inline std::string human(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace tessera::tools
