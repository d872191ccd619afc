// client/range_lock.h — asynchronous exclusive locks on byte ranges of a keyed object (a chunk's
// shard offsets), granted in arrival order among overlapping requests. Writes that rewrite
// parity lock the rows they touch, so two read-modify-writes of one row never interleave;
// disjoint rows proceed in parallel. Not thread-safe: lives on one event loop.
#pragma once
#include <cstdint>
#include <list>
#include <map>

#include <kj/async.h>

namespace tessera::client {

class RangeLock {
 public:
  class Guard {
   public:
    Guard() = default;
    Guard(RangeLock* lock, uint64_t key, uint64_t lo, uint64_t hi)
        : lock_(lock), key_(key), lo_(lo), hi_(hi) {}
    Guard(Guard&& other) noexcept { *this = kj::mv(other); }
    Guard& operator=(Guard&& other) noexcept {
      release();
      lock_ = other.lock_;
      key_ = other.key_;
      lo_ = other.lo_;
      hi_ = other.hi_;
      other.lock_ = nullptr;
      return *this;
    }
    ~Guard() { release(); }
    void release() {
      if (lock_) lock_->unlock(key_, lo_, hi_);
      lock_ = nullptr;
    }

   private:
    RangeLock* lock_ = nullptr;
    uint64_t key_ = 0, lo_ = 0, hi_ = 0;
  };

  // Resolves once [lo, hi) of `key` is ours; the Guard gives it back.
  kj::Promise<Guard> lock(uint64_t key, uint64_t lo, uint64_t hi);

  size_t heldOrWaiting() const;

 private:
  struct Request {
    uint64_t lo, hi;
    bool granted = false;
    kj::Own<kj::PromiseFulfiller<Guard>> fulfiller;  // null once granted
  };
  struct Queue {
    std::list<Request> requests;  // arrival order; granted ones stay until unlocked
  };
  static bool overlaps(const Request& r, uint64_t lo, uint64_t hi) { return r.lo < hi && lo < r.hi; }
  void unlock(uint64_t key, uint64_t lo, uint64_t hi);
  void grantWaiters(uint64_t key, Queue& q);

  std::map<uint64_t, Queue> queues_;
};

}  // namespace tessera::client
