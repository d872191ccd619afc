#include <doctest/doctest.h>

#include <kj/async.h>

#include "client/range_lock.h"

using namespace tessera::client;

namespace {

struct Loop {
  kj::EventLoop loop;
  kj::WaitScope ws{loop};
};

}  // namespace

TEST_CASE("range lock: disjoint ranges are granted at once, overlapping ones wait their turn") {
  Loop l;
  RangeLock lock;
  auto a = lock.lock(1, 0, 100).wait(l.ws);
  auto b = lock.lock(1, 100, 200).wait(l.ws);  // touches, does not overlap
  auto other = lock.lock(2, 0, 100).wait(l.ws);  // another key
  auto c = lock.lock(1, 50, 150);
  CHECK_FALSE(c.poll(l.ws));
  a.release();
  CHECK_FALSE(c.poll(l.ws));  // still overlaps b
  b.release();
  REQUIRE(c.poll(l.ws));
  auto cg = c.wait(l.ws);
  CHECK(lock.heldOrWaiting() == 2);
  cg.release();
  other.release();
  CHECK(lock.heldOrWaiting() == 0);
}

TEST_CASE("range lock: waiters are granted in arrival order among overlapping requests") {
  Loop l;
  RangeLock lock;
  auto held = lock.lock(1, 0, 100).wait(l.ws);
  auto first = lock.lock(1, 0, 10);
  auto second = lock.lock(1, 5, 50);   // overlaps first: must wait for it
  auto third = lock.lock(1, 60, 70);   // overlaps only the held one
  held.release();
  REQUIRE(first.poll(l.ws));
  CHECK_FALSE(second.poll(l.ws));
  REQUIRE(third.poll(l.ws));
  auto f = first.wait(l.ws);
  f.release();
  REQUIRE(second.poll(l.ws));
}

TEST_CASE("range lock: a waiter that gives up does not keep the range") {
  Loop l;
  RangeLock lock;
  auto held = lock.lock(1, 0, 100).wait(l.ws);
  {
    auto abandoned = lock.lock(1, 0, 100);
    CHECK_FALSE(abandoned.poll(l.ws));
  }  // dropped while waiting
  held.release();
  auto next = lock.lock(1, 0, 100);
  REQUIRE(next.poll(l.ws));
  next.wait(l.ws).release();
  CHECK(lock.heldOrWaiting() == 0);
}
