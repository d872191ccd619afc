#include "chunk/disk.h"

#include <doctest/doctest.h>
#include <kj/vector.h>

#include <cstring>
#include <fstream>

#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

kj::Own<Disk> openDisk(const std::string& dir, uint64_t cap = 0) {
  auto d = Disk::open({.dir = dir, .capacityCap = cap});
  REQUIRE(d.ok());
  return kj::mv(*d);
}

ShardKey key(uint64_t chunk, uint8_t shard) { return ShardKey{ChunkId(chunk), shard}; }

}  // namespace

TEST_CASE("disk: many concurrent writes and reads resolve correctly") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());

  constexpr unsigned kShards = 16, kWrites = 8;
  kj::Vector<kj::Array<kj::byte>> datas;
  kj::Vector<kj::Promise<Status>> writes;
  for (unsigned s = 0; s < kShards; ++s) {
    for (unsigned w = 0; w < kWrites; ++w) {
      datas.add(pattern(2 * kBlockSize, s * kWrites + w));
      auto& data = datas.back();
      writes.add(disk->write(key(100 + s, s % 6), Layout::ec(4, 2), w * 2 * kBlockSize, data,
                             crcsOf(data), /*sync=*/w == kWrites - 1));
    }
  }
  for (auto& s : loop.wait(kj::joinPromises(writes.releaseAsArray()))) CHECK(s.ok());

  struct Pending {
    kj::Array<kj::byte> out = kj::heapArray<kj::byte>(2 * kBlockSize);
    kj::Array<uint32_t> crcs = kj::heapArray<uint32_t>(2);
  };
  kj::Vector<Pending> outs;
  for (unsigned i = 0; i < kShards * kWrites; ++i) outs.add();
  kj::Vector<kj::Promise<Status>> reads;
  for (unsigned s = 0; s < kShards; ++s) {
    for (unsigned w = 0; w < kWrites; ++w) {
      auto& p = outs[s * kWrites + w];
      reads.add(disk->read(key(100 + s, s % 6), w * 2 * kBlockSize, p.out, p.crcs));
    }
  }
  auto results = loop.wait(kj::joinPromises(reads.releaseAsArray()));
  for (size_t i = 0; i < results.size(); ++i) {
    CAPTURE(i);
    REQUIRE(results[i].ok());
    CHECK(memcmp(outs[i].out.begin(), datas[i].begin(), datas[i].size()) == 0);
    CHECK((outs[i].crcs.asPtr() == crcsOf(datas[i]).asPtr()));
  }
  auto stats = loop.wait(disk->stats());
  CHECK(stats.shards == kShards);
}

TEST_CASE("disk: a write damaged in transit to a new shard leaves no shard behind") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());
  auto data = pattern(kBlockSize, 1);
  auto crcs = crcsOf(data);
  crcs[0] ^= 0x10;
  auto s = loop.wait(disk->write(key(5, 0), Layout::ec(4, 2), 0, data, kj::mv(crcs), false));
  CHECK(s.code() == Errc::kCorruption);
  CHECK(!test::fileExists(disk->shardPath(key(5, 0))));
  CHECK(loop.wait(disk->stats()).shards == 0);
}

TEST_CASE("disk: shards live under DIR/shards/<last two hex digits>/") {
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());
  CHECK(disk->shardPath(key(0x1234, 2)) == dir.path() + "/shards/34/0000000000001234.2");
}

TEST_CASE("disk: a write with another layout than the shard's is refused") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());
  REQUIRE(loop.wait(disk->create(key(7, 1), Layout::ec(4, 2))).ok());
  CHECK(loop.wait(disk->create(key(7, 1), Layout::ec(4, 2))).ok());  // idempotent
  CHECK(loop.wait(disk->create(key(7, 1), Layout::replica(3))).code() == Errc::kInvalid);
  auto data = pattern(kBlockSize, 2);
  CHECK(loop.wait(disk->write(key(7, 1), Layout::ec(8, 2), 0, data, crcsOf(data), false)).code() ==
        Errc::kInvalid);
}

