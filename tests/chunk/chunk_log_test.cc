// ChunkLog: records overlay reads newest-first, survive a reopen, go on trim and drop; a torn
// tail is ignored; old segments go (or are reused) once nothing in them is live; bad records
// are refused.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <kj/vector.h>

#include <filesystem>

#include "chunk/chunk_log.h"
#include "fs/checksum.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;

namespace {

ChunkLog::Record rec(uint64_t chunk, uint8_t shard, uint64_t epoch, uint64_t seq, uint64_t offset,
                     size_t blocks, uint8_t fill) {
  ChunkLog::Record r;
  r.chunk = ChunkId(chunk);
  r.shard = shard;
  r.epoch = epoch;
  r.seq = seq;
  r.offset = offset;
  r.data = kj::heapArray<kj::byte>(blocks * kBlockSize);
  memset(r.data.begin(), fill, r.data.size());
  r.crcs = kj::heapArray<uint32_t>(blocks);
  for (size_t b = 0; b < blocks; ++b) r.crcs[b] = crc32c(r.data.begin() + b * kBlockSize, kBlockSize);
  return r;
}

kj::Own<ChunkLog> openLog(const std::string& dir, ChunkLog::Config config = {}) {
  auto l = ChunkLog::open(dir, config);
  REQUIRE(l.ok());
  return kj::mv(*l);
}

// The first byte of each block of shard range [offset, offset + blocks * 4 KiB) as the log
// shows it over a zero shard.
std::vector<int> view(ChunkLog& log, uint64_t chunk, uint8_t shard, uint64_t offset, size_t blocks) {
  auto out = kj::heapArray<kj::byte>(blocks * kBlockSize);
  memset(out.begin(), 0, out.size());
  auto crcs = kj::heapArray<uint32_t>(blocks);
  for (auto& c : crcs) c = zeroBlockCrc();
  log.overlay(ChunkId(chunk), shard, offset, out, crcs);
  std::vector<int> v;
  for (size_t b = 0; b < blocks; ++b) {
    CHECK(crcs[b] == crc32c(out.begin() + b * kBlockSize, kBlockSize));
    v.push_back(out[b * kBlockSize]);
  }
  return v;
}

}  // namespace

TEST_CASE("chunk log: the newest record of a block is what reads see, also after a reopen") {
  test::Loop loop;
  test::TempDir dir{"chunk-log-test"};
  {
    auto log = openLog(dir.path());
    CHECK(loop.wait(log->append(rec(7, 1, 2, 1, 0, 2, 0xa1))).ok());
    CHECK(loop.wait(log->append(rec(7, 1, 2, 2, 4096, 2, 0xb2))).ok());  // over block 1
    CHECK(loop.wait(log->append(rec(7, 1, 3, 1, 8192, 1, 0xc3))).ok());  // newer epoch
    CHECK(loop.wait(log->append(rec(7, 0, 2, 3, 0, 1, 0xd4))).ok());     // another shard
    CHECK(view(*log, 7, 1, 0, 4) == std::vector<int>{0xa1, 0xb2, 0xc3, 0});
    CHECK(view(*log, 7, 0, 0, 2) == std::vector<int>{0xd4, 0});
    CHECK(log->count(ChunkId(7)) == 4);
    CHECK(log->records(ChunkId(7), 1, 8192, 12288).size() == 2);
    CHECK(log->records(ChunkId(7), -1, 0, kChunkSize).size() == 4);
  }
  auto log = openLog(dir.path());
  CHECK(log->count(ChunkId(7)) == 4);
  CHECK(view(*log, 7, 1, 0, 4) == std::vector<int>{0xa1, 0xb2, 0xc3, 0});
  // Trim up to (2, 2): the epoch-2 records of seq <= 2 go, (2, 3) and (3, 1) stay.
  CHECK(loop.wait(log->trim(ChunkId(7), 2, 2)).ok());
  CHECK(log->count(ChunkId(7)) == 2);
  CHECK(view(*log, 7, 1, 0, 4) == std::vector<int>{0, 0, 0xc3, 0});
  CHECK(loop.wait(log->drop(ChunkId(7))).ok());
  CHECK(log->count(ChunkId(7)) == 0);
  CHECK(loop.wait(log->append(rec(8, 2, 1, 1, 0, 1, 0xee))).ok());
  log = openLog(dir.path());
  CHECK(log->count(ChunkId(7)) == 0);
  CHECK(log->count(ChunkId(8)) == 1);
}

