// client/fuse/notifier.h — tells the kernel to drop what it caches of this mount's files
// (fuse_lowlevel_notify_inval_inode / _inval_entry), on a thread of its own.
//
// Why a thread: a notification is a write to /dev/fuse that the kernel may block on a lock
// (an inode's, a page's, a directory's) held by a request that waits for our reply — and the
// mount answers requests on its one event loop. Called on that loop, a notification could wait
// for itself. So the loop only queues; the notifier thread makes the kernel calls while the
// loop keeps answering.
//
// invalInode drops the inode's attributes and its page cache (data); invalEntry drops the
// directory entry (the next path walk looks the name up again); invalAll does both for
// everything the kernel may cache long (the `known` snapshot given at construction, taken on
// the caller's thread when invalAll is called). What the kernel no longer knows (ENOENT) is
// fine: nothing to drop. Queued invalidations are coalesced (an inode queued twice is dropped
// once); a queue past kMaxQueued collapses into invalAll.
//
// Thread-safety: invalInode, invalEntry, invalAll and dropped are called on the mount's event
// loop (the thread that owns the `known` snapshot); the kernel calls happen on the notifier
// thread, which resolves dropped()'s promises across threads.
#pragma once
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>
#include <kj/async.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tessera::client {

class Notifier {
 public:
  // What the kernel may hold with a long timeout: its inodes and its directory entries.
  struct Known {
    std::vector<fuse_ino_t> inodes;
    std::vector<std::pair<fuse_ino_t, std::string>> entries;
  };
  static constexpr size_t kMaxQueued = 100'000;

  // `session` (mounted) must outlive the notifier; `known` is called by invalAll.
  Notifier(fuse_session* session, std::function<Known()> known);
  // Stops the thread; what is still queued is dropped.
  ~Notifier();

  void invalInode(fuse_ino_t ino);
  void invalEntry(fuse_ino_t parent, std::string name);
  void invalAll();
  // Resolves once the kernel has dropped what it caches of `ino` as queued so far: at once if
  // no invalidation of it is queued or under way. (Also when the notifier stops.)
  kj::Promise<void> dropped(fuse_ino_t ino);
  // Stops the thread (waits for the kernel call under way); later calls do nothing.
  void stop();

  // Kernel calls made so far, and those the kernel refused with something else than ENOENT.
  uint64_t calls() const;
  uint64_t failures() const;

 private:
  struct Item {
    bool entry = false;
    fuse_ino_t ino = 0;  // the inode, or the entry's parent
    std::string name;
  };
  void push(Item item);  // with mu_ held
  // Resolves the dropped() promises of `ino` if nothing of it is queued or under way; with mu_
  // held.
  void settle(fuse_ino_t ino);
  void run();

  fuse_session* session_;
  std::function<Known()> known_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Item> queue_;
  std::set<fuse_ino_t> queuedInodes_;
  std::set<std::pair<fuse_ino_t, std::string>> queuedEntries_;
  fuse_ino_t current_ = 0;  // the inode whose kernel call is under way, 0 if none
  std::multimap<fuse_ino_t, kj::Own<kj::CrossThreadPromiseFulfiller<void>>> waiters_;
  bool stopping_ = false;
  uint64_t calls_ = 0, failures_ = 0;
  std::thread thread_;  // last: starts once the rest is built
};

}  // namespace tessera::client
