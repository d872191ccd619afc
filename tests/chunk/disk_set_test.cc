#include "chunk/disk_set.h"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdio>

#include "fs/log.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

ShardKey key(uint64_t chunk, uint8_t shard) { return ShardKey{ChunkId(chunk), shard}; }

void writeText(const std::string& path, const std::string& text) {
  FILE* f = fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  fputs(text.c_str(), f);
  fclose(f);
}

std::string readText(const std::string& path) {
  std::string text;
  FILE* f = fopen(path.c_str(), "r");
  if (!f) return text;
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  fclose(f);
  return text;
}

// Two data directories (a/ and b/ of one temp dir) and the set over them.
struct TwoDisks {
  test::Loop loop;
  test::TempDir tmp{"disk-set-test"};
  std::string a = tmp / "a", b = tmp / "b";
  kj::Own<DiskSet> set;

  explicit TwoDisks(uint64_t cap = 0, uint64_t reserve = 0) {
    log::setMinLevel(log::Level::kError);  // the set logs every change of state
    auto s = DiskSet::open({.dirs = {a, b}, .capacityCap = cap, .reserveBytes = reserve});
    REQUIRE(s.ok());
    set = kj::mv(*s);
  }
  ~TwoDisks() { log::setMinLevel(log::Level::kInfo); }

  Status write(ShardKey k, size_t blocks = 1, unsigned seed = 1, uint64_t offset = 0,
               NewShard ifAbsent = NewShard::kCreate) {
    auto data = pattern(blocks * kBlockSize, seed);
    return loop.wait(set->write(k, Layout::ec(4, 2), offset, data, crcsOf(data), false, ifAbsent));
  }
  Result<kj::Array<kj::byte>> read(ShardKey k, size_t blocks = 1) {
    auto out = kj::heapArray<kj::byte>(blocks * kBlockSize);
    auto crcs = kj::heapArray<uint32_t>(blocks);
    Status s = loop.wait(set->read(k, 0, out, crcs));
    if (!s) return s.error();
    return kj::mv(out);
  }
  DiskSet::Stats stats() { return loop.wait(set->stats()); }
};

}  // namespace

TEST_CASE("disk set: a new shard goes to the healthy disk with the most free space") {
  SUBCASE("the most free wins, the first of equals") {
    CHECK(*pickDisk({{DiskState::kOk, 10}, {DiskState::kOk, 30}, {DiskState::kOk, 20}}) == 1);
    CHECK(*pickDisk({{DiskState::kOk, 30}, {DiskState::kOk, 30}}) == 0);
  }
  SUBCASE("full and failed disks take none, however much room they report") {
    CHECK(*pickDisk({{DiskState::kFull, 900}, {DiskState::kFailed, 999}, {DiskState::kOk, 1}}) ==
          2);
  }
  SUBCASE("no disk takes it: noSpace if one is full, io if every one failed") {
    CHECK(pickDisk({{DiskState::kFull, 5}, {DiskState::kFailed, 0}}).code() == Errc::kNoSpace);
    CHECK(pickDisk({{DiskState::kFailed, 5}, {DiskState::kFailed, 0}}).code() == Errc::kIo);
    CHECK(pickDisk({}).code() == Errc::kIo);
  }
}

TEST_CASE(
    "disk set: shards spread over the disks, each read back from its own, after a restart too") {
  TwoDisks d;
  d.stats();  // both disks equally free: what is written since the probe decides
  for (uint64_t c = 1; c <= 8; ++c) REQUIRE(d.write(key(c, 0), 4, unsigned(c)).ok());
  size_t onA = 0;
  for (uint64_t c = 1; c <= 8; ++c) {
    auto at = d.set->diskOf(key(c, 0));
    REQUIRE(at.has_value());
    onA += *at == 0;
    CHECK(test::fileExists(d.set->shardPath(key(c, 0))));
  }
  CHECK(onA >= 2);
  CHECK(onA <= 6);
  auto before = d.stats();
  CHECK(before.shards == 8);
  REQUIRE(before.disks.size() == 2);
  CHECK(before.disks[0].shards == onA);
  CHECK(before.disks[1].shards == 8 - onA);
  // One file system under both: counted once in the totals.
  CHECK(before.capacityBytes == before.disks[0].capacityBytes);
  CHECK(before.acceptsShards);

  std::vector<size_t> where;
  for (uint64_t c = 1; c <= 8; ++c) where.push_back(*d.set->diskOf(key(c, 0)));
  d.set = nullptr;
  auto again = DiskSet::open({.dirs = {d.a, d.b}});
  REQUIRE(again.ok());
  d.set = kj::mv(*again);
  for (uint64_t c = 1; c <= 8; ++c) {
    CAPTURE(c);
    CHECK(d.set->diskOf(key(c, 0)) == where[c - 1]);
    auto got = d.read(key(c, 0), 4);
    REQUIRE(got.ok());
    CHECK(*got == pattern(4 * kBlockSize, unsigned(c)));
  }
  CHECK(d.read(key(99, 0)).code() == Errc::kNotFound);
}

