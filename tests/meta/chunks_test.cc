// The data side of the namespace: chunk maps, sizes, truncation, the garbage list, chunk
// servers and sessions; and setattr.
#include "fs/wire.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;

std::vector<uint64_t> garbageIds(NsFixture& f) {
  std::vector<uint64_t> ids;
  for (auto& g : f.ns().garbage(1000)) ids.push_back(g.chunk.id.value);
  return ids;
}

}  // namespace

TEST_CASE("chunks: allocChunk stores a chunk once — a racing second allocation gets the first") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  auto first =
      f->allocChunk(file, 2, 100, Layout::ec(4, 2), std::vector<uint64_t>{1, 2, 3, 4, 5, 6});
  REQUIRE(first.ok());
  CHECK(first->id == ChunkId(100));
  auto second = f->allocChunk(file, 2, 101, Layout::replica(3), std::vector<uint64_t>{7, 8, 9});
  REQUIRE(second.ok());
  CHECK(second->id == ChunkId(100));
  CHECK(second->layout == Layout::ec(4, 2));
  CHECK(second->servers.size() == 6);
  CHECK(f->ns().chunkCount() == 1);
  CHECK(f->ns().idMarks().chunk == 100);

  REQUIRE(f->allocChunk(file, 0, 102).ok());
  REQUIRE(f->allocChunk(file, 9, 103).ok());
  CHECK(f->ns().chunkCount() == 3);
  auto all = f->ns().chunks(file, 0, UINT64_MAX);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 3);
  CHECK(all->at(0).index == 0);
  CHECK(all->at(1).index == 2);
  CHECK(all->at(2).index == 9);
  CHECK(f->ns().chunks(file, 1, 2)->size() == 1);
  CHECK(f->ns().chunks(file, 3, 6)->empty());
  CHECK(f->ns().chunks(file, 9, 1)->at(0).id == ChunkId(103));
  CHECK(f->ns().chunks(InodeId(999), 0, 1).code() == Errc::kNotFound);
}

TEST_CASE("chunks: allocChunk refuses non-files, bad layouts and wrong server counts") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId link = f->symlink(kRoot, "link", "file")->inode;
  auto before = f->dump();
  CHECK(f->allocChunk(InodeId(999), 0, 1).code() == Errc::kNotFound);
  CHECK(f->allocChunk(dir, 0, 1).code() == Errc::kIsDir);
  CHECK(f->allocChunk(link, 0, 1).code() == Errc::kInvalid);
  CHECK(f->allocChunk(file, 0, 1, Layout{Layout::Kind::kEc, 0, 2}, std::vector<uint64_t>{1, 2})
            .code() == Errc::kInvalid);
  CHECK(f->allocChunk(file, 0, 1, Layout::ec(4, 2), std::vector<uint64_t>{1, 2, 3}).code() ==
        Errc::kInvalid);
  CHECK(f->allocChunk(file, 0, 0).code() == Errc::kInvalid);
  CHECK(f->allocChunk(file, uint64_t(1) << 40, 1).code() == Errc::kTooBig);
  CHECK(f->dump() == before);
}

TEST_CASE("chunks: commitWrite grows the size, never shrinks it, and sets the times") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  auto a = f->commitWrite(file, 5000, 111);
  REQUIRE(a.ok());
  CHECK(a->size == 5000);
  CHECK(a->mtimeNs == 111);
  CHECK(a->ctimeNs == f->clock);
  a = f->commitWrite(file, 100, 222);
  REQUIRE(a.ok());
  CHECK(a->size == 5000);
  CHECK(a->mtimeNs == 222);
  CHECK(f->commitWrite(InodeId(999), 1, 1).code() == Errc::kNotFound);
  CHECK(f->commitWrite(kRoot, 1, 1).code() == Errc::kIsDir);
  InodeId fifo = f->mknod(kRoot, "fifo", S_IFIFO | 0600)->inode;
  CHECK(f->commitWrite(fifo, 1, 1).code() == Errc::kInvalid);
}

