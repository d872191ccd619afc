#include "client/fuse/notifier.h"

#include <cerrno>
#include <cstring>

#include "fs/log.h"

namespace tessera::client {

Notifier::Notifier(fuse_session* session, std::function<Known()> known)
    : session_(session), known_(std::move(known)), thread_([this] { run(); }) {}

Notifier::~Notifier() { stop(); }

void Notifier::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
    queuedInodes_.clear();
    queuedEntries_.clear();
    for (auto& [ino, waiter] : waiters_) waiter->fulfill();
    waiters_.clear();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Notifier::push(Item item) {
  if (item.entry) {
    if (!queuedEntries_.emplace(item.ino, item.name).second) return;
  } else {
    if (!queuedInodes_.insert(item.ino).second) return;
  }
  queue_.push_back(std::move(item));
}

void Notifier::invalInode(fuse_ino_t ino) {
  bool overflow = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    overflow = queue_.size() >= kMaxQueued;
    if (!overflow) push(Item{false, ino, {}});
  }
  if (overflow) return invalAll();
  wake_.notify_one();
}

void Notifier::invalEntry(fuse_ino_t parent, std::string name) {
  bool overflow = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    overflow = queue_.size() >= kMaxQueued;
    if (!overflow) push(Item{true, parent, std::move(name)});
  }
  if (overflow) return invalAll();
  wake_.notify_one();
}

void Notifier::invalAll() {
  // The snapshot is taken here, on the caller's thread, which owns what it describes.
  Known known = known_ ? known_() : Known{};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    // Everything is in the snapshot: what was queued before is part of it or no longer cached.
    queue_.clear();
    queuedInodes_.clear();
    queuedEntries_.clear();
    // Entries first: a path walk that meets a dropped entry looks it up again, and so learns
    // the inode's new attributes even before its own invalidation is through.
    for (auto& [parent, name] : known.entries) push(Item{true, parent, std::move(name)});
    for (fuse_ino_t ino : known.inodes) push(Item{false, ino, {}});
    // Who waited for an inode the kernel no longer holds has nothing left to wait for.
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      fuse_ino_t ino = it->first;
      it = waiters_.upper_bound(ino);
      settle(ino);
    }
  }
  wake_.notify_one();
}

kj::Promise<void> Notifier::dropped(fuse_ino_t ino) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_ || (current_ != ino && !queuedInodes_.count(ino))) return kj::READY_NOW;
  auto paf = kj::newPromiseAndCrossThreadFulfiller<void>();
  waiters_.emplace(ino, kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void Notifier::settle(fuse_ino_t ino) {
  if (current_ == ino || queuedInodes_.count(ino)) return;
  auto [from, to] = waiters_.equal_range(ino);
  for (auto it = from; it != to; ++it) it->second->fulfill();
  waiters_.erase(from, to);
}

uint64_t Notifier::calls() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_;
}

uint64_t Notifier::failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failures_;
}

void Notifier::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    if (item.entry) {
      queuedEntries_.erase({item.ino, item.name});
    } else {
      queuedInodes_.erase(item.ino);
      current_ = item.ino;
    }
    lock.unlock();
    // May block until the loop answers requests that hold the locks the kernel wants.
    int r = item.entry ? fuse_lowlevel_notify_inval_entry(session_, item.ino, item.name.c_str(),
                                                          item.name.size())
                       : fuse_lowlevel_notify_inval_inode(session_, item.ino, 0, 0);
    if (r != 0 && r != -ENOENT) {
      log::debug("kernel cache invalidation of ", item.entry ? "entry in " : "inode ", item.ino,
                 ": ", strerror(-r));
    }
    lock.lock();
    ++calls_;
    if (r != 0 && r != -ENOENT) ++failures_;
    if (!item.entry) {
      current_ = 0;
      settle(item.ino);
    }
  }
}

}  // namespace tessera::client