TEST_CASE("chunk log: a torn or damaged tail is ignored at open, what came before stays") {
  test::Loop loop;
  test::TempDir dir{"chunk-log-test"};
  {
    auto log = openLog(dir.path());
    CHECK(loop.wait(log->append(rec(5, 0, 1, 1, 0, 1, 0x11))).ok());
    CHECK(loop.wait(log->append(rec(5, 0, 1, 2, 4096, 1, 0x22))).ok());
  }
  std::string seg;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (std::filesystem::file_size(e.path()) > 0) seg = e.path();
  }
  REQUIRE(!seg.empty());
  // Two group commits of one record each, each padded to the same size: the second record
  // starts half way.
  auto size = std::filesystem::file_size(seg);
  REQUIRE(size % 512 == 0);
  auto second = size / 2;
  SUBCASE("torn") { std::filesystem::resize_file(seg, second + 3000); }
  SUBCASE("damaged") {
    int fd = ::open(seg.c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    char x = 0x5a;
    REQUIRE(::pwrite(fd, &x, 1, off_t(second + 3000)) == 1);
    ::close(fd);
  }
  auto log = openLog(dir.path());
  CHECK(log->count(ChunkId(5)) == 1);
  CHECK(view(*log, 5, 0, 0, 2) == std::vector<int>{0x11, 0});
}

TEST_CASE("chunk log: a group commit ends on a sector, so none writes a sector twice") {
  test::Loop loop;
  test::TempDir dir{"chunk-log-test"};
  {
    auto log = openLog(dir.path());
    // One 4 KiB record per commit: 56 header + 4 CRC + 4096 data, padded to 9 sectors of 512
    // (or, on a disk of 4 KiB sectors, 2 of 4096).
    for (uint64_t i = 1; i <= 5; ++i) {
      CHECK(loop.wait(log->append(rec(6, 0, 1, i, i * kBlockSize, 1, uint8_t(i)))).ok());
    }
    // Five in one commit, then a trim: each commit pads once.
    kj::Vector<kj::Promise<Status>> five;
    for (uint64_t i = 6; i <= 10; ++i) five.add(log->append(rec(6, 1, 1, i, 0, 1, uint8_t(i))));
    for (auto& s : loop.wait(kj::joinPromises(five.releaseAsArray()))) CHECK(s.ok());
    CHECK(loop.wait(log->trim(ChunkId(6), 1, 3)).ok());
  }
  std::string seg;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (std::filesystem::file_size(e.path()) > 0) seg = e.path();
  }
  REQUIRE(!seg.empty());
  auto size = std::filesystem::file_size(seg);
  INFO("segment bytes: ", size);
  // A commit of n records of one block, and its pad record: n * 4156 + 56 bytes, rounded up.
  auto commits = [](size_t sector) {
    auto up = [&](size_t n) { return (n + sector - 1) / sector * sector; };
    return 5 * up(4156 + 56) + up(5 * 4156 + 56) + up(56 + 56);
  };
  CHECK((size == commits(512) || size == commits(4096)));
  // The pads read back as nothing: every record is there.
  auto log = openLog(dir.path());
  CHECK(log->count(ChunkId(6)) == 7);
  CHECK(view(*log, 6, 0, 0, 6) == std::vector<int>{0, 0, 0, 0, 4, 5});
  CHECK(view(*log, 6, 1, 0, 1) == std::vector<int>{10});
}

TEST_CASE("chunk log: segments go once nothing in them is live — live records are moved on") {
  test::Loop loop;
  test::TempDir dir{"chunk-log-test"};
  ChunkLog::Config config;
  config.segmentBytes = 64 << 10;
  config.maxSegments = 3;
  auto segments = [&] {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path())) n += e.path().filename().string().rfind("log.", 0) == 0;
    return n;
  };
  {
    auto log = openLog(dir.path(), config);
    // One record that stays (chunk 1), then many that come and go (chunk 2).
    CHECK(loop.wait(log->append(rec(1, 0, 1, 1, 0, 1, 0x01))).ok());
    for (uint64_t i = 1; i <= 100; ++i) {
      CHECK(loop.wait(log->append(rec(2, 0, 1, i, 0, 4, uint8_t(i)))).ok());
      CHECK(loop.wait(log->trim(ChunkId(2), 1, i)).ok());
    }
    // 100 records of 16 KiB went through 64 KiB segments, yet few segments are left. (The
    // worker deletes in order: once this append is done, so are the deletes before it.)
    CHECK(loop.wait(log->append(rec(3, 0, 1, 1, 0, 1, 0x03))).ok());
    CHECK(segments() <= 4);
    CHECK(log->count(ChunkId(1)) == 1);
  }
  auto log = openLog(dir.path(), config);
  CHECK(log->count(ChunkId(1)) == 1);
  CHECK(log->count(ChunkId(2)) == 0);
  CHECK(view(*log, 1, 0, 0, 1) == std::vector<int>{0x01});
}