TEST_CASE("chunks: blocks count the MiBs written, capped by the size — truncate and punch "
          "take theirs away") {
  auto f = eachStore();
  const uint64_t kMiB = kUsageUnit / 512;  // in blocks
  InodeId file = f->createOk(kRoot, "file");
  CHECK(f->attr(file).blocks == 0);
  REQUIRE(f->commitWrite(file, 3 * kChunkSize, 1).ok());
  CHECK(f->attr(file).blocks == 0);  // a hole: nothing written yet
  REQUIRE(f->allocChunk(file, 1, 1).ok());
  CHECK(f->attr(file).blocks == 0);  // placed, not written
  REQUIRE(f->commitWrite(file, 3 * kChunkSize, 2, {{1, 0b1011, 0}}).ok());
  CHECK(f->attr(file).blocks == 3 * kMiB);
  // Set and clear at once; a chunk that does not exist (dropped since) is skipped.
  REQUIRE(f->commitWrite(file, 3 * kChunkSize, 3, {{1, 0b0100, 0b0001}, {2, 1, 0}}).ok());
  CHECK(f->attr(file).blocks == 3 * kMiB);
  CHECK(f->ns().chunks(file, 1, 1)->front().written == 0b1110);
  // mtime 0: the times stay (a reservation changes no data).
  auto before = f->attr(file);
  REQUIRE(f->commitWrite(file, 0, 0, {{1, 0b10000, 0}}).ok());
  CHECK(f->attr(file).mtimeNs == before.mtimeNs);
  CHECK(f->attr(file).ctimeNs == before.ctimeNs);
  CHECK(f->attr(file).blocks == 4 * kMiB);
  // Truncated into chunk 1 at 1.5 MiB: MiBs 0 and 1 stay, the rest went.
  REQUIRE(f->setattr(file, SetAttr{.valid = proto::SET_SIZE,
                                   .size = kChunkSize + kUsageUnit + kUsageUnit / 2})
              .ok());
  CHECK(f->ns().chunks(file, 1, 1)->front().written == 0b0010);
  CHECK(f->attr(file).blocks == kMiB);
  REQUIRE(f->setattr(file, SetAttr{.valid = proto::SET_SIZE, .size = kChunkSize}).ok());
  CHECK(f->attr(file).blocks == 0);
  // Into the last MiB of a chunk: every MiB keeps its bit.
  REQUIRE(f->allocChunk(file, 0, 3).ok());
  REQUIRE(f->commitWrite(file, kChunkSize, 4, {{0, ~uint64_t(0), 0}}).ok());
  REQUIRE(f->setattr(file, SetAttr{.valid = proto::SET_SIZE, .size = kChunkSize - 100}).ok());
  CHECK(f->ns().chunks(file, 0, 1)->front().written == ~uint64_t(0));
  CHECK(f->attr(file).blocks == (kChunkSize - 100 + 511) / 512);
  InodeId small = f->createOk(kRoot, "small");
  REQUIRE(f->allocChunk(small, 0, 2).ok());
  REQUIRE(f->commitWrite(small, 1000, 1, {{0, 1, 0}}).ok());
  CHECK(f->attr(small).blocks == 2);  // capped by the size: 1000 bytes round up to two sectors
  CHECK(f->attr(kRoot).blocks == 8);
  // Malformed lists change nothing.
  auto dump = f->dump();
  CHECK(f->apply([&](proto::Op::Builder op) {
               auto c = op.initCommitWrite();
               c.setInode(small.value);
               c.initUsageChunks(2);
               c.initUsageSet(1);
               c.initUsageClear(2);
             }).code() == Errc::kInvalid);
  CHECK(f->dump() == dump);
}

