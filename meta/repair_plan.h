// meta/repair_plan.h — the pure decisions of shard repair: how healthy a chunk is given the
// chunk servers the leader knows, which shards to rebuild now, how long a shard is, and where
// a rebuilt shard goes. No I/O, no clock: the leader's soft state comes in as values.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fs/result.h"
#include "fs/types.h"

namespace tessera::meta {

// A chunk server as the leader sees it now.
struct ServerView {
  ServerId id;
  std::string address, site, rack, host;
  bool up = false;
  bool draining = false;  // tessera drain: its shards move off; it takes no new ones
  uint64_t freeBytes = 0;
  uint64_t capacityBytes = 0, usedBytes = 0;  // from heartbeats: what rebalance evens out
  // How long it has been down (counted as from when this leader took over if it was down
  // then); 0 while up.
  uint64_t downMs = 0;
};
using ServerMap = std::map<ServerId, ServerView>;

// (chunk id, shard index) pairs reported damaged on the server that holds them.
using DamagedSet = std::set<std::tuple<uint64_t, int, uint64_t>>;

enum class Health { kHealthy, kDegraded, kLost };
const char* healthName(Health h);

struct ChunkHealth {
  Health health = Health::kHealthy;
  // Shards that cannot be read now: server unknown or down, stale bit set, reported damaged,
  // or absent from the inventory of their live server.
  std::vector<int> missing;
  // Of those, the ones to rebuild now: stale, damaged, or on a server unknown or silent for
  // longer than the grace period. A shard on a server down for less stays missing and waits.
  std::vector<int> repairable;
  // Readable shards on draining servers: to copy elsewhere and switch to (copy-then-switch).
  std::vector<int> moves;
  // Shards not on distinct servers, or more than m shards in one site, rack or host while the
  // live servers span enough of them to do better.
  bool misplaced = false;
  std::string why;  // for fsck: what is wrong, "" if healthy
};

// Whether a live server's inventory shows that it lacks shard (chunk, shard).
using NotHeldFn = std::function<bool(uint64_t chunk, int shard, ServerId server)>;

ChunkHealth assess(const ChunkDesc& chunk, const ServerMap& servers, const DamagedSet& damaged,
                   uint64_t graceMs, const NotHeldFn& notHeld = {});

// Bytes [0, n) of each shard that hold the first `chunkBytes` bytes of a chunk's data (rounded
// up to whole stripe rows for ec, to 4 KiB for replicas; at most the shard size).
uint64_t shardLength(const Layout& layout, uint64_t chunkBytes);

// A server to rebuild shard `shard` of `chunk` on: up, not draining, not holding any shard of the chunk, not
// in `excluded`; preferring the site, then rack, then host least used by the chunk's other
// shards, drawn among equals by free space. kUnavailable if there is none.
Result<ServerId> pickTarget(const ChunkDesc& chunk, int shard, const ServerMap& servers,
                            const std::set<ServerId>& excluded, std::mt19937_64& rng);

}  // namespace tessera::meta
