#include "meta/lease_recall.h"

namespace tessera::meta {

bool LeaseRecalls::recall(InodeId inode, uint64_t index, SessionId holder, uint64_t epoch,
                          kj::TimePoint now) {
  auto key = std::make_pair(inode, index);
  auto it = recalls_.find(key);
  if (it != recalls_.end()) {
    Recall& r = it->second;
    if (inForce(r, now)) {
      // The same holder (the same grant): still recalled. A new grant (the writer came back
      // after the hold time) is the cool-down's business below.
      if (r.holder == holder && r.epoch == epoch) return true;
    }
    // Ended without a move less than a hold time ago: let the writer work for a while.
    if (now - r.since < 2 * holdMs_ * kj::MILLISECONDS) return false;
  }
  recalls_[key] = Recall{holder, epoch, now, false};
  return true;
}

bool LeaseRecalls::holding(InodeId inode, uint64_t index, kj::TimePoint now) const {
  auto it = recalls_.find({inode, index});
  return it != recalls_.end() && inForce(it->second, now);
}

std::vector<RecalledLease> LeaseRecalls::recalledFrom(SessionId session, kj::TimePoint now) const {
  std::vector<RecalledLease> out;
  for (auto& [key, r] : recalls_) {
    if (r.holder == session && inForce(r, now)) {
      out.push_back(RecalledLease{key.first, key.second, r.epoch});
    }
  }
  return out;
}

std::vector<std::pair<InodeId, uint64_t>> LeaseRecalls::inForce(kj::TimePoint now) const {
  std::vector<std::pair<InodeId, uint64_t>> out;
  for (auto& [key, r] : recalls_) {
    if (inForce(r, now)) out.push_back(key);
  }
  return out;
}

size_t LeaseRecalls::countInForce(kj::TimePoint now) const {
  size_t n = 0;
  for (auto& [key, r] : recalls_) n += inForce(r, now) ? 1 : 0;
  return n;
}

void LeaseRecalls::finished(InodeId inode, uint64_t index, bool moved) {
  auto it = recalls_.find({inode, index});
  if (it == recalls_.end()) return;
  // A move that happened needs no cool-down: the chunk may be recalled for its next move.
  if (moved) {
    recalls_.erase(it);
  } else {
    it->second.ended = true;
  }
}

void LeaseRecalls::expire(kj::TimePoint now) {
  std::erase_if(recalls_, [&](const auto& entry) {
    return now - entry.second.since >= 2 * holdMs_ * kj::MILLISECONDS;
  });
}

}  // namespace tessera::meta
