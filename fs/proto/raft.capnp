# fs/proto/raft.capnp — Raft messages between meta servers (meta/raft/types.h on the wire).
# Every field is checked again by the receiving core (RaftCore::step refuses malformed ones).
@0xe10ac5f875987524;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tessera::proto");

struct RaftEntry {
  term @0 :UInt64;
  index @1 :UInt64;
  type @2 :UInt8;       # raft::Entry::Type
  data @3 :Data;
}

struct RaftSnapshotMeta {
  index @0 :UInt64;
  term @1 :UInt64;
  voters @2 :List(UInt64);
}

struct RaftMessage {
  type @0 :UInt8;       # raft::MessageType
  from @1 :UInt64;
  to @2 :UInt64;
  term @3 :UInt64;
  logTerm @4 :UInt64;
  index @5 :UInt64;
  entries @6 :List(RaftEntry);
  commit @7 :UInt64;
  reject @8 :Bool;
  rejectHint @9 :UInt64;
  hasSnapshot @10 :Bool;
  snapshot @11 :RaftSnapshotMeta;
  context @12 :UInt64;
  target @13 :UInt64;
  transfer @14 :Bool;
}

# One member of the meta cluster as `tessera status` shows it.
struct RaftMember {
  id @0 :UInt64;
  address @1 :Text;
  role @2 :Text;        # "leader", "follower", ... as the answering server knows
  match @3 :UInt64;     # the leader's view: last index known replicated there
  lag @4 :UInt64;       # commit - match
  active @5 :Bool;      # heard from within an election timeout (leader's view)
}

struct RaftInfo {
  id @0 :UInt64;        # the answering server
  term @1 :UInt64;
  role @2 :Text;
  leader @3 :UInt64;
  leaderAddress @4 :Text;
  commit @5 :UInt64;
  applied @6 :UInt64;
  lastIndex @7 :UInt64;
  snapshotIndex @8 :UInt64;
  members @9 :List(RaftMember);
}
