#include "chunk/shard_file.h"

#include <doctest/doctest.h>

#include <cstring>

#include "fs/checksum.h"
#include "fs/lost_block.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::allZero;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

constexpr ShardKey kKey{ChunkId(0xabcdef), 1};

struct Fixture {
  test::TempDir dir{"shard-file-test"};
  std::string path = dir / kKey.toString();

  ShardFile create() {
    auto f = ShardFile::create(path, kKey, Layout::ec(4, 2));
    REQUIRE(f.ok());
    return kj::mv(*f);
  }
  ShardFile reopen() {
    auto f = ShardFile::open(path, kKey);
    REQUIRE(f.ok());
    return kj::mv(*f);
  }
};

struct Read {
  Status status;
  kj::Array<kj::byte> data;
  kj::Array<uint32_t> crcs;
};

Read readBack(ShardFile& f, uint64_t offset, size_t len) {
  Read r{Status(), kj::heapArray<kj::byte>(len), kj::heapArray<uint32_t>(len / kBlockSize)};
  r.status = f.read(offset, r.data, r.crcs);
  return r;
}

bool same(kj::ArrayPtr<const kj::byte> a, kj::ArrayPtr<const kj::byte> b) {
  return a.size() == b.size() && memcmp(a.begin(), b.begin(), a.size()) == 0;
}

uint64_t diskBytes(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return uint64_t(st.st_blocks) * 512;
}

}  // namespace

TEST_CASE("shard file: blocks written at aligned offsets read back with their CRCs") {
  Fixture fx;
  auto f = fx.create();
  uint64_t offset = 0;
  size_t len = kBlockSize;
  SUBCASE("the first block") {}
  SUBCASE("one block further on") { offset = kBlockSize; }
  SUBCASE("a 1 MiB write in the middle") {
    offset = 17 * kBlockSize;
    len = 1 << 20;
  }
  SUBCASE("the last two blocks of the shard") {
    offset = kChunkSize - 2 * kBlockSize;
    len = 2 * kBlockSize;
  }
  auto data = pattern(len, 1);
  auto crcs = crcsOf(data);
  REQUIRE(f.write(offset, data, crcs).ok());
  auto r = readBack(f, offset, len);
  REQUIRE(r.status.ok());
  CHECK(same(r.data, data));
  CHECK((r.crcs.asPtr() == crcs.asPtr()));
  // And through a fresh open, as after a restart.
  auto g = fx.reopen();
  auto again = readBack(g, offset, len);
  REQUIRE(again.status.ok());
  CHECK(same(again.data, data));
}

TEST_CASE("shard file: unwritten ranges read as zeros with valid CRCs and take no disk blocks") {
  Fixture fx;
  auto f = fx.create();
  auto block = pattern(kBlockSize, 2);
  REQUIRE(f.write(32 << 20, block, crcsOf(block)).ok());

  auto before = readBack(f, 0, 64 * 1024);  // a hole before the data
  REQUIRE(before.status.ok());
  CHECK(allZero(before.data));
  for (uint32_t c : before.crcs) CHECK(c == zeroBlockCrc());
  auto after = readBack(f, 60 << 20, 2 * kBlockSize);  // beyond the end of the file
  REQUIRE(after.status.ok());
  CHECK(allZero(after.data));
  for (uint32_t c : after.crcs) CHECK(c == zeroBlockCrc());

  // Header, one page of the CRC table, one data block: not 32 MiB.
  CHECK(diskBytes(fx.path) < (1u << 20));
  CHECK(f.allocatedBytes() == diskBytes(fx.path));
}

