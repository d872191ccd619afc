// tools/repair_cmds.h — the admin command's view of shard health, repair and data moves:
// `tessera fsck`, drain, remove, rebalance, and their lines in `tessera status`.
#pragma once
#include <string>
#include <vector>

#include "fs/proto/meta.capnp.h"
#include "tools/meta_cluster.h"

namespace tessera::tools {

// `tessera fsck [--max N]`: counts of healthy, degraded, lost and misplaced chunks and a list of
// the bad ones, from the meta leader. Exit 0 when every chunk is healthy and well placed, 1 if
// any is degraded or misplaced (and none lost), 2 if any is lost; 3 if the leader cannot be
// asked.
int fsck(MetaCluster& cluster, const std::vector<std::string>& args);

// `tessera drain ID [--stop] [--wait]`: start (or stop) moving every shard off chunk server ID.
// With --wait, prints progress until the chunk map places nothing there (or --timeout).
int drain(MetaCluster& cluster, const std::vector<std::string>& args);
// `tessera remove ID`: forget chunk server ID; refused while it holds shards.
int removeServer(MetaCluster& cluster, const std::vector<std::string>& args);

// The "chunks" and "repair" lines of `tessera status`.
void printRepair(proto::RepairStatus::Reader r);

// `tessera rebalance [--dry-run] [--band PCT] [--wait]`: plan moves that bring every live chunk
// server's disk usage within PCT points (default 10) of the mean, print them (chunk, shard,
// from -> to, bytes) and, unless --dry-run, start them; --wait shows progress until they are
// done (exit 1 if some failed). `tessera rebalance --stop` drops the queued moves.
// (tools/rebalance_cmd.cc)
int rebalance(MetaCluster& cluster, const std::vector<std::string>& args);
// The "rebalance" line of `tessera status` (nothing when no rebalance ran).
void printRebalance(proto::RebalanceStatus::Reader r);

}  // namespace tessera::tools
