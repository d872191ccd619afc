// meta/rebalance_plan.h — the pure decision of `tessera rebalance`: which shards to move where so
// that every live chunk server's disk usage (used / capacity, from its heartbeats) is within a
// band of the cluster mean, while the placement rules still hold for every chunk moved. No I/O,
// no clock: the leader's view of the servers and the chunk map come in as values.
//
// Who takes part: servers up, not draining, with a capacity. The mean is theirs: the sum of
// their used bytes over the sum of their capacities. Chunks considered are those that are
// healthy and well placed now (meta/repair_plan.h assess); a moved chunk must be so afterwards
// too: distinct servers, and no failure domain (site, rack, host) holding more shards than the
// layout can lose where the live servers allow better — what fsck calls misplaced.
//
// Greedy: while some server is outside the band, take shards off the fullest server (or, when
// only servers below the band are left, off the fullest one above the mean) onto the emptiest
// server that may take them, choosing the shard and target that bring the pair closest to the
// mean, and only moves that bring the worse of the two strictly closer. It stops when every
// server is in the band, when no move helps any more, or at `maxMoves`. The result is a plan;
// whether a server truly ends in the band also depends on the estimated shard sizes.
#pragma once
#include <cstdint>
#include <map>
#include <vector>

#include "fs/types.h"
#include "meta/repair_plan.h"

namespace tessera::meta {

struct PlanChunk {
  InodeId inode;
  ChunkDesc chunk;
  uint64_t shardBytes = 0;  // estimated size of each of its shards on disk
};

struct PlannedMove {
  InodeId inode;
  uint64_t index = 0;
  ChunkId chunk;
  int shard = 0;
  ServerId from, to;
  uint64_t bytes = 0;
};

struct RebalancePlan {
  double meanPct = 0;
  bool balanced = false;  // every server in the band after the plan (by the estimates)
  std::vector<PlannedMove> moves;
  struct Usage {
    uint64_t capacity = 0, used = 0, after = 0;
  };
  std::map<ServerId, Usage> usage;  // the servers that take part
};

// Percent of `capacity` that `used` is (0 for no capacity).
double usagePct(uint64_t used, uint64_t capacity);

RebalancePlan planRebalance(const ServerMap& servers, std::vector<PlanChunk> chunks,
                            double bandPct, size_t maxMoves = 10'000);

}  // namespace tessera::meta
