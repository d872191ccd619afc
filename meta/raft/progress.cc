#include "meta/raft/progress.h"

#include <algorithm>

namespace tessera::meta::raft {

void Inflights::freeLE(LogIndex index) {
  while (!inflight_.empty() && inflight_.front() <= index) inflight_.pop_front();
}

void Inflights::freeFirstOne() {
  if (!inflight_.empty()) inflight_.pop_front();
}

const char* progressStateName(ProgressState state) {
  switch (state) {
    case ProgressState::kProbe:
      return "probe";
    case ProgressState::kReplicate:
      return "replicate";
    case ProgressState::kSnapshot:
      return "snapshot";
  }
  return "unknown";
}

void Progress::becomeProbe() {
  // After a snapshot that was reported sent, the follower has everything up to it.
  if (state == ProgressState::kSnapshot) {
    next = std::max(match.next(), pendingSnapshot.next());
  } else {
    next = match.next();
  }
  state = ProgressState::kProbe;
  pendingSnapshot = LogIndex();
  probeSent = false;
  inflights.reset();
}

void Progress::becomeReplicate() {
  state = ProgressState::kReplicate;
  next = match.next();
  pendingSnapshot = LogIndex();
  probeSent = false;
  inflights.reset();
}

void Progress::becomeSnapshot(LogIndex snapshotIndex) {
  state = ProgressState::kSnapshot;
  pendingSnapshot = snapshotIndex;
  probeSent = false;
  inflights.reset();
}

bool Progress::maybeUpdate(LogIndex index) {
  bool updated = false;
  if (index > match) {
    match = index;
    updated = true;
    probeSent = false;
  }
  next = std::max(next, index.next());
  return updated;
}

void Progress::sentAppend(LogIndex last, bool hadEntries) {
  switch (state) {
    case ProgressState::kReplicate:
      if (hadEntries) {
        next = last.next();
        inflights.add(last);
      }
      break;
    case ProgressState::kProbe:
      probeSent = true;
      break;
    case ProgressState::kSnapshot:
      break;
  }
}

bool Progress::maybeDecrTo(LogIndex rejected, LogIndex hint) {
  if (state == ProgressState::kReplicate) {
    // Everything up to match is known to agree: a rejection at or below it is stale.
    if (rejected <= match) return false;
    next = match.next();
    return true;
  }
  // Probing: only the answer to the latest probe counts.
  if (next.prev() != rejected) return false;
  LogIndex to = std::min(rejected, hint);
  // The answer to the latest probe says the follower lacks entries it once acknowledged: its
  // log lost a tail (a torn or garbled write cut at restart; see file_storage.h). Start again
  // from what it has, or it would refuse every append forever. A stale answer that lands here
  // costs only a resend of entries the follower then acknowledges again; the commit index
  // never goes back.
  if (to < match) match = to;
  next = std::max(to.next(), match.next());
  probeSent = false;
  return true;
}

bool Progress::isPaused() const {
  switch (state) {
    case ProgressState::kProbe:
      return probeSent;
    case ProgressState::kReplicate:
      return inflights.full();
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

}  // namespace tessera::meta::raft
