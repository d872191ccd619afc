#include "meta/placement.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>

namespace tessera::meta {
namespace {

enum class Level { kSite, kRack, kHost };

const char* levelName(Level level) {
  switch (level) {
    case Level::kSite: return "site";
    case Level::kRack: return "rack";
    case Level::kHost: return "host";
  }
  return "?";
}

// The domain of `c` at `level`: racks are named within their site, hosts within their rack.
std::string domainOf(const Candidate& c, Level level) {
  switch (level) {
    case Level::kSite: return c.site;
    case Level::kRack: return c.site + "/" + c.rack;
    case Level::kHost: return c.site + "/" + c.rack + "/" + c.host;
  }
  return "";
}

// How an operator reads a domain: its own label ("-" if empty), with the site in front of a
// rack or host when there are sites.
std::string displayOf(const Candidate& c, Level level) {
  auto label = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
  switch (level) {
    case Level::kSite: return label(c.site);
    case Level::kRack: return c.site.empty() ? label(c.rack) : c.site + "/" + label(c.rack);
    case Level::kHost: return label(c.host);
  }
  return "";
}

// The widest level whose label takes more than one value among the candidates, if any.
std::optional<Level> widestLevel(const std::vector<Candidate>& candidates) {
  for (Level level : {Level::kSite, Level::kRack, Level::kHost}) {
    std::set<std::string> seen;
    for (auto& c : candidates) seen.insert(domainOf(c, level));
    if (seen.size() > 1) return level;
  }
  return std::nullopt;
}

}  // namespace

Result<PlacementMode> parsePlacementMode(const std::string& text) {
  if (text == "strict") return PlacementMode::kStrict;
  if (text == "degraded") return PlacementMode::kDegraded;
  return Error{Errc::kInvalid, "bad placement mode '" + text + "' (strict or degraded)"};
}

int tolerableLosses(const Layout& layout) { return layout.m; }  // replica(n) keeps m = n - 1

// Greedy: each pick prefers a server that holds fewest shards of the chunk so far (none, unless
// degraded with too few servers), then whose site is used least, then whose rack, then whose
// host; among equals it draws with probability proportional to free space (+1 so a full server
// can still be drawn when nothing else is left). Filling the least used domain first is what
// minimises the largest number of shards in one domain at the widest level, so when the result
// breaks the domain rule no placement could keep it.
Result<std::vector<ServerId>> placeChunk(const Layout& layout,
                                         const std::vector<Candidate>& candidates,
                                         std::mt19937_64& rng, PlacementMode mode) {
  size_t want = size_t(layout.shards());
  if (candidates.size() < want && (mode == PlacementMode::kStrict || candidates.empty())) {
    return Error{Errc::kUnavailable, layout.toString() + " needs " + std::to_string(want) +
                                         " chunk servers up, " +
                                         std::to_string(candidates.size()) + " are"};
  }
  std::vector<int> serverUse(candidates.size(), 0);
  std::map<std::string, int> siteUse, rackUse, hostUse;
  std::vector<size_t> chosenIdx;
  std::vector<ServerId> out;
  for (size_t pick = 0; pick < want; ++pick) {
    std::tuple<int, int, int, int> best{INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX};
    std::vector<size_t> tied;
    for (size_t i = 0; i < candidates.size(); ++i) {
      const auto& c = candidates[i];
      std::tuple<int, int, int, int> score{serverUse[i], siteUse[domainOf(c, Level::kSite)],
                                           rackUse[domainOf(c, Level::kRack)],
                                           hostUse[domainOf(c, Level::kHost)]};
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
    serverUse[chosen]++;
    const auto& c = candidates[chosen];
    siteUse[domainOf(c, Level::kSite)]++;
    rackUse[domainOf(c, Level::kRack)]++;
    hostUse[domainOf(c, Level::kHost)]++;
    chosenIdx.push_back(chosen);
    out.push_back(c.id);
  }
  if (mode == PlacementMode::kDegraded) return out;

  int limit = tolerableLosses(layout);
  auto level = widestLevel(candidates);
  if (limit == 0 || !level) return out;
  std::map<std::string, int> shardsIn;
  for (size_t i : chosenIdx) shardsIn[domainOf(candidates[i], *level)]++;
  auto worst = std::max_element(shardsIn.begin(), shardsIn.end(),
                                [](auto& a, auto& b) { return a.second < b.second; });
  if (worst->second <= limit) return out;

  // Refused: say what is up, domain by domain.
  std::map<std::string, std::pair<std::string, int>> up;  // domain -> display name, servers
  std::string worstName;
  for (auto& c : candidates) {
    auto& u = up[domainOf(c, *level)];
    u.first = displayOf(c, *level);
    u.second++;
  }
  worstName = up[worst->first].first;
  std::string list;
  for (auto& [key, u] : up) {
    list += (list.empty() ? "" : ", ") + u.first + ": " + std::to_string(u.second);
  }
  std::string name = levelName(*level);
  size_t domainsNeeded = (want + size_t(limit) - 1) / size_t(limit);
  return Error{Errc::kUnavailable,
               layout.toString() + " can lose " + std::to_string(limit) + " shards, but the " +
                   std::to_string(candidates.size()) + " chunk servers up are in " +
                   std::to_string(up.size()) + " " + name + "s (" + list + "), so " + name + " " +
                   worstName + " would hold " + std::to_string(worst->second) +
                   " shards; it needs servers up in at least " +
                   std::to_string(domainsNeeded) + " " + name +
                   "s with at most " + std::to_string(limit) + " shards in each " +
                   "(or tessera-meta --placement degraded)"};
}

}  // namespace tessera::meta
