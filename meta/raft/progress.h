// meta/raft/progress.h — the leader's view of one follower's log (Raft's nextIndex and
// matchIndex, plus flow control).
//
//  - kProbe: the leader does not know where the logs agree; it sends one append at a time
//    (paused until a response or a heartbeat response) and backs off on rejections.
//  - kReplicate: the logs agree up to `match`; the leader pipelines appends optimistically,
//    advancing `next` as it sends, with at most a bounded number in flight.
//  - kSnapshot: the entries the follower needs are compacted; a snapshot is on its way and
//    nothing else is sent until it is reported done or failed.
// Invariant: match < next. Internal to the core.
#pragma once
#include <cstddef>
#include <deque>

#include "meta/raft/types.h"

namespace tessera::meta::raft {

// The last index of each append in flight, oldest first.
class Inflights {
 public:
  explicit Inflights(size_t capacity) : capacity_(capacity) {}
  void add(LogIndex last) { inflight_.push_back(last); }
  // A response acknowledged everything up to `index`.
  void freeLE(LogIndex index);
  void freeFirstOne();
  void reset() { inflight_.clear(); }
  bool full() const { return inflight_.size() >= capacity_; }
  size_t count() const { return inflight_.size(); }

 private:
  size_t capacity_;
  std::deque<LogIndex> inflight_;
};

enum class ProgressState : uint8_t { kProbe = 0, kReplicate, kSnapshot };
const char* progressStateName(ProgressState state);

struct Progress {
  explicit Progress(size_t maxInflight) : inflights(maxInflight) {}

  LogIndex match;
  LogIndex next;
  ProgressState state = ProgressState::kProbe;
  // kProbe: an append was sent and neither it nor a heartbeat was answered yet.
  bool probeSent = false;
  // kSnapshot: the index of the snapshot being sent.
  LogIndex pendingSnapshot;
  // Heard from since the last check-quorum round.
  bool recentActive = false;
  // The highest read round (heartbeat context) this follower acknowledged in this term.
  uint64_t ackedRound = 0;
  Inflights inflights;

  void becomeProbe();
  void becomeReplicate();
  void becomeSnapshot(LogIndex snapshotIndex);
  // A successful append response up to `index`; false if it told us nothing new.
  bool maybeUpdate(LogIndex index);
  // An append whose last entry is `last` (no entries: last == next - 1) was sent.
  void sentAppend(LogIndex last, bool hadEntries);
  // A rejection of the append after `rejected`; `hint` is where the logs may agree.
  // False if the rejection is stale (answers an append we no longer care about).
  bool maybeDecrTo(LogIndex rejected, LogIndex hint);
  bool isPaused() const;
};

}  // namespace tessera::meta::raft