TEST_CASE("shard file: a flipped byte on disk fails exactly that block, never returning it") {
  Fixture fx;
  auto f = fx.create();
  auto data = pattern(4 * kBlockSize, 3);
  REQUIRE(f.write(0, data, crcsOf(data)).ok());
  test::flipByte(fx.path, kDataOffset + 2 * kBlockSize + 100);

  auto whole = readBack(f, 0, 4 * kBlockSize);
  REQUIRE(!whole.status.ok());
  CHECK(whole.status.code() == Errc::kCorruption);
  CHECK(whole.status.error().detail.find("block 2 ") != std::string::npos);
  CHECK(allZero(whole.data));
  CHECK(readBack(f, 2 * kBlockSize, kBlockSize).status.code() == Errc::kCorruption);

  auto head = readBack(f, 0, 2 * kBlockSize);
  REQUIRE(head.status.ok());
  CHECK(same(head.data, data.slice(0, 2 * kBlockSize)));
  auto tail = readBack(f, 3 * kBlockSize, kBlockSize);
  REQUIRE(tail.status.ok());
  CHECK(same(tail.data, data.slice(3 * kBlockSize, 4 * kBlockSize)));

  // Writing the block again repairs it.
  auto fix = data.slice(2 * kBlockSize, 3 * kBlockSize);
  REQUIRE(f.write(2 * kBlockSize, fix, crcsOf(fix)).ok());
  CHECK(readBack(f, 0, 4 * kBlockSize).status.ok());
}

TEST_CASE("shard file: a block marked lost reads as lost, is told from rot, and a write replaces it") {
  Fixture fx;
  auto f = fx.create();
  auto data = pattern(4 * kBlockSize, 5);
  REQUIRE(f.write(0, data, crcsOf(data)).ok());
  REQUIRE(f.markLost(kBlockSize, 2 * kBlockSize).ok());
  test::flipByte(fx.path, kDataOffset + 3 * kBlockSize + 9);

  auto lost = readBack(f, kBlockSize, kBlockSize);
  CHECK(lost.status.code() == Errc::kLost);
  CHECK(lost.status.error().detail.find("block 1 (offset 4096) is lost") != std::string::npos);
  CHECK(allZero(lost.data));
  CHECK(readBack(f, 2 * kBlockSize, kBlockSize).status.code() == Errc::kLost);
  auto rot = readBack(f, 3 * kBlockSize, kBlockSize);
  CHECK(rot.status.code() == Errc::kCorruption);
  CHECK(rot.status.error().detail.find("fails its CRC") != std::string::npos);
  auto head = readBack(f, 0, kBlockSize);
  REQUIRE(head.status.ok());
  CHECK(same(head.data, data.slice(0, kBlockSize)));

  CHECK(*f.isLost(kBlockSize));
  CHECK(*f.isLost(2 * kBlockSize));
  CHECK(!*f.isLost(0));                // reads fine
  CHECK(!*f.isLost(3 * kBlockSize));   // rot
  CHECK(!*f.isLost(100 * kBlockSize)); // never written
  // For a writer that encodes parity over the stored bytes, a lost block reads as its pattern,
  // with that pattern's CRC; rot still fails.
  auto stored = Read{Status(), kj::heapArray<kj::byte>(2 * kBlockSize),
                     kj::heapArray<uint32_t>(2)};
  REQUIRE(f.read(0, stored.data, stored.crcs, true).ok());
  CHECK(same(stored.data.slice(0, kBlockSize), data.slice(0, kBlockSize)));
  CHECK(isLostBlock(stored.data.begin() + kBlockSize));
  CHECK(stored.crcs[1] == crc32c(lostBlockBytes(), kBlockSize));
  CHECK(f.read(3 * kBlockSize, stored.data.slice(0, kBlockSize), stored.crcs.slice(0, 1), true)
            .code() == Errc::kCorruption);
  // Kept across a reopen (it is on disk), and gone once the block is written again.
  auto again = fx.reopen();
  CHECK(*again.isLost(kBlockSize));
  auto fix = data.slice(kBlockSize, 2 * kBlockSize);
  REQUIRE(again.write(kBlockSize, fix, crcsOf(fix)).ok());
  CHECK(!*again.isLost(kBlockSize));
  CHECK(readBack(again, kBlockSize, kBlockSize).status.ok());
  CHECK(again.markLost(100, kBlockSize).code() == Errc::kInvalid);
}

