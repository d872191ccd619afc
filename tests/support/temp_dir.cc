#include "tests/support/temp_dir.h"

#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <vector>

namespace tessera::test {

TempDir::TempDir(const std::string& prefix) {
  // A test run (tools/test) points TESSERA_TEST_TMP at its own directory, so its cleanup finds
  // whatever a crashed test left behind.
  const char* base = getenv("TESSERA_TEST_TMP");
  if (!base || !*base) base = getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/" + prefix + ".XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp " + pattern);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace tessera::test
