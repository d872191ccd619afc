// Placement of a new chunk's shards: distinct servers, spread over failure domains, and the
// refusal (strict) or acceptance (degraded) of placements that break the policy's domain rule.
#include <doctest/doctest.h>

#include <map>
#include <set>

#include "meta/placement.h"

using namespace tessera;
using namespace tessera::meta;

namespace {

std::vector<Candidate> servers(const std::vector<std::pair<std::string, int>>& racks,
                               std::string site = "") {
  std::vector<Candidate> out;
  uint64_t id = 1;
  for (auto& [rack, n] : racks) {
    for (int i = 0; i < n; ++i, ++id) {
      out.push_back(Candidate{ServerId(id), site, rack, "h" + std::to_string(id), 1000 + id});
    }
  }
  return out;
}

std::map<std::string, int> perRack(const std::vector<ServerId>& placed,
                                   const std::vector<Candidate>& c) {
  std::map<std::string, int> n;
  for (auto id : placed) {
    for (auto& s : c) {
      if (s.id == id) n[s.rack]++;
    }
  }
  return n;
}

}  // namespace

TEST_CASE("placement: ec(4,2) over three racks of two puts exactly two shards in each") {
  auto c = servers({{"a", 2}, {"b", 2}, {"c", 2}});
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200; ++i) {
    auto r = placeChunk(Layout::ec(4, 2), c, rng);
    REQUIRE(r.ok());
    CHECK(std::set<ServerId>(r->begin(), r->end()).size() == 6);
    for (auto& [rack, n] : perRack(*r, c)) CHECK(n == 2);
  }
}

TEST_CASE("placement: replica(3) over three racks puts one copy in each") {
  auto c = servers({{"a", 3}, {"b", 1}, {"c", 2}});
  std::mt19937_64 rng(2);
  for (int i = 0; i < 100; ++i) {
    auto r = placeChunk(Layout::replica(3), c, rng);
    REQUIRE(r.ok());
    auto n = perRack(*r, c);
    CHECK(n.size() == 3);
  }
}

TEST_CASE("placement: too few servers is refused in strict mode, naming the need") {
  auto c = servers({{"", 5}});
  std::mt19937_64 rng(3);
  auto r = placeChunk(Layout::ec(4, 2), c, rng);
  REQUIRE(!r.ok());
  CHECK(r.code() == Errc::kUnavailable);
  CHECK(r.error().detail == "ec(4,2) needs 6 chunk servers up, 5 are");
}

TEST_CASE("placement: a rack that would hold more shards than the policy can lose is refused") {
  // Two racks: 6 shards of ec(4,2) put at least 3 in one, more than m = 2.
  auto c = servers({{"a", 4}, {"b", 4}});
  std::mt19937_64 rng(4);
  auto r = placeChunk(Layout::ec(4, 2), c, rng);
  REQUIRE(!r.ok());
  CHECK(r.code() == Errc::kUnavailable);
  MESSAGE(r.error().detail);
  CHECK(r.error().detail.find("ec(4,2) can lose 2 shards") != std::string::npos);
  CHECK(r.error().detail.find("2 racks (a: 4, b: 4)") != std::string::npos);
  CHECK(r.error().detail.find("would hold 3 shards") != std::string::npos);
  CHECK(r.error().detail.find("at least 3 racks") != std::string::npos);

  // replica(3) can lose 2: two copies in one of two racks is fine.
  auto ok = placeChunk(Layout::replica(3), c, rng);
  REQUIRE(ok.ok());
  for (auto& [rack, n] : perRack(*ok, c)) CHECK(n <= 2);
  // replica(2) can lose 1: one copy per rack.
  auto two = placeChunk(Layout::replica(2), c, rng);
  REQUIRE(two.ok());
  CHECK(perRack(*two, c).size() == 2);
}

TEST_CASE("placement: a whole rack down leaves too few racks: refused, then accepted degraded") {
  auto c = servers({{"a", 2}, {"b", 2}, {"c", 2}, {"d", 1}});
  c.erase(c.begin(), c.begin() + 2);  // rack a is down: 5 servers left in b, c and d
  std::mt19937_64 rng(5);
  auto r = placeChunk(Layout::ec(4, 2), c, rng);
  REQUIRE(!r.ok());
  CHECK(r.error().detail == "ec(4,2) needs 6 chunk servers up, 5 are");
  auto d = placeChunk(Layout::ec(4, 2), c, rng, PlacementMode::kDegraded);
  REQUIRE(d.ok());
  CHECK(d->size() == 6);
  // Every server took a shard before any took a second.
  CHECK(std::set<ServerId>(d->begin(), d->end()).size() == 5);
}

TEST_CASE("placement: degraded mode accepts a placement that breaks the domain rule") {
  auto c = servers({{"a", 5}, {"b", 1}});
  std::mt19937_64 rng(6);
  CHECK(!placeChunk(Layout::ec(4, 2), c, rng).ok());
  auto d = placeChunk(Layout::ec(4, 2), c, rng, PlacementMode::kDegraded);
  REQUIRE(d.ok());
  CHECK(std::set<ServerId>(d->begin(), d->end()).size() == 6);
  CHECK(perRack(*d, c)["b"] == 1);
  // No server at all: refused even degraded.
  CHECK(placeChunk(Layout::ec(4, 2), {}, rng, PlacementMode::kDegraded).code() ==
        Errc::kUnavailable);
}

TEST_CASE("placement: the widest level with more than one label is the one checked") {
  std::mt19937_64 rng(7);
  // One site, one rack, distinct hosts (the defaults): hosts are the domains, one shard each.
  auto flat = servers({{"", 6}});
  CHECK(placeChunk(Layout::ec(4, 2), flat, rng).ok());
  // Every label equal: nothing to spread over, so nothing is refused.
  std::vector<Candidate> same;
  for (uint64_t i = 1; i <= 6; ++i) same.push_back(Candidate{ServerId(i), "", "", "h", 10});
  CHECK(placeChunk(Layout::ec(4, 2), same, rng).ok());
  // Three sites of two servers, each site a single rack: sites are checked (2 per site is ok).
  std::vector<Candidate> sites;
  for (uint64_t i = 1; i <= 6; ++i) {
    sites.push_back(Candidate{ServerId(i), "s" + std::to_string((i - 1) / 2), "r", "h" + std::to_string(i), 10});
  }
  CHECK(placeChunk(Layout::ec(4, 2), sites, rng).ok());
  // Two sites of three servers in three racks: the site level refuses what racks would allow.
  for (auto& s : sites) s.site = s.id.value <= 3 ? "east" : "west";
  for (auto& s : sites) s.rack = "r" + std::to_string(s.id.value % 3);
  auto r = placeChunk(Layout::ec(4, 2), sites, rng);
  REQUIRE(!r.ok());
  CHECK(r.error().detail.find("2 sites (east: 3, west: 3)") != std::string::npos);
  // replica(1) can lose nothing and is never refused for domains.
  CHECK(placeChunk(Layout::replica(1), sites, rng).ok());
}

TEST_CASE("placement: modes parse") {
  CHECK(*parsePlacementMode("strict") == PlacementMode::kStrict);
  CHECK(*parsePlacementMode("degraded") == PlacementMode::kDegraded);
  CHECK(parsePlacementMode("lax").code() == Errc::kInvalid);
}