TEST_CASE("shard file: a flipped byte in the CRC table is corruption too") {
  Fixture fx;
  auto f = fx.create();
  auto data = pattern(2 * kBlockSize, 4);
  REQUIRE(f.write(0, data, crcsOf(data)).ok());
  test::flipByte(fx.path, kCrcTableOffset + 4 + 1);  // entry of block 1
  CHECK(readBack(f, kBlockSize, kBlockSize).status.code() == Errc::kCorruption);
  CHECK(readBack(f, 0, kBlockSize).status.ok());
}

TEST_CASE("shard file: a block that does not match its CRC is refused and nothing is stored") {
  Fixture fx;
  auto f = fx.create();
  auto old = pattern(2 * kBlockSize, 5);
  REQUIRE(f.write(0, old, crcsOf(old)).ok());

  auto fresh = pattern(2 * kBlockSize, 6);
  auto crcs = crcsOf(fresh);
  crcs[1] ^= 1;
  auto s = f.write(0, fresh, crcs);
  CHECK(s.code() == Errc::kCorruption);
  auto r = readBack(f, 0, 2 * kBlockSize);
  REQUIRE(r.status.ok());
  CHECK(same(r.data, old));
}

TEST_CASE("shard file: truncate makes the cut range read as zeros") {
  Fixture fx;
  auto f = fx.create();
  auto data = pattern(4 * kBlockSize, 7);
  REQUIRE(f.write(0, data, crcsOf(data)).ok());
  REQUIRE(f.truncate(kBlockSize).ok());

  auto r = readBack(f, 0, 4 * kBlockSize);
  REQUIRE(r.status.ok());
  CHECK(same(r.data.slice(0, kBlockSize), data.slice(0, kBlockSize)));
  CHECK(allZero(r.data.slice(kBlockSize, 4 * kBlockSize)));
  for (size_t i = 1; i < 4; ++i) CHECK(r.crcs[i] == zeroBlockCrc());
  struct stat st;
  REQUIRE(::stat(fx.path.c_str(), &st) == 0);
  CHECK(uint64_t(st.st_size) == kDataOffset + kBlockSize);

  SUBCASE("to zero") {
    REQUIRE(f.truncate(0).ok());
    auto z = readBack(f, 0, 4 * kBlockSize);
    REQUIRE(z.status.ok());
    CHECK(allZero(z.data));
  }
  SUBCASE("then written again beyond the cut") {
    auto more = pattern(kBlockSize, 8);
    REQUIRE(f.write(3 * kBlockSize, more, crcsOf(more)).ok());
    auto m = readBack(f, 2 * kBlockSize, 2 * kBlockSize);
    REQUIRE(m.status.ok());
    CHECK(allZero(m.data.slice(0, kBlockSize)));
    CHECK(same(m.data.slice(kBlockSize, 2 * kBlockSize), more));
  }
}