TEST_CASE("chunks: truncating a file moves the chunks past its new end to the garbage list") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  for (uint64_t i = 0; i < 4; ++i) REQUIRE(f->allocChunk(file, i, 10 + i).ok());
  REQUIRE(f->commitWrite(file, 4 * kChunkSize, 1).ok());

  // Into the middle of chunk 1: chunk 1 stays (its tail was zeroed by the client).
  auto a = f->setattr(file, {.valid = proto::SET_SIZE, .size = kChunkSize + 1});
  REQUIRE(a.ok());
  CHECK(a->size == kChunkSize + 1);
  CHECK(a->mtimeNs == f->clock);
  CHECK(a->ctimeNs == f->clock);
  CHECK(garbageIds(*f) == std::vector<uint64_t>{12, 13});
  CHECK(f->ns().chunks(file, 0, 10)->size() == 2);
  CHECK(f->ns().chunkCount() == 2);

  // Exactly at a chunk boundary: chunk 1 goes too.
  REQUIRE(f->setattr(file, {.valid = proto::SET_SIZE, .size = kChunkSize}).ok());
  CHECK(garbageIds(*f) == std::vector<uint64_t>{11, 12, 13});
  REQUIRE(f->setattr(file, {.valid = proto::SET_SIZE, .size = 0}).ok());
  CHECK(garbageIds(*f) == std::vector<uint64_t>{10, 11, 12, 13});
  CHECK(f->attr(file).blocks == 0);
  CHECK(f->ns().chunkCount() == 0);

  // Growing adds no chunks: the new range is a hole.
  REQUIRE(f->setattr(file, {.valid = proto::SET_SIZE, .size = 10 * kChunkSize}).ok());
  CHECK(f->attr(file).size == 10 * kChunkSize);
  CHECK(f->ns().chunks(file, 0, 100)->empty());
}

TEST_CASE("chunks: punchChunks drops the chunks of a range to garbage and keeps the size") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  for (uint64_t i = 0; i < 5; ++i) REQUIRE(f->allocChunk(file, i, 10 + i).ok());
  std::vector<NsFixture::Usage> full;
  for (uint64_t i = 0; i < 5; ++i) full.push_back({i, ~uint64_t(0), 0});
  REQUIRE(f->commitWrite(file, 5 * kChunkSize, 1, full).ok());
  CHECK(f->attr(file).blocks == 5 * kChunkSize / 512);
  auto punch = [&](InodeId inode, uint64_t first, uint64_t count) {
    return f->apply([&](proto::Op::Builder op) {
      auto p = op.initPunchChunks();
      p.setInode(inode.value);
      p.setFirst(first);
      p.setCount(count);
    });
  };
  auto a = punch(file, 1, 2);
  REQUIRE(a.ok());
  CHECK(a->attr.size == 5 * kChunkSize);
  CHECK(a->attr.mtimeNs == f->clock);
  CHECK(a->attr.ctimeNs == f->clock);
  CHECK(a->attr.blocks == 3 * kChunkSize / 512);  // a hole takes no space
  CHECK(garbageIds(*f) == std::vector<uint64_t>{11, 12});
  auto left = f->ns().chunks(file, 0, 10);
  REQUIRE(left->size() == 3);
  CHECK(left->at(0).index == 0);
  CHECK(left->at(1).index == 3);
  CHECK(left->at(2).index == 4);
  CHECK(f->ns().chunkCount() == 3);
  // Holes and a range past the last chunk: nothing to drop, nothing changes but the times.
  REQUIRE(punch(file, 1, 2).ok());
  REQUIRE(punch(file, 100, kMaxPunchChunks).ok());
  CHECK(f->ns().chunkCount() == 3);
  // The last chunk index: no overflow past it.
  REQUIRE(punch(file, 4, kMaxPunchChunks).ok());
  CHECK(garbageIds(*f) == std::vector<uint64_t>{11, 12, 14});
  REQUIRE(punch(file, UINT64_MAX - 1, 10).ok());
  CHECK(punch(file, 0, kMaxPunchChunks + 1).code() == Errc::kInvalid);
  CHECK(punch(f->mkdirOk(kRoot, "dir"), 0, 1).code() == Errc::kIsDir);
  CHECK(punch(InodeId(999), 0, 1).code() == Errc::kNotFound);
  CHECK(f->ns().chunks(file, 0, 10)->size() == 2);  // the refused ones dropped nothing
}

