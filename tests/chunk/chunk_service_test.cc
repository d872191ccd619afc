#include "chunk/chunk_service.h"

#include <capnp/rpc-twoparty.h>
#include <doctest/doctest.h>

#include <cstring>

#include "fs/lost_block.h"
#include "fs/wire.h"
#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

// A ChunkServiceImpl on a DiskSet of one temp dir, reached over an in-process Cap'n Proto pipe.
struct Service {
  test::Loop loop;
  test::TempDir dir{"chunk-service-test"};
  kj::Own<DiskSet> disk = [this] {
    auto d = DiskSet::open({.dirs = {dir.path()}});
    REQUIRE(d.ok());
    return kj::mv(*d);
  }();
  kj::Own<DiskLogs> logs = [this] {
    auto l = DiskLogs::open(*disk);
    REQUIRE(l.ok());
    return kj::mv(*l);
  }();
  kj::TwoWayPipe pipe = loop.io.provider->newTwoWayPipe();
  capnp::TwoPartyServer server{kj::heap<ChunkServiceImpl>(*disk, *logs)};
  capnp::TwoPartyClient rpc{*pipe.ends[0]};
  proto::ChunkService::Client client = rpc.bootstrap().castAs<proto::ChunkService>();

  Service() { server.accept(kj::mv(pipe.ends[1])); }

  // What a write and a log append both carry: the shard of an ec(4,2) chunk, the offset, the
  // data and its blocks' CRCs.
  template <typename Request>
  static void setBlocks(Request& req, uint64_t chunk, uint8_t shard, uint64_t offset,
                        kj::ArrayPtr<const kj::byte> data) {
    req.setChunk(chunk);
    req.setShard(shard);
    toWire(Layout::ec(4, 2), req.initLayout());
    req.setOffset(offset);
    req.setData(data);
    auto crcs = crcsOf(data);
    auto list = req.initCrcs(crcs.size());
    for (size_t i = 0; i < crcs.size(); ++i) list.set(i, crcs[i]);
  }

  // Sends a write; `tweak` may spoil the request before it goes.
  template <typename Tweak>
  Status write(uint64_t chunk, uint8_t shard, uint64_t offset, kj::ArrayPtr<const kj::byte> data,
               Tweak&& tweak, bool sync = false) {
    auto req = client.writeRequest();
    setBlocks(req, chunk, shard, offset, data);
    req.setSync(sync);
    tweak(req);
    return fromWire(loop.wait(req.send()).getError());
  }
  Status write(uint64_t chunk, uint8_t shard, uint64_t offset, kj::ArrayPtr<const kj::byte> data,
               bool sync = false) {
    return write(
        chunk, shard, offset, data, [](auto&) {}, sync);
  }

  struct Read {
    Status status;
    kj::Array<kj::byte> data;
    kj::Array<uint32_t> crcs;
  };
  Read read(uint64_t chunk, uint8_t shard, uint64_t offset, uint32_t length) {
    auto req = client.readRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    req.setOffset(offset);
    req.setLength(length);
    auto reply = loop.wait(req.send());
    Read r{fromWire(reply.getError()), kj::heapArray(reply.getData()),
           kj::heapArray<uint32_t>(reply.getCrcs().size())};
    for (size_t i = 0; i < r.crcs.size(); ++i) r.crcs[i] = reply.getCrcs()[i];
    return r;
  }

