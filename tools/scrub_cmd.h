// tools/scrub_cmd.h — the admin command's data-integrity commands:
//   tessera scrub [--now]   ask every chunk server up to start a scrub pass now (--now), and
//                           print each server's scrub progress and every damaged shard known
//   tessera chunks FILE     the chunks of FILE (on a Tessera mount) and the servers of their shards
// and the scrub summary that `tessera status` prints. Synchronous, on MetaCluster's loop.
#pragma once
#include <string>
#include <vector>

#include "fs/proto/meta.capnp.h"
#include "tools/meta_cluster.h"

namespace tessera::tools {

int scrubCommand(MetaCluster& cluster, std::vector<std::string> args);
int chunksCommand(MetaCluster& cluster, const std::vector<std::string>& args);
// Lines for `tessera status`: scrub progress in short, and the count of damaged shards.
void printScrubSummary(proto::MetaService::StatusResults::Reader r);

}  // namespace tessera::tools