TEST_CASE("shard file: a punched range reads as zeros with valid CRCs and frees its blocks") {
  Fixture fx;
  auto f = fx.create();
  auto data = pattern(1 << 20, 9);  // 256 blocks
  REQUIRE(f.write(0, data, crcsOf(data)).ok());
  REQUIRE(f.sync().ok());
  uint64_t before = diskBytes(fx.path);
  REQUIRE(f.punch(4 * kBlockSize, 200 * kBlockSize).ok());
  auto r = readBack(f, 0, 1 << 20);
  REQUIRE(r.status.ok());
  CHECK(same(r.data.slice(0, 4 * kBlockSize), data.slice(0, 4 * kBlockSize)));
  CHECK(allZero(r.data.slice(4 * kBlockSize, 204 * kBlockSize)));
  CHECK(same(r.data.slice(204 * kBlockSize, 1 << 20), data.slice(204 * kBlockSize, 1 << 20)));
  for (size_t i = 4; i < 204; ++i) CHECK(r.crcs[i] == zeroBlockCrc());
  // The file system frees what it can (whole file system blocks of the range: most of 800 KiB).
  CHECK(diskBytes(fx.path) + 600 * 1024 <= before);
  CHECK(f.allocatedBytes() == diskBytes(fx.path));
  // Past the end of the file: nothing there, nothing to do; the file does not grow.
  struct stat st;
  REQUIRE(::stat(fx.path.c_str(), &st) == 0);
  REQUIRE(f.punch(kChunkSize - kBlockSize, kBlockSize).ok());
  struct stat after;
  REQUIRE(::stat(fx.path.c_str(), &after) == 0);
  CHECK(after.st_size == st.st_size);
  // As other requests: whole blocks inside the shard.
  CHECK(f.punch(100, kBlockSize).code() == Errc::kInvalid);
  CHECK(f.punch(0, kChunkSize + kBlockSize).code() == Errc::kInvalid);
  // Written again after the punch: the new bytes, as any write.
  auto more = pattern(kBlockSize, 10);
  REQUIRE(f.write(10 * kBlockSize, more, crcsOf(more)).ok());
  auto m = fx.reopen();
  auto again = readBack(m, 9 * kBlockSize, 3 * kBlockSize);
  REQUIRE(again.status.ok());
  CHECK(allZero(again.data.slice(0, kBlockSize)));
  CHECK(same(again.data.slice(kBlockSize, 2 * kBlockSize), more));
}

TEST_CASE("shard file: a reserved range takes disk space, changes no byte and takes writes") {
  Fixture fx;
  auto f = fx.create();
  auto data = pattern(1 << 20, 11);
  REQUIRE(f.write(1 << 20, data, crcsOf(data)).ok());
  REQUIRE(f.sync().ok());
  uint64_t before = diskBytes(fx.path);
  auto r = f.reserve(0, 4 << 20);
  REQUIRE(r.ok());
  uint64_t after = diskBytes(fx.path);
  CHECK(after >= before + (3 << 20));
  CHECK(*r == after - before);
  CHECK(f.allocatedBytes() == after);
  auto back = readBack(f, 0, 4 << 20);
  REQUIRE(back.status.ok());
  CHECK(allZero(back.data.slice(0, 1 << 20)));
  CHECK(same(back.data.slice(1 << 20, 2 << 20), data));
  CHECK(allZero(back.data.slice(2 << 20, 4 << 20)));
  for (size_t i = 512; i < 1024; ++i) CHECK(back.crcs[i] == zeroBlockCrc());
  // The file covers the range: a punch and a truncate reach the reserved blocks.
  struct stat st;
  REQUIRE(::stat(fx.path.c_str(), &st) == 0);
  CHECK(uint64_t(st.st_size) == kDataOffset + (4 << 20));
  REQUIRE(f.punch(2 << 20, 2 << 20).ok());
  CHECK(diskBytes(fx.path) + (2 << 20) <= after + 4096);
  REQUIRE(f.truncate(0).ok());
  CHECK(diskBytes(fx.path) <= before - (1 << 20) + 4096);
  // Whole blocks within what a shard of ec(4,2) holds.
  CHECK(f.reserve(100, kBlockSize).code() == Errc::kInvalid);
  CHECK(f.reserve(0, 100).code() == Errc::kInvalid);
  CHECK(f.reserve(kChunkSize / 4, kBlockSize).code() == Errc::kInvalid);
  CHECK(f.reserve(kChunkSize / 4 - kBlockSize, kBlockSize).ok());
  // Reopened: the same bytes.
  auto m = fx.reopen();
  auto last = readBack(m, kChunkSize / 4 - kBlockSize, kBlockSize);
  REQUIRE(last.status.ok());
  CHECK(allZero(last.data));
}