  // A writeV of (offset, data) pieces; `tweak` may spoil the request before it goes.
  template <typename Tweak>
  Status writeV(uint64_t chunk, uint8_t shard,
                std::vector<std::pair<uint64_t, kj::ArrayPtr<const kj::byte>>> pieces,
                Tweak&& tweak) {
    auto req = client.writeVRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    toWire(Layout::ec(4, 2), req.initLayout());
    auto list = req.initPieces(pieces.size());
    for (size_t i = 0; i < pieces.size(); ++i) {
      list[i].setOffset(pieces[i].first);
      list[i].setData(pieces[i].second);
      auto crcs = crcsOf(pieces[i].second);
      auto wire = list[i].initCrcs(crcs.size());
      for (size_t j = 0; j < crcs.size(); ++j) wire.set(j, crcs[j]);
    }
    req.setSync(true);
    tweak(req);
    return fromWire(loop.wait(req.send()).getError());
  }
  Status writeV(uint64_t chunk, uint8_t shard,
                std::vector<std::pair<uint64_t, kj::ArrayPtr<const kj::byte>>> pieces) {
    return writeV(chunk, shard, kj::mv(pieces), [](auto&) {});
  }
  Read readV(uint64_t chunk, uint8_t shard, std::vector<std::pair<uint64_t, uint32_t>> ranges,
             bool raw = false, bool lostAsStored = false) {
    auto req = client.readVRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    req.setRaw(raw);
    req.setLostAsStored(lostAsStored);
    auto list = req.initRanges(ranges.size());
    for (size_t i = 0; i < ranges.size(); ++i) {
      list[i].setOffset(ranges[i].first);
      list[i].setLength(ranges[i].second);
    }
    auto reply = loop.wait(req.send());
    Read r{fromWire(reply.getError()), kj::heapArray(reply.getData()),
           kj::heapArray<uint32_t>(reply.getCrcs().size())};
    for (size_t i = 0; i < r.crcs.size(); ++i) r.crcs[i] = reply.getCrcs()[i];
    return r;
  }

  // Appends one write-log record of `data` at `offset` of the shard (epoch 1).
  Status logAppend(uint64_t chunk, uint8_t shard, uint64_t offset,
                   kj::ArrayPtr<const kj::byte> data, uint64_t seq) {
    auto req = client.logAppendRequest();
    setBlocks(req, chunk, shard, offset, data);
    req.setEpoch(1);
    req.setSeq(seq);
    return fromWire(loop.wait(req.send()).getError());
  }

  Status create(uint64_t chunk, uint8_t shard, Layout layout = Layout::ec(4, 2)) {
    auto req = client.createRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    toWire(layout, req.initLayout());
    return fromWire(loop.wait(req.send()).getError());
  }

  Status truncate(uint64_t chunk, uint8_t shard, uint64_t length) {
    auto req = client.truncateRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    req.setLength(length);
    return fromWire(loop.wait(req.send()).getError());
  }

  Status sync(std::initializer_list<ShardKey> keys) {
    auto req = client.syncRequest();
    auto list = req.initShards(keys.size());
    size_t i = 0;
    for (auto k : keys) {
      list[i].setChunk(k.chunk.value);
      list[i].setShard(k.shard);
      ++i;
    }
    return fromWire(loop.wait(req.send()).getError());
  }

  Status fence(uint64_t chunk, uint64_t epoch) {
    auto req = client.fenceRequest();
    req.setChunk(chunk);
    req.setEpoch(epoch);
    return fromWire(loop.wait(req.send()).getError());
  }

  struct Reserved {
    Status status;
    uint64_t bytes = 0;
  };
  Reserved reserve(uint64_t chunk, uint8_t shard, uint64_t offset, uint64_t length,
                   uint64_t epoch = 0) {
    auto req = client.reserveRequest();
    req.setChunk(chunk);
    req.setShard(shard);
    req.setOffset(offset);
    req.setLength(length);
    req.setEpoch(epoch);
    auto reply = loop.wait(req.send());
    return Reserved{fromWire(reply.getError()), reply.getBytes()};
  }

  uint64_t diskBytes(uint64_t chunk, uint8_t shard) {
    struct stat st;
    REQUIRE(::stat(disk->shardPath({ChunkId(chunk), shard}).c_str(), &st) == 0);
    return uint64_t(st.st_blocks) * 512;
  }

  Status remove(std::initializer_list<uint64_t> chunks) {
    auto req = client.removeRequest();
    auto list = req.initChunks(chunks.size());
    size_t i = 0;
    for (auto c : chunks) list.set(i++, c);
    return fromWire(loop.wait(req.send()).getError());
  }
};