TEST_CASE("chunks: truncate and punch refuse to drop a chunk leased to another session, "
          "unless the leader lists its holder as lapsed") {
  auto f = eachStore();
  // A file of two chunks, the second leased to session 7 as acquireLease proposes it.
  auto makeFile = [&](std::string_view name, uint64_t firstId) {
    InodeId file = f->createOk(kRoot, name);
    REQUIRE(f->allocChunk(file, 0, firstId).ok());
    auto leased = f->apply([&](proto::Op::Builder op) {
      auto a = op.initAllocChunk();
      a.setInode(file.value);
      ChunkDesc c;
      c.index = 1;
      c.id = ChunkId(firstId + 1);
      c.version = 1;
      c.layout = Layout::ec(4, 2);
      for (int i = 1; i <= 6; ++i) c.servers.push_back(ServerId(i));
      toWire(c, a.initChunk());
      a.setLeaseSession(7);
    });
    REQUIRE(leased.ok());
    REQUIRE(f->commitWrite(file, 2 * kChunkSize, 1).ok());
    return file;
  };
  auto drop = [&](InodeId file, bool punch, uint64_t session, std::vector<uint64_t> lapsed) {
    return f->apply([&](proto::Op::Builder op) {
      op.setSession(session);
      capnp::List<uint64_t>::Builder l(nullptr);
      if (punch) {
        auto p = op.initPunchChunks();
        p.setInode(file.value);
        p.setFirst(0);
        p.setCount(2);
        l = p.initLapsed(uint32_t(lapsed.size()));
      } else {
        auto s = op.initSetattr();
        s.setInode(file.value);
        s.setValid(proto::SET_SIZE);
        s.setSize(0);
        l = s.initLapsed(uint32_t(lapsed.size()));
      }
      for (uint32_t i = 0; i < lapsed.size(); ++i) l.set(i, lapsed[i]);
    });
  };
  InodeId file = makeFile("file", 10);
  for (bool punch : {false, true}) {
    CAPTURE(punch);
    // Another session (or the leader itself, session 0) may not drop it: nothing changes.
    CHECK(drop(file, punch, 8, {}).code() == Errc::kBusy);
    CHECK(drop(file, punch, 0, {9}).code() == Errc::kBusy);
    CHECK(f->ns().chunks(file, 0, 10)->size() == 2);
    CHECK(garbageIds(*f).empty());
    CHECK(f->attr(file).size == 2 * kChunkSize);
  }
  // Anyone may once the leader found the holder silent past the lease timeout...
  REQUIRE(drop(file, false, 8, {3, 7}).ok());
  CHECK(garbageIds(*f) == std::vector<uint64_t>{10, 11});
  // ... and the holder itself may (it synced what it wrote first).
  InodeId other = makeFile("other", 20);
  REQUIRE(drop(other, true, 7, {}).ok());
  CHECK(garbageIds(*f) == std::vector<uint64_t>{10, 11, 20, 21});
}

TEST_CASE(
    "chunks: removed() drops a server from pending and deletes records nothing is pending on") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  REQUIRE(f->allocChunk(file, 0, 1, Layout::replica(3), std::vector<uint64_t>{1, 2, 3}).ok());
  REQUIRE(f->allocChunk(file, 1, 2, Layout::replica(2), std::vector<uint64_t>{2, 4}).ok());
  REQUIRE(f->unlink(kRoot, "file").ok());
  REQUIRE(garbageIds(*f) == std::vector<uint64_t>{1, 2});
  CHECK(f->ns().garbage(1).size() == 1);
  CHECK(f->ns().garbage(0).empty());

  REQUIRE(f->removed(2, {1, 2}).ok());
  auto g = f->ns().garbage(10);
  REQUIRE(g.size() == 2);
  CHECK(g[0].pending == std::vector<ServerId>{ServerId(1), ServerId(3)});
  CHECK(g[1].pending == std::vector<ServerId>{ServerId(4)});
  REQUIRE(f->removed(2, {1, 2}).ok());    // a repeated report changes nothing
  REQUIRE(f->removed(4, {2, 999}).ok());  // an unknown chunk is ignored
  CHECK(garbageIds(*f) == std::vector<uint64_t>{1});
  REQUIRE(f->removed(1, {1}).ok());
  REQUIRE(f->removed(3, {1}).ok());
  CHECK(f->ns().garbage(10).empty());
}

