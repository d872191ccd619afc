// client/range_lock.h — asynchronous exclusive locks on byte ranges of a keyed object (a chunk's
// shard offsets), granted in arrival order among overlapping requests. Writes that rewrite
// parity lock the rows they touch, so two read-modify-writes of one row never interleave;
// disjoint rows proceed in parallel. Not thread-safe: lives on one event loop.
#pragma once
#include <cstdint>
#include <list>
#include <map>
#include <vector>

#include <kj/async.h>

namespace tessera::client {

class RangeLock {
 public:
  struct Range {
    uint64_t lo, hi;
  };
  class Guard {
   public:
    Guard() = default;
    Guard(RangeLock* lock, uint64_t key, uint64_t id) : lock_(lock), key_(key), id_(id) {}
    Guard(Guard&& other) noexcept { *this = kj::mv(other); }
    Guard& operator=(Guard&& other) noexcept {
      release();
      lock_ = other.lock_;
      key_ = other.key_;
      id_ = other.id_;
      other.lock_ = nullptr;
      return *this;
    }
    ~Guard() { release(); }
    void release() {
      if (lock_) lock_->unlock(key_, id_);
      lock_ = nullptr;
    }

   private:
    RangeLock* lock_ = nullptr;
    uint64_t key_ = 0, id_ = 0;
  };

  // Resolves once [lo, hi) of `key` is ours; the Guard gives it back.
  kj::Promise<Guard> lock(uint64_t key, uint64_t lo, uint64_t hi) { return lock(key, {Range{lo, hi}}); }
  // All of `ranges` at once, as one request: granted when no earlier request overlaps any of
  // them. (Taking several ranges one request at a time could deadlock: a request that came
  // in between and overlaps two of them waits for the first while the second waits for it.)
  kj::Promise<Guard> lock(uint64_t key, std::vector<Range> ranges);

  size_t heldOrWaiting() const;

 private:
  struct Request {
    uint64_t id;
    std::vector<Range> ranges;
    bool granted = false;
    kj::Own<kj::PromiseFulfiller<Guard>> fulfiller;  // null once granted
  };
  struct Queue {
    std::list<Request> requests;  // arrival order; granted ones stay until unlocked
  };
  static bool overlaps(const Request& a, const std::vector<Range>& ranges);
  void unlock(uint64_t key, uint64_t id);
  void grantWaiters(uint64_t key, Queue& q);

  std::map<uint64_t, Queue> queues_;
  uint64_t nextId_ = 1;
};

}  // namespace tessera::client