bool same(kj::ArrayPtr<const kj::byte> a, kj::ArrayPtr<const kj::byte> b) {
  return a.size() == b.size() && memcmp(a.begin(), b.begin(), a.size()) == 0;
}

}  // namespace

TEST_CASE("chunk service: a write reads back with the CRC of every block") {
  Service svc;
  auto data = pattern(8 * kBlockSize, 1);
  REQUIRE(svc.write(42, 3, 64 * 1024, data, /*sync=*/true).ok());
  auto r = svc.read(42, 3, 64 * 1024, 8 * kBlockSize);
  REQUIRE(r.status.ok());
  CHECK(same(r.data, data));
  CHECK((r.crcs.asPtr() == crcsOf(data).asPtr()));

  auto wider = svc.read(42, 3, 0, 128 * 1024);  // with zeros on both sides
  REQUIRE(wider.status.ok());
  CHECK(test::allZero(wider.data.slice(0, 64 * 1024)));
  CHECK(same(wider.data.slice(64 * 1024, 96 * 1024), data));
  CHECK(wider.crcs[0] == zeroBlockCrc());
}

TEST_CASE("chunk service: a missing shard is notFound until created, then reads as zeros") {
  Service svc;
  CHECK(svc.read(9, 0, 0, kBlockSize).status.code() == Errc::kNotFound);
  REQUIRE(svc.create(9, 0).ok());
  CHECK(svc.create(9, 0).ok());  // idempotent
  auto r = svc.read(9, 0, 0, 2 * kBlockSize);
  REQUIRE(r.status.ok());
  CHECK(test::allZero(r.data));
  CHECK(r.crcs.size() == 2);
  CHECK(svc.create(9, 0, Layout::replica(2)).code() == Errc::kInvalid);
}

TEST_CASE("chunk service: a write that expects its shard finds it or answers notFound, and one that creates it creates it") {
  Service svc;
  auto data = pattern(2 * kBlockSize, 5);
  auto intent = [](proto::ShardIntent i) { return [i](auto& req) { req.setIntent(i); }; };
  CHECK(svc.write(13, 0, 0, data, intent(proto::ShardIntent::EXISTING)).code() ==
        Errc::kNotFound);
  CHECK(svc.read(13, 0, 0, kBlockSize).status.code() == Errc::kNotFound);
  REQUIRE(svc.write(13, 0, 0, data, intent(proto::ShardIntent::CREATE)).ok());
  REQUIRE(svc.write(13, 0, 2 * kBlockSize, data, intent(proto::ShardIntent::EXISTING)).ok());
  auto r = svc.read(13, 0, 0, 4 * kBlockSize);
  REQUIRE(r.status.ok());
  CHECK(same(r.data.slice(0, 2 * kBlockSize), data));
  CHECK(same(r.data.slice(2 * kBlockSize, 4 * kBlockSize), data));
  // An intent this server does not know (a newer writer's) creates nothing.
  CHECK(svc.write(14, 0, 0, data, intent(proto::ShardIntent(7))).code() == Errc::kNotFound);
  // A writer from before intents (legacy) creates, as it always did.
  CHECK(svc.write(15, 0, 0, data).ok());
}

TEST_CASE("chunk service: sync and truncate act on existing shards, notFound otherwise") {
  Service svc;
  auto data = pattern(4 * kBlockSize, 2);
  REQUIRE(svc.write(11, 0, 0, data).ok());
  REQUIRE(svc.write(11, 1, 0, data).ok());
  CHECK(svc.sync({{ChunkId(11), 0}, {ChunkId(11), 1}, {ChunkId(11), 0}}).ok());
  CHECK(svc.sync({{ChunkId(11), 0}, {ChunkId(12), 0}}).code() == Errc::kNotFound);

  REQUIRE(svc.truncate(11, 0, kBlockSize).ok());
  auto r = svc.read(11, 0, 0, 4 * kBlockSize);
  REQUIRE(r.status.ok());
  CHECK(same(r.data.slice(0, kBlockSize), data.slice(0, kBlockSize)));
  CHECK(test::allZero(r.data.slice(kBlockSize, 4 * kBlockSize)));
  CHECK(svc.truncate(12, 0, 0).code() == Errc::kNotFound);
}