TEST_CASE("shard file: an ec(3,2) shard reserves its partial last row") {
  test::TempDir dir{"shard-file-test"};
  ShardKey key{ChunkId(7), 0};
  auto f = ShardFile::create(dir / key.toString(), key, Layout::ec(3, 2));
  REQUIRE(f.ok());
  CHECK(f->reserve(341 * kCellSize, kCellSize).ok());
  CHECK(f->reserve(342 * kCellSize, kBlockSize).code() == Errc::kInvalid);
}

TEST_CASE("shard file: a damaged header makes the shard corrupt, not a crash") {
  Fixture fx;
  {
    auto f = fx.create();
    auto data = pattern(kBlockSize, 9);
    REQUIRE(f.write(0, data, crcsOf(data)).ok());
  }
  std::string path = fx.path;
  ShardKey key = kKey;
  SUBCASE("bad magic") { test::flipByte(fx.path, 0); }
  SUBCASE("a flipped bit in the chunk id fails the header CRC") { test::flipByte(fx.path, 17); }
  SUBCASE("a header cut short") { REQUIRE(::truncate(fx.path.c_str(), 100) == 0); }
  SUBCASE("a file of another shard under this shard's name") {
    key = ShardKey{kKey.chunk, 2};
    path = fx.dir / key.toString();
    REQUIRE(::rename(fx.path.c_str(), path.c_str()) == 0);
  }
  auto f = ShardFile::open(path, key);
  REQUIRE(!f.ok());
  CHECK(f.code() == Errc::kCorruption);
}

TEST_CASE("shard file: unaligned or oversized requests are invalid") {
  Fixture fx;
  auto f = fx.create();
  auto block = pattern(kBlockSize, 10);
  auto crcs = crcsOf(block);
  CHECK(f.write(100, block, crcs).code() == Errc::kInvalid);
  CHECK(f.write(0, block.slice(0, 100), crcs).code() == Errc::kInvalid);
  CHECK(f.write(kChunkSize, block, crcs).code() == Errc::kInvalid);
  CHECK(f.write(0, block, nullptr).code() == Errc::kInvalid);
  auto twoCrcs = kj::heapArray<uint32_t>({crcs[0], crcs[0]});
  CHECK(f.write(0, block, twoCrcs).code() == Errc::kInvalid);

  auto out = kj::heapArray<kj::byte>(2 * kBlockSize);
  auto outCrcs = kj::heapArray<uint32_t>(2);
  CHECK(f.read(kChunkSize - kBlockSize, out, outCrcs).code() == Errc::kInvalid);
  CHECK(f.read(10, out, outCrcs).code() == Errc::kInvalid);
  CHECK(f.read(0, out.slice(0, 10), outCrcs).code() == Errc::kInvalid);
  CHECK(f.truncate(100).code() == Errc::kInvalid);
  CHECK(f.truncate(kChunkSize + kBlockSize).code() == Errc::kInvalid);
  CHECK(f.truncate(kChunkSize).ok());
  CHECK(checkRange(~uint64_t(0) - 4095, 8192).code() == Errc::kInvalid);
}

TEST_CASE("shard file: a missing shard is not found, and creating an existing one is refused") {
  Fixture fx;
  CHECK(ShardFile::open(fx.path, kKey).code() == Errc::kNotFound);
  fx.create();
  CHECK(ShardFile::create(fx.path, kKey, Layout::ec(4, 2)).code() == Errc::kExists);
  CHECK(!test::fileExists(fx.path + ".tmp"));
}

TEST_CASE("shard file: the header keeps the layout, and a shard outside it cannot be created") {
  Fixture fx;
  {
    auto f = ShardFile::create(fx.path, kKey, Layout::replica(3));
    REQUIRE(f.ok());
  }
  CHECK(fx.reopen().layout() == Layout::replica(3));
  ShardKey seventh{ChunkId(9), 6};
  CHECK(ShardFile::create(fx.dir / seventh.toString(), seventh, Layout::ec(4, 2)).code() ==
        Errc::kInvalid);
  CHECK(ShardKey{ChunkId(0xab), 3}.toString() == "00000000000000ab.3");
}
