// meta/watch_queue.h — the meta leader's queues of invalidations for mounts (coherence between
// mounts, DESIGN.md "Client and FUSE mount"): which sessions watch, what each must still hear
// of, and which batch may be sent now. Pure: no I/O, no clock. The MetaService keeps the
// watchers' capabilities (proto::Watcher), sends the batches this class hands out and reports
// how each call ended.
//
// The rules it keeps:
//   - A change is queued for every watching session but the one that made it: that mount
//     learned the new state from its own reply.
//   - At most one batch per session is in flight. What is queued meanwhile is coalesced (a set
//     of inodes, a set of entries: invalidating twice is invalidating once) and goes next.
//   - A queue longer than `maxQueued` inodes and entries collapses to `all` (the mount drops
//     everything it caches), which absorbs every change after it until it is sent.
//   - Every registration (the first, or a renewal with a possibly new capability) gets a new
//     generation. A batch that failed under the session's current generation drops the
//     watcher: the mount hears `continued = false` at its next registration and drops its
//     caches. A batch that failed under an older generation (the capability was replaced since,
//     say after a reconnect) is lost to the new one: `all` is queued for it instead.
//   - Soft state of the leader: clear() when leadership is lost; a new leader starts empty and
//     every mount registers again (continued = false).
// Not thread-safe: owned by the meta server's event loop (a member of MetaService).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "fs/types.h"

namespace tessera::meta {

class WatchQueue {
 public:
  // A directory entry: (parent inode, name).
  using Entry = std::pair<InodeId, std::string>;
  struct Batch {
    uint64_t generation = 0;  // of the registration it is sent under
    std::vector<InodeId> inodes;
    std::vector<Entry> entries;
    bool all = false;
  };
  struct Registered {
    uint64_t generation = 0;
    // Registered before, and nothing queued for it was lost since.
    bool continued = false;
  };
  static constexpr size_t kDefaultMaxQueued = 4096;

  explicit WatchQueue(size_t maxQueued = kDefaultMaxQueued) : maxQueued_(maxQueued) {}

  // Registers or renews `session`'s watcher, under a new generation. A renewal keeps what is
  // queued (and the batch in flight).
  Registered watch(SessionId session);
  // The session's watcher goes (its session expired), with what was queued for it.
  void forget(SessionId session);
  // Every watcher goes (leadership lost).
  void clear();

  // `origin` changed the attributes or data of `inodes` and the directory entries `entries`
  // (origin 0: nobody's mount, e.g. a repair): queue them for every other watcher.
  void changed(SessionId origin, const std::vector<InodeId>& inodes,
               const std::vector<Entry>& entries);

  // Sessions with something queued and no batch in flight, in session order.
  std::vector<SessionId> ready() const;
  // Takes what is queued for `session` as a batch, now in flight; nullopt if it has nothing
  // queued, a batch in flight already, or no watcher.
  std::optional<Batch> take(SessionId session);
  // The batch sent under `generation` was answered (`ok`), or its call failed. Returns false if
  // the watcher was dropped by it.
  bool done(SessionId session, uint64_t generation, bool ok);

  bool watching(SessionId session) const { return watchers_.count(session) > 0; }
  size_t watchers() const { return watchers_.size(); }
  // Inodes and entries queued for `session` (0 with `all`, or without a watcher).
  size_t queued(SessionId session) const;
  bool queuedAll(SessionId session) const;

 private:
  struct Watcher {
    uint64_t generation = 0;
    bool inFlight = false;
    bool all = false;
    std::set<InodeId> inodes;
    std::set<Entry> entries;
    bool empty() const { return !all && inodes.empty() && entries.empty(); }
  };
  void overflowIfFull(Watcher& w);

  size_t maxQueued_;
  uint64_t nextGeneration_ = 1;
  std::map<SessionId, Watcher> watchers_;
};

}  // namespace tessera::meta
