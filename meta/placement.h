// meta/placement.h — where the k + m shards of a new chunk go. A pure function of the servers'
// state and a random draw: distinct live servers, spread over sites, then racks, then hosts
// before doubling up in any of them, each pick weighted by free space.
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

// kUnavailable, saying how many servers the layout needs and how many are up, when fewer than
// k + m candidates exist.
Result<std::vector<ServerId>> placeChunk(const Layout& layout,
                                         const std::vector<Candidate>& candidates,
                                         std::mt19937_64& rng);

}  // namespace tessera::meta
