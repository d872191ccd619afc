#include <doctest/doctest.h>

#include "client/data_path.h"
#include "client/stripe.h"

using namespace tessera;
using namespace tessera::client;

TEST_CASE("stripe: ec(4,2) maps chunk offsets to data shards cell by cell") {
  Layout l = Layout::ec(4, 2);
  CHECK(stripeWidth(l) == 4 * kCellSize);
  Place p = placeOf(l, 0);
  CHECK(p.shard == 0);
  CHECK(p.offset == 0);
  p = placeOf(l, kCellSize + 5);  // second cell of the first stripe
  CHECK(p.shard == 1);
  CHECK(p.offset == 5);
  p = placeOf(l, 4 * kCellSize + 7);  // first cell of the second stripe
  CHECK(p.shard == 0);
  CHECK(p.offset == kCellSize + 7);
  p = placeOf(l, 7 * kCellSize + 9);  // last cell of the second stripe
  CHECK(p.shard == 3);
  CHECK(p.offset == kCellSize + 9);
}

TEST_CASE("stripe: replicas keep chunk offsets") {
  Layout l = Layout::replica(3);
  Place p = placeOf(l, 12345);
  CHECK(p.shard == 0);
  CHECK(p.offset == 12345);
  auto e = dataExtents(l, 100, 5000);
  REQUIRE(e.size() == 1);
  CHECK(e[0].lo == 100);
  CHECK(e[0].hi == 5100);
  auto rows = rowExtent(l, 100, 5000);
  CHECK(rows.lo == 0);
  CHECK(rows.hi == 8192);
}

TEST_CASE("stripe: a range spanning stripes lands on each shard as one contiguous extent") {
  Layout l = Layout::ec(4, 2);
  // From the middle of cell 2 of stripe 0 to the middle of cell 1 of stripe 2.
  uint64_t off = 2 * kCellSize + 1000, end = 9 * kCellSize + 500;
  auto e = dataExtents(l, off, end - off);
  REQUIRE(e.size() == 4);
  CHECK(e[0].lo == kCellSize);          // stripe 1 and stripe 2 cell 0
  CHECK(e[0].hi == 3 * kCellSize);
  CHECK(e[1].lo == kCellSize);          // stripe 1 whole, stripe 2 head
  CHECK(e[1].hi == 2 * kCellSize + 500);
  CHECK(e[2].lo == 1000);               // stripe 0 tail, stripe 1 whole
  CHECK(e[2].hi == 2 * kCellSize);
  CHECK(e[3].lo == 0);                  // stripe 0 whole, stripe 1 whole
  CHECK(e[3].hi == 2 * kCellSize);
  auto rows = rowExtent(l, off, end - off);
  CHECK(rows.lo == 0);
  CHECK(rows.hi == 3 * kCellSize);
  // Every byte is placed exactly once, in order.
  uint64_t next = off;
  forEachRun(l, off, end - off, [&](uint64_t chunkOff, int shard, uint64_t shardOff, uint64_t n) {
    CHECK(chunkOff == next);
    Place p = placeOf(l, chunkOff);
    CHECK(p.shard == shard);
    CHECK(p.offset == shardOff);
    CHECK(n <= kCellSize - chunkOff % kCellSize);
    next += n;
  });
  CHECK(next == end);
}

TEST_CASE("stripe: a small write touches only its own rows, widened to whole blocks") {
  Layout l = Layout::ec(4, 2);
  auto rows = rowExtent(l, kCellSize + 4096 + 10, 100);
  CHECK(rows.lo == 4096);
  CHECK(rows.hi == 8192);
  auto e = dataExtents(l, kCellSize + 4096 + 10, 100);
  CHECK(e[0].empty());
  CHECK(e[1].lo == 4096 + 10);
  CHECK(e[2].empty());
  CHECK(e[3].empty());
}

TEST_CASE("stripe: ec(3,2) stripes do not divide a chunk, and the last stripe is partial") {
  Layout l = Layout::ec(3, 2);
  uint64_t last = kChunkSize - 1;
  Place p = placeOf(l, last);
  uint64_t stripe = last / (3 * kCellSize);
  CHECK(p.offset == stripe * kCellSize + last % kCellSize);
  CHECK(p.offset < kChunkSize / 3 + kCellSize);
}

TEST_CASE("fresh chunk: written ranges merge and overlap checks see them") {
  FreshChunk f;
  CHECK_FALSE(f.overlaps(0, 0, 4096));
  f.add(1, 4096, 8192);
  f.add(1, 8192, 12288);  // touching: merges
  f.add(1, 65536, 69632);
  REQUIRE(f.written.size() == 2);
  CHECK(f.written[1].size() == 2);
  CHECK(f.written[1][0].lo == 4096);
  CHECK(f.written[1][0].hi == 12288);
  CHECK(f.overlaps(1, 0, 4097));
  CHECK_FALSE(f.overlaps(1, 0, 4096));
  CHECK_FALSE(f.overlaps(1, 12288, 65536));
  CHECK(f.overlaps(1, 69000, 70000));
  CHECK_FALSE(f.overlaps(0, 4096, 8192));
  CHECK_FALSE(f.overlaps(7, 0, 1 << 20));
}
