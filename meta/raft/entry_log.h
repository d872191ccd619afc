// meta/raft/entry_log.h — the core's view of its log: what RaftStorage holds (durable), plus
// what is not durable yet ("unstable"): entries appended since they were last handed out in a
// Ready and made stable by advance(), and a snapshot received from the leader.
//
// Invariants:
//  - Entries are contiguous from firstIndex() to lastIndex(); term(firstIndex() - 1) is the
//    term of the snapshot the log starts after.
//  - Unstable entries start at offset_ and take precedence over storage at the same indexes
//    (a follower overwrites a conflicting suffix); with no unstable entries,
//    offset_ == lastIndex() + 1.
//  - With an unstable snapshot, nothing at or before its index is readable except its term,
//    and offset_ == snapshot index + 1.
//  - applied <= committed <= lastIndex(); committed never decreases; entries up to
//    committed are never overwritten.
// Internal to the core; not thread-safe.
#pragma once
#include <optional>
#include <vector>

#include "meta/raft/storage.h"
#include "meta/raft/types.h"

namespace tessera::meta::raft {

class EntryLog {
 public:
  // Starts from what `storage` holds; `applied` is where the state machine is (at least the
  // snapshot index). `storage` must outlive the log.
  EntryLog(const RaftStorage& storage, LogIndex applied);

  LogIndex firstIndex() const;
  LogIndex lastIndex() const;
  Term lastTerm() const;
  // kNotFound if compacted, kRange if past the end.
  Result<Term> term(LogIndex index) const;
  // The term at `index`, or 0 if unknown (compacted or past the end).
  Term termOrZero(LogIndex index) const;
  bool matchTerm(LogIndex index, Term term) const;
  // §5.4.1: a log ending at (lastIndex, lastTerm) is at least as up-to-date as ours.
  bool isUpToDate(LogIndex lastIndex, Term lastTerm) const;
  // Entries [lo, hi), at most maxBytes of data but at least one; errors as RaftStorage.
  Result<std::vector<Entry>> entries(LogIndex lo, LogIndex hi, uint64_t maxBytes) const;

  // The index of the first of `ents` that is not in the log with the same term; 0 if all are.
  LogIndex findConflict(const std::vector<Entry>& ents) const;
  // The largest index <= `index` whose term is <= `term` (or at which the term is unknown):
  // where two logs may agree, for fast backup of a rejected append.
  LogIndex findConflictByTerm(LogIndex index, Term term) const;

  // Appends contiguous entries; the first may overwrite any index after `committed`.
  void append(std::vector<Entry> ents);
  // Replaces the whole log by a snapshot from the leader; committed jumps to its index.
  void restore(const SnapshotMeta& meta);
  // The snapshot the log starts after (the unstable one if any).
  SnapshotMeta snapshotMeta() const;

  const std::optional<SnapshotMeta>& unstableSnapshot() const { return unstableSnapshot_; }
  const std::vector<Entry>& unstableEntries() const { return unstable_; }
  // The node made `persisted` durable (overwriting storage from its first index). Unstable
  // entries it covers with the same term stop being unstable; any overwritten meanwhile
  // stay, and come again in the next Ready.
  void stableTo(const std::vector<Entry>& persisted);
  // The node installed the snapshot at `index`.
  void stableSnapshotTo(LogIndex index);

  LogIndex committed() const { return committed_; }
  LogIndex applied() const { return applied_; }
  // Raises committed (never lowers it); `index` must be in the log.
  void commitTo(LogIndex index);
  void appliedTo(LogIndex index);
  bool hasNextCommittedEntries() const;
  // Committed entries after applied, at most maxBytes of data but at least one.
  std::vector<Entry> nextCommittedEntries(uint64_t maxBytes) const;

 private:
  const RaftStorage& storage_;
  std::optional<SnapshotMeta> unstableSnapshot_;
  std::vector<Entry> unstable_;
  LogIndex offset_;  // index of unstable_[0]
  LogIndex committed_;
  LogIndex applied_;
};

}  // namespace tessera::meta::raft
