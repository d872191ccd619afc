// meta/repair.h — self-healing on the meta leader: finds chunks whose shards are missing and
// orders them rebuilt elsewhere (ChunkService.rebuild), then switches the chunk descriptor to
// the new copy through the log (the replaceShard op, a compare-and-set).
//
// Soft state, like chunk-server liveness: nothing here is replicated. A new leader starts with
// an empty Repair; the chunk descriptors (stale bits included) and the server registry are in
// the store, and liveness and damage reports come back from the chunk servers. An order of
// the old leader that is still running on a chunk server ends either in a replaceShard that
// was committed before this leader took over, or in an orphan copy nothing refers to.
//
// Each tick (the leader's sweep, once a second) looks at the next batch of chunk descriptors
// (a cursor walks the whole store and starts over) and, for each chunk with shards to rebuild
// now (meta/repair_plan.h: stale, damaged, or on a server gone past the grace period) and no
// write lease held, orders one shard rebuilt, within the throttle: at most maxOrders at once,
// maxPerServer per target server, one per chunk. A failed order is simply found again by a
// later pass.
//
// Not thread-safe: owned by the MetaService, on the meta server's event loop.
#pragma once
#include <kj/async.h>
#include <kj/timer.h>

#include <map>
#include <random>
#include <set>

#include "fs/chunk_peers.h"
#include "meta/ns/namespace.h"
#include "meta/raft/raft_node.h"
#include "meta/repair_plan.h"

namespace tessera::meta {

struct ChunkReport {
  struct Bad {
    InodeId inode;
    ChunkDesc chunk;
    ChunkHealth health;
  };
  uint64_t healthy = 0, degraded = 0, lost = 0, misplaced = 0;
  std::vector<Bad> bad;  // at most the `max` asked for
};
// Every chunk's health now (a full scan), listing at most `max` chunks that are not healthy or
// are misplaced.
ChunkReport checkChunks(Namespace& ns, const ServerMap& servers, const DamagedSet& damaged,
                        uint64_t graceMs, size_t max);

class Repair {
 public:
  struct Config {
    uint64_t graceMs = 600'000;
    unsigned maxOrders = 4;
    unsigned maxPerServer = 2;
    size_t scanBatch = 20'000;
    uint64_t rebuildTimeoutMs = 600'000;
    uint64_t connectTimeoutMs = 5'000;
    uint64_t seed = 0;
  };
  struct Stats {
    bool passed = false;  // a whole pass over the chunks finished since this node leads
    // Of the last whole pass.
    uint64_t healthy = 0, degraded = 0, lost = 0, misplaced = 0;
    uint64_t queued = 0;  // chunks with shards to rebuild now, not yet ordered
    uint64_t running = 0, done = 0, failed = 0, bytes = 0;
  };
  using Report = ChunkReport;

  Repair(Namespace& ns, raft::RaftNode& raft, kj::Timer& timer, kj::Network& network,
         Config config);

  // One step of the scan and of ordering, with the leader's view of the chunk servers. Call
  // only while leading (leaderReady).
  void tick(const ServerMap& servers);
  // A shard that a scrubber or a reader found damaged on `server`: rebuilt like a lost one.
  void reportDamaged(ChunkId chunk, int shard, ServerId server);
  // Forgets all soft state (leadership gained or lost). Running orders finish unheeded.
  void reset();
  // Every chunk's health now (a full scan, for fsck), listing at most `max` bad chunks.
  Report check(const ServerMap& servers, size_t max);
  Stats stats() const;

 private:
  struct Order {
    ServerId target;
    uint64_t generation;
  };
  // Orders one shard of the chunk rebuilt; false if the throttle, a lease or the lack of a
  // target holds it back.
  bool order(const Namespace::ChunkEntry& entry, const ChunkHealth& health,
             const ServerMap& servers);
  void finished(ChunkId chunk, uint64_t generation, bool ok, uint64_t bytes);

  Namespace& ns_;
  raft::RaftNode& raft_;
  kj::Timer& timer_;
  Config config_;
  ChunkPeers peers_;
  std::mt19937_64 rng_;
  uint64_t generation_ = 1;
  DamagedSet damaged_;
  std::map<ChunkId, Order> running_;
  std::map<ServerId, unsigned> perServer_;
  // The scan: where the next batch starts, and the counts of the pass under way.
  InodeId cursorInode_;
  uint64_t cursorIndex_ = 0;
  Stats pass_;
  Stats stats_;
  struct ErrorHandler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } errorHandler_;
  kj::TaskSet tasks_{errorHandler_};
};

}  // namespace tessera::meta
