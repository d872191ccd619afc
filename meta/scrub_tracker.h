// meta/scrub_tracker.h — the meta leader's soft state about scrubbing: each chunk server's
// scrub progress and the shards its scrubber found damaged (from heartbeats), and the pending
// "scrub now" request of `tessera scrub --now`. Nothing here is replicated: a new leader starts
// empty and the chunk servers send their unacknowledged and (on registering again) all their
// damage reports anew.
//
// Damage reports go to one place, reportDamaged(), which records them and is where the repair
// scheduler (meta/repair.h) is told to rebuild the shard.
//
// Reports are validated: a chunk id of 0, a shard index past kMaxShardsInLayout, a block offset
// that is not a multiple of 4 KiB inside a chunk, or more than kMaxReports per heartbeat is
// dropped (and logged); the rest of the heartbeat still counts. Lost shards likewise (more
// blocks than a chunk has, more than kMaxLostShards).
//
// Not thread-safe: owned by the meta server's event loop (a member of MetaService).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "fs/proto/meta.capnp.h"
#include "fs/types.h"

namespace tessera::meta {

class ScrubTracker {
 public:
  static constexpr unsigned kMaxShardsInLayout = 24;
  static constexpr size_t kMaxReports = 10'000;
  static constexpr size_t kMaxLostShards = 1'000;

  // A heartbeat's scrub part from `server`: keeps its progress, records its damage reports.
  // Returns the scrub-now request to put in the reply (0: none).
  uint64_t onHeartbeat(ServerId server, proto::ScrubProgress::Reader report);
  // `tessera scrub --now`: every server in `servers` is asked to start a pass with request id
  // `id` (unique: the caller takes it from the wall clock), until it reports having done so.
  void requestPass(const std::vector<ServerId>& servers, uint64_t id);

  // The single call site of the damaged-shard hook: records the report; the repair scheduler
  // (meta/repair.h) is told here to rebuild shard `shard` of `chunk` held by `server`.
  void reportDamaged(ChunkId chunk, int shard, ServerId server, const std::set<uint64_t>& blocks);
  // Told of every new or changed damage report: the repair scheduler's reportDamaged.
  std::function<void(ChunkId chunk, int shard, ServerId server)> onDamaged;
  // The shard was rebuilt or moved (for the repair scheduler): forget the report.
  void repaired(ChunkId chunk, int shard, ServerId server);

  // Progress for ServerInfo.scrub (damaged left empty) and the count of damaged shards on it.
  void fillProgress(ServerId server, proto::ServerInfo::Builder b) const;
  // Every damaged shard known, ordered by chunk, shard, server.
  void fillDamaged(capnp::List<proto::DamagedShard>::Builder list) const;
  size_t damagedCount() const { return damaged_.size(); }
  // Blocks marked lost (ScrubProgress.lostBlocks) on the chunk servers `counted` accepts (the
  // live ones: a dead server's shards are rebuilt elsewhere, lost marks included).
  uint64_t lostBlocks(const std::function<bool(ServerId)>& counted) const;
  // The same per shard (ScrubProgress.lostShards): chunk id -> (shard, server, blocks).
  struct LostOn {
    int shard;
    ServerId server;
    uint64_t blocks;
  };
  std::map<uint64_t, std::vector<LostOn>> lostShards(
      const std::function<bool(ServerId)>& counted) const;

  // Leadership lost: forget everything.
  void clear();

 private:
  struct Progress {
    bool running = false;
    uint64_t bytesThisPass = 0, passBytes = 0, passes = 0, lastPassEndMs = 0, badBlocks = 0;
    uint64_t request = 0;  // the last request the server acted on
    uint64_t lostBlocks = 0;
    struct Lost {
      uint64_t chunk;
      int shard;
      uint64_t blocks;
    };
    std::vector<Lost> lostShards;
    bool reported = false;
  };
  using Key = std::tuple<uint64_t, int, uint64_t>;  // chunk, shard, server

  std::map<ServerId, Progress> progress_;
  std::map<ServerId, uint64_t> pending_;  // request id not yet acted on, per server
  std::map<Key, std::set<uint64_t>> damaged_;
};

}  // namespace tessera::meta