// The operator takes a dead disk out of --data and restarts the server: its shards are simply
// not there. A later write to one of them must not create it anew on the other disk, holding
// only that write's blocks and zeros that read as valid data.
TEST_CASE(
    "disk set: a shard whose disk was left out at restart is not recreated by a write that expects "
    "it") {
  TwoDisks d;
  d.stats();  // both disks equally free: the shards spread over both
  for (uint64_t c = 1; c <= 8; ++c) REQUIRE(d.write(key(c, 0), 4, unsigned(c)).ok());
  const size_t lostDisk = *d.set->diskOf(key(1, 0));
  std::optional<ShardKey> other;
  for (uint64_t c = 2; c <= 8 && !other; ++c) {
    if (*d.set->diskOf(key(c, 0)) != lostDisk) other = key(c, 0);
  }
  REQUIRE(other.has_value());
  d.set = nullptr;
  auto again = DiskSet::open({.dirs = {lostDisk == 0 ? d.b : d.a}});
  REQUIRE(again.ok());
  d.set = kj::mv(*again);
  Status s = d.write(key(1, 0), 1, 9, kBlockSize, NewShard::kRefuse);
  CHECK(s.code() == Errc::kNotFound);
  CHECK_FALSE(d.set->diskOf(key(1, 0)).has_value());
  CHECK(d.read(key(1, 0)).code() == Errc::kNotFound);
  // The shards of the disk that is still there are written as before.
  CHECK(d.write(*other, 1, 9, kBlockSize, NewShard::kRefuse).ok());
}

TEST_CASE(
    "disk set: a disk below its reserve is full: new shards go to the other, its own still grow") {
  // Each disk reports at most 1 MiB; below 512 KiB free it is full.
  TwoDisks d(/*cap=*/1 << 20, /*reserve=*/512 << 10);
  d.stats();
  REQUIRE(d.write(key(1, 0), 64, 1).ok());  // 256 KiB + header: to disk a, the first of equals
  REQUIRE(d.set->diskOf(key(1, 0)) == 0u);
  REQUIRE(d.write(key(1, 0), 64, 2, 64 * kBlockSize).ok());  // 512 KiB in all
  auto st = d.stats();
  CHECK(d.set->state(0) == DiskState::kFull);
  CHECK(st.disks[0].state == DiskState::kFull);
  CHECK(st.disks[0].reason.find("below the reserve") != std::string::npos);
  CHECK(st.disks[1].state == DiskState::kOk);
  CHECK(st.acceptsShards);
  for (uint64_t c = 2; c <= 5; ++c) {
    REQUIRE(d.write(key(c, 1), 1, unsigned(c)).ok());
    CHECK(d.set->diskOf(key(c, 1)) == 1u);
  }
  // Writes into a shard of the full disk go on (the file system still has room).
  REQUIRE(d.write(key(1, 0), 1, 3, 128 * kBlockSize).ok());
  CHECK(d.set->diskOf(key(1, 0)) == 0u);
}

TEST_CASE("disk set: when every disk is full a new shard is refused with noSpace") {
  TwoDisks d(/*cap=*/1 << 20, /*reserve=*/(1 << 20) + 1);
  auto st = d.stats();
  CHECK(!st.acceptsShards);
  auto s = d.write(key(1, 0));
  CHECK(s.code() == Errc::kNoSpace);
  CHECK(s.error().detail.find("full") != std::string::npos);
}

