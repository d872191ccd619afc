#include "meta/repair_plan.h"

#include <algorithm>
#include <tuple>

namespace tessera::meta {

const char* healthName(Health h) {
  switch (h) {
    case Health::kHealthy: return "healthy";
    case Health::kDegraded: return "degraded";
    case Health::kLost: return "lost";
  }
  return "?";
}

namespace {

std::string siteKey(const ServerView& s) { return s.site; }
std::string rackKey(const ServerView& s) { return s.site + "/" + s.rack; }
std::string hostKey(const ServerView& s) { return s.site + "/" + s.rack + "/" + s.host; }

}  // namespace

ChunkHealth assess(const ChunkDesc& chunk, const ServerMap& servers, const DamagedSet& damaged,
                   uint64_t graceMs, const NotHeldFn& notHeld) {
  ChunkHealth h;
  int n = int(chunk.servers.size());
  auto note = [&](const std::string& text) {
    if (!h.why.empty()) h.why += "; ";
    h.why += text;
  };
  for (int i = 0; i < n; ++i) {
    ServerId id = chunk.servers[i];
    auto it = servers.find(id);
    std::string shard = "shard " + std::to_string(i) + " on server " + std::to_string(id.value);
    if (!id || it == servers.end()) {
      h.missing.push_back(i);
      h.repairable.push_back(i);
      note(shard + ": unknown server");
    } else if (chunk.stale(i)) {
      h.missing.push_back(i);
      h.repairable.push_back(i);
      note(shard + ": stale");
    } else if (damaged.count({chunk.id.value, i, id.value})) {
      h.missing.push_back(i);
      h.repairable.push_back(i);
      note(shard + ": damaged");
    } else if (it->second.up && notHeld && notHeld(chunk.id.value, i, id)) {
      h.missing.push_back(i);
      h.repairable.push_back(i);
      note(shard + ": not held by its server");
    } else if (!it->second.up) {
      h.missing.push_back(i);
      if (it->second.downMs > graceMs) h.repairable.push_back(i);
      note(shard + ": server down");
    } else if (it->second.draining) {
      h.moves.push_back(i);
      h.misplaced = true;
      note(shard + ": server draining");
    }
  }
  int canLose = chunk.layout.m;
  if (int(h.missing.size()) > canLose) {
    h.health = Health::kLost;
  } else if (!h.missing.empty()) {
    h.health = Health::kDegraded;
  }
  // Placement rules.
  std::set<ServerId> distinct(chunk.servers.begin(), chunk.servers.end());
  if (int(distinct.size()) != n) {
    h.misplaced = true;
    note("two shards on one server");
  }
  using KeyFn = std::string (*)(const ServerView&);
  const std::pair<const char*, KeyFn> levels[] = {
      {"site", siteKey}, {"rack", rackKey}, {"host", hostKey}};
  for (auto [name, key] : levels) {
    std::set<std::string> available;
    for (auto& [id, s] : servers) {
      if (s.up) available.insert(key(s));
    }
    // Spreading so that no domain holds more than m shards needs ceil(n / m) domains.
    if (canLose <= 0 || int(available.size()) * canLose < n) continue;
    std::map<std::string, int> use;
    for (ServerId id : chunk.servers) {
      auto it = servers.find(id);
      if (it != servers.end()) ++use[key(it->second)];
    }
    for (auto& [domain, count] : use) {
      if (count > canLose) {
        h.misplaced = true;
        note(std::to_string(count) + " shards in " + name + " '" + domain + "'");
        break;
      }
    }
  }
  return h;
}

uint64_t shardLength(const Layout& layout, uint64_t chunkBytes) {
  chunkBytes = std::min(chunkBytes, kChunkSize);
  if (!layout.isEc()) return (chunkBytes + kBlockSize - 1) / kBlockSize * kBlockSize;
  uint64_t row = kCellSize * layout.k;
  uint64_t rows = (chunkBytes + row - 1) / row;
  // Not kChunkSize / k: ec(3,2)'s last row is partial, and a shard is whole blocks.
  return std::min(rows * kCellSize, shardCapacity(layout));
}

Result<ServerId> pickTarget(const ChunkDesc& chunk, int shard, const ServerMap& servers,
                            const std::set<ServerId>& excluded, std::mt19937_64& rng) {
  std::map<std::string, int> siteUse, rackUse, hostUse;
  for (int i = 0; i < int(chunk.servers.size()); ++i) {
    if (i == shard) continue;
    auto it = servers.find(chunk.servers[i]);
    if (it == servers.end()) continue;
    siteUse[siteKey(it->second)]++;
    rackUse[rackKey(it->second)]++;
    hostUse[hostKey(it->second)]++;
  }
  std::tuple<int, int, int> best{INT32_MAX, INT32_MAX, INT32_MAX};
  std::vector<const ServerView*> tied;
  for (auto& [id, s] : servers) {
    if (!s.up || s.draining || excluded.count(id)) continue;
    if (std::find(chunk.servers.begin(), chunk.servers.end(), id) != chunk.servers.end()) continue;
    std::tuple<int, int, int> score{siteUse[siteKey(s)], rackUse[rackKey(s)], hostUse[hostKey(s)]};
    if (score < best) {
      best = score;
      tied.clear();
    }
    if (score == best) tied.push_back(&s);
  }
  if (tied.empty()) {
    return Error{Errc::kUnavailable, "no live server to rebuild shard " + std::to_string(shard) +
                                         " of chunk " + std::to_string(chunk.id.value) + " on"};
  }
  long double total = 0;
  for (auto* s : tied) total += (long double)s->freeBytes + 1;
  long double draw = std::uniform_real_distribution<long double>(0, total)(rng);
  for (auto* s : tied) {
    draw -= (long double)s->freeBytes + 1;
    if (draw < 0) return s->id;
  }
  return tied.back()->id;
}

}  // namespace tessera::meta
