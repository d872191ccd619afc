#include "meta/raft/storage.h"

namespace tessera::meta::raft {

MemoryStorage::MemoryStorage(ConfState conf) { snapshot_.conf = std::move(conf); }

LogIndex MemoryStorage::lastIndex() const { return snapshot_.index + entries_.size(); }

Result<Term> MemoryStorage::term(LogIndex index) const {
  if (index < snapshot_.index) return Error{Errc::kNotFound, "raft log: compacted"};
  if (index > lastIndex()) return Error{Errc::kRange, "raft log: past the end"};
  if (index == snapshot_.index) return snapshot_.term;
  return entries_[index - snapshot_.index - 1].term;
}

Result<std::vector<Entry>> MemoryStorage::entries(LogIndex lo, LogIndex hi,
                                                  uint64_t maxBytes) const {
  if (lo <= snapshot_.index) return Error{Errc::kNotFound, "raft log: compacted"};
  if (hi > lastIndex().next() || lo > hi) return Error{Errc::kRange, "raft log: past the end"};
  std::vector<Entry> out;
  uint64_t bytes = 0;
  for (LogIndex i = lo; i < hi; i = i.next()) {
    const Entry& e = entries_[i - snapshot_.index - 1];
    bytes += e.data.size();
    if (!out.empty() && bytes > maxBytes) break;
    out.push_back(e);
  }
  return out;
}

Status MemoryStorage::append(const std::vector<Entry>& entries) {
  if (entries.empty()) return {};
  LogIndex first = entries.front().index;
  if (first <= snapshot_.index || first > lastIndex().next()) {
    return Error{Errc::kInvalid, "raft log: append leaves a gap or rewrites the snapshot"};
  }
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].index != entries[i - 1].index.next()) {
      return Error{Errc::kInvalid, "raft log: entries not contiguous"};
    }
  }
  entries_.resize(first - snapshot_.index - 1);
  entries_.insert(entries_.end(), entries.begin(), entries.end());
  return {};
}

Status MemoryStorage::applySnapshot(const SnapshotMeta& meta, std::string data) {
  if (meta.index <= snapshot_.index) return Error{Errc::kStale, "raft log: older snapshot"};
  snapshot_ = meta;
  snapshotData_ = std::move(data);
  entries_.clear();
  if (hardState_.commit < meta.index) hardState_.commit = meta.index;
  return {};
}

Status MemoryStorage::compact(const SnapshotMeta& meta, std::string data) {
  if (meta.index <= snapshot_.index) return Error{Errc::kStale, "raft log: already compacted"};
  if (meta.index > lastIndex()) return Error{Errc::kRange, "raft log: compact past the end"};
  if (entries_[meta.index - snapshot_.index - 1].term != meta.term) {
    return Error{Errc::kInvalid, "raft log: snapshot term differs from the log"};
  }
  entries_.erase(entries_.begin(), entries_.begin() + (meta.index - snapshot_.index));
  snapshot_ = meta;
  snapshotData_ = std::move(data);
  return {};
}

}  // namespace tessera::meta::raft