TEST_CASE("setattr: mode keeps the file type — uid, gid and times are set as asked") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  auto a = f->setattr(file, {.valid = proto::SET_MODE, .mode = S_IFDIR | 04700});
  REQUIRE(a.ok());
  CHECK(a->mode == (S_IFREG | 04700));
  CHECK(a->ctimeNs == f->clock);
  a = f->setattr(file, {.valid = proto::SET_UID | proto::SET_GID, .uid = 5, .gid = 6});
  REQUIRE(a.ok());
  CHECK(a->uid == 5);
  CHECK(a->gid == 6);
  a = f->setattr(file,
                 {.valid = proto::SET_ATIME | proto::SET_MTIME, .atimeNs = 10, .mtimeNs = 20});
  REQUIRE(a.ok());
  CHECK(a->atimeNs == 10);
  CHECK(a->mtimeNs == 20);
  a = f->setattr(file, {.valid = proto::SET_ATIME_NOW | proto::SET_MTIME_NOW});
  REQUIRE(a.ok());
  CHECK(a->atimeNs == f->clock);
  CHECK(a->mtimeNs == f->clock);
  // A size change with an explicit mtime keeps that mtime.
  a = f->setattr(file, {.valid = proto::SET_SIZE | proto::SET_MTIME, .size = 9, .mtimeNs = 30});
  REQUIRE(a.ok());
  CHECK(a->size == 9);
  CHECK(a->mtimeNs == 30);
  a = f->setattr(file, {.valid = proto::SET_CTIME});
  REQUIRE(a.ok());
  CHECK(a->ctimeNs == f->clock);
  CHECK(a->mtimeNs == 30);
  CHECK(f->attr(file).mode == (S_IFREG | 04700));
}

TEST_CASE("setattr: size is refused on directories and special files — unknown bits are invalid") {
  auto f = eachStore();
  InodeId link = f->symlink(kRoot, "link", "x")->inode;
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(kRoot, "file");
  auto before = f->dump();
  CHECK(f->setattr(dir, {.valid = proto::SET_SIZE, .size = 0}).code() == Errc::kIsDir);
  CHECK(f->setattr(link, {.valid = proto::SET_SIZE, .size = 0}).code() == Errc::kInvalid);
  CHECK(f->setattr(InodeId(999), {.valid = proto::SET_MODE}).code() == Errc::kNotFound);
  CHECK(f->setattr(file, {.valid = 1u << 20}).code() == Errc::kInvalid);
  CHECK(f->setattr(file, {.valid = proto::SET_SIZE, .size = UINT64_MAX}).code() == Errc::kTooBig);
  CHECK(f->dump() == before);
  CHECK(f->setattr(dir, {.valid = proto::SET_MODE, .mode = 0700})->mode == (S_IFDIR | 0700));
}

TEST_CASE("servers: registerServer inserts, updates after a restart, and refuses id 0") {
  auto f = eachStore();
  REQUIRE(f->registerServer(2, "10.0.0.2:7000", "east", "r1", "h2").ok());
  REQUIRE(f->registerServer(1, "10.0.0.1:7000").ok());
  auto servers = f->ns().servers();
  REQUIRE(servers.size() == 2);
  CHECK(servers[0].id == ServerId(1));
  CHECK(servers[1].address == "10.0.0.2:7000");
  CHECK(servers[1].site == "east");
  CHECK(servers[1].rack == "r1");
  CHECK(servers[1].host == "h2");

  REQUIRE(f->registerServer(2, "10.0.0.9:7001", "west", "r9", "h9").ok());
  servers = f->ns().servers();
  REQUIRE(servers.size() == 2);
  CHECK(servers[1].address == "10.0.0.9:7001");
  CHECK(servers[1].site == "west");
  CHECK(f->registerServer(0, "x:1").code() == Errc::kInvalid);
  CHECK(f->registerServer(3, "").code() == Errc::kInvalid);
  CHECK(f->ns().idMarks().server == 2);
}

TEST_CASE("servers: a second registration with the same token gets the same id, another token "
          "a new one") {
  auto f = eachStore();
  const std::string tokenA(32, 'a'), tokenB(32, 'b');
  auto first = f->registerServerWithToken(1, "10.0.0.1:7000", tokenA, /*newId=*/true);
  REQUIRE(first.ok());
  CHECK(first->server == ServerId(1));

  // The first answer was lost; the retry, on the same or a new leader, was given id 2 to
  // propose. The server keeps id 1, at the address it now reports.
  auto retry = f->registerServerWithToken(2, "10.0.0.1:7001", tokenA, /*newId=*/true);
  REQUIRE(retry.ok());
  CHECK(retry->server == ServerId(1));
  // The same proposal applied twice answers the same.
  auto again = f->registerServerWithToken(2, "10.0.0.1:7001", tokenA, /*newId=*/true);
  REQUIRE(again.ok());
  CHECK(again->server == ServerId(1));

  auto other = f->registerServerWithToken(3, "10.0.0.2:7000", tokenB, /*newId=*/true);
  REQUIRE(other.ok());
  CHECK(other->server == ServerId(3));

  auto servers = f->ns().servers();
  REQUIRE(servers.size() == 2);
  CHECK(servers[0].id == ServerId(1));
  CHECK(servers[0].address == "10.0.0.1:7001");
  CHECK(servers[0].token == tokenA);
  CHECK(servers[1].id == ServerId(3));
  CHECK(servers[1].token == tokenB);
  // Ids proposed and not used are not handed out again.
  CHECK(f->ns().idMarks().server == 3);

  // A server that names its id registers with it, whatever leader it meets.
  auto known = f->registerServerWithToken(3, "10.0.0.2:7002", tokenB, /*newId=*/false);
  REQUIRE(known.ok());
  CHECK(known->server == ServerId(3));
}

