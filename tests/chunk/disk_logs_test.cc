#include "chunk/disk_logs.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>

#include "fs/log.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

ChunkLog::Record record(uint64_t chunk, uint8_t shard, uint64_t epoch, uint64_t seq,
                        unsigned seed) {
  ChunkLog::Record r;
  r.chunk = ChunkId(chunk);
  r.shard = shard;
  r.epoch = epoch;
  r.seq = seq;
  r.offset = 0;
  r.data = pattern(kBlockSize, seed);
  r.crcs = crcsOf(r.data);
  return r;
}

kj::Own<DiskSet> openDisks(std::vector<std::string> dirs) {
  auto s = DiskSet::open({.dirs = std::move(dirs)});
  REQUIRE(s.ok());
  return kj::mv(*s);
}

kj::Own<DiskLogs> openLogs(DiskSet& disks) {
  auto l = DiskLogs::open(disks);
  REQUIRE(l.ok());
  return kj::mv(*l);
}

// The records a log directory holds of `chunk`, read by a ChunkLog of its own.
size_t recordsIn(const std::string& dir, uint64_t chunk) {
  auto l = ChunkLog::open(dir);
  REQUIRE(l.ok());
  return (*l)->count(ChunkId(chunk));
}

// Writes one block of shard `key` into data directory `dir`, the only disk of a DiskSet then.
void putShard(test::Loop& loop, const std::string& dir, ShardKey key) {
  auto disks = openDisks({dir});
  auto data = pattern(kBlockSize, 1);
  REQUIRE(
      loop.wait(disks->write(key, Layout::ec(4, 2), 0, data, crcsOf(data), true, NewShard::kCreate))
          .ok());
}

// A data directory that can no longer be opened: a file where it was.
void kill(const std::string& dir) {
  std::filesystem::remove_all(dir);
  FILE* f = fopen(dir.c_str(), "w");
  REQUIRE(f != nullptr);
  fclose(f);
}

}  // namespace

TEST_CASE(
    "disk logs: a chunk's records and fence live on its shard's disk, and survive the loss "
    "of the other disk") {
  test::Loop loop;
  test::TempDir tmp("disk-logs-test");
  log::setMinLevel(log::Level::kError);
  std::string a = tmp / "a", b = tmp / "b";
  const ShardKey onB{ChunkId(7), 1};
  putShard(loop, b, onB);  // chunk 7's shard is on b
  {
    auto disks = openDisks({a, b});
    REQUIRE(disks->diskOf(onB) == std::optional<size_t>(1));
    auto logs = openLogs(*disks);
    REQUIRE(loop.wait(logs->append(record(7, 1, 5, 1, 11))).ok());
    REQUIRE(loop.wait(logs->raise(ChunkId(7), 5)).ok());
    // Chunk 9 has no shard here yet: its record decides the disk its shard will go to, even
    // when by then the other disk has more room.
    loop.wait(disks->stats());
    REQUIRE(loop.wait(logs->append(record(9, 0, 3, 1, 12))).ok());
    auto home9 = disks->homeOf(ChunkId(9));
    REQUIRE(home9.ok());
    REQUIRE(*disks->homeOf(ChunkId(12)) == *home9);  // nothing written since: the same choice
    auto big = pattern(4096 * kBlockSize, 3);
    REQUIRE(loop.wait(disks->write(ShardKey{ChunkId(12), 0}, Layout::ec(4, 2), 0, big, crcsOf(big),
                                   true, NewShard::kCreate))
                .ok());
    REQUIRE(disks->diskOf(ShardKey{ChunkId(12), 0}) == std::optional<size_t>(*home9));
    CHECK(*disks->homeOf(ChunkId(13)) != *home9);  // a new chunk now goes to the other disk
    auto data = pattern(kBlockSize, 2);
    const ShardKey nine{ChunkId(9), 0};
    REQUIRE(loop.wait(disks->write(nine, Layout::ec(4, 2), 0, data, crcsOf(data), true,
                                   NewShard::kCreate))
                .ok());
    CHECK(disks->diskOf(nine) == std::optional<size_t>(*home9));
    std::string home = *home9 == 0 ? a : b, other = home == a ? b : a;
    logs = nullptr;
    CHECK(recordsIn(home + "/log", 9) == 1);
    CHECK(recordsIn(other + "/log", 9) == 0);
  }
  CHECK(recordsIn(b + "/log", 7) == 1);
  CHECK(recordsIn(a + "/log", 7) == 0);

  // The first disk dies: the logs open on the other, which kept chunk 7's record and fence.
  kill(a);
  auto disks = openDisks({a, b});
  auto logs = openLogs(*disks);
  CHECK(logs->count(ChunkId(7)) == 1);
  auto out = kj::heapArray<kj::byte>(kBlockSize);
  auto crcs = kj::heapArray<uint32_t>(1);
  memset(out.begin(), 0, out.size());
  logs->overlay(ChunkId(7), 1, 0, out, crcs);
  CHECK(out == pattern(kBlockSize, 11));
  CHECK(logs->epoch(ChunkId(7)) == 5);
  CHECK(loop.wait(logs->admit(ChunkId(7), 4)).code() == Errc::kStale);
  CHECK(loop.wait(logs->admit(ChunkId(7), 5)).ok());
  // A chunk with no shard here keeps its records on the disk that opened; the dead disk may
  // have held its shard, which a write that expects it does not recreate (chunk/disk_set.h).
  CHECK(loop.wait(logs->append(record(10, 0, 2, 1, 13))).ok());
  CHECK(logs->stats().records == 2);
  CHECK(*disks->homeOf(ChunkId(10)) == 1);
  log::setMinLevel(log::Level::kInfo);
}

