#include "client/range_lock.h"

#include <kj/debug.h>

namespace tessera::client {

bool RangeLock::overlaps(const Request& a, const std::vector<Range>& ranges) {
  for (const Range& x : a.ranges) {
    for (const Range& y : ranges) {
      if (x.lo < y.hi && y.lo < x.hi) return true;
    }
  }
  return false;
}

kj::Promise<RangeLock::Guard> RangeLock::lock(uint64_t key, std::vector<Range> ranges) {
  auto& q = queues_[key];
  uint64_t id = nextId_++;
  bool blocked = false;
  for (auto& r : q.requests) {
    if (overlaps(r, ranges)) {
      blocked = true;
      break;
    }
  }
  if (!blocked) {
    q.requests.push_back(Request{id, kj::mv(ranges), true, {}});
    return Guard(this, key, id);
  }
  auto paf = kj::newPromiseAndFulfiller<Guard>();
  q.requests.push_back(Request{id, kj::mv(ranges), false, kj::mv(paf.fulfiller)});
  return kj::mv(paf.promise);
}

void RangeLock::unlock(uint64_t key, uint64_t id) {
  auto it = queues_.find(key);
  KJ_ASSERT(it != queues_.end(), "unlock of a key that holds no lock");
  auto& q = it->second;
  for (auto r = q.requests.begin(); r != q.requests.end(); ++r) {
    if (r->granted && r->id == id) {
      q.requests.erase(r);
      break;
    }
  }
  grantWaiters(key, q);
  if (q.requests.empty()) queues_.erase(it);
}

// A waiter is granted when no request ahead of it (granted or not) overlaps it: arrival order
// among overlapping requests, so no writer starves; and a request waits only for earlier ones,
// so no two wait for each other. The Guard travels inside the promise, so a caller that drops
// the promise after the grant gives the ranges back with it.
void RangeLock::grantWaiters(uint64_t key, Queue& q) {
  auto r = q.requests.begin();
  while (r != q.requests.end()) {
    bool blocked = r->granted;
    for (auto before = q.requests.begin(); !blocked && before != r; ++before) {
      blocked = overlaps(*before, r->ranges);
    }
    if (blocked) {
      ++r;
      continue;
    }
    if (!r->fulfiller->isWaiting()) {
      r = q.requests.erase(r);  // its caller gave up waiting
      continue;
    }
    r->granted = true;
    auto fulfiller = kj::mv(r->fulfiller);
    fulfiller->fulfill(Guard(this, key, r->id));
    ++r;
  }
}

size_t RangeLock::heldOrWaiting() const {
  size_t n = 0;
  for (auto& [key, q] : queues_) n += q.requests.size();
  return n;
}

}  // namespace tessera::client
