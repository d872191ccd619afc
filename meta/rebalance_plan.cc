#include "meta/rebalance_plan.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tessera::meta {

double usagePct(uint64_t used, uint64_t capacity) {
  if (capacity == 0) return 0;
  return 100.0 * double(used) / double(capacity);
}

namespace {

// Shards of one server looked at per candidate move. TODO(perf): with hundreds of thousands of
// shards per server, index them by size instead of scanning.
constexpr size_t kScanPerServer = 2048;

}  // namespace

RebalancePlan planRebalance(const ServerMap& servers, std::vector<PlanChunk> chunks,
                            double bandPct, size_t maxMoves) {
  RebalancePlan plan;
  uint64_t totalCapacity = 0, totalUsed = 0;
  for (auto& [id, s] : servers) {
    if (!s.up || s.draining || s.capacityBytes == 0) continue;
    plan.usage[id] = RebalancePlan::Usage{s.capacityBytes, s.usedBytes, s.usedBytes};
    totalCapacity += s.capacityBytes;
    totalUsed += s.usedBytes;
  }
  if (plan.usage.empty()) {
    plan.balanced = true;
    return plan;
  }
  double mean = usagePct(totalUsed, totalCapacity);
  plan.meanPct = mean;
  auto deviation = [&](ServerId id, uint64_t used) {
    return usagePct(used, plan.usage.at(id).capacity) - mean;
  };
  auto outside = [&](ServerId id) {
    return std::abs(deviation(id, plan.usage.at(id).after)) > bandPct;
  };

  // The shards that may move, by the server that holds them: of chunks healthy and well placed
  // now. A shard moved once in this plan stays where the plan put it.
  std::map<ServerId, std::vector<std::pair<size_t, int>>> on;
  for (size_t c = 0; c < chunks.size(); ++c) {
    auto h = assess(chunks[c].chunk, servers, {}, std::numeric_limits<uint64_t>::max());
    if (h.health != Health::kHealthy || !h.missing.empty() || h.misplaced) continue;
    if (chunks[c].shardBytes == 0) continue;
    const auto& ids = chunks[c].chunk.servers;
    for (int i = 0; i < int(ids.size()); ++i) {
      if (plan.usage.count(ids[i])) on[ids[i]].push_back({c, i});
    }
  }
  for (auto& [id, list] : on) {
    // Larger shards first: fewer moves for the same effect.
    std::stable_sort(list.begin(), list.end(), [&](auto& a, auto& b) {
      return chunks[a.first].shardBytes > chunks[b.first].shardBytes;
    });
  }

  struct Best {
    double score = std::numeric_limits<double>::max();
    ServerId from, to;
    size_t chunk = 0;
    int shard = 0;
    size_t pos = 0;  // in on[from]
    bool found = false;
  };
  // The best move of a shard from one of `sources` to one of `targets`: the one that leaves
  // the pair's squared deviations smallest, if smaller than now (so no plan goes in circles:
  // the sum of squared deviations over all servers falls with every move).
  auto search = [&](const std::vector<ServerId>& sources, const std::vector<ServerId>& targets) {
    Best best;
    for (ServerId from : sources) {
      auto& list = on[from];
      uint64_t fromUsed = plan.usage.at(from).after;
      for (size_t pos = 0; pos < list.size() && pos < kScanPerServer; ++pos) {
        auto [c, shard] = list[pos];
        const ChunkDesc& chunk = chunks[c].chunk;
        uint64_t bytes = chunks[c].shardBytes;
        if (bytes > fromUsed) continue;
        for (ServerId to : targets) {
          if (std::find(chunk.servers.begin(), chunk.servers.end(), to) != chunk.servers.end()) {
            continue;
          }
          uint64_t toUsed = plan.usage.at(to).after;
          double now = std::pow(deviation(from, fromUsed), 2) + std::pow(deviation(to, toUsed), 2);
          double after = std::pow(deviation(from, fromUsed - bytes), 2) +
                         std::pow(deviation(to, toUsed + bytes), 2);
          if (after >= now - 1e-12 || after >= best.score) continue;
          ChunkDesc moved = chunk;
          moved.servers[shard] = to;
          auto h = assess(moved, servers, {}, std::numeric_limits<uint64_t>::max());
          if (h.misplaced || h.health != Health::kHealthy) continue;
          best = Best{after, from, to, c, shard, pos, true};
        }
      }
    }
    return best;
  };

  while (plan.moves.size() < maxMoves) {
    std::vector<ServerId> worst;
    for (auto& [id, u] : plan.usage) {
      if (outside(id)) worst.push_back(id);
    }
    if (worst.empty()) break;
    std::stable_sort(worst.begin(), worst.end(), [&](ServerId a, ServerId b) {
      return std::abs(deviation(a, plan.usage.at(a).after)) >
             std::abs(deviation(b, plan.usage.at(b).after));
    });
    Best best;
    for (ServerId w : worst) {
      bool above = deviation(w, plan.usage.at(w).after) > 0;
      // The other side of the mean, farthest first.
      std::vector<ServerId> others;
      for (auto& [id, u] : plan.usage) {
        double d = deviation(id, u.after);
        if (id != w && (above ? d < 0 : d > 0)) others.push_back(id);
      }
      std::stable_sort(others.begin(), others.end(), [&](ServerId a, ServerId b) {
        return std::abs(deviation(a, plan.usage.at(a).after)) >
               std::abs(deviation(b, plan.usage.at(b).after));
      });
      best = above ? search({w}, others) : search(others, {w});
      if (best.found) break;
    }
    if (!best.found) break;
    auto& chunk = chunks[best.chunk];
    uint64_t bytes = chunk.shardBytes;
    plan.moves.push_back(PlannedMove{chunk.inode, chunk.chunk.index, chunk.chunk.id, best.shard,
                                     best.from, best.to, bytes});
    plan.usage.at(best.from).after -= bytes;
    plan.usage.at(best.to).after += bytes;
    chunk.chunk.servers[best.shard] = best.to;
    auto& list = on[best.from];
    list.erase(list.begin() + long(best.pos));
  }
  plan.balanced = true;
  for (auto& [id, u] : plan.usage) {
    if (outside(id)) plan.balanced = false;
  }
  return plan;
}

}  // namespace tessera::meta
