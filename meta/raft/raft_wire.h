// meta/raft/raft_wire.h — Raft messages to and from Cap'n Proto (fs/proto/raft.capnp). Reading
// checks shapes only (a type the core does not know, an entry type out of range); the core
// checks the meaning of what arrives (RaftCore::step).
#pragma once
#include "fs/proto/raft.capnp.h"
#include "fs/result.h"
#include "meta/raft/types.h"

namespace tessera::meta::raft {

void toWire(const Message& m, proto::RaftMessage::Builder b);
Result<Message> fromWire(proto::RaftMessage::Reader r);

void toWire(const SnapshotMeta& m, proto::RaftSnapshotMeta::Builder b);
SnapshotMeta fromWire(proto::RaftSnapshotMeta::Reader r);

}  // namespace tessera::meta::raft
