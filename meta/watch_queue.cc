#include "meta/watch_queue.h"

namespace tessera::meta {

WatchQueue::Registered WatchQueue::watch(SessionId session) {
  auto [it, added] = watchers_.try_emplace(session);
  it->second.generation = nextGeneration_++;
  return Registered{it->second.generation, !added};
}

void WatchQueue::forget(SessionId session) { watchers_.erase(session); }

void WatchQueue::clear() { watchers_.clear(); }

void WatchQueue::overflowIfFull(Watcher& w) {
  if (w.inodes.size() + w.entries.size() <= maxQueued_) return;
  // The mount drops everything instead: cheaper to send than a long list, and memory here stays
  // bounded however far behind a mount is.
  w.all = true;
  w.inodes.clear();
  w.entries.clear();
}

void WatchQueue::changed(SessionId origin, const std::vector<InodeId>& inodes,
                         const std::vector<Entry>& entries) {
  for (auto& [session, w] : watchers_) {
    if (session == origin || w.all) continue;
    w.inodes.insert(inodes.begin(), inodes.end());
    w.entries.insert(entries.begin(), entries.end());
    overflowIfFull(w);
  }
}

std::vector<SessionId> WatchQueue::ready() const {
  std::vector<SessionId> out;
  for (auto& [session, w] : watchers_) {
    if (!w.inFlight && !w.empty()) out.push_back(session);
  }
  return out;
}

std::optional<WatchQueue::Batch> WatchQueue::take(SessionId session) {
  auto it = watchers_.find(session);
  if (it == watchers_.end() || it->second.inFlight || it->second.empty()) return std::nullopt;
  Watcher& w = it->second;
  Batch b;
  b.generation = w.generation;
  b.all = w.all;
  b.inodes.assign(w.inodes.begin(), w.inodes.end());
  b.entries.assign(w.entries.begin(), w.entries.end());
  w.all = false;
  w.inodes.clear();
  w.entries.clear();
  w.inFlight = true;
  return b;
}

bool WatchQueue::done(SessionId session, uint64_t generation, bool ok) {
  auto it = watchers_.find(session);
  if (it == watchers_.end()) return false;
  Watcher& w = it->second;
  w.inFlight = false;
  if (ok) return true;
  if (generation == w.generation) {
    // The mount's current capability failed: it can no longer be told. Its next registration
    // answers continued = false, so it drops its caches then.
    watchers_.erase(it);
    return false;
  }
  // Lost on a capability replaced since: the new one must hear that something was lost.
  w.all = true;
  w.inodes.clear();
  w.entries.clear();
  return true;
}

size_t WatchQueue::queued(SessionId session) const {
  auto it = watchers_.find(session);
  if (it == watchers_.end()) return 0;
  return it->second.inodes.size() + it->second.entries.size();
}

bool WatchQueue::queuedAll(SessionId session) const {
  auto it = watchers_.find(session);
  return it != watchers_.end() && it->second.all;
}

}  // namespace tessera::meta
