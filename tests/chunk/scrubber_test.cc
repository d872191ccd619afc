// The scrubber on a real Disk in a temporary directory, with a virtual timer.
#include "chunk/disk_set.h"
#include "chunk/scrubber.h"

#include <capnp/message.h>
#include <doctest/doctest.h>

#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

namespace {

ShardKey key(uint64_t chunk, uint8_t shard) { return ShardKey{ChunkId(chunk), shard}; }

struct Fixture {
  test::Loop loop;
  test::TempDir dir{"scrub-test"};
  kj::TimerImpl timer{kj::origin<kj::TimePoint>()};
  kj::Own<DiskSet> disk;

  Fixture() {
    auto d = DiskSet::open({.dirs = {dir.path()}});
    REQUIRE(d.ok());
    disk = kj::mv(*d);
  }

  void write(ShardKey k, uint64_t offset, size_t len, unsigned seed) {
    auto data = pattern(len, seed);
    auto s = loop.wait(
        disk->write(k, Layout::ec(4, 2), offset, data, crcsOf(data), true, NewShard::kCreate));
    REQUIRE(s.ok());
  }
};

struct Report {
  uint64_t chunk;
  unsigned shard;
  std::vector<uint64_t> blocks;
};

std::vector<Report> heartbeat(Scrubber& s, Scrubber::Sent* sent = nullptr) {
  capnp::MallocMessageBuilder msg;
  auto b = msg.initRoot<proto::ScrubProgress>();
  auto token = s.fillHeartbeat(b);
  if (sent) *sent = token;
  std::vector<Report> out;
  for (auto d : b.asReader().getDamaged()) {
    Report r{d.getChunk(), d.getShard(), {}};
    for (auto o : d.getBlocks()) r.blocks.push_back(o);
    out.push_back(r);
  }
  return out;
}

}  // namespace

TEST_CASE("scrubber: a requested pass finds every bad block and a bad header, and only those") {
  Fixture fx;
  fx.write(key(1, 0), 0, 256 * 1024, 1);
  fx.write(key(2, 3), 0, 1024 * 1024, 2);
  fx.write(key(3, 1), 8192, 12288, 3);  // a hole before the data
  fx.write(key(4, 5), 0, 4096, 4);
  // Blocks 1 and 200 of shard 2.3 (the second in another piece), block 3 of 3.1, the header of 4.5.
  test::flipByte(fx.disk->shardPath(key(2, 3)), kDataOffset + 4096 + 17);
  test::flipByte(fx.disk->shardPath(key(2, 3)), kDataOffset + 200 * 4096);
  test::flipByte(fx.disk->shardPath(key(3, 1)), kDataOffset + 3 * 4096 + 4095);
  test::flipByte(fx.disk->shardPath(key(4, 5)), 30);

  Scrubber scrubber(*fx.disk, fx.timer, {.rateBytesPerSec = 1'000'000, .intervalMs = 0});
  auto running = scrubber.run().eagerlyEvaluate(nullptr);
  // No pass without a request when the interval is 0.
  fx.loop.runUntil(fx.timer, [&] {
    return fx.timer.now() > kj::origin<kj::TimePoint>() + 30 * kj::SECONDS;
  });
  CHECK(scrubber.progress().passes == 0);
  CHECK(!scrubber.progress().running);

  kj::TimePoint start = fx.timer.now();
  scrubber.request(7);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 1; });
  auto& p = scrubber.progress();
  CHECK(p.request == 7);
  CHECK(!p.running);
  uint64_t total = 256 * 1024 + 1024 * 1024 + 8192 + 12288;  // the bad header's shard is not read
  CHECK(p.bytesThisPass == total);
  CHECK(p.passBytes == total);
  CHECK(p.badBlocks == 4);
  // Paced: at 1 MB/s the pass took at least total / 1e6 s of (virtual) time.
  CHECK((fx.timer.now() - start) / kj::MILLISECONDS >= int64_t(total / 1000) - 5);

  auto reports = heartbeat(scrubber);
  REQUIRE(reports.size() == 3);
  CHECK(reports[0].chunk == 2);
  CHECK(reports[0].shard == 3);
  CHECK(reports[0].blocks == std::vector<uint64_t>{4096, 200 * 4096});
  CHECK(reports[1].chunk == 3);
  CHECK(reports[1].shard == 1);
  CHECK(reports[1].blocks == std::vector<uint64_t>{3 * 4096});
  CHECK(reports[2].chunk == 4);
  CHECK(reports[2].shard == 5);
  CHECK(reports[2].blocks.empty());  // the whole shard
  // The same request again does nothing.
  scrubber.request(7);
  fx.loop.runUntil(fx.timer, [&] { return fx.timer.now() > start + 60 * kj::SECONDS; });
  CHECK(scrubber.progress().passes == 1);
}