TEST_CASE("chunk service: remove deletes every shard of the listed chunks, absent ones too") {
  Service svc;
  auto data = pattern(kBlockSize, 3);
  for (uint8_t shard = 0; shard < 6; ++shard) REQUIRE(svc.write(20, shard, 0, data).ok());
  REQUIRE(svc.write(21, 0, 0, data).ok());
  REQUIRE(svc.remove({20, 77}).ok());
  for (uint8_t shard = 0; shard < 6; ++shard) {
    CHECK(svc.read(20, shard, 0, kBlockSize).status.code() == Errc::kNotFound);
  }
  CHECK(svc.read(21, 0, 0, kBlockSize).status.ok());
  CHECK(svc.remove({}).ok());
}

TEST_CASE("chunk service: a write damaged in transit is refused with corruption") {
  Service svc;
  auto data = pattern(2 * kBlockSize, 4);
  auto s = svc.write(30, 0, 0, data, [](auto& req) { req.getData()[5000] ^= 1; });
  CHECK(s.code() == Errc::kCorruption);
  CHECK(svc.read(30, 0, 0, kBlockSize).status.code() == Errc::kNotFound);
}

TEST_CASE("chunk service: a block that rotted on disk is reported, its bytes never sent") {
  Service svc;
  auto data = pattern(2 * kBlockSize, 5);
  REQUIRE(svc.write(31, 2, 0, data).ok());
  test::flipByte(svc.disk->shardPath({ChunkId(31), 2}), kDataOffset + kBlockSize + 7);
  auto r = svc.read(31, 2, 0, 2 * kBlockSize);
  CHECK(r.status.code() == Errc::kCorruption);
  CHECK(r.data.size() == 0);
  CHECK(r.crcs.size() == 0);
  CHECK(svc.read(31, 2, 0, kBlockSize).status.ok());
}

TEST_CASE("chunk service: malformed requests are answered with errors, never a crash") {
  Service svc;
  auto data = pattern(2 * kBlockSize, 6);
  auto invalid = [](Status s) { return s.code() == Errc::kInvalid; };

  CHECK(invalid(svc.write(1, 0, 0, data, [](auto& req) { req.initCrcs(1); })));
  CHECK(invalid(svc.write(1, 0, 0, data, [](auto& req) { req.initCrcs(3); })));
  CHECK(invalid(svc.write(1, 0, 100, data)));
  CHECK(invalid(svc.write(1, 0, 0, data.slice(0, 5000))));
  CHECK(invalid(svc.write(1, 0, kChunkSize - kBlockSize, data)));
  CHECK(invalid(svc.write(1, 0, ~uint64_t(0) - 4095, data)));
  CHECK(invalid(svc.write(0, 0, 0, data)));
  CHECK(invalid(svc.write(1, 6, 0, data)));  // ec(4,2) has shards 0..5
  CHECK(invalid(svc.write(1, 200, 0, data)));
  CHECK(invalid(svc.write(1, 0, 0, data, [](auto& req) { req.getLayout().setK(0); })));
  CHECK(invalid(svc.write(1, 0, 0, data, [](auto& req) { req.getLayout().setM(200); })));

  CHECK(invalid(svc.read(1, 0, 0, 8 << 20).status));  // more than 4 MiB
  CHECK(invalid(svc.read(1, 0, 0, 100).status));
  CHECK(invalid(svc.read(1, 0, 3, kBlockSize).status));
  CHECK(invalid(svc.read(1, 0, kChunkSize, kBlockSize).status));
  CHECK(invalid(svc.read(1, 99, 0, kBlockSize).status));
  CHECK(invalid(svc.read(0, 0, 0, kBlockSize).status));
  CHECK(invalid(svc.truncate(1, 0, 100)));
  CHECK(invalid(svc.truncate(1, 0, kChunkSize + kBlockSize)));
  CHECK(invalid(svc.create(1, 7)));
  CHECK(invalid(svc.sync({{ChunkId(0), 0}})));
  CHECK(invalid(svc.remove({5, 0})));

  // Still serving.
  REQUIRE(svc.write(1, 0, 0, data).ok());
  CHECK(svc.read(1, 0, 0, 2 * kBlockSize).status.ok());
}

