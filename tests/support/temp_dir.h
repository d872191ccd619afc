// tests/support/temp_dir.h — a private directory under $TMPDIR (or /tmp), removed with
// everything in it when the object goes away.
#pragma once
#include <string>

namespace tessera::test {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "tessera-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace tessera::test
