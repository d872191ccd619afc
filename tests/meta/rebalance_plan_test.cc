// The rebalance planner (meta/rebalance_plan.h): moves that bring every live chunk server's
// usage within the band of the mean, never breaking the placement rules of a chunk it moves.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>

#include "meta/rebalance_plan.h"

using namespace tessera;
using namespace tessera::meta;

namespace {

constexpr uint64_t kMiB = 1 << 20;

ServerView server(uint64_t id, uint64_t usedMiB, std::string rack = "",
                  uint64_t capacityMiB = 100) {
  ServerView s;
  s.id = ServerId(id);
  s.address = "127.0.0.1:" + std::to_string(1000 + id);
  s.rack = std::move(rack);
  s.host = "h" + std::to_string(id);
  s.up = true;
  s.capacityBytes = capacityMiB * kMiB;
  s.usedBytes = usedMiB * kMiB;
  s.freeBytes = s.capacityBytes - s.usedBytes;
  return s;
}

PlanChunk chunkOn(uint64_t id, Layout layout, std::vector<uint64_t> servers, uint64_t shardMiB) {
  PlanChunk c;
  c.inode = InodeId(100 + id);
  c.chunk.id = ChunkId(id);
  c.chunk.index = 0;
  c.chunk.layout = layout;
  for (uint64_t s : servers) c.chunk.servers.push_back(ServerId(s));
  c.shardBytes = shardMiB * kMiB;
  return c;
}

// The chunks as the plan leaves them, checked move by move against the chunk map.
std::map<uint64_t, ChunkDesc> applyPlan(const std::vector<PlanChunk>& chunks,
                                    const RebalancePlan& plan) {
  std::map<uint64_t, ChunkDesc> out;
  for (auto& c : chunks) out[c.chunk.id.value] = c.chunk;
  std::set<std::pair<uint64_t, int>> moved;
  for (auto& m : plan.moves) {
    CAPTURE(m.chunk.value);
    CAPTURE(m.shard);
    auto& c = out.at(m.chunk.value);
    CHECK(c.servers.at(m.shard) == m.from);
    CHECK(m.from != m.to);
    // Each shard moves at most once per plan.
    CHECK(moved.insert({m.chunk.value, m.shard}).second);
    c.servers[m.shard] = m.to;
    std::set<ServerId> distinct(c.servers.begin(), c.servers.end());
    CHECK(distinct.size() == c.servers.size());
  }
  return out;
}

std::map<ServerId, uint64_t> usageAfter(const ServerMap& servers,
                                        const std::vector<PlanChunk>& chunks,
                                        const RebalancePlan& plan) {
  std::map<ServerId, uint64_t> used;
  for (auto& [id, s] : servers) used[id] = s.usedBytes;
  for (auto& m : plan.moves) {
    used[m.from] -= m.bytes;
    used[m.to] += m.bytes;
  }
  return used;
}

}  // namespace

TEST_CASE("rebalance plan: empty servers added take shards until every server is in the band") {
  // Six servers with 40 ec(4,2) chunks (1 MiB shards) and 20 replica(3) chunks (2 MiB), then
  // two empty ones.
  std::mt19937_64 rng(7);
  std::vector<PlanChunk> chunks;
  std::map<uint64_t, uint64_t> usedMiB;
  for (uint64_t i = 1; i <= 40; ++i) {
    chunks.push_back(chunkOn(i, Layout::ec(4, 2), {1, 2, 3, 4, 5, 6}, 1));
    for (uint64_t s = 1; s <= 6; ++s) usedMiB[s] += 1;
  }
  for (uint64_t i = 41; i <= 60; ++i) {
    std::vector<uint64_t> ids{1, 2, 3, 4, 5, 6};
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(3);
    chunks.push_back(chunkOn(i, Layout::replica(3), ids, 2));
    for (uint64_t s : ids) usedMiB[s] += 2;
  }
  ServerMap servers;
  for (uint64_t s = 1; s <= 8; ++s) servers[ServerId(s)] = server(s, usedMiB[s]);

  auto plan = planRebalance(servers, chunks, 5);
  CHECK(plan.balanced);
  REQUIRE(!plan.moves.empty());
  double mean = 100.0 * (40 * 6 + 20 * 2 * 3) / 800;
  CHECK(plan.meanPct == doctest::Approx(mean));
  applyPlan(chunks, plan);
  auto used = usageAfter(servers, chunks, plan);
  for (auto& [id, bytes] : used) {
    CAPTURE(id.value);
    CHECK(std::abs(usagePct(bytes, 100 * kMiB) - mean) <= 5);
    CHECK(plan.usage.at(id).after == bytes);
  }
  // Not much more than needed: what brings the servers below the band up to it (and what
  // takes those above down to it) is a lower bound of the bytes any plan moves.
  double needed = 0, moved = 0;
  for (auto& [id, s] : servers) {
    double gap = (mean - 5) / 100 * double(s.capacityBytes) - double(s.usedBytes);
    if (gap > 0) needed += gap;
  }
  for (auto& m : plan.moves) moved += double(m.bytes);
  CHECK(moved >= needed);
  CHECK(moved <= 2 * needed);
}