TEST_CASE("chunk log: malformed records are refused and it refuses beyond its memory") {
  test::Loop loop;
  test::TempDir dir{"chunk-log-test"};
  ChunkLog::Config config;
  config.memoryLimit = 3 * kBlockSize;
  auto log = openLog(dir.path(), config);
  auto bad = rec(3, 0, 1, 1, 0, 1, 0x33);
  bad.crcs[0] ^= 1;
  CHECK(loop.wait(log->append(kj::mv(bad))).code() == Errc::kCorruption);
  CHECK(loop.wait(log->append(rec(3, 0, 1, 2, 100, 1, 0x33))).code() == Errc::kInvalid);
  CHECK(loop.wait(log->append(rec(3, 0, 1, 3, kChunkSize, 1, 0x33))).code() == Errc::kInvalid);
  CHECK(loop.wait(log->append(rec(0, 0, 1, 4, 0, 1, 0x33))).code() == Errc::kInvalid);
  CHECK(loop.wait(log->append(rec(3, 0, 1, 5, 0, 2, 0x33))).ok());
  CHECK(loop.wait(log->append(rec(3, 0, 1, 6, 0, 2, 0x33))).code() == Errc::kBusy);
  CHECK(log->count(ChunkId(3)) == 1);
}

TEST_CASE("chunk log: dead segments are reused — what they held never comes back") {
  test::Loop loop;
  test::TempDir dir{"chunk-log-test"};
  ChunkLog::Config config;
  config.segmentBytes = 64 << 10;  // three records of 16 KiB each
  config.maxSegments = 3;
  config.spareSegments = 2;
  auto files = [&](const char* prefix) {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(dir.path())) {
      n += e.path().filename().string().rfind(prefix, 0) == 0;
    }
    return n;
  };
  {
    auto log = openLog(dir.path(), config);
    // Twelve records fill four segments, then one trim kills them: the first segments become
    // spares, still holding their records.
    for (uint64_t i = 1; i <= 12; ++i) {
      CHECK(loop.wait(log->append(rec(2, 0, 1, i, 0, 4, uint8_t(i)))).ok());
    }
    CHECK(loop.wait(log->trim(ChunkId(2), 1, 12)).ok());
    CHECK(log->count(ChunkId(2)) == 0);
    // Records of the same size land in a reused segment exactly over the old ones: after the
    // new one, the old ones still check out, except for their segment number.
    CHECK(loop.wait(log->append(rec(3, 1, 1, 1, 4096, 4, 0x31))).ok());
    CHECK(loop.wait(log->append(rec(3, 1, 1, 2, 8192, 4, 0x32))).ok());
    CHECK(log->stats().reused >= 1);
    CHECK(files("spare.") <= 2);
  }
  auto log = openLog(dir.path(), config);
  CHECK(log->count(ChunkId(2)) == 0);
  CHECK(log->count(ChunkId(3)) == 2);
  CHECK(view(*log, 3, 1, 0, 3) == std::vector<int>{0, 0x31, 0x32});
  // Many rounds more: segments keep being reused, files stay few, nothing trimmed returns.
  for (uint64_t i = 1; i <= 60; ++i) {
    CHECK(loop.wait(log->append(rec(4, 0, 1, i, 0, 4, uint8_t(i)))).ok());
    if (i > 3) CHECK(loop.wait(log->trim(ChunkId(4), 1, i - 3)).ok());
  }
  CHECK(loop.wait(log->trim(ChunkId(4), 1, 60)).ok());
  CHECK(log->stats().reused > 5);
  CHECK(files("spare.") <= 2);
  CHECK(files("log.") <= 5);
  log = openLog(dir.path(), config);
  CHECK(log->count(ChunkId(2)) == 0);
  CHECK(log->count(ChunkId(4)) == 0);
  CHECK(view(*log, 3, 1, 0, 3) == std::vector<int>{0, 0x31, 0x32});
}
