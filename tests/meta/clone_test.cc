// Copy-on-write clones in the namespace (meta/ns/ops/clone.cc): cloneChunks shares chunk
// records, cowChunk gives one file a private copy, and a shared chunk's shards go to garbage
// only with the last file that refers to it.
#include <algorithm>

#include "fs/wire.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;

Result<meta::Applied> cloneChunks(NsFixture& f, InodeId src, InodeId dst, uint64_t srcFirst,
                                  uint64_t dstFirst, uint64_t count, uint64_t size,
                                  bool exact = false, uint64_t session = 0) {
  return f.apply([&](proto::Op::Builder op) {
    auto c = op.initCloneChunks();
    c.setSrc(src.value);
    c.setDst(dst.value);
    c.setSrcFirst(srcFirst);
    c.setDstFirst(dstFirst);
    c.setCount(count);
    c.setSize(size);
    c.setExactSize(exact);
    c.setSession(session);
  });
}

Result<meta::Applied> cowChunk(NsFixture& f, InodeId inode, uint64_t index, uint64_t old,
                               ChunkDesc copy) {
  return f.apply([&](proto::Op::Builder op) {
    auto c = op.initCowChunk();
    c.setInode(inode.value);
    c.setIndex(index);
    c.setOld(old);
    toWire(copy, c.initChunk());
  });
}

