#include "chunk/disk_set.h"
#include "chunk/rebuilder.h"

#include <doctest/doctest.h>

#include <cstring>

#include "chunk/chunk_service.h"
#include "fs/lost_block.h"
#include "fs/options.h"
#include "fs/rpc.h"
#include "fs/wire.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

// Computes the parity shards of `shards` (k + m of equal size) from its data shards.
void encodeParity(const Layout& layout, std::vector<kj::Array<kj::byte>>& shards) {
  ErasureCode code(layout.k, layout.m);
  std::vector<const uint8_t*> data;
  std::vector<uint8_t*> parity;
  for (int i = 0; i < layout.k; ++i) data.push_back(shards[i].begin());
  for (int i = layout.k; i < layout.shards(); ++i) parity.push_back(shards[i].begin());
  code.encode(data.data(), parity.data(), shards[0].size());
}

// The k + m shards of `rows` bytes each of an ec layout, parity computed by ErasureCode.
std::vector<kj::Array<kj::byte>> encoded(const Layout& layout, size_t rows, unsigned seed) {
  std::vector<kj::Array<kj::byte>> shards;
  for (int i = 0; i < layout.shards(); ++i) {
    shards.push_back(i < layout.k ? pattern(rows, seed + i) : kj::heapArray<kj::byte>(rows));
  }
  encodeParity(layout, shards);
  return shards;
}

}  // namespace

TEST_CASE("rebuilder: pickSources takes k usable shards, never the target, or says too few") {
  Layout ec = Layout::ec(4, 2);
  auto all = pickSources(ec, 0, {true, true, true, true, true, true});
  REQUIRE(all.ok());
  CHECK(*all == std::vector<int>{1, 2, 3, 4});
  auto gap = pickSources(ec, 3, {true, false, true, true, true, true});
  REQUIRE(gap.ok());
  CHECK(*gap == std::vector<int>{0, 2, 4, 5});
  CHECK(pickSources(ec, 3, {true, false, true, true, false, true}).code() ==
        Errc::kUnavailable);
  auto rep = pickSources(Layout::replica(3), 0, {false, false, true});
  REQUIRE(rep.ok());
  CHECK(*rep == std::vector<int>{2});
  CHECK(pickSources(Layout::replica(2), 1, {false, true}).code() == Errc::kUnavailable);
}

TEST_CASE("rebuilder: decodePiece rebuilds any shard of ec(4,2) from any k others") {
  Layout layout = Layout::ec(4, 2);
  const size_t rows = 3 * kBlockSize;
  auto shards = encoded(layout, rows, 7);
  ErasureCode code(layout.k, layout.m);
  int cases = 0;
  for (int target = 0; target < layout.shards(); ++target) {
    // Every way of leaving one more shard unusable besides the target.
    for (int lost = -1; lost < layout.shards(); ++lost) {
      if (lost == target) continue;
      CAPTURE(target);
      CAPTURE(lost);
      std::vector<bool> usable(layout.shards(), true);
      usable[target] = false;
      if (lost >= 0) usable[lost] = false;
      auto read = pickSources(layout, target, usable);
      REQUIRE(read.ok());
      std::vector<kj::ArrayPtr<const kj::byte>> inputs(layout.shards());
      for (int i : *read) inputs[i] = shards[i].asPtr();
      auto out = kj::heapArray<kj::byte>(rows);
      memset(out.begin(), 0xAA, rows);
      REQUIRE(decodePiece(layout, target, *read, inputs, out, &code).ok());
      CHECK(memcmp(out.begin(), shards[target].begin(), rows) == 0);
      ++cases;
    }
  }
  CHECK(cases == 36);
}

TEST_CASE("rebuilder: decodePiece copies a replica") {
  Layout layout = Layout::replica(3);
  auto copy = pattern(kBlockSize, 3);
  std::vector<kj::ArrayPtr<const kj::byte>> inputs(3);
  inputs[2] = copy.asPtr();
  auto out = kj::heapArray<kj::byte>(kBlockSize);
  REQUIRE(decodePiece(layout, 0, {2}, inputs, out, nullptr).ok());
  CHECK(memcmp(out.begin(), copy.begin(), kBlockSize) == 0);
}