TEST_CASE("a write with an epoch older than the chunk's fence is refused — newer ones raise it") {
  Service svc;
  auto data = pattern(kBlockSize, 7);
  auto withEpoch = [](uint64_t e) { return [e](auto& req) { req.setEpoch(e); }; };
  CHECK(svc.write(5, 0, 0, data, withEpoch(1)).ok());
  CHECK(svc.fence(5, 3).ok());
  CHECK(svc.logs->epoch(ChunkId(5)) == 3);
  auto stale = svc.write(5, 0, 0, data, withEpoch(2));
  CHECK(stale.code() == Errc::kStale);
  CHECK(svc.write(5, 1, 0, data, withEpoch(1)).code() == Errc::kStale);
  CHECK(svc.write(5, 0, 0, data, withEpoch(3)).ok());
  // A newer epoch without a fence (the holder's fence did not reach this server) raises it.
  CHECK(svc.write(5, 0, 0, data, withEpoch(4)).ok());
  CHECK(svc.write(5, 0, 0, data, withEpoch(3)).code() == Errc::kStale);
  // Other chunks are not affected; a fence never lowers.
  CHECK(svc.write(6, 0, 0, data, withEpoch(1)).ok());
  CHECK(svc.fence(5, 2).ok());
  CHECK(svc.logs->epoch(ChunkId(5)) == 4);
  auto req = svc.client.truncateRequest();
  req.setChunk(5);
  req.setShard(0);
  req.setLength(0);
  req.setEpoch(3);
  CHECK(fromWire(svc.loop.wait(req.send()).getError()).code() == Errc::kStale);
}

TEST_CASE("chunk service: writeV stores every piece, readV returns ranges in order with CRCs") {
  Service svc;
  auto a = pattern(2 * kBlockSize, 11), b = pattern(kBlockSize, 12), c = pattern(3 * kBlockSize, 13);
  REQUIRE(svc.writeV(40, 4, {{0, a}, {10 * kBlockSize, b}, {20 * kBlockSize, c}}).ok());
  auto r = svc.readV(40, 4, {{20 * kBlockSize, 3 * kBlockSize}, {0, 2 * kBlockSize},
                             {5 * kBlockSize, kBlockSize}, {10 * kBlockSize, kBlockSize}});
  REQUIRE(r.status.ok());
  REQUIRE(r.data.size() == 7 * kBlockSize);
  CHECK(same(r.data.slice(0, 3 * kBlockSize), c));
  CHECK(same(r.data.slice(3 * kBlockSize, 5 * kBlockSize), a));
  auto zeros = kj::heapArray<kj::byte>(kBlockSize);
  memset(zeros.begin(), 0, zeros.size());
  CHECK(same(r.data.slice(5 * kBlockSize, 6 * kBlockSize), zeros));  // never written
  CHECK(same(r.data.slice(6 * kBlockSize, 7 * kBlockSize), b));
  auto crcs = crcsOf(r.data);
  REQUIRE(r.crcs.size() == crcs.size());
  for (size_t i = 0; i < crcs.size(); ++i) CHECK(r.crcs[i] == crcs[i]);
  // The same bytes as the single-range read.
  CHECK(same(svc.read(40, 4, 0, 2 * kBlockSize).data, a));
  // A shard that is not here.
  CHECK(svc.readV(41, 0, {{0, kBlockSize}}).status.code() == Errc::kNotFound);
}

