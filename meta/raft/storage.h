// meta/raft/storage.h — what the Raft core reads of the durable state: the hard state, the
// last snapshot's meta and the log after it. The core never writes storage: the node writes
// what a Ready asks for (to disk, then to this view) and then calls RaftCore::advance().
//
// Log shape: entries snapshot().index + 1 .. lastIndex(), contiguous; the entry at
// snapshot().index was compacted into the snapshot and only its term is known. A fresh log has
// snapshot().index == 0, term 0 and the group's initial configuration in snapshot().conf (a
// node that joins an existing group starts with an empty configuration and learns it).
//
// MemoryStorage keeps all of it in memory: the view for tests and the simulation, and a model
// of what the node's log files must answer.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "meta/raft/types.h"

namespace tessera::meta::raft {

class RaftStorage {
 public:
  virtual ~RaftStorage() = default;

  virtual HardState hardState() const = 0;
  // The last snapshot taken or installed; index 0 for a log that was never compacted.
  virtual const SnapshotMeta& snapshot() const = 0;
  // The index of the last entry; snapshot().index when there is none after the snapshot.
  virtual LogIndex lastIndex() const = 0;
  // The term of the entry at `index`, for snapshot().index <= index <= lastIndex().
  // kNotFound if compacted (index < snapshot().index); kRange if past lastIndex().
  virtual Result<Term> term(LogIndex index) const = 0;
  // Entries [lo, hi), snapshot().index < lo < hi <= lastIndex() + 1, stopping before the
  // total data size would exceed maxBytes but always at least one entry.
  // kNotFound if lo is compacted; kRange if hi is past the end.
  virtual Result<std::vector<Entry>> entries(LogIndex lo, LogIndex hi, uint64_t maxBytes) const = 0;

 protected:
  RaftStorage() = default;
  RaftStorage(const RaftStorage&) = default;
  RaftStorage& operator=(const RaftStorage&) = default;
};

class MemoryStorage final : public RaftStorage {
 public:
  // A fresh log whose initial configuration is `conf` (empty for a node joining later).
  explicit MemoryStorage(ConfState conf = {});

  HardState hardState() const override { return hardState_; }
  const SnapshotMeta& snapshot() const override { return snapshot_; }
  LogIndex lastIndex() const override;
  Result<Term> term(LogIndex index) const override;
  Result<std::vector<Entry>> entries(LogIndex lo, LogIndex hi, uint64_t maxBytes) const override;

  // The data of snapshot(), opaque here.
  const std::string& snapshotData() const { return snapshotData_; }

  void setHardState(const HardState& hs) { hardState_ = hs; }
  // Appends contiguous entries; the first may be at any index in snapshot().index + 1 ..
  // lastIndex() + 1, and every entry at or after it is replaced. kInvalid otherwise.
  Status append(const std::vector<Entry>& entries);
  // Replaces the whole log by `meta` (a snapshot installed from the leader) and raises the
  // hard state's commit to meta.index. kStale if meta.index <= snapshot().index.
  Status applySnapshot(const SnapshotMeta& meta, std::string data);
  // Compaction: records `meta` as the snapshot and drops the entries up to meta.index, which
  // must be in the log with term meta.term (kStale if already compacted, kRange if past
  // the end, kInvalid if the term differs).
  Status compact(const SnapshotMeta& meta, std::string data);

 private:
  HardState hardState_;
  SnapshotMeta snapshot_;
  std::string snapshotData_;
  std::vector<Entry> entries_;  // entries_[i].index == snapshot_.index + 1 + i
};

}  // namespace tessera::meta::raft
