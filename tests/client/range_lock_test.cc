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

TEST_CASE("range lock: several ranges are one request — a writer in between cannot deadlock it") {
  Loop l;
  RangeLock lock;
  auto w = lock.lock(1, 200, 300).wait(l.ws);   // a writer holds the second range
  auto between = lock.lock(1, 0, 300);           // arrives next, overlaps both ranges
  auto both = lock.lock(1, {{0, 100}, {200, 300}});
  CHECK_FALSE(between.poll(l.ws));
  CHECK_FALSE(both.poll(l.ws));
  w.release();
  // Arrival order: `between` first, then the two ranges together.
  REQUIRE(between.poll(l.ws));
  CHECK_FALSE(both.poll(l.ws));
  between.wait(l.ws).release();
  REQUIRE(both.poll(l.ws));
  auto g = both.wait(l.ws);
  // Held as one: a range between the two is free, either of the two is not.
  CHECK(lock.lock(1, 100, 200).poll(l.ws));
  auto second = lock.lock(1, 250, 260);
  CHECK_FALSE(second.poll(l.ws));
  g.release();
  REQUIRE(second.poll(l.ws));
  second.wait(l.ws).release();
  CHECK(lock.heldOrWaiting() == 0);
}