TEST_CASE(
    "disk: stats count shards and their bytes, honour the capacity cap, and survive a "
    "restart") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  Disk::Stats first;
  {
    auto disk = openDisk(dir.path(), /*cap=*/8 << 20);
    auto data = pattern(16 * kBlockSize, 3);
    REQUIRE(loop.wait(disk->write(key(1, 0), Layout::ec(4, 2), 0, data, crcsOf(data), true)).ok());
    REQUIRE(loop.wait(disk->write(key(1, 1), Layout::ec(4, 2), 0, data, crcsOf(data), true)).ok());
    REQUIRE(loop.wait(disk->write(key(2, 0), Layout::ec(4, 2), 0, data, crcsOf(data), true)).ok());
    first = loop.wait(disk->stats());
    CHECK(first.shards == 3);
    CHECK(first.usedBytes >= 3 * 16 * kBlockSize);
    CHECK(first.capacityBytes <= (8u << 20));
    CHECK(first.freeBytes <= (8u << 20) - first.usedBytes);

    REQUIRE(loop.wait(disk->remove(kj::heapArray<ChunkId>({ChunkId(1), ChunkId(99)}))).ok());
    auto after = loop.wait(disk->stats());
    CHECK(after.shards == 1);
    CHECK(after.usedBytes < first.usedBytes);
    CHECK(!test::fileExists(disk->shardPath(key(1, 0))));
    CHECK(!test::fileExists(disk->shardPath(key(1, 1))));
    CHECK(test::fileExists(disk->shardPath(key(2, 0))));
    first = after;
  }
  auto disk = openDisk(dir.path());
  auto again = loop.wait(disk->stats());
  CHECK(again.shards == first.shards);
  CHECK(again.usedBytes == first.usedBytes);
  CHECK(again.capacityBytes > 0);
}

TEST_CASE("disk: leftover files of interrupted creates are deleted at start") {
  test::TempDir dir("disk-test");
  { openDisk(dir.path()); }
  std::string tmp = dir.path() + "/shards/05/0000000000000005.0.tmp";
  std::ofstream(tmp) << "half a header";
  REQUIRE(test::fileExists(tmp));
  test::Loop loop;
  auto disk = openDisk(dir.path());
  CHECK(!test::fileExists(tmp));
  CHECK(loop.wait(disk->stats()).shards == 0);
}

TEST_CASE("disk: a second server cannot use the same data directory") {
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());
  auto second = Disk::open({.dir = dir.path()});
  REQUIRE(!second.ok());
  CHECK(second.code() == Errc::kBusy);
  CHECK(second.error().detail.find("in use") != std::string::npos);
}

TEST_CASE("disk: a data directory that cannot be one is refused with a clear error") {
  test::TempDir dir("disk-test");
  SUBCASE("a regular file") {
    std::ofstream(dir / "file") << "x";
    auto d = Disk::open({.dir = dir / "file"});
    REQUIRE(!d.ok());
    CHECK(d.error().detail == "data directory " + (dir / "file") + " is not a directory");
  }
  SUBCASE("under a missing parent") {
    auto d = Disk::open({.dir = dir / "no/such"});
    REQUIRE(!d.ok());
    CHECK(d.error().detail.find("cannot create data directory") == 0);
  }
  SUBCASE("a new directory is created") {
    auto d = Disk::open({.dir = dir / "new"});
    CHECK(d.ok());
    CHECK(test::fileExists(dir / "new/shards/ff"));
  }
}

TEST_CASE("disk: small files in the data directory are written atomically and read back") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());
  CHECK(loop.wait(disk->readFile("server.id")).code() == Errc::kNotFound);
  REQUIRE(loop.wait(disk->writeFile("server.id", "id = 3\n")).ok());
  auto text = loop.wait(disk->readFile("server.id"));
  REQUIRE(text.ok());
  CHECK(*text == "id = 3\n");
}