TEST_CASE("chunk service: readV lays unapplied log records over the stored blocks unless raw") {
  Service svc;
  auto stored = pattern(2 * kBlockSize, 14), logged = pattern(kBlockSize, 15);
  REQUIRE(svc.writeV(42, 1, {{0, stored}}).ok());
  REQUIRE(svc.logAppend(42, 1, kBlockSize, logged, 1).ok());
  auto crcs = crcsOf(logged);
  auto seen = svc.readV(42, 1, {{kBlockSize, kBlockSize}, {0, kBlockSize}});
  REQUIRE(seen.status.ok());
  CHECK(same(seen.data.slice(0, kBlockSize), logged));
  CHECK(same(seen.data.slice(kBlockSize, 2 * kBlockSize), stored.slice(0, kBlockSize)));
  CHECK(seen.crcs[0] == crcs[0]);
  auto raw = svc.readV(42, 1, {{kBlockSize, kBlockSize}}, true);
  REQUIRE(raw.status.ok());
  CHECK(same(raw.data, stored.slice(kBlockSize, 2 * kBlockSize)));
}

TEST_CASE("chunk service: a lost block reads as lost unless a log record holds it") {
  Service svc;
  ShardKey key{ChunkId(43), 1};
  auto stored = pattern(4 * kBlockSize, 16), logged = pattern(kBlockSize, 17);
  REQUIRE(svc.writeV(43, 1, {{0, stored}}).ok());
  REQUIRE(svc.loop.wait(svc.disk->markLost(key, kBlockSize, 2 * kBlockSize)).ok());
  // No record: every read that touches a lost block says so, raw ones too.
  auto plain = svc.read(43, 1, 0, 4 * kBlockSize);
  CHECK(plain.status.code() == Errc::kLost);
  CHECK(plain.status.error().detail.find("block 1 (offset 4096) is lost") != std::string::npos);
  CHECK(svc.readV(43, 1, {{0, kBlockSize}, {2 * kBlockSize, kBlockSize}}).status.code() ==
        Errc::kLost);
  CHECK(svc.readV(43, 1, {{kBlockSize, kBlockSize}}, true).status.code() == Errc::kLost);
  REQUIRE(svc.readV(43, 1, {{0, kBlockSize}, {3 * kBlockSize, kBlockSize}}).status.ok());
  // A record over one of the two lost blocks: a read of it gets the record, a read that takes
  // in the other one still fails, naming it.
  REQUIRE(svc.logAppend(43, 1, kBlockSize, logged, 1).ok());
  auto covered = svc.read(43, 1, 0, 2 * kBlockSize);
  REQUIRE(covered.status.ok());
  CHECK(same(covered.data.slice(0, kBlockSize), stored.slice(0, kBlockSize)));
  CHECK(same(covered.data.slice(kBlockSize, 2 * kBlockSize), logged));
  CHECK(covered.crcs[1] == crcsOf(logged)[0]);
  auto other = svc.read(43, 1, 0, 4 * kBlockSize);
  CHECK(other.status.code() == Errc::kLost);
  CHECK(other.status.error().detail.find("block 2 (offset 8192) is lost and in no record") !=
        std::string::npos);
  auto v = svc.readV(43, 1, {{3 * kBlockSize, kBlockSize}, {kBlockSize, kBlockSize}});
  REQUIRE(v.status.ok());
  CHECK(same(v.data.slice(kBlockSize, 2 * kBlockSize), logged));
  CHECK(svc.readV(43, 1, {{kBlockSize, 2 * kBlockSize}}).status.code() == Errc::kLost);
  // Raw, the record is not laid over: the block is lost, or its pattern if asked for as stored.
  CHECK(svc.readV(43, 1, {{kBlockSize, kBlockSize}}, true).status.code() == Errc::kLost);
  auto asStored = svc.readV(43, 1, {{kBlockSize, kBlockSize}}, true, true);
  REQUIRE(asStored.status.ok());
  CHECK(isLostBlock(asStored.data.begin()));
}