TEST_CASE("rebalance plan: a move never puts more shards in one rack than the layout can lose") {
  // Three racks of two servers: every ec(4,2) chunk has two shards per rack. A new, empty
  // server in rack a may only take shards from rack a's servers.
  std::vector<PlanChunk> chunks;
  for (uint64_t i = 1; i <= 30; ++i) {
    chunks.push_back(chunkOn(i, Layout::ec(4, 2), {1, 2, 3, 4, 5, 6}, 1));
  }
  ServerMap servers;
  const char* racks[] = {"a", "a", "b", "b", "c", "c", "a"};
  for (uint64_t s = 1; s <= 7; ++s) servers[ServerId(s)] = server(s, s <= 6 ? 30 : 0, racks[s - 1]);
  auto plan = planRebalance(servers, chunks, 5);
  REQUIRE(!plan.moves.empty());
  auto after = applyPlan(chunks, plan);
  for (auto& [id, c] : after) {
    std::map<std::string, int> perRack;
    for (ServerId s : c.servers) perRack[servers.at(s).rack]++;
    for (auto& [rack, n] : perRack) {
      CAPTURE(id);
      CAPTURE(rack);
      CHECK(n <= 2);
    }
  }
  for (auto& m : plan.moves) {
    CHECK(m.to == ServerId(7));
    CHECK(servers.at(m.from).rack == "a");
  }
}

TEST_CASE("rebalance plan: balanced servers, down and draining ones, and useless moves") {
  std::vector<PlanChunk> chunks;
  for (uint64_t i = 1; i <= 10; ++i) {
    chunks.push_back(chunkOn(i, Layout::replica(3), {1, 2, 3}, 3));
  }
  ServerMap servers;
  for (uint64_t s = 1; s <= 3; ++s) servers[ServerId(s)] = server(s, 30);

  SUBCASE("within the band: nothing to do") {
    servers[ServerId(4)] = server(4, 25);
    auto plan = planRebalance(servers, chunks, 10);
    CHECK(plan.balanced);
    CHECK(plan.moves.empty());
  }
  SUBCASE("a server that is down or draining takes nothing") {
    servers[ServerId(4)] = server(4, 0);
    servers[ServerId(4)].up = false;
    servers[ServerId(5)] = server(5, 0);
    servers[ServerId(5)].draining = true;
    auto plan = planRebalance(servers, chunks, 5);
    CHECK(plan.moves.empty());
    CHECK(plan.balanced);
    CHECK(plan.usage.size() == 3);
  }
  SUBCASE("a chunk with a shard on a server that is down is not moved") {
    servers[ServerId(4)] = server(4, 0);
    servers[ServerId(3)].up = false;
    auto plan = planRebalance(servers, chunks, 5);
    CHECK(plan.moves.empty());
    CHECK(!plan.balanced);
  }
  SUBCASE("a move that only swaps the imbalance is not planned") {
    std::vector<PlanChunk> one{chunkOn(1, Layout::replica(1), {1}, 60)};
    ServerMap two;
    two[ServerId(1)] = server(1, 60);
    two[ServerId(2)] = server(2, 0);
    auto plan = planRebalance(two, one, 10);
    CHECK(plan.moves.empty());
    CHECK(!plan.balanced);
  }
  SUBCASE("no servers with a capacity: nothing to plan") {
    ServerMap none;
    auto plan = planRebalance(none, chunks, 10);
    CHECK(plan.moves.empty());
    CHECK(plan.balanced);
  }
}

TEST_CASE("rebalance plan: servers of different sizes end near the same fraction") {
  // Server 4 has twice the capacity and nothing on it.
  std::vector<PlanChunk> chunks;
  for (uint64_t i = 1; i <= 60; ++i) {
    chunks.push_back(chunkOn(i, Layout::replica(2), {1 + i % 3, 1 + (i + 1) % 3}, 1));
  }
  ServerMap servers;
  for (uint64_t s = 1; s <= 3; ++s) servers[ServerId(s)] = server(s, 40);
  servers[ServerId(4)] = server(4, 0, "", 200);
  auto plan = planRebalance(servers, chunks, 3);
  CHECK(plan.balanced);
  CHECK(plan.meanPct == doctest::Approx(100.0 * 120 / 500));
  auto used = usageAfter(servers, chunks, plan);
  for (auto& [id, bytes] : used) {
    CAPTURE(id.value);
    CHECK(std::abs(usagePct(bytes, servers.at(id).capacityBytes) - plan.meanPct) <= 3);
  }
  applyPlan(chunks, plan);
}
