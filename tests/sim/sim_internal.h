// tests/sim/sim_internal.h — the simulated node, disk, client and message in flight, shared
// by sim.cc (the world) and checker.cc (the invariants).
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/sim/sim.h"

namespace tessera::meta::raft::sim {

// One write the node makes to its disk while handling a Ready.
struct DiskOp {
  enum class Kind { kHardState, kAppend, kSnapshot, kCompact };
  Kind kind = Kind::kHardState;
  HardState hardState;
  std::vector<Entry> entries;
  SnapshotMeta meta;
  std::string data;

  static DiskOp hardStateOp(const HardState& hs) {
    DiskOp op;
    op.kind = Kind::kHardState;
    op.hardState = hs;
    return op;
  }
  static DiskOp appendOp(std::vector<Entry> entries) {
    DiskOp op;
    op.kind = Kind::kAppend;
    op.entries = std::move(entries);
    return op;
  }
  static DiskOp snapshotOp(Kind kind, const SnapshotMeta& meta, std::string data) {
    DiskOp op;
    op.kind = kind;
    op.meta = meta;
    op.data = std::move(data);
    return op;
  }
};

inline Status applyTo(MemoryStorage& s, const DiskOp& op) {
  switch (op.kind) {
    case DiskOp::Kind::kHardState:
      s.setHardState(op.hardState);
      return {};
    case DiskOp::Kind::kAppend:
      return s.append(op.entries);
    case DiskOp::Kind::kSnapshot:
      return s.applySnapshot(op.meta, op.data);
    case DiskOp::Kind::kCompact:
      return s.compact(op.meta, op.data);
  }
  return {};
}

// A disk: what is durable, and what the node sees (durable plus the writes since the last
// sync, which a crash loses from some point on).
class Disk {
 public:
  explicit Disk(const ConfState& conf) : durable(conf), live(conf) {}

  Status write(DiskOp op) {
    Status s = applyTo(live, op);
    unsynced_.push_back(std::move(op));
    return s;
  }
  Status sync() {
    for (const DiskOp& op : unsynced_) {
      if (Status s = applyTo(durable, op); !s) return s;
    }
    unsynced_.clear();
    return {};
  }
  size_t unsynced() const { return unsynced_.size(); }
  // The first `kept` unsynced writes reached the platter, in order; the rest are lost.
  void crash(size_t kept) {
    for (size_t i = 0; i < kept && i < unsynced_.size(); ++i) (void)applyTo(durable, unsynced_[i]);
    unsynced_.clear();
    live = durable;
  }

  MemoryStorage durable;
  MemoryStorage live;

 private:
  std::vector<DiskOp> unsynced_;
};

struct Cluster::Node {
  Node(NodeId id, const ConfState& conf, int keys) : id(id), disk(conf), kv(keys), keys(keys) {}

  NodeId id;
  bool up = false;
  uint64_t incarnation = 0;
  int64_t restartAt = 0;
  Disk disk;
  std::unique_ptr<RaftCore> core;
  Kv kv;
  int keys;
  LogIndex kvApplied;
  std::optional<Ready> pending;  // being persisted until pendingDoneAt
  int64_t pendingDoneAt = 0;
  std::map<LogIndex, std::string> snapInbox;  // snapshot data streamed to us
  std::set<std::pair<int, uint64_t>> writes;  // (client, seq) proposed here
  struct Read {
    int client;
    uint64_t seq;
    int key;
    std::optional<LogIndex> index;
  };
  std::map<uint64_t, Read> reads;  // by request id
  // Checker state for this incarnation.
  LogIndex commitSeen;
  Term leaderCheckedTerm;
};

struct Cluster::Client {
  int id = 0;
  uint64_t seq = 0;
  int opsLeft = 0;
  bool busy = false;
  bool waiting = false;  // an attempt was accepted and has not been answered
  size_t op = 0;         // index in history_
  NodeId target;
  int64_t nextTryAt = 0;
  std::vector<int64_t> seen;  // the last value read of each key
};

struct Cluster::InFlight {
  int64_t at;
  uint64_t seq;
  uint64_t fromIncarnation;
  Message msg;
  std::string snapData;
};

}  // namespace tessera::meta::raft::sim
