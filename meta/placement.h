// meta/placement.h — where the k + m shards of a new chunk go. A pure function of the servers'
// state and a random draw: distinct live servers, spread over sites, then racks, then hosts
// before doubling up in any of them, each pick weighted by free space.
//
// Failure domains. The policy can lose m shards of ec(k,m) and n - 1 of replica(n). At the
// widest level (site, else rack, else host) whose label takes more than one value among the
// candidates, no single domain may hold more shards of the chunk than that, so losing a whole
// site (or rack, or host) loses no data. A level where every candidate has the same label says
// nothing about failures and is not checked; neither are layouts that can lose nothing.
//
// Modes. kStrict refuses a placement that breaks the domain rule, or that finds fewer
// candidates than shards, with kUnavailable saying what the layout needs and what is up.
// kDegraded (tessera-meta --placement degraded) accepts both: the domain rule is only a
// preference, and with fewer candidates than shards some servers take two or more shards of
// the chunk (at least one candidate is needed); repair and rebalance fix them later.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "fs/result.h"
#include "fs/types.h"

namespace tessera::meta {

struct Candidate {
  ServerId id;
  std::string site, rack, host;
  uint64_t freeBytes = 0;
};

enum class PlacementMode { kStrict, kDegraded };

// "strict" or "degraded"; kInvalid otherwise.
Result<PlacementMode> parsePlacementMode(const std::string& text);

// Shards a chunk of `layout` may lose and still be read: m, or n - 1.
int tolerableLosses(const Layout& layout);

// servers[i] holds shard i. kUnavailable in kStrict mode, as above, e.g. "ec(4,2) needs 6
// chunk servers up, 5 are" or "ec(4,2) can lose 2 shards, but the chunk servers up are in 2
// racks (a: 4 servers, b: 2): one rack would hold 3 shards; needs at least 3 racks";
// kUnavailable with no candidates in either mode.
Result<std::vector<ServerId>> placeChunk(const Layout& layout,
                                         const std::vector<Candidate>& candidates,
                                         std::mt19937_64& rng,
                                         PlacementMode mode = PlacementMode::kStrict);

}  // namespace tessera::meta
