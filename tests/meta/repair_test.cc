// Shard repair in the meta server: the replaceShard op (a compare-and-set on the chunk map),
// the garbage it leaves, the chunk scan, and the pure decisions of meta/repair_plan.h.
#include <random>

#include "meta/repair_plan.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;
using tessera::meta::assess;
using tessera::meta::Health;
using tessera::meta::pickTarget;
using tessera::meta::ServerMap;
using tessera::meta::ServerView;
using tessera::meta::shardLength;

namespace {

const InodeId kRoot = kRootInode;

Result<meta::Applied> replaceShard(NsFixture& f, InodeId inode, const ChunkDesc& c, int shard,
                                   uint64_t target, std::optional<uint64_t> epoch = {},
                                   std::optional<std::vector<uint64_t>> servers = {}) {
  return f.apply([&](proto::Op::Builder op) {
    auto r = op.initReplaceShard();
    r.setInode(inode.value);
    r.setIndex(c.index);
    r.setChunk(c.id.value);
    r.setShard(uint8_t(shard));
    r.setEpoch(epoch.value_or(c.epoch));
    std::vector<uint64_t> ids;
    for (ServerId s : c.servers) ids.push_back(s.value);
    if (servers) ids = *servers;
    auto list = r.initServers(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
    r.setTarget(target);
  });
}

std::vector<uint64_t> pendingOf(NsFixture& f, uint64_t chunk) {
  std::vector<uint64_t> out;
  if (auto g = f.ns().garbageOf(ChunkId(chunk))) {
    for (ServerId s : g->pending) out.push_back(s.value);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("replaceShard: switches the shard to the target, and the old copy becomes garbage") {
  auto f = eachStore();
  for (uint64_t id = 1; id <= 7; ++id) {
    REQUIRE(f->registerServer(id, "127.0.0.1:" + std::to_string(1000 + id)).ok());
  }
  InodeId file = f->createOk(kRoot, "file");
  auto c = f->allocChunk(file, 0, 50);  // servers 1..6
  REQUIRE(c.ok());
  auto r = replaceShard(*f, file, *c, 2, 7);
  REQUIRE(r.ok());
  auto now = f->ns().chunks(file, 0, 1);
  REQUIRE(now.ok());
  CHECK(now->at(0).servers == std::vector<ServerId>{ServerId(1), ServerId(2), ServerId(7),
                                                    ServerId(4), ServerId(5), ServerId(6)});
  CHECK(pendingOf(*f, 50) == std::vector<uint64_t>{3});

  // The same order again (a retry after a leader change) finds the chunk moved: refused.
  CHECK(replaceShard(*f, file, *c, 2, 7).code() == Errc::kStale);
  // Server 3 still has to delete its old shard: it cannot take a shard of the chunk back.
  auto moved = now->at(0);
  CHECK(replaceShard(*f, file, moved, 0, 3).code() == Errc::kBusy);
  REQUIRE(f->removed(3, {50}).ok());
  CHECK(pendingOf(*f, 50).empty());
  REQUIRE(replaceShard(*f, file, moved, 0, 3).ok());
  CHECK(pendingOf(*f, 50) == std::vector<uint64_t>{1});

  // Deleting the file merges every server into the one garbage record of the chunk.
  REQUIRE(f->unlink(kRoot, "file").ok());
  CHECK(pendingOf(*f, 50) == std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("replaceShard: refused when the chunk changed since the copy started") {
  auto f = eachStore();
  for (uint64_t id = 1; id <= 8; ++id) REQUIRE(f->registerServer(id, "127.0.0.1:1").ok());
  InodeId file = f->createOk(kRoot, "file");
  auto c = f->allocChunk(file, 0, 60);
  REQUIRE(c.ok());
  CHECK(replaceShard(*f, file, *c, 1, 7, /*epoch=*/5).code() == Errc::kStale);
  CHECK(replaceShard(*f, file, *c, 1, 7, {}, std::vector<uint64_t>{1, 2, 3, 4, 5, 8}).code() ==
        Errc::kStale);
  CHECK(replaceShard(*f, file, *c, 1, 4).code() == Errc::kInvalid);  // holds shard 3
  CHECK(replaceShard(*f, file, *c, 6, 7).code() == Errc::kInvalid);  // no shard 6
  CHECK(replaceShard(*f, file, *c, 1, 0).code() == Errc::kInvalid);
  ChunkDesc other = *c;
  other.id = ChunkId(61);
  CHECK(replaceShard(*f, file, other, 1, 7).code() == Errc::kStale);
  ChunkDesc missing = *c;
  missing.index = 3;
  CHECK(replaceShard(*f, file, missing, 1, 7).code() == Errc::kNotFound);
  // Only the applied-index bookkeeping may differ: nothing was switched.
  auto chunks = f->ns().chunks(file, 0, 1);
  REQUIRE(chunks.ok());
  CHECK(chunks->at(0).servers == c->servers);
  CHECK(pendingOf(*f, 60).empty());
}

TEST_CASE("scanChunks: every chunk of every file in order, with the file's size") {
  auto f = eachStore();
  InodeId a = f->createOk(kRoot, "a");
  InodeId b = f->createOk(kRoot, "b");
  REQUIRE(f->allocChunk(a, 0, 10).ok());
  REQUIRE(f->allocChunk(a, 4, 11).ok());
  REQUIRE(f->allocChunk(b, 1, 12).ok());
  REQUIRE(f->commitWrite(a, 5 * kChunkSize - 7, 1).ok());
  auto all = f->ns().scanChunks(InodeId(), 0, 100);
  REQUIRE(all.size() == 3);
  CHECK(all[0].chunk.id == ChunkId(10));
  CHECK(all[0].fileSize == 5 * kChunkSize - 7);
  CHECK(all[1].chunk.id == ChunkId(11));
  CHECK(all[1].chunk.index == 4);
  CHECK(all[2].inode == b);
  CHECK(all[2].fileSize == 0);
  auto rest = f->ns().scanChunks(a, 1, 1);
  REQUIRE(rest.size() == 1);
  CHECK(rest[0].chunk.id == ChunkId(11));
}

namespace {

ServerMap servers(int n, int downFrom = INT32_MAX, uint64_t downMs = 0) {
  ServerMap out;
  for (int i = 1; i <= n; ++i) {
    ServerView v;
    v.id = ServerId(i);
    v.address = "127.0.0.1:" + std::to_string(i);
    v.host = "h" + std::to_string(i);
    v.up = i < downFrom;
    v.downMs = v.up ? 0 : downMs;
    v.freeBytes = 1 << 30;
    out.emplace(v.id, v);
  }
  return out;
}

ChunkDesc chunkOn(std::vector<uint64_t> ids, Layout layout = Layout::ec(4, 2)) {
  ChunkDesc c;
  c.id = ChunkId(9);
  c.layout = layout;
  for (auto id : ids) c.servers.push_back(ServerId(id));
  return c;
}

}  // namespace

TEST_CASE("repair plan: a shard on a down server waits out the grace period, stale ones do not") {
  auto c = chunkOn({1, 2, 3, 4, 5, 6});
  auto healthy = assess(c, servers(7), {}, 3000);
  CHECK(healthy.health == Health::kHealthy);
  CHECK(healthy.missing.empty());
  CHECK(!healthy.misplaced);

  auto waiting = assess(c, servers(7, /*downFrom=*/6, /*downMs=*/2000), {}, 3000);
  CHECK(waiting.health == Health::kDegraded);
  CHECK(waiting.missing == std::vector<int>{5});
  CHECK(waiting.repairable.empty());
  auto gone = assess(c, servers(7, 6, 4000), {}, 3000);
  CHECK(gone.repairable == std::vector<int>{5});

  c.staleShards = 1u << 1;
  auto stale = assess(c, servers(7), {}, 3000);
  CHECK(stale.health == Health::kDegraded);
  CHECK(stale.repairable == std::vector<int>{1});
  c.staleShards = 0;
  auto damaged = assess(c, servers(7), {{9, 3, 4}}, 3000);
  CHECK(damaged.repairable == std::vector<int>{3});
  auto elsewhere = assess(c, servers(7), {{9, 3, 5}}, 3000);  // not where shard 3 lives
  CHECK(elsewhere.health == Health::kHealthy);

  auto lost = assess(c, servers(7, 4, 10'000), {}, 3000);  // 4, 5, 6 down
  CHECK(lost.health == Health::kLost);
  auto unknown = assess(chunkOn({1, 2, 3, 4, 5, 99}), servers(7), {}, 3000);
  CHECK(unknown.repairable == std::vector<int>{5});
}

TEST_CASE("repair plan: misplaced when shards share a server, or a domain holds more than m") {
  CHECK(assess(chunkOn({1, 2, 3, 4, 5, 5}), servers(7), {}, 0).misplaced);
  auto racks = servers(6);
  int i = 0;
  for (auto& [id, s] : racks) s.rack = "r" + std::to_string(i++ % 3);
  // Servers 1 and 4 are in rack r0, 2 and 5 in r1, 3 and 6 in r2: two per rack is fine.
  CHECK(!assess(chunkOn({1, 2, 3, 4, 5, 6}), racks, {}, 0).misplaced);
  // Three shards in one rack while three racks exist is not.
  auto moreRacks = racks;
  ServerView extra = racks.at(ServerId(1));
  extra.id = ServerId(7);
  moreRacks.emplace(extra.id, extra);
  CHECK(assess(chunkOn({1, 4, 7, 2, 5, 3}), moreRacks, {}, 0).misplaced);
  // One host for everything (a test cluster): nothing better is possible.
  auto one = servers(6);
  for (auto& [id, s] : one) s.host = "same";
  CHECK(!assess(chunkOn({1, 2, 3, 4, 5, 6}), one, {}, 0).misplaced);
}

TEST_CASE("repair plan: shard lengths cover the file's data in whole rows") {
  CHECK(shardLength(Layout::ec(4, 2), 0) == 0);
  CHECK(shardLength(Layout::ec(4, 2), 1) == kCellSize);
  CHECK(shardLength(Layout::ec(4, 2), 4 * kCellSize) == kCellSize);
  CHECK(shardLength(Layout::ec(4, 2), 4 * kCellSize + 1) == 2 * kCellSize);
  CHECK(shardLength(Layout::ec(4, 2), 10 * kChunkSize) == kChunkSize / 4);
  CHECK(shardLength(Layout::replica(3), 5000) == 8192);
  CHECK(shardLength(Layout::replica(3), kChunkSize + 1) == kChunkSize);
  // ec(3,2): 342 rows, the last one partial — whole blocks, not kChunkSize / 3.
  CHECK(shardLength(Layout::ec(3, 2), kChunkSize) == 342 * kCellSize);
  CHECK(shardLength(Layout::ec(3, 2), 10 * kChunkSize) == 342 * kCellSize);
  CHECK(shardLength(Layout::ec(3, 2), 341 * 3 * kCellSize) == 341 * kCellSize);
}

TEST_CASE("repair plan: the target is up, new to the chunk, not excluded, on an unused host") {
  std::mt19937_64 rng(5);
  auto c = chunkOn({1, 2, 3, 4, 5, 6});
  auto map = servers(8, /*downFrom=*/8, 0);  // 7 up, 8 down
  for (int round = 0; round < 20; ++round) {
    auto t = pickTarget(c, 0, map, {}, rng);
    REQUIRE(t.ok());
    CHECK(*t == ServerId(7));
  }
  CHECK(pickTarget(c, 0, map, {ServerId(7)}, rng).code() == Errc::kUnavailable);
  // With a choice, a host the other shards do not use wins over one they do.
  map = servers(9);
  map.at(ServerId(8)).host = "h2";
  for (int round = 0; round < 20; ++round) {
    auto t = pickTarget(c, 0, map, {}, rng);
    REQUIRE(t.ok());
    CHECK(*t != ServerId(8));
  }
}

namespace {

Status setServerState(NsFixture& f, uint64_t server, bool draining, bool remove) {
  auto r = f.apply([&](proto::Op::Builder op) {
    auto s = op.initSetServerState();
    s.setServer(server);
    s.setDraining(draining);
    s.setRemove(remove);
  });
  if (!r) return r.error();
  return Status();
}

bool drainingOf(NsFixture& f, uint64_t server) {
  for (auto& s : f.ns().servers()) {
    if (s.id == ServerId(server)) return s.draining;
  }
  FAIL("no server " << server);
  return false;
}

}  // namespace

TEST_CASE("setServerState: draining is kept across re-registration — remove waits for no shards") {
  auto f = eachStore();
  for (uint64_t id = 1; id <= 7; ++id) REQUIRE(f->registerServer(id, "127.0.0.1:1").ok());
  InodeId file = f->createOk(kRoot, "file");
  auto c = f->allocChunk(file, 0, 70);  // servers 1..6
  REQUIRE(c.ok());
  CHECK(setServerState(*f, 99, true, false).code() == Errc::kNotFound);
  REQUIRE(setServerState(*f, 3, true, false).ok());
  CHECK(drainingOf(*f, 3));
  REQUIRE(f->registerServer(3, "127.0.0.1:2").ok());  // a restart on another port
  CHECK(drainingOf(*f, 3));

  CHECK(setServerState(*f, 3, false, true).code() == Errc::kNotEmpty);
  REQUIRE(replaceShard(*f, file, *c, 2, 7).ok());
  // Its old copy is still to be deleted.
  CHECK(setServerState(*f, 3, false, true).code() == Errc::kNotEmpty);
  REQUIRE(f->removed(3, {70}).ok());
  REQUIRE(setServerState(*f, 3, false, true).ok());
  for (auto& s : f->ns().servers()) CHECK(s.id != ServerId(3));
  REQUIRE(setServerState(*f, 7, false, false).ok());
  CHECK(!drainingOf(*f, 7));
}