TEST_CASE(
    "disk set: a disk whose directory disappears fails, its shards are lost, the other disk "
    "serves") {
  TwoDisks d;
  d.stats();
  // Chunk c's shard on disk a, chunk c + 10's on disk b (placement alternates on equal disks).
  for (uint64_t c = 1; c <= 6; ++c) REQUIRE(d.write(key(c, 2), 4, unsigned(c)).ok());
  std::vector<ShardKey> onA, onB;
  for (uint64_t c = 1; c <= 6; ++c)
    (*d.set->diskOf(key(c, 2)) == 0 ? onA : onB).push_back(key(c, 2));
  REQUIRE(!onA.empty());
  REQUIRE(!onB.empty());

  REQUIRE(::rename(d.a.c_str(), (d.tmp / "a.gone").c_str()) == 0);
  auto st = d.stats();
  CHECK(d.set->state(0) == DiskState::kFailed);
  CHECK(st.disks[0].state == DiskState::kFailed);
  CHECK(st.disks[0].reason.find("shards") != std::string::npos);
  CHECK(st.disks[0].shards == onA.size());
  CHECK(st.shards == onB.size());
  CHECK(st.acceptsShards);
  CHECK(d.set->lostShards().size() == onA.size());

  for (auto k : onA) {
    CAPTURE(k.toString());
    auto r = d.read(k, 4);
    CHECK(r.code() == Errc::kIo);
    CHECK(r.error().detail.find("failed disk") != std::string::npos);
    // Never recreated, empty, on the healthy disk.
    CHECK(d.write(k).code() == Errc::kIo);
    CHECK(d.set->diskOf(k) == 0u);
    CHECK(!test::fileExists(d.b + "/shards/" + k.toString().substr(14, 2) + "/" + k.toString()));
  }
  for (auto k : onB) {
    auto r = d.read(k, 4);
    REQUIRE(r.ok());
    CHECK(*r == pattern(4 * kBlockSize, unsigned(k.chunk.value)));
  }
  for (uint64_t c = 20; c < 24; ++c) {
    REQUIRE(d.write(key(c, 0)).ok());
    CHECK(d.set->diskOf(key(c, 0)) == 1u);
  }
  // The server identity lives on the disks that still work.
  CHECK(d.loop.wait(d.set->writeFile("server.id", "id = 1\n")).ok());
}

TEST_CASE("disk set: an I/O error on a disk fails it at once, without waiting for a probe") {
  TwoDisks d;
  d.stats();
  // Both shards directories are gone, so creating a shard file fails on whichever disk the
  // next new shard goes to (ENOENT: an error of the disk, not "no such shard"). Which one that
  // is depends on their free space, which other processes change (both are in one file system).
  const std::string dirs[2] = {d.a, d.b};
  for (const auto& dir : dirs) {
    REQUIRE(::rename((dir + "/shards").c_str(), (dir + "/shards.gone").c_str()) == 0);
  }
  auto s = d.write(key(7, 0));
  CHECK(s.code() == Errc::kIo);
  // The disk it tried is failed at once; the other is not.
  size_t failed = d.set->state(0) == DiskState::kFailed ? 0 : 1;
  CHECK(d.set->state(failed) == DiskState::kFailed);
  CHECK(d.set->state(1 - failed) == DiskState::kOk);
  // With the other's directory back, the next shard goes there.
  const std::string& other = dirs[1 - failed];
  REQUIRE(::rename((other + "/shards.gone").c_str(), (other + "/shards").c_str()) == 0);
  CHECK(d.write(key(8, 0)).ok());
  CHECK(d.set->diskOf(key(8, 0)) == 1 - failed);
}

TEST_CASE("disk set: every disk failed: nothing is taken, and the server says so") {
  TwoDisks d;
  REQUIRE(::rename(d.a.c_str(), (d.tmp / "a.gone").c_str()) == 0);
  REQUIRE(::rename(d.b.c_str(), (d.tmp / "b.gone").c_str()) == 0);
  auto st = d.stats();
  CHECK(!st.acceptsShards);
  CHECK(st.capacityBytes == 0);
  CHECK(d.write(key(1, 0)).code() == Errc::kIo);
  CHECK(d.loop.wait(d.set->writeFile("server.id", "x")).code() == Errc::kIo);
}