TEST_CASE("disk: synced writes that arrive together share their fdatasyncs") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());

  // 32 synced writes to 4 shards, all asked for before any finished. The first write's sync
  // starts a batch of its own shard; the other 31 writes are done on the worker before that
  // batch, so they share the batches after it: 5 fdatasyncs in most runs (6 seen once, where
  // the event loop ran a batch's start before the last writes' continuations), never one per
  // write.
  constexpr unsigned kShards = 4, kWrites = 8;
  kj::Vector<kj::Array<kj::byte>> datas;
  kj::Vector<kj::Promise<Status>> writes;
  for (unsigned w = 0; w < kWrites; ++w) {
    for (unsigned s = 0; s < kShards; ++s) {
      datas.add(pattern(kBlockSize, s * kWrites + w));
      auto& data = datas.back();
      writes.add(disk->write(key(300 + s, 0), Layout::replica(3), w * kBlockSize, data,
                             crcsOf(data), /*sync=*/true));
    }
  }
  for (auto& s : loop.wait(kj::joinPromises(writes.releaseAsArray()))) CHECK(s.ok());
  MESSAGE("fdatasyncs for ", kShards * kWrites, " synced writes: ", disk->fileSyncs());
  CHECK(disk->fileSyncs() <= kShards * kWrites / 4);

  // Every write reads back.
  for (unsigned w = 0; w < kWrites; ++w) {
    for (unsigned s = 0; s < kShards; ++s) {
      auto out = kj::heapArray<kj::byte>(kBlockSize);
      auto crcs = kj::heapArray<uint32_t>(1);
      REQUIRE(loop.wait(disk->read(key(300 + s, 0), w * kBlockSize, out, crcs)).ok());
      CHECK(out.asPtr() == pattern(kBlockSize, s * kWrites + w).asPtr());
    }
  }
}

TEST_CASE("disk: each caller of a sync batch gets the outcome of its own shards") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  auto disk = openDisk(dir.path());
  auto a = pattern(kBlockSize, 1), b = pattern(kBlockSize, 2);
  // The first write's batch runs while the next write and the sync of a shard that does not
  // exist wait: both go in the second batch.
  auto first = disk->write(key(400, 0), Layout::replica(3), 0, a, crcsOf(a), true);
  auto second = disk->write(key(401, 0), Layout::replica(3), 0, b, crcsOf(b), true);
  auto missing = disk->sync(kj::heapArray<ShardKey>({key(402, 0)}));
  auto both = disk->sync(kj::heapArray<ShardKey>({key(401, 0), key(403, 0)}));
  CHECK(loop.wait(kj::mv(first)).ok());
  CHECK(loop.wait(kj::mv(second)).ok());
  CHECK(loop.wait(kj::mv(missing)).code() == Errc::kNotFound);
  CHECK(loop.wait(kj::mv(both)).code() == Errc::kNotFound);
  CHECK(loop.wait(disk->sync(kj::heapArray<ShardKey>({key(400, 0), key(401, 0)}))).ok());
  CHECK(loop.wait(disk->sync(kj::heapArray<ShardKey>({}))).ok());
}

TEST_CASE("disk: a shard file closed to make room is synced first if it holds unsynced writes") {
  test::Loop loop;
  test::TempDir dir("disk-test");
  auto d = Disk::open({.dir = dir.path(), .maxOpenFiles = 2});
  REQUIRE(d.ok());
  auto disk = kj::mv(*d);
  auto data = pattern(kBlockSize, 7);
  // Synced writes to two shards, then an unsynced one to the first: three open files at most
  // two. The third shard's open closes the least recently used file, the unsynced one.
  REQUIRE(loop.wait(disk->write(key(500, 0), Layout::replica(3), 0, data, crcsOf(data), true)).ok());
  REQUIRE(loop.wait(disk->write(key(501, 0), Layout::replica(3), 0, data, crcsOf(data), true)).ok());
  REQUIRE(loop.wait(disk->write(key(500, 0), Layout::replica(3), kBlockSize, data, crcsOf(data),
                                false)).ok());
  REQUIRE(loop.wait(disk->write(key(501, 0), Layout::replica(3), kBlockSize, data, crcsOf(data),
                                true)).ok());
  uint64_t before = disk->fileSyncs();
  REQUIRE(loop.wait(disk->write(key(502, 0), Layout::replica(3), 0, data, crcsOf(data), false)).ok());
  CHECK(disk->fileSyncs() == before + 1);  // 500 was closed, and synced before
  // 501 (synced, now the oldest) is closed without one.
  REQUIRE(loop.wait(disk->write(key(503, 0), Layout::replica(3), 0, data, crcsOf(data), false)).ok());
  CHECK(disk->fileSyncs() == before + 1);
  auto out = kj::heapArray<kj::byte>(kBlockSize);
  auto crcs = kj::heapArray<uint32_t>(1);
  REQUIRE(loop.wait(disk->read(key(500, 0), kBlockSize, out, crcs)).ok());
  CHECK(out.asPtr() == data.asPtr());
}
