#include "meta/raft/entry_log.h"

#include <algorithm>

#include "meta/raft/assert.h"

namespace tessera::meta::raft {

namespace {
std::string idx(LogIndex i) { return std::to_string(i.value); }
}  // namespace

EntryLog::EntryLog(const RaftStorage& storage, LogIndex applied)
    : storage_(storage), offset_(storage.lastIndex().next()) {
  LogIndex snap = storage.snapshot().index;
  committed_ = std::max(storage.hardState().commit, snap);
  applied_ = std::max(applied, snap);
  // A durable state machine may be ahead of a commit index whose write was not synced:
  // only committed entries are ever applied.
  committed_ = std::max(committed_, applied_);
  TESSERA_RAFT_ASSERT(committed_ <= lastIndex(),
                      "storage commit " + idx(committed_) + " past its last " + idx(lastIndex()));
}

LogIndex EntryLog::firstIndex() const {
  if (unstableSnapshot_) return unstableSnapshot_->index.next();
  return storage_.snapshot().index.next();
}

LogIndex EntryLog::lastIndex() const {
  if (!unstable_.empty()) return unstable_.back().index;
  if (unstableSnapshot_) return unstableSnapshot_->index;
  return storage_.lastIndex();
}

Term EntryLog::lastTerm() const { return termOrZero(lastIndex()); }

Result<Term> EntryLog::term(LogIndex index) const {
  LogIndex before = firstIndex().prev();
  if (index < before) return Error{Errc::kNotFound, "raft log: compacted"};
  if (index > lastIndex()) return Error{Errc::kRange, "raft log: past the end"};
  if (unstableSnapshot_ && index == unstableSnapshot_->index) return unstableSnapshot_->term;
  if (!unstable_.empty() && index >= offset_) return unstable_[index - offset_].term;
  return storage_.term(index);
}

Term EntryLog::termOrZero(LogIndex index) const {
  auto t = term(index);
  return t ? *t : Term();
}

bool EntryLog::matchTerm(LogIndex index, Term t) const {
  auto mine = term(index);
  return mine && *mine == t;
}

bool EntryLog::isUpToDate(LogIndex index, Term t) const {
  Term last = lastTerm();
  return t > last || (t == last && index >= lastIndex());
}

Result<std::vector<Entry>> EntryLog::entries(LogIndex lo, LogIndex hi, uint64_t maxBytes) const {
  if (lo < firstIndex()) return Error{Errc::kNotFound, "raft log: compacted"};
  if (hi > lastIndex().next() || lo > hi) return Error{Errc::kRange, "raft log: past the end"};
  std::vector<Entry> out;
  if (lo == hi) return out;
  uint64_t bytes = 0;
  LogIndex storageEnd = unstable_.empty() ? hi : std::min(hi, offset_);
  if (lo < storageEnd) {
    auto stored = storage_.entries(lo, storageEnd, maxBytes);
    if (!stored) return stored.error();
    out = std::move(*stored);
    TESSERA_RAFT_ASSERT(!out.empty() && out.front().index == lo, "storage entries misnumbered");
    for (const Entry& e : out) bytes += e.data.size();
    // Storage stopped at the byte limit: do not go on with unstable entries.
    if (out.back().index.next() < storageEnd) return out;
  }
  for (LogIndex i = std::max(lo, offset_); i < hi; i = i.next()) {
    const Entry& e = unstable_[i - offset_];
    bytes += e.data.size();
    if (!out.empty() && bytes > maxBytes) break;
    out.push_back(e);
  }
  return out;
}

LogIndex EntryLog::findConflict(const std::vector<Entry>& ents) const {
  for (const Entry& e : ents) {
    if (!matchTerm(e.index, e.term)) return e.index;
  }
  return LogIndex();
}

LogIndex EntryLog::findConflictByTerm(LogIndex index, Term t) const {
  for (;;) {
    auto mine = term(index);
    if (!mine || *mine <= t || index == LogIndex()) return index;
    index = index.prev();
  }
}

void EntryLog::append(std::vector<Entry> ents) {
  if (ents.empty()) return;
  LogIndex after = ents.front().index;
  TESSERA_RAFT_ASSERT(after > committed_, "overwriting committed entry " + idx(after) +
                                              " (committed " + idx(committed_) + ")");
  TESSERA_RAFT_ASSERT(after <= lastIndex().next(), "append leaves a gap at " + idx(after));
  if (after == offset_ + unstable_.size()) {
    // The common case: right after the unstable entries.
  } else if (after <= offset_) {
    // Replaces every unstable entry; storage from `after` on is overwritten when persisted.
    offset_ = after;
    unstable_.clear();
  } else {
    unstable_.resize(after - offset_);
  }
  for (Entry& e : ents) unstable_.push_back(std::move(e));
}

void EntryLog::restore(const SnapshotMeta& meta) {
  TESSERA_RAFT_ASSERT(meta.index > committed_, "restoring an older snapshot");
  unstableSnapshot_ = meta;
  unstable_.clear();
  offset_ = meta.index.next();
  committed_ = meta.index;
}

SnapshotMeta EntryLog::snapshotMeta() const {
  if (unstableSnapshot_) return *unstableSnapshot_;
  return storage_.snapshot();
}

void EntryLog::stableTo(const std::vector<Entry>& persisted) {
  if (persisted.empty() || unstable_.empty()) return;
  LogIndex first = persisted.front().index;
  // Unstable entries before the persisted ones are not durable: nothing after them is either.
  if (first > offset_) return;
  LogIndex hi = std::min(persisted.back().index, unstable_.back().index);
  if (hi < offset_) return;
  // The last unstable entry that was persisted with the same term: by Log Matching, every
  // entry up to it is the same as the persisted one.
  for (uint64_t n = hi - offset_ + 1; n > 0; --n) {
    LogIndex i = offset_ + (n - 1);
    if (unstable_[i - offset_].term == persisted[i - first].term) {
      unstable_.erase(unstable_.begin(), unstable_.begin() + n);
      offset_ = i.next();
      return;
    }
  }
}

void EntryLog::stableSnapshotTo(LogIndex index) {
  if (unstableSnapshot_ && unstableSnapshot_->index == index) unstableSnapshot_.reset();
}

void EntryLog::commitTo(LogIndex index) {
  if (index <= committed_) return;
  TESSERA_RAFT_ASSERT(index <= lastIndex(),
                      "commit " + idx(index) + " past the last entry " + idx(lastIndex()));
  committed_ = index;
}

void EntryLog::appliedTo(LogIndex index) {
  TESSERA_RAFT_ASSERT(index <= committed_, "applied " + idx(index) + " past commit");
  if (index > applied_) applied_ = index;
}

bool EntryLog::hasNextCommittedEntries() const {
  return !unstableSnapshot_ && committed_ > applied_;
}

std::vector<Entry> EntryLog::nextCommittedEntries(uint64_t maxBytes) const {
  if (!hasNextCommittedEntries()) return {};
  auto ents = entries(applied_.next(), committed_.next(), maxBytes);
  TESSERA_RAFT_ASSERT(ents.ok(), "committed entries unreadable after " + idx(applied_) + ": " +
                                     ents.error().toString());
  return std::move(*ents);
}

}  // namespace tessera::meta::raft