TEST_CASE("disk set: opening several directories") {
  test::TempDir tmp("disk-set-open");
  log::setMinLevel(log::Level::kError);
  SUBCASE("one named twice is refused") {
    auto s = DiskSet::open({.dirs = {tmp / "a", tmp / "a"}});
    CHECK(s.code() == Errc::kInvalid);
  }
  SUBCASE(
      "one that cannot be opened is failed from the start; the others serve their shards, "
      "and only a write that creates its shard creates one") {
    test::Loop loop;
    const ShardKey onB = key(3, 1);
    {
      auto s = DiskSet::open({.dirs = {tmp / "b"}});
      REQUIRE(s.ok());
      auto data = pattern(kBlockSize, 3);
      REQUIRE(loop.wait((*s)->write(onB, Layout::ec(4, 2), 0, data, crcsOf(data), true,
                                    NewShard::kCreate))
                  .ok());
    }
    writeText(tmp / "file", "x");
    auto s = DiskSet::open({.dirs = {tmp / "file", tmp / "b"}});
    REQUIRE(s.ok());
    CHECK((*s)->failedAtStart());
    auto st = loop.wait((*s)->stats());
    CHECK(st.disks[0].state == DiskState::kFailed);
    CHECK(st.disks[1].state == DiskState::kOk);
    // The dead one may have held any shard. A write that expects its shard here, and one that
    // does not say, are refused for a shard not known here; the first write of a new chunk
    // creates its shard on the disk that opened.
    CHECK(st.acceptsShards);
    auto data = pattern(kBlockSize, 4);
    auto write = [&](ShardKey k, NewShard ifAbsent) {
      return loop.wait((*s)->write(k, Layout::ec(4, 2), 0, data, crcsOf(data), true, ifAbsent));
    };
    Status legacy = write(key(4, 0), NewShard::kLegacy);
    CHECK(legacy.code() == Errc::kIo);
    CHECK(legacy.error().detail.find("could not be opened at start") != std::string::npos);
    CHECK(write(key(4, 0), NewShard::kRefuse).code() == Errc::kNotFound);
    CHECK_FALSE((*s)->diskOf(key(4, 0)).has_value());
    REQUIRE(write(key(5, 0), NewShard::kCreate).ok());
    CHECK((*s)->diskOf(key(5, 0)) == std::optional<size_t>(1));
    CHECK((*s)->homeOf(ChunkId(6)).ok());
    // The shards of the disk that opened are written and read.
    REQUIRE(write(onB, NewShard::kRefuse).ok());
    auto out = kj::heapArray<kj::byte>(kBlockSize);
    auto crcs = kj::heapArray<uint32_t>(1);
    REQUIRE(loop.wait((*s)->read(onB, 0, out, crcs)).ok());
    CHECK(out == data);
  }
  SUBCASE("none opens: the error of the first") {
    writeText(tmp / "file", "x");
    auto s = DiskSet::open({.dirs = {tmp / "file"}});
    CHECK(s.code() == Errc::kNotDir);
  }
  log::setMinLevel(log::Level::kInfo);
}

TEST_CASE("disk set: the server identity is copied to a new disk, two different ones are refused") {
  test::TempDir tmp("disk-set-id");
  test::Loop loop;
  log::setMinLevel(log::Level::kError);
  {
    auto one = DiskSet::open({.dirs = {tmp / "a"}});
    REQUIRE(one.ok());
    REQUIRE(loop.wait((*one)->writeFile("server.id", "id = 3\n")).ok());
  }
  {
    auto two = DiskSet::open({.dirs = {tmp / "a", tmp / "b"}});
    REQUIRE(two.ok());
    auto text = loop.wait((*two)->readFile("server.id"));
    REQUIRE(text.ok());
    CHECK(*text == "id = 3\n");
    CHECK(readText(tmp / "b/server.id") == "id = 3\n");
  }
  writeText(tmp / "b/server.id", "id = 4\n");
  auto two = DiskSet::open({.dirs = {tmp / "a", tmp / "b"}});
  REQUIRE(two.ok());
  CHECK(loop.wait((*two)->readFile("server.id")).code() == Errc::kCorruption);
  log::setMinLevel(log::Level::kInfo);
}
