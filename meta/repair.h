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
// Draining servers (tessera drain) are read from, never written to: each of their shards is
// copied to another server with the same rebuild and switched to with the same compare-and-set
// (copy-then-switch), so the data stays readable throughout.
//
// Each tick (the leader's sweep, once a second) looks at the next batch of chunk descriptors
// (a cursor walks the whole store and starts over) and, for each chunk with shards to rebuild
// now (meta/repair_plan.h: stale, damaged, or on a server gone past the grace period) and no
// write lease held, orders one shard rebuilt, within the throttle: at most maxOrders at once,
// maxPerServer per target server, one per chunk. A failed order is simply found again by a
// later pass.
//
// Moves under a running writer (meta/lease_recall.h). A chunk whose shard is to be switched
// now but whose write lease is held is not skipped for good: its lease is recalled, and the
// chunks with a recall in force are looked at first at every tick, so the move starts within a
// tick of the holder letting go, while new grants of the chunk wait (busy, bounded).
//
// Rebalance (tessera rebalance, meta/rebalance_plan.h). A plan's moves are queued here and
// ordered like drain moves — same rebuild, same compare-and-set, same throttle — after the
// repairs a tick found. Each move is checked against the chunk map again when it is ordered
// (the chunk still there, the shard still on its source, the target up, not draining, not
// holding a shard of it, placement rules kept); a move that no longer fits is dropped, one
// whose copy or switch failed is tried again later (at most kMoveAttempts times).
//
// Inventories. Chunk servers report which shards they hold (chunk/inventory.h), in full, at
// registration and then periodically. Conclusions are drawn only from two consecutive complete
// reports of a server, and only about chunks older than the first of them (id <= the chunk
// mark when it started): a shard written (or rebuilt) while a report was taken must not look
// missing or orphaned. Then
//   - a shard that the chunk map places on the (live) server but neither report lists is
//     missing and rebuilt elsewhere;
//   - a chunk with shards in both reports but none placed on that server, per the chunk map as
//     of a whole pass that started after the first report, amended by this leader's own
//     switches, and with no rebuild under way to that server, is an orphan: the server is told
//     to delete it (heartbeat `remove`). Until a later report shows it gone, no rebuild of
//     that chunk is sent there (the delete must not meet the rebuild).
// A server that just received a rebuilt shard starts over: its earlier reports lack the shard.
//
// Not thread-safe: owned by the MetaService, on the meta server's event loop.
#pragma once
#include <kj/async.h>
#include <kj/timer.h>

#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "fs/chunk_peers.h"
#include "meta/lease_recall.h"
#include "meta/ns/namespace.h"
#include "meta/raft/raft_node.h"
#include "meta/rebalance_plan.h"
#include "meta/repair_plan.h"

namespace tessera::meta {

struct ChunkReport {
  struct Bad {
    InodeId inode;
    ChunkDesc chunk;
    ChunkHealth health;
    uint64_t lostBlocks = 0;  // marked lost on its shards' current servers
  };
  uint64_t healthy = 0, degraded = 0, lost = 0, misplaced = 0;
  uint64_t lostBlockChunks = 0;  // chunks with blocks marked lost
  std::vector<Bad> bad;  // at most the `max` asked for
};
// The blocks marked lost of each shard of `chunk` on the server the chunk map places it on:
// (shard, blocks) pairs (from the scrubbers' reports, meta/scrub_tracker.h).
using LostBlocksFn = std::function<std::vector<std::pair<int, uint64_t>>(const ChunkDesc& chunk)>;
// Every chunk's health now (a full scan), listing at most `max` chunks that are not healthy,
// are misplaced, or hold blocks marked lost (`lostBlocks`, if given, tells which).
ChunkReport checkChunks(Namespace& ns, const ServerMap& servers, const DamagedSet& damaged,
                        uint64_t graceMs, size_t max, const NotHeldFn& notHeld = {},
                        const LostBlocksFn& lostBlocks = {});

class Repair {
 public:
  struct Config {
    uint64_t graceMs = 600'000;
    unsigned maxOrders = 4;
    unsigned maxPerServer = 2;
    // Chunk records read per tick (once a second, on the meta loop): a pass over N chunks takes
    // N / scanBatch seconds. TODO(perf): off the loop, or driven by changes instead of scans.
    size_t scanBatch = 2'000;
    uint64_t rebuildTimeoutMs = 600'000;
    uint64_t connectTimeoutMs = 5'000;
    uint64_t seed = 0;
    // How long a recalled lease stays refused to new grants while the move waits or runs.
    uint64_t recallHoldMs = 5'000;
  };
  struct RebalanceStats {
    double bandPct = 0;
    uint64_t planned = 0, queued = 0, running = 0, done = 0, failed = 0;
    uint64_t bytesPlanned = 0, bytesMoved = 0;
  };
  static constexpr unsigned kMoveAttempts = 5;
  static constexpr unsigned kMoveWaits = 300;
  struct Stats {
    bool passed = false;  // a whole pass over the chunks finished since this node leads
    // Of the last whole pass.
    uint64_t healthy = 0, degraded = 0, lost = 0, misplaced = 0;
    uint64_t queued = 0;  // chunks with shards to rebuild now, not yet ordered
    uint64_t running = 0, done = 0, failed = 0, bytes = 0;
    uint64_t orphans = 0;  // orphan chunks ordered deleted
    std::map<ServerId, uint64_t> shardsOn;  // shards the chunk map places on each server
  };
  using Report = ChunkReport;

  Repair(Namespace& ns, raft::RaftNode& raft, kj::Timer& timer, kj::Network& network,
         Config config);

