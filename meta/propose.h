// meta/propose.h — what the MetaService's RPC handlers (meta_service.cc, meta_leases.cc) share.
// Used on the meta server's event loop.
#pragma once
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>

#include "fs/types.h"
#include "meta/ns/namespace.h"
#include "meta/raft/raft_node.h"

namespace tessera::meta {

// Largest chunk index whose bytes still have offsets that fit in off_t.
constexpr uint64_t kMaxChunkIndex = (uint64_t(INT64_MAX) / kChunkSize) - 1;

// Builds an Op stamped with the time (and the client's request id, for exactly-once), lets
// `fill` set its union member, and proposes it: the result is what applying it gave, once the
// meta servers committed it.
template <typename Fill>
kj::Promise<Result<Applied>> proposeOp(raft::RaftNode& raft, int64_t now, Fill&& fill) {
  capnp::MallocMessageBuilder message;
  auto op = message.initRoot<proto::Op>();
  op.setNowNs(now);
  fill(op);
  return raft.propose(capnp::messageToFlatArray(message));
}

}  // namespace tessera::meta