TEST_CASE("chunk service: malformed or stale vectored requests are refused whole") {
  Service svc;
  auto data = pattern(2 * kBlockSize, 16);
  auto invalid = [](Status s) { return s.code() == Errc::kInvalid; };
  // One bad piece among good ones: nothing is stored.
  auto damaged = svc.writeV(43, 0, {{0, data}, {8 * kBlockSize, data}},
                            [](auto& req) { req.getPieces()[1].getData()[100] ^= 1; });
  CHECK(damaged.code() == Errc::kCorruption);
  CHECK(svc.read(43, 0, 0, kBlockSize).status.code() == Errc::kNotFound);
  CHECK(invalid(svc.writeV(43, 0, {{0, data}, {100, data}})));
  CHECK(invalid(svc.writeV(43, 0, {{0, data.slice(0, 5000)}})));
  CHECK(invalid(svc.writeV(43, 0, {{0, data}, {kBlockSize, kj::ArrayPtr<const kj::byte>()}})));
  CHECK(invalid(svc.writeV(43, 0, {{kChunkSize - kBlockSize, data}})));
  CHECK(invalid(svc.writeV(43, 9, {{0, data}})));
  CHECK(invalid(svc.writeV(0, 0, {{0, data}})));
  CHECK(invalid(svc.writeV(43, 0, {{0, data}}, [](auto& req) { req.getPieces()[0].initCrcs(1); })));
  CHECK(svc.read(43, 0, 0, kBlockSize).status.code() == Errc::kNotFound);
  REQUIRE(svc.writeV(43, 0, {{0, data}}).ok());
  CHECK(invalid(svc.readV(43, 0, {{0, 100}}).status));
  CHECK(invalid(svc.readV(43, 0, {{3, kBlockSize}}).status));
  CHECK(invalid(svc.readV(43, 0, {{0, 3 << 20}, {4 << 20, 2 << 20}}).status));  // over 4 MiB
  CHECK(invalid(svc.readV(43, 0, std::vector<std::pair<uint64_t, uint32_t>>(
                                     kMaxVectorParts + 1, {0, kBlockSize}))
                    .status));
  // Fenced like a write.
  CHECK(svc.fence(43, 5).ok());
  CHECK(svc.writeV(43, 0, {{0, data}}, [](auto& req) { req.setEpoch(4); }).code() == Errc::kStale);
  CHECK(svc.writeV(43, 0, {{0, data}}, [](auto& req) { req.setEpoch(5); }).ok());
}

