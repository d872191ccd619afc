#include <doctest/doctest.h>

#include "fs/types.h"

using namespace tessera;

TEST_CASE("policy: ec(k,m) and replica(n) parse and print back") {
  auto ec = Layout::parse("ec(4,2)");
  REQUIRE(ec.ok());
  CHECK(ec->k == 4);
  CHECK(ec->m == 2);
  CHECK(ec->isEc());
  CHECK(ec->toString() == "ec(4,2)");
  auto spaced = Layout::parse(" ec( 8 , 3 ) ");
  REQUIRE(spaced.ok());
  CHECK(spaced->toString() == "ec(8,3)");
  auto rep = Layout::parse("replica(3)");
  REQUIRE(rep.ok());
  CHECK(rep->shards() == 3);
  CHECK(rep->m == 2);
  CHECK(rep->toString() == "replica(3)");
}

TEST_CASE("policy: bad text is refused with kInvalid and says why") {
  for (const char* bad : {"", "ec", "ec()", "ec(4)", "ec(4,2", "ec(0,2)", "ec(4,0)", "ec(17,2)",
                          "ec(4,9)", "ec(-1,2)", "ec(4,2,1)", "ec(a,b)", "replica(0)",
                          "replica(9)", "replica()", "raid5(3)", "ec(4,2)x",
                          "ec(99999999999,2)"}) {
    CAPTURE(bad);
    auto r = Layout::parse(bad);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::kInvalid);
    CHECK(r.error().detail.find("policy") != std::string::npos);
  }
}

TEST_CASE("layout: a shard of a full chunk holds a cell per stripe, the partial last one too") {
  CHECK(shardCapacity(Layout::ec(4, 2)) == kChunkSize / 4);
  CHECK(shardCapacity(Layout::ec(8, 3)) == kChunkSize / 8);
  // 64 MiB is 341 rows of 3 cells and one cell more.
  CHECK(shardCapacity(Layout::ec(3, 2)) == 342 * kCellSize);
  CHECK(shardCapacity(Layout::replica(3)) == kChunkSize);
  for (uint8_t k = 1; k <= 16; ++k) {
    CAPTURE(k);
    CHECK(shardCapacity(Layout::ec(k, 1)) % kBlockSize == 0);
    CHECK(shardCapacity(Layout::ec(k, 1)) * k >= kChunkSize);
  }
}
