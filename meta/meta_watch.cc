// The MetaService's coherence part: mounts register a proto::Watcher, and after a change is
// applied the leader pushes invalidations to every other mount (meta/watch_queue.h decides
// what goes where; this file holds the capabilities and makes the calls). Sent after the
// reply, batched: a change costs the mount that made it no extra round trip.
#include "fs/log.h"
#include "fs/rpc.h"
#include "fs/wire.h"
#include "meta/meta_service.h"

namespace tessera::meta {

kj::Promise<void> MetaService::watch(WatchContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  SessionId session(p.getSession());
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), results.initError());
    return kj::READY_NOW;
  }
  if (!p.hasWatcher()) {
    toWire(Error{Errc::kInvalid, "watch without a watcher"}, results.initError());
    return kj::READY_NOW;
  }
  // Only a live session watches: one that expired has its mount open a new one first.
  auto known = sessions_.find(session);
  if (known == sessions_.end() || known->second.expiring) {
    auto exists = ns_.hasSession(session);
    if (!exists) {
      toWire(exists.error(), results.initError());
      return kj::READY_NOW;
    }
    if (!*exists || known != sessions_.end()) {
      toWire(Error{Errc::kStale, "session " + std::to_string(session.value) + " expired"},
             results.initError());
      return kj::READY_NOW;
    }
  }
  if (known == sessions_.end()) known = sessions_.emplace(session, SessionState{}).first;
  known->second.lastContact = timer_.now();
  auto reg = watchQueue_.watch(session);
  watchers_.insert_or_assign(session, p.getWatcher());
  if (!reg.continued) log::debug("session ", session.value, " watches for invalidations");
  okToWire(results.initError());
  results.setContinued(reg.continued);
  // What was queued while a replaced capability was failing goes out on the new one.
  scheduleWatchFlush();
  return kj::READY_NOW;
}

void MetaService::invalidate(SessionId origin, std::vector<InodeId> inodes,
                             std::vector<WatchQueue::Entry> entries) {
  if (watchQueue_.watchers() == 0 || !raft_.leaderReady()) return;
  watchQueue_.changed(origin, inodes, entries);
  scheduleWatchFlush();
}

void MetaService::scheduleWatchFlush() {
  if (watchFlush_) return;
  watchFlush_ = true;
  tasks_.add(kj::evalLater([this] {
    watchFlush_ = false;
    flushWatchers();
  }));
}

void MetaService::flushWatchers() {
  if (!raft_.leaderReady()) return dropWatchers();
  for (SessionId session : watchQueue_.ready()) {
    auto cap = watchers_.find(session);
    if (cap == watchers_.end()) {
      watchQueue_.forget(session);
      continue;
    }
    auto batch = watchQueue_.take(session);
    if (!batch) continue;
    auto req = cap->second.invalidateRequest();
    auto inodes = req.initInodes(uint32_t(batch->inodes.size()));
    for (size_t i = 0; i < batch->inodes.size(); ++i) inodes.set(i, batch->inodes[i].value);
    auto entries = req.initEntries(uint32_t(batch->entries.size()));
    for (size_t i = 0; i < batch->entries.size(); ++i) {
      entries[i].setParent(batch->entries[i].first.value);
      entries[i].setName(batch->entries[i].second);
    }
    req.setAll(batch->all);
    uint64_t generation = batch->generation;
    auto sent = timer_.timeoutAfter(int64_t(config_.watcherTimeoutMs) * kj::MILLISECONDS,
                                    req.send().ignoreResult());
    tasks_.add(sent.then([] { return Status(); },
                         [](kj::Exception&& e) -> Status {
                           return errorFromException(e, "invalidate");
                         })
                   .then([this, session, generation](Status s) {
                     if (!s) {
                       log::info("session ", session.value, ": its watcher failed (",
                                 s.error().toString().c_str(), ")");
                     }
                     if (!watchQueue_.done(session, generation, s.ok())) {
                       watchers_.erase(session);
                       return;
                     }
                     // What queued while this batch was out goes next.
                     scheduleWatchFlush();
                   }));
  }
}

void MetaService::dropWatchers() {
  watchQueue_.clear();
  // Calls still out finish on their own; done() then finds no watcher.
  watchers_.clear();
}

}  // namespace tessera::meta
