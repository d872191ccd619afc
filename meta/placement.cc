#include "meta/placement.h"

#include <map>
#include <tuple>

namespace tessera::meta {

// Greedy: each pick prefers a server whose site is used least so far, then whose rack, then whose
// host; among equals it draws with probability proportional to free space (+1 so a full server
// can still be drawn when nothing else is left, and the placement refuses nothing it could do).
Result<std::vector<ServerId>> placeChunk(const Layout& layout,
                                         const std::vector<Candidate>& candidates,
                                         std::mt19937_64& rng) {
  size_t want = size_t(layout.shards());
  if (candidates.size() < want) {
    return Error{Errc::kUnavailable, layout.toString() + " needs " + std::to_string(want) +
                                         " chunk servers up, " +
                                         std::to_string(candidates.size()) + " are"};
  }
  std::vector<bool> taken(candidates.size(), false);
  std::map<std::string, int> siteUse, rackUse, hostUse;
  std::vector<ServerId> out;
  for (size_t pick = 0; pick < want; ++pick) {
    std::tuple<int, int, int> best{INT32_MAX, INT32_MAX, INT32_MAX};
    std::vector<size_t> tied;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (taken[i]) continue;
      const auto& c = candidates[i];
      std::tuple<int, int, int> score{siteUse[c.site], rackUse[c.site + "/" + c.rack],
                                      hostUse[c.site + "/" + c.rack + "/" + c.host]};
      if (score < best) {
        best = score;
        tied.clear();
      }
      if (score == best) tied.push_back(i);
    }
    long double total = 0;
    for (size_t i : tied) total += (long double)candidates[i].freeBytes + 1;
    long double draw = std::uniform_real_distribution<long double>(0, total)(rng);
    size_t chosen = tied.back();
    for (size_t i : tied) {
      draw -= (long double)candidates[i].freeBytes + 1;
      if (draw < 0) {
        chosen = i;
        break;
      }
    }
    taken[chosen] = true;
    const auto& c = candidates[chosen];
    siteUse[c.site]++;
    rackUse[c.site + "/" + c.rack]++;
    hostUse[c.site + "/" + c.rack + "/" + c.host]++;
    out.push_back(c.id);
  }
  return out;
}

}  // namespace tessera::meta
