// meta/lease_recall.h — lease recalls: how a move (repair, drain, rebalance) gets a chunk that a
// running writer holds. The leader's soft state, like session liveness; a new leader starts
// with none and its repair service recalls again what it still wants.
//
// A recall is recorded when the repair service wants to switch a shard of a leased chunk now
// (throttle room and a target found). From then on, for at most the hold time:
//   - the holder hears of it in its keepAlive replies (a mount holding leases polls about every
//     half second), finishes its writes to the chunk, syncs them and releases the lease;
//   - acquireLease of the chunk answers busy (a writer retries busy: it sees latency, never an
//     error), so the copy can be made while nobody writes;
//   - the repair service checks the chunk at every tick and orders the move as soon as the
//     lease is gone; when the move ends (switched or failed) the recall ends and grants resume.
// When the hold time passes first, leases are granted again, and the chunk is not recalled for
// another hold time (the writer gets on with its work); a move still running then meets the new
// grant's epoch in its compare-and-set (replaceShard) and leaves an orphan copy instead.
//
// Pure: time comes in as values. Not thread-safe: owned by the Repair of the meta leader.
#pragma once
#include <kj/time.h>

#include <map>
#include <utility>
#include <vector>

#include "fs/types.h"

namespace tessera::meta {

struct RecalledLease {
  InodeId inode;
  uint64_t index = 0;
  uint64_t epoch = 0;
};

class LeaseRecalls {
 public:
  explicit LeaseRecalls(uint64_t holdMs) : holdMs_(holdMs) {}

  // A move wants the chunk at (inode, index), leased by `holder` at `epoch`. False if it may
  // not be recalled now (a recall ended without the move less than a hold time ago); true if
  // it is recalled (newly, or still).
  bool recall(InodeId inode, uint64_t index, SessionId holder, uint64_t epoch, kj::TimePoint now);
  // Whether a recall of the chunk is in force: acquireLease answers busy.
  bool holding(InodeId inode, uint64_t index, kj::TimePoint now) const;
  // The leases in force recalled from `session`.
  std::vector<RecalledLease> recalledFrom(SessionId session, kj::TimePoint now) const;
  size_t countInForce(kj::TimePoint now) const;
  // The chunks with a recall in force, for the repair service to look at.
  std::vector<std::pair<InodeId, uint64_t>> inForce(kj::TimePoint now) const;
  // The move of the chunk ended (or will not happen): grants resume at once. Unless `moved`,
  // the chunk is not recalled again before the cool-down (a hold time after the hold time).
  void finished(InodeId inode, uint64_t index, bool moved);
  // Forgets recalls past their hold time and cool-down.
  void expire(kj::TimePoint now);
  void clear() { recalls_.clear(); }
  size_t size() const { return recalls_.size(); }

 private:
  struct Recall {
    SessionId holder;
    uint64_t epoch = 0;
    kj::TimePoint since = kj::origin<kj::TimePoint>();
    bool ended = false;  // finished without a move: only the cool-down is left
  };
  bool inForce(const Recall& r, kj::TimePoint now) const {
    return !r.ended && now - r.since < holdMs_ * kj::MILLISECONDS;
  }
  uint64_t holdMs_;
  std::map<std::pair<InodeId, uint64_t>, Recall> recalls_;
};

}  // namespace tessera::meta
