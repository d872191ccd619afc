// chunk/inventory.h — the chunk server's inventory: which shards it holds, as reported to the
// meta leader (MetaService.reportInventory) so that the leader finds shards missing on a live
// server and shards no chunk places here (orphans, deleted on its orders).
//
// A report is the whole list, sent in pieces of at most kInventoryPiece shards; the first piece
// says `start`, the last `done`. The leader uses only complete reports: a report cut short (a
// leader change, a failed call) is sent again in full later. The link sends one after every
// registration (so every new leader gets one) and then every inventory interval.
#pragma once
#include <kj/async.h>
#include <kj/timer.h>

#include <string>
#include <vector>

#include "chunk/disk_set.h"
#include "fs/proto/meta.capnp.h"

namespace tessera::chunk {

constexpr size_t kInventoryPiece = 20'000;

// Blocking: the shard files under `shardsDir` (DIR/shards/XX/NAME), parsed from their names;
// names that are not shard names (temporary files) are skipped. kIo if a bucket cannot be read.
Result<std::vector<ShardKey>> listShardFiles(const std::string& shardsDir);

// Sends the whole inventory of `disk` as server `id` to `meta`, each call bounded by
// `timeoutMs`. Resolves to the first error (then the report is incomplete and ignored).
kj::Promise<Status> sendInventory(proto::MetaService::Client meta, ServerId id, DiskSet& disk,
                                  kj::Timer& timer, uint64_t timeoutMs);

}  // namespace tessera::chunk
