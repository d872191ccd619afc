// Lease recalls (meta/lease_recall.h): a recall holds grants back for at most its hold time,
// is heard by its holder only, ends with the move, and is not repeated at once after it
// lapsed without one.
#include <doctest/doctest.h>

#include "meta/lease_recall.h"

using namespace tessera;
using namespace tessera::meta;

namespace {

kj::TimePoint at(int64_t ms) { return kj::origin<kj::TimePoint>() + ms * kj::MILLISECONDS; }

const InodeId kFile(7);
const SessionId kWriter(3), kOther(4);

}  // namespace

TEST_CASE("lease recalls: held back for the hold time, heard by the holder only") {
  LeaseRecalls r(1'000);
  CHECK(!r.holding(kFile, 0, at(0)));
  CHECK(r.recall(kFile, 0, kWriter, 5, at(0)));
  CHECK(r.holding(kFile, 0, at(500)));
  CHECK(!r.holding(kFile, 1, at(500)));
  auto heard = r.recalledFrom(kWriter, at(500));
  REQUIRE(heard.size() == 1);
  CHECK(heard[0].inode == kFile);
  CHECK(heard[0].index == 0);
  CHECK(heard[0].epoch == 5);
  CHECK(r.recalledFrom(kOther, at(500)).empty());
  CHECK(r.inForce(at(500)).size() == 1);
  // Asked again within the hold time: still the same recall.
  CHECK(r.recall(kFile, 0, kWriter, 5, at(800)));
  // Past the hold time writers get the chunk again, and it is not recalled for a while.
  CHECK(!r.holding(kFile, 0, at(1'000)));
  CHECK(r.recalledFrom(kWriter, at(1'000)).empty());
  CHECK(!r.recall(kFile, 0, kWriter, 6, at(1'500)));
  CHECK(!r.holding(kFile, 0, at(1'500)));
  // After the cool-down, a new recall.
  r.expire(at(2'000));
  CHECK(r.size() == 0);
  CHECK(r.recall(kFile, 0, kWriter, 6, at(2'000)));
  CHECK(r.holding(kFile, 0, at(2'100)));
}

TEST_CASE("lease recalls: a finished move lets writers in at once — a failed one cools down") {
  LeaseRecalls r(1'000);
  REQUIRE(r.recall(kFile, 0, kWriter, 5, at(0)));
  r.finished(kFile, 0, true);
  CHECK(!r.holding(kFile, 0, at(10)));
  // Moved: the next move of the chunk may recall it right away.
  CHECK(r.recall(kFile, 0, kWriter, 6, at(20)));
  r.finished(kFile, 0, false);
  CHECK(!r.holding(kFile, 0, at(30)));
  CHECK(!r.recall(kFile, 0, kWriter, 7, at(40)));
  CHECK(r.recall(kFile, 0, kWriter, 7, at(2'100)));
  r.clear();
  CHECK(!r.holding(kFile, 0, at(2'200)));
}
