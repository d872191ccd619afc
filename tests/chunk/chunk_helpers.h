// tests/chunk/chunk_helpers.h — plumbing shared by the chunk server's tests: block contents
// with their CRCs, an event loop, and raw access to the bytes of a shard file.
#pragma once
#include <doctest/doctest.h>
#include <fcntl.h>
#include <kj/async-io.h>
#include <kj/timer.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "fs/checksum.h"
#include "fs/types.h"

namespace tessera::test {

// `len` bytes that differ with `seed` and with the position.
inline kj::Array<kj::byte> pattern(size_t len, unsigned seed) {
  auto out = kj::heapArray<kj::byte>(len);
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < len; ++i) {
    x = x * 1103515245u + 12345u;
    out[i] = kj::byte(x >> 16);
  }
  return out;
}

// One CRC32C per 4 KiB block.
inline kj::Array<uint32_t> crcsOf(kj::ArrayPtr<const kj::byte> data) {
  auto out = kj::heapArray<uint32_t>(data.size() / kBlockSize);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = crc32c(data.begin() + i * kBlockSize, kBlockSize);
  return out;
}

inline bool allZero(kj::ArrayPtr<const kj::byte> data) {
  for (auto b : data) {
    if (b != 0) return false;
  }
  return true;
}

// Flips every bit of the byte at `offset` of a file.
inline void flipByte(const std::string& path, uint64_t offset) {
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char b = 0;
  REQUIRE(::pread(fd, &b, 1, off_t(offset)) == 1);
  b = static_cast<unsigned char>(~b);
  REQUIRE(::pwrite(fd, &b, 1, off_t(offset)) == 1);
  ::close(fd);
}

inline bool fileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// An event loop that can hear from other threads (the Disk's worker).
struct Loop {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  kj::WaitScope& ws = io.waitScope;

  template <typename T>
  T wait(kj::Promise<T> p) {
    return p.wait(ws);
  }

  // Runs the loop, moving `timer` to its next event whenever nothing else is ready, until
  // `done()` holds. Fails after 10 s of real time (a hang, never a pass).
  template <typename Done>
  void runUntil(kj::TimerImpl& timer, Done&& done) {
    auto giveUp = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
      ws.poll();
      if (done()) return;
      KJ_IF_MAYBE(next, timer.nextEvent()) {
        timer.advanceTo(*next);
      }
      // Otherwise the Disk's worker thread is busy: poll again.
      if (std::chrono::steady_clock::now() > giveUp) FAIL("gave up waiting after 10 s");
    }
  }

  // Like wait(), with `timer` moved along as runUntil() does.
  template <typename T>
  T pump(kj::TimerImpl& timer, kj::Promise<T> p) {
    kj::Maybe<T> result;
    kj::Maybe<kj::Exception> failure;
    auto running = p.then([&result](T v) { result = kj::mv(v); },
                          [&failure](kj::Exception&& e) { failure = kj::mv(e); })
                       .eagerlyEvaluate(nullptr);
    runUntil(timer, [&] { return result != nullptr || failure != nullptr; });
    KJ_IF_MAYBE(e, failure) {
      FAIL(e->getDescription().cStr());
    }
    return kj::mv(KJ_ASSERT_NONNULL(result));
  }
};

}  // namespace tessera::test