TEST_CASE("scrubber: blocks a rebuild marked lost are counted, not reported as rot") {
  Fixture fx;
  fx.write(key(5, 1), 0, 64 * 1024, 5);
  REQUIRE(fx.loop.wait(fx.disk->markLost(key(5, 1), 8192, 8192)).ok());
  test::flipByte(fx.disk->shardPath(key(5, 1)), kDataOffset + 10 * 4096 + 1);

  Scrubber scrubber(*fx.disk, fx.timer, {.rateBytesPerSec = 1'000'000, .intervalMs = 0});
  auto running = scrubber.run().eagerlyEvaluate(nullptr);
  scrubber.noteLost(key(5, 1), 2);  // as the rebuilder tells it
  CHECK(scrubber.progress().lostBlocks() == 2);
  scrubber.request(1);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 1; });
  CHECK(scrubber.progress().badBlocks == 1);
  CHECK(scrubber.progress().lostBlocks() == 2);  // counted by the pass, not added twice
  auto reports = heartbeat(scrubber);
  REQUIRE(reports.size() == 1);
  CHECK(reports[0].blocks == std::vector<uint64_t>{10 * 4096});  // the rot, not the lost ones
  capnp::MallocMessageBuilder msg;
  auto b = msg.initRoot<proto::ScrubProgress>();
  scrubber.fillHeartbeat(b);
  CHECK(b.getLostBlocks() == 2);
  // Named per shard, for fsck.
  REQUIRE(b.getLostShards().size() == 1);
  CHECK(b.getLostShards()[0].getChunk() == 5);
  CHECK(b.getLostShards()[0].getShard() == 1);
  CHECK(b.getLostShards()[0].getBlocks() == 2);

  // A block written again is no longer lost: the next pass counts one.
  fx.write(key(5, 1), 8192, 4096, 6);
  scrubber.request(2);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 2; });
  CHECK(scrubber.progress().lostBlocks() == 1);
  CHECK(scrubber.progress().lostShards.at(key(5, 1)) == 1);
  // Written whole again: the next pass names no shard.
  fx.write(key(5, 1), 12288, 4096, 7);
  scrubber.request(3);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 3; });
  CHECK(scrubber.progress().lostBlocks() == 0);
  CHECK(scrubber.progress().lostShards.empty());
}

TEST_CASE("scrubber: reports are sent until acknowledged, again to a new leader, dropped when healed") {
  Fixture fx;
  fx.write(key(9, 0), 0, 64 * 1024, 1);
  fx.write(key(10, 1), 0, 64 * 1024, 2);
  test::flipByte(fx.disk->shardPath(key(9, 0)), kDataOffset + 5 * 4096);
  test::flipByte(fx.disk->shardPath(key(10, 1)), kDataOffset);

  Scrubber scrubber(*fx.disk, fx.timer, {.rateBytesPerSec = 10'000'000, .intervalMs = 3'600'000});
  auto running = scrubber.run().eagerlyEvaluate(nullptr);
  scrubber.request(1);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 1; });

  Scrubber::Sent sent;
  CHECK(heartbeat(scrubber, &sent).size() == 2);
  CHECK(heartbeat(scrubber).size() == 2);  // not acknowledged yet: sent again
  scrubber.heartbeatAccepted(sent);
  CHECK(heartbeat(scrubber).empty());
  scrubber.leaderChanged();
  CHECK(heartbeat(scrubber, &sent).size() == 2);
  scrubber.heartbeatAccepted(sent);

  // Shard 9.0 rewritten whole (healed), shard 10.1 deleted: the next pass drops both. That pass
  // comes by itself, an interval after the last.
  fx.write(key(9, 0), 0, 64 * 1024, 1);
  REQUIRE(fx.loop.wait(fx.disk->remove(kj::heapArray<ChunkId>({ChunkId(10)}))).ok());
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 2; });
  CHECK(scrubber.damaged().empty());
  CHECK(heartbeat(scrubber).empty());
  CHECK(scrubber.progress().badBlocks == 2);  // since the start
}

TEST_CASE("scrubber: a request during a pass starts it over") {
  Fixture fx;
  for (uint64_t c = 1; c <= 8; ++c) fx.write(key(c, 0), 0, 1024 * 1024, unsigned(c));
  Scrubber scrubber(*fx.disk, fx.timer, {.rateBytesPerSec = 1'000'000, .intervalMs = 0});
  auto running = scrubber.run().eagerlyEvaluate(nullptr);
  scrubber.request(1);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().bytesThisPass >= 2 * 1024 * 1024; });
  test::flipByte(fx.disk->shardPath(key(1, 0)), kDataOffset + 10);  // behind the scrubber
  scrubber.request(2);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 1; });
  CHECK(scrubber.progress().request == 2);
  CHECK(scrubber.progress().bytesThisPass == 8 * 1024 * 1024);
  REQUIRE(scrubber.damaged().size() == 1);
  CHECK(scrubber.damaged().begin()->first == key(1, 0));
}

TEST_CASE("scrubber: a heartbeat carries at most 256 reports of at most 512 blocks each") {
  Fixture fx;
  fx.write(key(1, 0), 0, 600 * 4096, 1);
  for (uint64_t b = 0; b < 600; ++b) {
    test::flipByte(fx.disk->shardPath(key(1, 0)), kDataOffset + b * 4096 + 7);
  }
  for (uint64_t c = 2; c <= 300; ++c) {
    fx.write(key(c, 2), 0, 4096, unsigned(c));
    test::flipByte(fx.disk->shardPath(key(c, 2)), kDataOffset + 1);
  }
  Scrubber scrubber(*fx.disk, fx.timer, {.rateBytesPerSec = 100'000'000, .intervalMs = 0});
  auto running = scrubber.run().eagerlyEvaluate(nullptr);
  scrubber.request(1);
  fx.loop.runUntil(fx.timer, [&] { return scrubber.progress().passes == 1; });
  CHECK(scrubber.damaged().size() == 300);
  CHECK(scrubber.progress().badBlocks == 600 + 299);

  Scrubber::Sent sent;
  auto first = heartbeat(scrubber, &sent);
  REQUIRE(first.size() == 256);
  CHECK(first[0].chunk == 1);
  CHECK(first[0].blocks.size() == 512);
  scrubber.heartbeatAccepted(sent);
  auto second = heartbeat(scrubber, &sent);
  CHECK(second.size() == 300 - 256);
  scrubber.heartbeatAccepted(sent);
  CHECK(heartbeat(scrubber).empty());
}
