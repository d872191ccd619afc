// The meta leader's invalidation queues (meta/watch_queue.h): a change goes to every watcher
// but its origin's, one batch per watcher is in flight and what queues meanwhile is coalesced,
// an overflowing queue collapses to `all`, and a failed call drops the watcher or, on a
// replaced registration, turns into `all` for the new one.
#include <doctest/doctest.h>

#include "meta/watch_queue.h"

using namespace tessera;
using namespace tessera::meta;

namespace {

const SessionId kA(1), kB(2), kC(3);
const InodeId kDir(1), kFile(7), kOther(8);

WatchQueue::Entry entry(InodeId parent, const char* name) { return {parent, name}; }

}  // namespace

TEST_CASE("watch queue: a change reaches every watcher but the one that made it") {
  WatchQueue q;
  CHECK(!q.watch(kA).continued);
  CHECK(!q.watch(kB).continued);
  CHECK(!q.watch(kC).continued);
  q.changed(kA, {kFile, kDir}, {entry(kDir, "f")});
  CHECK(q.ready() == std::vector<SessionId>{kB, kC});
  CHECK(!q.take(kA));
  auto b = q.take(kB);
  REQUIRE(b);
  CHECK(b->inodes == std::vector<InodeId>{kDir, kFile});
  REQUIRE(b->entries.size() == 1);
  CHECK(b->entries[0] == entry(kDir, "f"));
  CHECK(!b->all);
  // A change by nobody's mount (origin 0) goes to all.
  q.changed(SessionId(), {kOther}, {});
  CHECK(q.queued(kA) == 1);
}

TEST_CASE("watch queue: one batch in flight per watcher, what queues meanwhile is coalesced") {
  WatchQueue q;
  auto reg = q.watch(kB);
  q.changed(kA, {kFile}, {});
  auto first = q.take(kB);
  REQUIRE(first);
  CHECK(first->generation == reg.generation);
  // In flight: nothing more is handed out, however much queues.
  q.changed(kA, {kFile}, {entry(kDir, "x")});
  q.changed(kA, {kFile, kOther}, {entry(kDir, "x")});
  CHECK(q.ready().empty());
  CHECK(!q.take(kB));
  CHECK(q.queued(kB) == 3);  // kFile, kOther and one entry: duplicates merged
  CHECK(q.done(kB, first->generation, true));
  CHECK(q.ready() == std::vector<SessionId>{kB});
  auto second = q.take(kB);
  REQUIRE(second);
  CHECK(second->inodes == std::vector<InodeId>{kFile, kOther});
  CHECK(second->entries.size() == 1);
  CHECK(q.done(kB, second->generation, true));
  CHECK(q.ready().empty());
}

TEST_CASE("watch queue: a queue past its bound collapses to all, which absorbs later changes") {
  WatchQueue q(3);
  q.watch(kB);
  q.changed(kA, {InodeId(10), InodeId(11)}, {entry(kDir, "a")});
  CHECK(!q.queuedAll(kB));
  q.changed(kA, {InodeId(12)}, {});
  CHECK(q.queuedAll(kB));
  CHECK(q.queued(kB) == 0);
  q.changed(kA, {InodeId(13)}, {entry(kDir, "b")});
  CHECK(q.queued(kB) == 0);
  auto b = q.take(kB);
  REQUIRE(b);
  CHECK(b->all);
  CHECK(b->inodes.empty());
  CHECK(b->entries.empty());
  // After it went out, changes queue one by one again.
  CHECK(q.done(kB, b->generation, true));
  q.changed(kA, {InodeId(14)}, {});
  CHECK(!q.queuedAll(kB));
  CHECK(q.queued(kB) == 1);
}

TEST_CASE("watch queue: a failed call drops the watcher, its next registration is not continued") {
  WatchQueue q;
  auto reg = q.watch(kB);
  // Renewing an unbroken registration continues it, under a new generation.
  auto renewed = q.watch(kB);
  CHECK(renewed.continued);
  CHECK(renewed.generation != reg.generation);
  q.changed(kA, {kFile}, {});
  auto b = q.take(kB);
  REQUIRE(b);
  CHECK(b->generation == renewed.generation);
  CHECK(!q.done(kB, b->generation, false));
  CHECK(!q.watching(kB));
  q.changed(kA, {kFile}, {});
  CHECK(q.ready().empty());
  CHECK(!q.watch(kB).continued);
}

TEST_CASE("watch queue: a call that failed on a replaced registration becomes all for the new one") {
  WatchQueue q;
  q.watch(kB);
  q.changed(kA, {kFile}, {});
  auto b = q.take(kB);
  REQUIRE(b);
  // The mount registered again (a new connection, say) while the batch was out.
  CHECK(q.watch(kB).continued);
  q.changed(kA, {kOther}, {});
  CHECK(q.done(kB, b->generation, false));
  CHECK(q.watching(kB));
  auto again = q.take(kB);
  REQUIRE(again);
  CHECK(again->all);
}

TEST_CASE("watch queue: forget and clear drop watchers with what was queued for them") {
  WatchQueue q;
  q.watch(kB);
  q.watch(kC);
  q.changed(kA, {kFile}, {});
  q.forget(kB);
  CHECK(q.ready() == std::vector<SessionId>{kC});
  // A late answer for a forgotten watcher changes nothing.
  CHECK(!q.done(kB, 1, true));
  q.clear();
  CHECK(q.watchers() == 0);
  CHECK(q.ready().empty());
  CHECK(!q.watch(kC).continued);
}
