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

TEST_CASE("stripe: a punch frees the whole ec stripes it covers and zeroes the rest") {
  Layout l = Layout::ec(4, 2);
  const uint64_t w = 4 * kCellSize;  // one stripe of chunk bytes: kCellSize of each shard
  SUBCASE("inside one stripe: nothing to free, all of it written as zeros") {
    auto p = punchPlan(l, 1000, 5000);
    CHECK(p.head.lo == 1000);
    CHECK(p.head.hi == 6000);
    CHECK(p.rows.empty());
    CHECK(p.tail.empty());
  }
  SUBCASE("across two partial stripes without a whole one") {
    auto p = punchPlan(l, w - 10, 20);
    CHECK(p.head.lo == w - 10);
    CHECK(p.head.hi == w + 10);
    CHECK(p.rows.empty());
    CHECK(p.tail.empty());
  }
  SUBCASE("unaligned ends around whole stripes") {
    auto p = punchPlan(l, w + 100, 3 * w);  // stripes 2 and 3 whole, 1 and 4 partly
    CHECK(p.head.lo == w + 100);
    CHECK(p.head.hi == 2 * w);
    CHECK(p.rows.lo == 2 * kCellSize);
    CHECK(p.rows.hi == 4 * kCellSize);
    CHECK(p.tail.lo == 4 * w);
    CHECK(p.tail.hi == 4 * w + 100);
  }
  SUBCASE("aligned: only rows") {
    auto p = punchPlan(l, 0, kChunkSize);
    CHECK(p.head.empty());
    CHECK(p.tail.empty());
    CHECK(p.rows.lo == 0);
    CHECK(p.rows.hi == kChunkSize / 4);  // every byte of each data and parity shard
  }
  SUBCASE("the freed rows hold no byte outside the range") {
    for (uint64_t off : {uint64_t(0), uint64_t(4096), w - 1, w, 3 * w + 77}) {
      for (uint64_t len : {uint64_t(1), w, 2 * w + 5, 5 * w}) {
        CAPTURE(off);
        CAPTURE(len);
        auto p = punchPlan(l, off, len);
        uint64_t covered = p.head.hi - p.head.lo + p.tail.hi - p.tail.lo;
        if (!p.rows.empty()) {
          // Each row of data shard j holds chunk bytes stripe * w + j * cell + (x % cell).
          for (uint64_t x = p.rows.lo; x < p.rows.hi; x += kBlockSize) {
            for (int j = 0; j < 4; ++j) {
              uint64_t chunkOff = x / kCellSize * w + j * kCellSize + x % kCellSize;
              CHECK(chunkOff >= off);
              CHECK(chunkOff + kBlockSize <= off + len);
            }
          }
          covered += (p.rows.hi - p.rows.lo) * 4;
          CHECK(p.head.hi == p.rows.lo * 4);
          CHECK(p.tail.lo == p.rows.hi * 4);
        }
        CHECK(covered == len);
      }
    }
  }
}

TEST_CASE("stripe: a punch frees the whole blocks of a replica chunk") {
  Layout l = Layout::replica(3);
  auto p = punchPlan(l, 1000, 5000);  // no whole block in [1000, 6000): all written as zeros
  CHECK(p.head.lo == 1000);
  CHECK(p.head.hi == 6000);
  CHECK(p.rows.empty());
  CHECK(p.tail.empty());
  p = punchPlan(l, 1000, 10000);
  CHECK(p.head.hi == 4096);
  CHECK(p.rows.lo == 4096);
  CHECK(p.rows.hi == 8192);
  CHECK(p.tail.lo == 8192);
  CHECK(p.tail.hi == 11000);
  p = punchPlan(l, 8192, 4096);
  CHECK(p.head.empty());
  CHECK(p.rows.lo == 8192);
  CHECK(p.rows.hi == 12288);
  CHECK(p.tail.empty());
}

TEST_CASE("stripe: a reservation covers what writes inside its range can touch on every shard") {
  SUBCASE("a whole ec(4,2) chunk: a quarter of it on every shard") {
    auto e = shardExtents(Layout::ec(4, 2), 0, kChunkSize);
    REQUIRE(e.size() == 6);
    for (const Extent& x : e) {
      CHECK(x.lo == 0);
      CHECK(x.hi == kChunkSize / 4);
    }
  }
  SUBCASE("a whole ec(3,2) chunk: the partial last row is on data shard 0 and the parity") {
    auto e = shardExtents(Layout::ec(3, 2), 0, kChunkSize);
    REQUIRE(e.size() == 5);
    CHECK(e[0].hi == 342 * kCellSize);
    CHECK(e[1].hi == 341 * kCellSize);
    CHECK(e[2].hi == 341 * kCellSize);
    CHECK(e[3].hi == 342 * kCellSize);
    CHECK(e[4].hi == 342 * kCellSize);
    for (const Extent& x : e) CHECK(x.lo == 0);
  }
  SUBCASE("an unaligned ec(4,2) range: data shards their blocks, parity the rows") {
    // From 100 bytes into cell 1 of stripe 0 to 5000 bytes into cell 0 of stripe 2.
    uint64_t off = kCellSize + 100, end = 8 * kCellSize + 5000;
    auto e = shardExtents(Layout::ec(4, 2), off, end - off);
    REQUIRE(e.size() == 6);
    CHECK(e[0].lo == kCellSize);  // stripes 1 and the head of 2
    CHECK(e[0].hi == 2 * kCellSize + 8192);
    CHECK(e[1].lo == 0);  // from block 0 of stripe 0 (byte 100 is in it)
    CHECK(e[1].hi == 2 * kCellSize);
    CHECK(e[2].lo == 0);
    CHECK(e[2].hi == 2 * kCellSize);
    CHECK(e[3].lo == 0);
    CHECK(e[3].hi == 2 * kCellSize);
    for (int j = 4; j < 6; ++j) {
      CHECK(e[j].lo == 0);
      CHECK(e[j].hi == 2 * kCellSize + 8192);
    }
  }
  SUBCASE("a small range inside one cell touches one data shard and the parity") {
    auto e = shardExtents(Layout::ec(4, 2), 2 * kCellSize + 10, 100);
    CHECK(e[0].empty());
    CHECK(e[1].empty());
    CHECK(e[2].lo == 0);
    CHECK(e[2].hi == kBlockSize);
    CHECK(e[3].empty());
    CHECK(e[4].lo == 0);
    CHECK(e[5].hi == kBlockSize);
  }
  SUBCASE("replica(3): the range widened to blocks on every copy") {
    auto e = shardExtents(Layout::replica(3), 100, 5000);
    REQUIRE(e.size() == 3);
    for (const Extent& x : e) {
      CHECK(x.lo == 0);
      CHECK(x.hi == 8192);
    }
  }
}