TEST_CASE("servers: a registration keeps a drain, and an old server without a token its token") {
  auto f = eachStore();
  const std::string token(32, 'c');
  REQUIRE(f->registerServerWithToken(4, "10.0.0.4:7000", token, true).ok());
  REQUIRE(f->apply([](proto::Op::Builder op) {
               auto s = op.initSetServerState();
               s.setServer(4);
               s.setDraining(true);
             }).ok());
  REQUIRE(f->registerServerWithToken(5, "10.0.0.4:7001", token, true).ok());
  REQUIRE(f->registerServer(4, "10.0.0.4:7002").ok());  // no token: an older chunk server
  auto servers = f->ns().servers();
  REQUIRE(servers.size() == 1);
  CHECK(servers[0].draining);
  CHECK(servers[0].token == token);
  CHECK(servers[0].address == "10.0.0.4:7002");
}

TEST_CASE("servers: records without a token keep working and learn one") {
  auto f = eachStore();
  REQUIRE(f->registerServer(1, "10.0.0.1:7000").ok());
  const std::string token(32, 'd');
  auto r = f->registerServerWithToken(1, "10.0.0.1:7000", token, /*newId=*/false);
  REQUIRE(r.ok());
  CHECK(r->server == ServerId(1));
  CHECK(f->ns().servers()[0].token == token);
  // A registration that asks for a new id without a token gets it, as before.
  auto fresh = f->registerServerWithToken(2, "10.0.0.2:7000", "", /*newId=*/true);
  REQUIRE(fresh.ok());
  CHECK(fresh->server == ServerId(2));
}

TEST_CASE("servers: a bad or borrowed token is refused and changes nothing") {
  auto f = eachStore();
  const std::string tokenA(32, 'a'), tokenB(32, 'b');
  REQUIRE(f->registerServerWithToken(1, "10.0.0.1:7000", tokenA, true).ok());
  REQUIRE(f->registerServerWithToken(2, "10.0.0.2:7000", tokenB, true).ok());
  auto before = f->dump();
  CHECK(f->registerServerWithToken(3, "x:1", "short", true).code() == Errc::kInvalid);
  CHECK(f->registerServerWithToken(3, "x:1", std::string(129, 'a'), true).code() ==
        Errc::kInvalid);
  CHECK(f->registerServerWithToken(3, "x:1", std::string(31, 'a') + "\n", true).code() ==
        Errc::kInvalid);
  // Server 2 presenting server 1's token, or another token than its own: two data directories
  // would share an id.
  CHECK(f->registerServerWithToken(2, "10.0.0.2:7000", tokenA, false).code() == Errc::kExists);
  CHECK(f->registerServerWithToken(2, "10.0.0.2:7000", std::string(32, 'e'), false).code() ==
        Errc::kExists);
  CHECK(f->dump() == before);
}

TEST_CASE("sessions: openSession records the session and raises the session mark") {
  auto f = eachStore();
  REQUIRE(f->openSession(5, "host-a", "/mnt/t").ok());
  REQUIRE(f->openSession(5, "host-a", "/mnt/t").ok());  // a retried proposal
  CHECK(f->ns().idMarks().session == 5);
  CHECK(f->openSession(0, "h", "/m").code() == Errc::kInvalid);
  size_t sessions = 0;
  for (auto& [key, value] : f->dump()) sessions += key[0] == 's';
  CHECK(sessions == 1);
}