TEST_CASE("chunk service: reserve takes the disk space of a shard range, which then reads as "
          "zeros and takes writes") {
  Service svc;
  constexpr uint64_t M = 1 << 20;
  REQUIRE(svc.create(50, 1).ok());
  auto data = pattern(M, 17);
  REQUIRE(svc.write(50, 1, 2 * M, data).ok());
  uint64_t before = svc.diskBytes(50, 1);
  auto r = svc.reserve(50, 1, 0, 8 * M);
  REQUIRE(r.status.ok());
  uint64_t after = svc.diskBytes(50, 1);
  MESSAGE("shard file " << before << " -> " << after << " bytes on disk; reply says " << r.bytes);
  // The 7 MiB not written yet, and the CRC table entries of the 8 MiB (8 KiB).
  CHECK(after >= before + 7 * M);
  CHECK(after <= before + 7 * M + 64 * 1024);
  CHECK(r.bytes == after - before);
  // No byte changed.
  auto back = svc.read(50, 1, 0, 4 * M);
  REQUIRE(back.status.ok());
  CHECK(test::allZero(back.data.slice(0, 2 * M)));
  CHECK(same(back.data.slice(2 * M, 3 * M), data));
  CHECK(test::allZero(back.data.slice(3 * M, 4 * M)));
  CHECK(back.crcs[0] == zeroBlockCrc());
  // Again: nothing more to take.
  auto again = svc.reserve(50, 1, 0, 8 * M);
  REQUIRE(again.status.ok());
  CHECK(again.bytes == 0);
  CHECK(svc.diskBytes(50, 1) == after);
  // Writes into the range land in the reserved blocks: the file does not grow (but for an
  // extent-tree block the file system may need to split the range it reserved).
  auto more = pattern(M, 18);
  REQUIRE(svc.write(50, 1, 5 * M, more, /*sync=*/true).ok());
  CHECK(svc.diskBytes(50, 1) <= after + 64 * 1024);
  auto written = svc.read(50, 1, 5 * M, M);
  REQUIRE(written.status.ok());
  CHECK(same(written.data, more));
  // The last blocks a shard of its layout holds: ec(4,2) a quarter of the chunk, replicas all.
  CHECK(svc.reserve(50, 1, kChunkSize / 4 - kBlockSize, kBlockSize).status.ok());
  REQUIRE(svc.create(51, 2, Layout::replica(3)).ok());
  CHECK(svc.reserve(51, 2, kChunkSize - kBlockSize, kBlockSize).status.ok());
  // Removing the chunk frees it all.
  REQUIRE(svc.remove({50}).ok());
  CHECK(!test::fileExists(svc.disk->shardPath({ChunkId(50), 1})));
}

TEST_CASE("chunk service: reserve refuses bad ranges, unknown shards and stale epochs") {
  Service svc;
  REQUIRE(svc.create(60, 0).ok());  // ec(4,2): a shard holds 16 MiB
  auto code = [&](uint64_t chunk, uint8_t shard, uint64_t offset, uint64_t length,
                  uint64_t epoch = 0) { return svc.reserve(chunk, shard, offset, length, epoch).status.code(); };
  CHECK(code(60, 0, 100, kBlockSize) == Errc::kInvalid);
  CHECK(code(60, 0, 0, 5000) == Errc::kInvalid);
  CHECK(code(60, 0, kChunkSize / 4 - kBlockSize, 2 * kBlockSize) == Errc::kInvalid);
  CHECK(code(60, 0, kChunkSize / 4, kBlockSize) == Errc::kInvalid);
  CHECK(code(60, 0, kChunkSize, kBlockSize) == Errc::kInvalid);
  CHECK(code(60, 0, kBlockSize, ~uint64_t(0) - 4095) == Errc::kInvalid);
  CHECK(code(0, 0, 0, kBlockSize) == Errc::kInvalid);
  CHECK(code(60, 200, 0, kBlockSize) == Errc::kInvalid);
  CHECK(code(60, 1, 0, kBlockSize) == Errc::kNotFound);  // not created here
  CHECK(code(61, 0, 0, kBlockSize) == Errc::kNotFound);
  CHECK(!test::fileExists(svc.disk->shardPath({ChunkId(61), 0})));
  // Fenced like a write: an older epoch is stale, the current or a newer one goes through.
  REQUIRE(svc.fence(60, 5).ok());
  CHECK(code(60, 0, 0, kBlockSize, 4) == Errc::kStale);
  CHECK(code(60, 0, 0, kBlockSize, 5) == Errc::kOk);
  CHECK(code(60, 0, 0, 2 * kBlockSize, 6) == Errc::kOk);
  CHECK(svc.logs->epoch(ChunkId(60)) == 6);
  CHECK(code(60, 0, 0, kBlockSize, 5) == Errc::kStale);
  // Nothing was taken by the refusals: only the two blocks reserved, and their table block.
  CHECK(svc.diskBytes(60, 0) <= kShardHeaderSize + 2 * kBlockSize + kBlockSize);
  // Still serving.
  CHECK(svc.write(60, 0, 0, pattern(kBlockSize, 19), [](auto& req) { req.setEpoch(6); }).ok());
}