Result<meta::Applied> grantLease(NsFixture& f, InodeId inode, uint64_t index, uint64_t session) {
  return f.apply([&](proto::Op::Builder op) {
    auto a = op.initAllocChunk();
    a.setInode(inode.value);
    ChunkDesc c;
    c.index = index;
    c.id = ChunkId(999'999);
    c.layout = Layout::ec(4, 2);
    for (uint64_t s = 1; s <= 6; ++s) c.servers.push_back(ServerId(s));
    toWire(c, a.initChunk());
    a.setLeaseSession(session);
  });
}

ChunkDesc chunkAt(NsFixture& f, InodeId inode, uint64_t index) {
  auto c = f.ns().chunks(inode, index, 1);
  REQUIRE(c.ok());
  REQUIRE(c->size() == 1);
  return c->front();
}

std::vector<uint64_t> garbageIds(NsFixture& f) {
  std::vector<uint64_t> ids;
  for (auto& g : f.ns().garbage(1000)) ids.push_back(g.chunk.id.value);
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

TEST_CASE("clone: cloneChunks shares the source's chunks with the destination and sets its size") {
  auto f = eachStore();
  InodeId src = f->createOk(kRoot, "src");
  InodeId dst = f->createOk(kRoot, "dst");
  REQUIRE(f->allocChunk(src, 0, 10).ok());
  REQUIRE(f->allocChunk(src, 3, 13).ok());
  REQUIRE(f->allocChunk(dst, 1, 20).ok());  // the destination's own chunk in the range goes
  REQUIRE(f->commitWrite(src, 3 * kChunkSize + 100, 5, {{0, 0b11, 0}, {3, 0b1, 0}}).ok());
  auto a = cloneChunks(*f, src, dst, 0, 0, 4, 3 * kChunkSize + 100, true);
  REQUIRE(a.ok());
  CHECK(a->attr.size == 3 * kChunkSize + 100);
  // The clone counts the MiBs its chunks hold, as the source does.
  CHECK(a->attr.blocks == 3 * kUsageUnit / 512);
  CHECK(f->attr(src).blocks == 3 * kUsageUnit / 512);
  for (uint64_t index : {0, 3}) {
    CAPTURE(index);
    ChunkDesc s = chunkAt(*f, src, index), d = chunkAt(*f, dst, index);
    CHECK(s.id == d.id);
    CHECK(s.shared);
    CHECK(d.shared);
    CHECK(d.servers == s.servers);
  }
  CHECK(f->ns().chunks(dst, 1, 1)->empty());
  CHECK(garbageIds(*f) == std::vector<uint64_t>{20});
  CHECK(f->ns().chunkCount() == 4);
  // A third file shares them too.
  InodeId third = f->createOk(kRoot, "third");
  REQUIRE(f->commitWrite(third, 20 * kChunkSize, 5).ok());
  REQUIRE(cloneChunks(*f, dst, third, 0, 10, 4, 14 * kChunkSize).ok());
  CHECK(chunkAt(*f, third, 13).id == ChunkId(13));
  CHECK(f->attr(third).size == 20 * kChunkSize);  // grows to the size given, never shrinks
  REQUIRE(cloneChunks(*f, dst, third, 0, 10, 4, 14 * kChunkSize, true).ok());
  CHECK(f->attr(third).size == 14 * kChunkSize);  // exact
}

TEST_CASE("clone: a shared chunk's shards go to garbage only with the last file") {
  auto f = eachStore();
  InodeId src = f->createOk(kRoot, "src");
  InodeId dst = f->createOk(kRoot, "dst");
  REQUIRE(f->allocChunk(src, 0, 10).ok());
  REQUIRE(cloneChunks(*f, src, dst, 0, 0, 1, kChunkSize).ok());
  REQUIRE(f->unlink(kRoot, "src").ok());
  CHECK(garbageIds(*f).empty());
  // The last file's chunk is private again: writable in place.
  ChunkDesc d = chunkAt(*f, dst, 0);
  CHECK_FALSE(d.shared);
  auto leased = grantLease(*f, dst, 0, 7);
  REQUIRE(leased.ok());
  CHECK(leased->chunk->id == ChunkId(10));
  CHECK(leased->chunk->leaseSession == SessionId(7));
  REQUIRE(f->unlink(kRoot, "dst").ok());
  CHECK(garbageIds(*f) == std::vector<uint64_t>{10});
}

TEST_CASE("clone: no lease on a shared chunk — cowChunk gives the writer a private copy") {
  auto f = eachStore();
  InodeId src = f->createOk(kRoot, "src");
  InodeId dst = f->createOk(kRoot, "dst");
  REQUIRE(f->allocChunk(src, 0, 10).ok());
  REQUIRE(cloneChunks(*f, src, dst, 0, 0, 1, kChunkSize).ok());
  CHECK(grantLease(*f, dst, 0, 7).code() == Errc::kBusy);

  ChunkDesc copy = chunkAt(*f, dst, 0);
  copy.id = ChunkId(50);
  copy.staleShards = 1u << 4;  // its server could not copy that shard
  auto before = f->dump();
  CHECK(cowChunk(*f, dst, 0, 11, copy).code() == Errc::kStale);  // not the chunk there
  ChunkDesc other = copy;
  other.layout = Layout::replica(3);
  other.servers.resize(3);
  CHECK(cowChunk(*f, dst, 0, 10, other).code() == Errc::kInvalid);
  CHECK(f->dump() == before);

  auto c = cowChunk(*f, dst, 0, 10, copy);
  REQUIRE(c.ok());
  ChunkDesc d = chunkAt(*f, dst, 0), s = chunkAt(*f, src, 0);
  CHECK(d.id == ChunkId(50));
  CHECK_FALSE(d.shared);
  CHECK(d.staleShards == 1u << 4);
  CHECK(s.id == ChunkId(10));
  CHECK_FALSE(s.shared);  // the source is its only file now
  CHECK(f->ns().idMarks().chunk >= 50);
  CHECK(grantLease(*f, dst, 0, 7).ok());
  CHECK(grantLease(*f, src, 0, 8).ok());
  // Too late: it is private already.
  CHECK(cowChunk(*f, src, 0, 10, copy).code() == Errc::kStale);
}

TEST_CASE("clone: refused while a source chunk is leased or needs a re-sync, or a destination "
          "chunk is another session's") {
  auto f = eachStore();
  InodeId src = f->createOk(kRoot, "src");
  InodeId dst = f->createOk(kRoot, "dst");
  REQUIRE(grantLease(*f, src, 0, 7).ok());
  auto before = f->dump();
  CHECK(cloneChunks(*f, src, dst, 0, 0, 1, 1).code() == Errc::kBusy);
  CHECK(f->dump() == before);
  // Taken over from a silent holder, then given back: the next writer must re-sync it first.
  REQUIRE(f->apply([&](proto::Op::Builder op) {
             auto a = op.initAllocChunk();
             a.setInode(src.value);
             toWire(chunkAt(*f, src, 0), a.initChunk());
             a.setLeaseSession(8);
             a.setReplace(7);
           }).ok());
  REQUIRE(f->apply([&](proto::Op::Builder op) {
             auto r = op.initReleaseLeases();
             r.setSession(8);
             r.setInode(src.value);
           }).ok());
  REQUIRE(chunkAt(*f, src, 0).resync);
  REQUIRE_FALSE(chunkAt(*f, src, 0).leaseSession);
  CHECK(cloneChunks(*f, src, dst, 0, 0, 1, 1).code() == Errc::kBusy);
  InodeId other = f->createOk(kRoot, "other");
  REQUIRE(grantLease(*f, dst, 5, 9).ok());
  CHECK(cloneChunks(*f, other, dst, 0, 5, 1, 1, false, 8).code() == Errc::kBusy);
  // The session's own lease in the destination goes with its chunk.
  CHECK(cloneChunks(*f, other, dst, 0, 5, 1, 1, false, 9).ok());
  CHECK(f->ns().chunks(dst, 5, 1)->empty());
  CHECK(cloneChunks(*f, src, src, 0, 1, 1, 1).code() == Errc::kInvalid);
  CHECK(cloneChunks(*f, src, dst, 0, 0, kMaxCloneChunks + 1, 1).code() == Errc::kInvalid);
  InodeId dir = f->mkdirOk(kRoot, "dir");
  CHECK(cloneChunks(*f, src, dir, 0, 0, 1, 1).code() == Errc::kIsDir);
}

TEST_CASE("clone: a frozen destination is refused, a frozen source is cloned, and a frozen "
          "file's chunk is not copied on write") {
  auto f = eachStore();
  InodeId src = f->createOk(kRoot, "src");
  InodeId dst = f->createOk(kRoot, "dst");
  REQUIRE(f->allocChunk(src, 0, 10).ok());
  REQUIRE(f->setxattr(src, "tessera.readonly", "1").ok());
  REQUIRE(cloneChunks(*f, src, dst, 0, 0, 1, kChunkSize).ok());
  REQUIRE(f->setxattr(dst, "tessera.readonly", "1").ok());
  InodeId other = f->createOk(kRoot, "other");
  CHECK(cloneChunks(*f, other, dst, 0, 0, 1, kChunkSize).code() == Errc::kReadOnly);
  ChunkDesc copy = chunkAt(*f, dst, 0);
  copy.id = ChunkId(50);
  CHECK(cowChunk(*f, dst, 0, 10, copy).code() == Errc::kReadOnly);
  CHECK(chunkAt(*f, dst, 0).id == ChunkId(10));
}

TEST_CASE("clone: a repaired shard of a shared chunk moves in every file at once") {
  auto f = eachStore();
  InodeId src = f->createOk(kRoot, "src");
  InodeId dst = f->createOk(kRoot, "dst");
  REQUIRE(f->allocChunk(src, 0, 10).ok());
  REQUIRE(cloneChunks(*f, src, dst, 0, 2, 1, 3 * kChunkSize).ok());
  ChunkDesc c = chunkAt(*f, src, 0);
  auto r = f->apply([&](proto::Op::Builder op) {
    auto rs = op.initReplaceShard();
    rs.setInode(src.value);
    rs.setIndex(0);
    rs.setChunk(10);
    rs.setShard(1);
    rs.setEpoch(c.epoch);
    auto list = rs.initServers(c.servers.size());
    for (size_t i = 0; i < c.servers.size(); ++i) list.set(i, c.servers[i].value);
    rs.setTarget(77);
  });
  REQUIRE(r.ok());
  CHECK(chunkAt(*f, src, 0).servers[1] == ServerId(77));
  CHECK(chunkAt(*f, dst, 2).servers[1] == ServerId(77));
  CHECK(chunkAt(*f, dst, 2).servers == chunkAt(*f, src, 0).servers);
}
