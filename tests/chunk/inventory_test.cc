#include "chunk/disk_set.h"
#include "chunk/inventory.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "tests/chunk/chunk_helpers.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
using namespace tessera::chunk;
using tessera::test::crcsOf;
using tessera::test::pattern;

TEST_CASE("inventory: shard names parse back to their keys — anything else is refused") {
  ShardKey key{ChunkId(0xab), 5};
  auto parsed = parseShardName(key.toString());
  REQUIRE(parsed.has_value());
  CHECK(*parsed == key);
  for (const char* bad : {"", "00000000000000ab", "00000000000000ab.", "00000000000000ab.99",
                          "00000000000000ab.1.tmp", "0000000000000000.1", "zz000000000000ab.1",
                          "lock"}) {
    CAPTURE(bad);
    CHECK(!parseShardName(bad).has_value());
  }
}

TEST_CASE("inventory: a disk lists every shard it holds") {
  test::Loop loop;
  test::TempDir dir("inventory-test");
  auto disk = DiskSet::open({.dirs = {dir.path()}});
  REQUIRE(disk.ok());
  auto data = pattern(kBlockSize, 1);
  std::vector<ShardKey> keys = {{ChunkId(1), 0}, {ChunkId(1), 3}, {ChunkId(0x1ff), 2}};
  for (auto key : keys) {
    REQUIRE(loop.wait((*disk)->write(key, Layout::ec(4, 2), 0, data, crcsOf(data), false,
                                     NewShard::kCreate))
                .ok());
  }
  auto listed = loop.wait((*disk)->list());
  REQUIRE(listed.ok());
  auto less = [](ShardKey a, ShardKey b) {
    return std::make_pair(a.chunk.value, a.shard) < std::make_pair(b.chunk.value, b.shard);
  };
  std::sort(listed->begin(), listed->end(), less);
  CHECK(*listed == keys);
}