TEST_CASE(
    "disk logs: the first disk's log and epochs of the older layout are read, and a chunk "
    "they hold records of keeps to them") {
  test::Loop loop;
  test::TempDir tmp("disk-logs-old");
  log::setMinLevel(log::Level::kError);
  std::string a = tmp / "a", b = tmp / "b";
  const ShardKey onB{ChunkId(7), 1};
  putShard(loop, b, onB);
  {
    // As a server before per-disk logs left them: everything in the first directory.
    std::filesystem::create_directories(a);
    auto log = ChunkLog::open(a + "/log");
    REQUIRE(log.ok());
    REQUIRE(loop.wait((*log)->append(record(7, 1, 5, 1, 21))).ok());
    auto epochs = EpochTable::open(a + "/epochs");
    REQUIRE(epochs.ok());
    REQUIRE(loop.wait((*epochs)->raise(ChunkId(7), 6)).ok());
  }
  {
    auto disks = openDisks({a, b});
    auto logs = openLogs(*disks);
    CHECK(logs->count(ChunkId(7)) == 1);
    CHECK(logs->epoch(ChunkId(7)) == 6);
    CHECK(loop.wait(logs->admit(ChunkId(7), 5)).code() == Errc::kStale);
    // A newer record joins the older in a's log, though the shard is on b.
    REQUIRE(loop.wait(logs->append(record(7, 1, 6, 1, 22))).ok());
    CHECK(logs->count(ChunkId(7)) == 2);
    // Trimmed, the chunk's next record goes to its shard's disk.
    REQUIRE(loop.wait(logs->trim(ChunkId(7), 6, 1)).ok());
    CHECK(logs->count(ChunkId(7)) == 0);
    REQUIRE(loop.wait(logs->append(record(7, 1, 6, 2, 23))).ok());
    // A newer epoch goes to the shard's disk; the highest of all tables counts.
    REQUIRE(loop.wait(logs->raise(ChunkId(7), 8)).ok());
    CHECK(logs->epoch(ChunkId(7)) == 8);
  }
  CHECK(recordsIn(a + "/log", 7) == 0);
  CHECK(recordsIn(b + "/log", 7) == 1);
  auto epochsB = EpochTable::open(b + "/epochs");
  REQUIRE(epochsB.ok());
  CHECK((*epochsB)->get(ChunkId(7)) == 8);
  log::setMinLevel(log::Level::kInfo);
}
