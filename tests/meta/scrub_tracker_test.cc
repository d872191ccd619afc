// The meta leader's scrub soft state: progress and damage reports from heartbeats, scrub-now
// requests until acted on, malformed reports dropped.
#include "meta/scrub_tracker.h"

#include <capnp/message.h>
#include <doctest/doctest.h>

using namespace tessera;
using namespace tessera::meta;

namespace {

struct Heartbeat {
  capnp::MallocMessageBuilder msg;
  proto::ScrubProgress::Builder b = msg.initRoot<proto::ScrubProgress>();

  // (chunk, shard, blocks) per report.
  void damaged(std::vector<std::tuple<uint64_t, unsigned, std::vector<uint64_t>>> reports) {
    auto list = b.initDamaged(unsigned(reports.size()));
    for (unsigned i = 0; i < reports.size(); ++i) {
      auto& [chunk, shard, blocks] = reports[i];
      list[i].setChunk(chunk);
      list[i].setShard(uint8_t(shard));
      auto bl = list[i].initBlocks(unsigned(blocks.size()));
      for (unsigned j = 0; j < blocks.size(); ++j) bl.set(j, blocks[j]);
    }
  }
};

std::vector<std::tuple<uint64_t, unsigned, uint64_t, size_t>> listed(const ScrubTracker& t) {
  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<proto::MetaService::StatusResults>();
  auto list = root.initDamaged(unsigned(t.damagedCount()));
  t.fillDamaged(list);
  std::vector<std::tuple<uint64_t, unsigned, uint64_t, size_t>> out;
  for (auto d : list.asReader()) {
    out.emplace_back(d.getChunk(), d.getShard(), d.getServer(), d.getBlocks().size());
  }
  return out;
}

}  // namespace

TEST_CASE("scrub tracker: damage reports are recorded per server and malformed ones are dropped") {
  ScrubTracker t;
  Heartbeat h;
  h.b.setPasses(3);
  h.damaged({{7, 2, {0, 8192}},
             {9, 0, {}},             // whole shard
             {0, 1, {0}},            // chunk 0: malformed
             {5, 30, {0}},           // shard past any layout
             {6, 1, {100}},          // not a block offset
             {6, 2, {64u << 20}}});  // past the chunk
  CHECK(t.onHeartbeat(ServerId(4), h.b.asReader()) == 0);
  using Row = std::tuple<uint64_t, unsigned, uint64_t, size_t>;
  CHECK(listed(t) == std::vector<Row>{{7, 2, 4, 2}, {9, 0, 4, 0}});
  // The same shard from another server is another report.
  Heartbeat h2;
  h2.damaged({{7, 2, {4096}}});
  t.onHeartbeat(ServerId(5), h2.b.asReader());
  CHECK(t.damagedCount() == 3);

  capnp::MallocMessageBuilder msg;
  auto info = msg.initRoot<proto::ServerInfo>();
  t.fillProgress(ServerId(4), info);
  CHECK(info.getDamagedShards() == 2);
  CHECK(info.getScrub().getPasses() == 3);

  t.repaired(ChunkId(9), 0, ServerId(4));
  CHECK(t.damagedCount() == 2);
  t.clear();
  CHECK(t.damagedCount() == 0);
}

TEST_CASE("scrub tracker: a scrub-now request is sent until the server reports acting on it") {
  ScrubTracker t;
  t.requestPass({ServerId(1), ServerId(2)}, 1000);
  Heartbeat idle;
  CHECK(t.onHeartbeat(ServerId(1), idle.b.asReader()) == 1000);
  CHECK(t.onHeartbeat(ServerId(1), idle.b.asReader()) == 1000);  // reply lost? asked again
  CHECK(t.onHeartbeat(ServerId(3), idle.b.asReader()) == 0);     // not asked
  Heartbeat acting;
  acting.b.setRequest(1000);
  CHECK(t.onHeartbeat(ServerId(1), acting.b.asReader()) == 0);
  CHECK(t.onHeartbeat(ServerId(1), idle.b.asReader()) == 0);
  CHECK(t.onHeartbeat(ServerId(2), idle.b.asReader()) == 1000);
}

TEST_CASE("scrub tracker: blocks marked lost are the latest count per server, summed over the live ones") {
  ScrubTracker t;
  Heartbeat a, b, a2;
  a.b.setLostBlocks(3);
  b.b.setLostBlocks(5);
  t.onHeartbeat(ServerId(1), a.b.asReader());
  t.onHeartbeat(ServerId(2), b.b.asReader());
  auto all = [](ServerId) { return true; };
  CHECK(t.lostBlocks(all) == 8);
  // A dead server's count is not the cluster's: its shards are rebuilt elsewhere.
  CHECK(t.lostBlocks([](ServerId id) { return id != ServerId(2); }) == 3);
  // A later heartbeat replaces the count (a pass found fewer: blocks were written again).
  a2.b.setLostBlocks(1);
  t.onHeartbeat(ServerId(1), a2.b.asReader());
  CHECK(t.lostBlocks(all) == 6);
  capnp::MallocMessageBuilder msg;
  auto info = msg.initRoot<proto::ServerInfo>();
  t.fillProgress(ServerId(1), info);
  CHECK(info.getScrub().getLostBlocks() == 1);
}

TEST_CASE("scrub tracker: the shards holding lost blocks are kept per server, malformed ones dropped") {
  ScrubTracker t;
  Heartbeat a, b;
  auto lost = a.b.initLostShards(4);
  lost[0].setChunk(7), lost[0].setShard(1), lost[0].setBlocks(16);
  lost[1].setChunk(0), lost[1].setShard(1), lost[1].setBlocks(1);   // no chunk 0
  lost[2].setChunk(8), lost[2].setShard(200), lost[2].setBlocks(1); // no such shard
  lost[3].setChunk(9), lost[3].setShard(2), lost[3].setBlocks(kChunkSize / kBlockSize + 1);
  auto other = b.b.initLostShards(1);
  other[0].setChunk(7), other[0].setShard(3), other[0].setBlocks(2);
  t.onHeartbeat(ServerId(1), a.b.asReader());
  t.onHeartbeat(ServerId(2), b.b.asReader());

  auto all = t.lostShards([](ServerId) { return true; });
  REQUIRE(all.size() == 1);
  REQUIRE(all[7].size() == 2);
  CHECK(all[7][0].shard == 1);
  CHECK(all[7][0].server == ServerId(1));
  CHECK(all[7][0].blocks == 16);
  CHECK(all[7][1].shard == 3);
  CHECK(all[7][1].server == ServerId(2));
  // A dead server's are not counted; a later heartbeat replaces a server's list.
  CHECK(t.lostShards([](ServerId id) { return id != ServerId(2); })[7].size() == 1);
  Heartbeat healed;
  t.onHeartbeat(ServerId(1), healed.b.asReader());
  auto left = t.lostShards([](ServerId) { return true; });
  REQUIRE(left[7].size() == 1);
  CHECK(left[7][0].server == ServerId(2));
}
