// tests/integration/helpers.h — small things every integration test uses.
#pragma once
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>

#include "tests/support/cluster.h"

// Integration tests need root and /dev/fuse; elsewhere they say why and do nothing.
#define TESSERA_REQUIRE_FUSE()                                          \
  do {                                                                  \
    std::string why_ = ::tessera::test::fuseUnavailableReason();        \
    if (!why_.empty()) {                                                \
      MESSAGE("skipped: " << why_);                                     \
      return;                                                           \
    }                                                                   \
  } while (0)

namespace tessera::test {

// Polls `done` every 100 ms until it holds or `timeoutMs` passed.
inline bool waitUntilMs(int timeoutMs, const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // polling, bounded
  }
  return true;
}

// The seed a randomized test uses: $TESSERA_SEED if set, else `pinned`. Printed so a failure
// replays with TESSERA_SEED=<seed>.
inline uint64_t testSeed(uint64_t pinned) {
  const char* env = getenv("TESSERA_SEED");
  uint64_t seed = env && *env ? std::strtoull(env, nullptr, 10) : pinned;
  MESSAGE("seed " << seed << " (replay with TESSERA_SEED=" << seed << ")");
  return seed;
}

inline std::string randomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    memcpy(&s[i], &v, 8);
  }
  for (; i < n; ++i) s[i] = char(rng());
  return s;
}

// sha256 of a file as `sha256sum` prints it, or "" on error.
inline std::string sha256(const std::string& path) {
  auto r = run({"/usr/bin/sha256sum", path}, 600'000);
  if (r.exitCode != 0) return "";
  return r.output.substr(0, 64);
}

// Where `got` and `want` differ first ("" when they are equal): a failure names a place rather
// than printing megabytes.
inline std::string difference(const std::string& got, const std::string& want) {
  if (got.size() != want.size()) {
    return "size " + std::to_string(got.size()) + " != " + std::to_string(want.size());
  }
  auto [a, b] = std::mismatch(got.begin(), got.end(), want.begin());
  if (a == got.end()) return "";
  return "byte " + std::to_string(a - got.begin()) + " differs";
}

// `len` bytes of the open file at `off` (REQUIREs that many are there).
inline std::string preadAt(int fd, off_t off, size_t len) {
  std::string out(len, '\0');
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, &out[done], len - done, off + off_t(done));
    REQUIRE_MESSAGE(n > 0, "pread: " << (n < 0 ? strerror(errno) : "end of file"));
    done += size_t(n);
  }
  return out;
}

// The same, by path.
inline std::string preadAt(const std::string& path, off_t off, size_t len) {
  int fd = open(path.c_str(), O_RDONLY);
  REQUIRE_MESSAGE(fd >= 0, path << ": " << std::string(strerror(errno)));
  std::string out = preadAt(fd, off, len);
  close(fd);
  return out;
}

// All of `data` at `off` of the open file.
inline void pwriteAll(int fd, const std::string& data, off_t off) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done, off + off_t(done));
    REQUIRE_MESSAGE(n > 0, "pwrite: " << std::string(strerror(errno)));
    done += size_t(n);
  }
}

// Disk space the chunk servers' files take (shards, CRC tables, logs), in bytes: under each
// server's directory and its data directories (Options::chunkData) if they lie elsewhere.
inline uint64_t chunkServersDiskUsed(Cluster& cluster) {
  uint64_t total = 0;
  auto add = [&total](const std::string& dir) {
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      struct stat st;
      if (lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        total += uint64_t(st.st_blocks) * 512;
      }
    }
  };
  for (int i = 0; i < cluster.chunks(); ++i) {
    std::string own = cluster.chunkDir(i);
    add(own);
    auto data = cluster.options().chunkData.find(i);
    if (data == cluster.options().chunkData.end()) continue;
    for (const std::string& dir : data->second) {
      if (dir.rfind(own + "/", 0) != 0) add(dir);
    }
  }
  return total;
}

inline std::string adminBin() { return buildDir() + "/tools/tessera"; }

}  // namespace tessera::test