namespace {

// Chunk servers on loopback TCP, each a Disk in a temp dir behind a ChunkServiceImpl that
// rebuilds through a Rebuilder of its own.
struct Servers {
  test::Loop loop;
  test::TempDir dir{"rebuilder-test"};
  kj::Network& network = loop.io.provider->getNetwork();
  kj::Timer& timer = loop.io.provider->getTimer();
  struct One {
    kj::Own<DiskSet> disk;
    kj::Own<DiskLogs> logs;
    kj::Own<ChunkPeers> peers;
    kj::Own<Rebuilder> rebuilder;
    kj::Own<RpcServer> server;
    std::string address;
  };
  std::vector<One> servers;
  ChunkPeers client{network, timer, 5'000};

  explicit Servers(int n) {
    for (int i = 0; i < n; ++i) {
      One one;
      auto d = DiskSet::open({.dirs = {dir.path() + "/s" + std::to_string(i)}});
      REQUIRE(d.ok());
      one.disk = kj::mv(*d);
      auto l = DiskLogs::open(*one.disk);
      REQUIRE(l.ok());
      one.logs = kj::mv(*l);
      one.peers = kj::heap<ChunkPeers>(network, timer, 5'000);
      one.rebuilder = kj::heap<Rebuilder>(*one.disk, *one.peers, timer,
                                          Rebuilder::Config{.pieceBytes = 256 * 1024});
      auto address = Address::parse("127.0.0.1:0");
      REQUIRE(address.ok());
      auto srv = RpcServer::listen(network, loop.ws, *address,
                                   kj::heap<ChunkServiceImpl>(*one.disk, *one.logs,
                                                              one.rebuilder.get()));
      REQUIRE(srv.ok());
      one.server = kj::mv(*srv);
      one.address = "127.0.0.1:" + std::to_string(one.server->port());
      servers.push_back(kj::mv(one));
    }
  }

  proto::ChunkService::Client service(int i) {
    auto c = loop.wait(client.get(servers[i].address));
    REQUIRE(c.ok());
    return *c;
  }

  void write(int server, uint64_t chunk, uint8_t shard, Layout layout, uint64_t offset,
             kj::ArrayPtr<const kj::byte> data) {
    auto req = service(server).writeRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    toWire(layout, req.initLayout());
    req.setOffset(offset);
    req.setData(data);
    auto crcs = crcsOf(data);
    auto list = req.initCrcs(crcs.size());
    for (size_t i = 0; i < crcs.size(); ++i) list.set(i, crcs[i]);
    req.setSync(false);  // fsyncs would only slow the test down
    REQUIRE(fromWire(loop.wait(req.send()).getError()).ok());
  }

  struct Rebuilt {
    Status status;
    uint64_t bytes = 0;
  };
  Rebuilt rebuild(int server, uint64_t chunk, uint8_t shard, Layout layout,
                  const std::vector<std::string>& sources, uint64_t length) {
    auto req = service(server).rebuildRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    toWire(layout, req.initLayout());
    auto list = req.initSources(sources.size());
    for (size_t i = 0; i < sources.size(); ++i) list.set(i, sources[i]);
    req.setLength(length);
    auto r = loop.wait(req.send());
    return {fromWire(r.getError()), r.getBytes()};
  }

  kj::Array<kj::byte> read(int server, uint64_t chunk, uint8_t shard, uint64_t length) {
    auto out = kj::heapArray<kj::byte>(length);
    auto crcs = kj::heapArray<uint32_t>(length / kBlockSize);
    REQUIRE(loop.wait(servers[server].disk->read(ShardKey{ChunkId(chunk), shard}, 0, out, crcs))
                .ok());
    return out;
  }
};

// Rebuilds data shard 1 of `chunk` (shard i on server i; shard 1's server is gone) on server 6
// and checks it: block `lostRow` is marked lost, every other block is shards[1]'s.
void rebuildShard1WithLostRow(Servers& s, uint64_t chunk, const Layout& layout,
                              const std::vector<kj::Array<kj::byte>>& shards, uint64_t lostRow) {
  const size_t len = shards[1].size();
  std::vector<std::string> sources;
  for (int i = 0; i < layout.shards(); ++i) sources.push_back(s.servers[i].address);
  sources[1] = "";
  auto r = s.rebuild(6, chunk, 1, layout, sources, len);
  REQUIRE(r.status.ok());
  CHECK(s.servers[6].rebuilder->stats().lostBlocks == 1);
  ShardKey rebuilt{ChunkId(chunk), 1};
  auto out = kj::heapArray<kj::byte>(kBlockSize);
  auto crcs = kj::heapArray<uint32_t>(1);
  auto lost = s.loop.wait(s.servers[6].disk->read(rebuilt, lostRow * kBlockSize, out, crcs));
  CHECK(lost.code() == Errc::kLost);
  CHECK(lost.error().detail.find("is lost") != std::string::npos);
  for (uint64_t row = 0; row < len / kBlockSize; ++row) {
    if (row == lostRow) continue;
    CAPTURE(row);
    REQUIRE(s.loop.wait(s.servers[6].disk->read(rebuilt, row * kBlockSize, out, crcs)).ok());
    CHECK(memcmp(out.begin(), shards[1].begin() + row * kBlockSize, kBlockSize) == 0);
  }
}

}  // namespace

TEST_CASE("rebuilder: a lost ec(4,2) shard is rebuilt on another server, around a corrupt source") {
  Servers s(7);
  Layout layout = Layout::ec(4, 2);
  const uint64_t chunk = 42;
  const size_t len = 1024 * 1024;  // four pieces of 256 KiB
  auto shards = encoded(layout, len, 11);
  // Shard i on server i; a hole in the middle of every shard stays a hole.
  for (int i = 0; i < layout.shards(); ++i) {
    memset(shards[i].begin() + 256 * 1024, 0, 256 * 1024);
  }
  // Zeroed rows of the data shards give zero parity: the encoding stays consistent.
  for (int i = 0; i < layout.shards(); ++i) {
    s.write(i, chunk, uint8_t(i), layout, 0, shards[i].slice(0, 256 * 1024));
    s.write(i, chunk, uint8_t(i), layout, 512 * 1024, shards[i].slice(512 * 1024, len));
  }
  // Shard 2 is lost (its server is gone); shard 0's file rots in its last piece.
  std::vector<std::string> sources;
  for (int i = 0; i < layout.shards(); ++i) sources.push_back(s.servers[i].address);
  sources[2] = "";
  test::flipByte(s.servers[0].disk->shardPath(ShardKey{ChunkId(chunk), 0}),
                 kDataOffset + 900 * 1024);

  auto r = s.rebuild(6, chunk, 2, layout, sources, len);
  REQUIRE(r.status.ok());
  CHECK(r.bytes == len);
  auto got = s.read(6, chunk, 2, len);
  CHECK(memcmp(got.begin(), shards[2].begin(), len) == 0);
  CHECK(s.servers[6].rebuilder->stats().done == 1);
  CHECK(s.servers[6].rebuilder->stats().bytes == len);

  // With the rotten shard 0 and the lost shard 2 out, a second loss leaves too few.
  sources[1] = "";
  sources[0] = "";
  auto again = s.rebuild(6, chunk, 3, layout, sources, len);
  CHECK(again.status.code() == Errc::kUnavailable);
}

// A large write died between its data and its parity: row 5 of data shards 0, 2 and 3 is new,
// its parity old. Shard 1, lost, decodes there to bytes nobody wrote; the spare parity shard
// tells, and the rebuilt shard holds that block marked lost instead.
TEST_CASE("rebuilder: a block decoded from a row whose parity disagrees is marked lost, not stored") {
  Servers s(7);
  Layout layout = Layout::ec(4, 2);
  const uint64_t chunk = 43;
  const size_t len = 256 * 1024;
  auto shards = encoded(layout, len, 21);
  for (int i = 0; i < layout.shards(); ++i) s.write(i, chunk, uint8_t(i), layout, 0, shards[i]);
  for (int i : {0, 2, 3}) {
    s.write(i, chunk, uint8_t(i), layout, 5 * kBlockSize, pattern(kBlockSize, 100 + i));
  }
  rebuildShard1WithLostRow(s, chunk, layout, shards, 5);
}

// A write into a row holding a lost block had its parity encoded over the lost pattern
// (fs/lost_block.h): row 7 agrees with its parity, and shard 1 decodes there to the pattern.
// The rebuilt shard marks that block lost again; it never stores the pattern as data.
TEST_CASE("rebuilder: a block that decodes to the lost pattern is marked lost again") {
  Servers s(7);
  Layout layout = Layout::ec(4, 2);
  const uint64_t chunk = 44;
  const size_t len = 256 * 1024;
  auto shards = encoded(layout, len, 31);
  memcpy(shards[1].begin() + 7 * kBlockSize, lostBlockBytes(), kBlockSize);
  encodeParity(layout, shards);
  for (int i = 0; i < layout.shards(); ++i) s.write(i, chunk, uint8_t(i), layout, 0, shards[i]);
  rebuildShard1WithLostRow(s, chunk, layout, shards, 7);
}

TEST_CASE("rebuilder: a replica is copied — bad arguments are refused") {
  Servers s(3);
  Layout layout = Layout::replica(3);
  const uint64_t chunk = 7;
  auto data = pattern(3 * kBlockSize, 5);
  s.write(0, chunk, 0, layout, 0, data);
  s.write(1, chunk, 1, layout, 0, data);
  auto r = s.rebuild(2, chunk, 2, layout, {s.servers[0].address, s.servers[1].address, ""},
                     data.size());
  REQUIRE(r.status.ok());
  auto got = s.read(2, chunk, 2, data.size());
  CHECK(memcmp(got.begin(), data.begin(), data.size()) == 0);

  CHECK(s.rebuild(2, chunk, 2, layout, {"", ""}, data.size()).status.code() == Errc::kInvalid);
  CHECK(s.rebuild(2, chunk, 2, layout, {"a:1", "b:2", ""}, 100).status.code() == Errc::kInvalid);
  CHECK(s.rebuild(2, chunk, 5, layout, {"", "", ""}, 4096).status.code() == Errc::kInvalid);
  // Longer than a shard of the layout holds: ec(3,2) holds 342 cells (its last row partial).
  Layout ec32 = Layout::ec(3, 2);
  CHECK(s.rebuild(2, chunk, 0, ec32, {"", "a:1", "b:2", "c:3", "d:4"}, 343 * kCellSize)
            .status.code() == Errc::kInvalid);
}
