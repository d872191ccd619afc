// MetaService: `tessera rebalance` (meta/rebalance_plan.h plans, meta/repair.h executes). The
// plan is made here, on the leader, from its view of the chunk servers (usage from heartbeats)
// and a full scan of the chunk map; its moves are the repair service's soft state.
#include <cmath>

#include "fs/wire.h"
#include "meta/meta_service.h"
namespace tessera::meta {

// --- rebalance (meta/rebalance_plan.h) --------------------------------------------------------

namespace {

// What a shard of `length` data bytes takes on disk (chunk/shard_file.h): the header, the
// pages of the CRC table it uses, the data.
uint64_t shardDiskBytes(uint64_t length) {
  if (length == 0) return 0;
  constexpr uint64_t kTablePage = 4096, kPerTablePage = 1024 * kBlockSize;
  return 4096 + (length + kPerTablePage - 1) / kPerTablePage * kTablePage + length;
}

}  // namespace

kj::Promise<void> MetaService::rebalance(RebalanceContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  auto fail = [&](Error e) {
    toWire(e, results.initError());
    return kj::READY_NOW;
  };
  if (!raft_.leaderReady()) return fail(raft_.notLeader());
  if (!repair_) return fail(Error{Errc::kNotSupported, "repair is off on this meta server"});
  double band = p.getBandPct();
  if (band == 0) band = 10;
  if (!std::isfinite(band) || band <= 0 || band > 100) {
    return fail(Error{Errc::kInvalid, "band must be more than 0 and at most 100 points"});
  }
  if (p.getStop()) {
    if (p.getDryRun()) return fail(Error{Errc::kInvalid, "stop and dry run together"});
    repair_->stopRebalance();
    okToWire(results.initError());
    fillRebalanceStatus(results.initStatus());
    return kj::READY_NOW;
  }
  // Usage comes from heartbeats: one from every live server since this leader took over.
  for (auto& [id, s] : servers_) {
    if (s.up && !s.record.draining && s.capacityBytes == 0) {
      return fail(Error{Errc::kUnavailable,
                        "no usage known yet of chunk server " + std::to_string(id.value) +
                            " (no heartbeat to this leader yet); try again in a moment"});
    }
  }
  return readThen(context, [this, band](RebalanceContext& context) {
    bool dryRun = context.getParams().getDryRun();
    auto servers = serverMap();
    std::vector<PlanChunk> chunks;
    InodeId inode;
    uint64_t index = 0;
    constexpr size_t kBatch = 10'000;
    while (true) {
      auto batch = ns_.scanChunks(inode, index, kBatch);
      for (auto& entry : batch) {
        uint64_t start = entry.chunk.index * kChunkSize;
        uint64_t bytes = entry.fileSize > start ? entry.fileSize - start : 0;
        chunks.push_back(PlanChunk{entry.inode, entry.chunk,
                                   shardDiskBytes(shardLength(entry.chunk.layout, bytes))});
      }
      if (batch.size() < kBatch) break;
      inode = batch.back().inode;
      index = batch.back().chunk.index + 1;
    }
    auto plan = planRebalance(servers, std::move(chunks), band);
    if (!dryRun) repair_->startRebalance(plan, band);
    auto results = context.getResults();
    okToWire(results.initError());
    results.setMeanPct(plan.meanPct);
    results.setBalanced(plan.balanced);
    auto moves = results.initMoves(uint32_t(plan.moves.size()));
    for (size_t i = 0; i < plan.moves.size(); ++i) {
      auto& m = plan.moves[i];
      auto b = moves[i];
      b.setInode(m.inode.value);
      b.setIndex(m.index);
      b.setChunk(m.chunk.value);
      b.setShard(uint8_t(m.shard));
      b.setFrom(m.from.value);
      b.setTo(m.to.value);
      b.setBytes(m.bytes);
    }
    auto usage = results.initUsage(uint32_t(plan.usage.size()));
    size_t i = 0;
    for (auto& [id, u] : plan.usage) {
      auto b = usage[i++];
      b.setId(id.value);
      b.setCapacityBytes(u.capacity);
      b.setUsedBytes(u.used);
      b.setAfterBytes(u.after);
    }
    fillRebalanceStatus(results.initStatus());
  });
}

}  // namespace tessera::meta