  // A piece of server `server`'s inventory report.
  void inventory(ServerId server, bool start, const std::vector<std::pair<uint64_t, int>>& shards,
                 bool done);
  // Orphan chunks `server` must delete, at most `max`, each handed out once per finding.
  std::vector<ChunkId> takeOrphans(ServerId server, size_t max);

  // One step of the scan and of ordering, with the leader's view of the chunk servers. Call
  // only while leading (leaderReady).
  void tick(const ServerMap& servers);
  // A shard that a scrubber or a reader found damaged on `server`: rebuilt like a lost one.
  void reportDamaged(ChunkId chunk, int shard, ServerId server);
  // Forgets all soft state (leadership gained or lost). Running orders finish unheeded.
  void reset();
  // Called when an order ends while more work waits (chunks a pass found but could not order
  // within the throttle, or queued moves): the owner should tick() again soon rather than at
  // its next sweep, so repair runs as fast as the throttle allows, not one round a sweep.
  void onSlotFree(std::function<void()> fn) { slotFree_ = std::move(fn); }

  // --- copy-on-write (meta/meta_clone.cc) ---
  // Shards of chunk `chunk` are being copied onto `servers` for a copy-on-write, before any
  // chunk record names the chunk: they are no orphans meanwhile.
  void copyStarted(ChunkId chunk, const std::vector<ServerId>& servers);
  // The copy ended; `placed`: the chunk map names the chunk on `servers` now (their earlier
  // reports, taken while the copy ran, must not make its shards look missing).
  void copyEnded(ChunkId chunk, const std::vector<ServerId>& servers, bool placed);

  // --- lease recalls (meta/lease_recall.h) ---
  // Whether acquireLease of the chunk must answer busy now: a move of it waits or runs.
  bool leaseBusy(InodeId inode, uint64_t index) const;
  // The leases recalled from `session`, for its keepAlive reply.
  std::vector<RecalledLease> recalledFrom(SessionId session) const;

  // --- rebalance ---
  // Queues the plan's moves (dropping those of an earlier plan not started yet).
  void startRebalance(const RebalancePlan& plan, double bandPct);
  // Drops the queued moves; running ones finish.
  void stopRebalance();
  RebalanceStats rebalanceStats() const;
  // Every chunk's health now (a full scan, for fsck), listing at most `max` bad chunks.
  Report check(const ServerMap& servers, size_t max, const LostBlocksFn& lostBlocks = {});
  Stats stats() const;

 private:
  struct QueuedMove {
    PlannedMove move;
    unsigned attempts = 0;
    unsigned waits = 0;  // ticks it could not start for want of a lease or of health
    uint64_t plan = 0;   // which rebalance it belongs to (plan_)
  };
  struct Order {
    ServerId target;
    uint64_t generation;
    InodeId inode;
    uint64_t index = 0;
    std::optional<QueuedMove> move;  // a rebalance move
  };
  enum class Ordered { kYes, kThrottled, kNoTarget, kRecalled };
  // Orders one shard of the chunk rebuilt (for a rebalance move: that move's shard on its
  // target), unless the throttle or the lack of a target holds it back; a leased chunk has its
  // lease recalled instead.
  Ordered order(const Namespace::ChunkEntry& entry, const ChunkHealth& health,
                const ServerMap& servers, const QueuedMove* move = nullptr);
  void finished(ChunkId chunk, uint64_t generation, bool ok, uint64_t bytes);
  // The chunks whose lease was recalled: their moves, as soon as the lease is back.
  void tickRecalled(const ServerMap& servers);
  // Queued rebalance moves, within what the throttle leaves.
  void tickMoves(const ServerMap& servers);
  // Checks a queued move against the chunk map now and orders it if it still fits. False if
  // it is to stay queued; true if it was ordered or dropped (`moves_` entry to go).
  bool tryMove(QueuedMove& queued, const ServerMap& servers);
  std::optional<Namespace::ChunkEntry> entryOf(InodeId inode, uint64_t index);
  bool notHeld(uint64_t chunk, int shard, ServerId server) const;
  void findOrphans(ServerId server);

  struct Inventory;
  struct Listing {
    uint64_t mark = 0;  // the chunk mark when the report started
    std::set<std::pair<uint64_t, int>> shards;
    std::set<uint64_t> chunks;
  };
  struct Inventory {
    bool building = false;
    Listing partial;
    std::vector<Listing> complete;   // the last two, oldest first
    std::set<uint64_t> ordered;     // orphans ordered deleted, until a report lacks them
    std::vector<uint64_t> toOrder;  // orphans found, not yet handed to a heartbeat
  };
  std::map<ServerId, Inventory> inventories_;
  // Copy-on-write copies under way: chunk id → the servers copying a shard of it.
  std::map<uint64_t, std::vector<ServerId>> copying_;
  bool copyingTo(uint64_t chunk, ServerId server) const;
  // Chunk id → servers, from the last whole pass (and the pass under way), amended by this
  // leader's switches; with the chunk mark when that pass started.
  std::map<uint64_t, std::vector<ServerId>> placed_, placing_;
  uint64_t placedMark_ = 0, placingMark_ = 0;
  bool placedValid_ = false;

  Namespace& ns_;
  raft::RaftNode& raft_;
  kj::Timer& timer_;
  Config config_;
  ChunkPeers peers_;
  std::mt19937_64 rng_;
  uint64_t generation_ = 1;
  DamagedSet damaged_;
  std::map<ChunkId, Order> running_;
  std::function<void()> slotFree_;
  LeaseRecalls recalls_;
  std::deque<QueuedMove> moves_;
  RebalanceStats rebalance_;
  uint64_t plan_ = 0;  // bumped by every start and stop of a rebalance
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
