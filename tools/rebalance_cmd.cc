// tessera rebalance: plans (and starts) the moves that even out disk usage across chunk
// servers; meta/rebalance_plan.h decides, the meta leader's repair service moves.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>

#include "fs/wire.h"
#include "tools/repair_cmds.h"

namespace tessera::tools {

namespace {

constexpr const char* kRebalanceUsage =
    "usage: tessera rebalance [--dry-run] [--band PCT] [--wait] | tessera rebalance --stop";

std::string mibText(uint64_t bytes) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  return buf;
}

double pct(uint64_t used, uint64_t capacity) {
  return capacity ? 100.0 * double(used) / double(capacity) : 0;
}

struct Progress {
  uint64_t planned = 0, queued = 0, running = 0, done = 0, failed = 0;
  uint64_t bytesPlanned = 0, bytesMoved = 0;
  double band = 0;
};

Progress progressOf(proto::RebalanceStatus::Reader r) {
  return Progress{r.getPlanned(), r.getQueued(),       r.getRunning(),    r.getDone(),
                  r.getFailed(),  r.getBytesPlanned(), r.getBytesMoved(), r.getBandPct()};
}

void printProgress(const Progress& p) {
  printf("  %lu of %lu moves done, %lu running, %lu queued, %lu failed; %s of %s moved\n",
         (unsigned long)p.done, (unsigned long)p.planned, (unsigned long)p.running,
         (unsigned long)p.queued, (unsigned long)p.failed, mibText(p.bytesMoved).c_str(),
         mibText(p.bytesPlanned).c_str());
  fflush(stdout);
}

Result<Progress> askProgress(MetaCluster& cluster) {
  return cluster.onLeader<Progress>("status", [](proto::MetaService::Client c) {
    return c.statusRequest().send().then(
        [](capnp::Response<proto::MetaService::StatusResults> r) -> Result<Progress> {
          if (auto e = fromWire(r.getError()); !e) return e.error();
          return progressOf(r.getRebalance());
        });
  });
}

}  // namespace

void printRebalance(proto::RebalanceStatus::Reader r) {
  if (r.getPlanned() == 0 && !r.getActive()) return;
  printf("rebalance %s: %lu of %lu moves done, %lu running, %lu queued, %lu failed; %s of %s "
         "moved (band %.1f points)\n",
         r.getActive() ? "running" : "finished", (unsigned long)r.getDone(),
         (unsigned long)r.getPlanned(), (unsigned long)r.getRunning(),
         (unsigned long)r.getQueued(), (unsigned long)r.getFailed(),
         mibText(r.getBytesMoved()).c_str(), mibText(r.getBytesPlanned()).c_str(),
         r.getBandPct());
}

int rebalance(MetaCluster& cluster, const std::vector<std::string>& args) {
  bool dryRun = false, wait = false, stop = false;
  double band = 10;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--dry-run") {
      dryRun = true;
    } else if (args[i] == "--wait") {
      wait = true;
    } else if (args[i] == "--stop") {
      stop = true;
    } else if (args[i] == "--band" && i + 1 < args.size()) {
      const std::string& text = args[++i];
      char* end = nullptr;
      band = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !std::isfinite(band) || band <= 0 || band > 100) {
        std::cerr << "tessera: error: --band takes percentage points, more than 0 and at most "
                     "100 (e.g. --band 10)"
                  << std::endl;
        return 1;
      }
    } else {
      std::cerr << "tessera: error: " << kRebalanceUsage << std::endl;
      return 1;
    }
  }
  if (stop && (dryRun || wait)) {
    std::cerr << "tessera: error: " << kRebalanceUsage << std::endl;
    return 1;
  }
  struct Reply {
    double mean = 0;
    bool balanced = false;
    struct Move {
      uint64_t inode, index, chunk, from, to, bytes;
      int shard;
    };
    std::vector<Move> moves;
    struct Usage {
      uint64_t id, capacity, used, after;
    };
    std::vector<Usage> usage;
    Progress progress;
  };
  auto r = cluster.onLeader<Reply>("rebalance", [&](proto::MetaService::Client c) {
    auto req = c.rebalanceRequest();
    req.setDryRun(dryRun);
    req.setBandPct(band);
    req.setStop(stop);
    return req.send().then(
        [](capnp::Response<proto::MetaService::RebalanceResults> r) -> Result<Reply> {
          if (auto e = fromWire(r.getError()); !e) return e.error();
          Reply out;
          out.mean = r.getMeanPct();
          out.balanced = r.getBalanced();
          for (auto m : r.getMoves()) {
            out.moves.push_back(Reply::Move{m.getInode(), m.getIndex(), m.getChunk(),
                                            m.getFrom(), m.getTo(), m.getBytes(),
                                            int(m.getShard())});
          }
          for (auto u : r.getUsage()) {
            out.usage.push_back(Reply::Usage{u.getId(), u.getCapacityBytes(), u.getUsedBytes(),
                                             u.getAfterBytes()});
          }
          out.progress = progressOf(r.getStatus());
          return out;
        });
  });
  if (!r) {
    std::cerr << "tessera: error: " << r.error().toString() << std::endl;
    return 1;
  }
  if (stop) {
    printf("rebalance stopped: queued moves dropped, running ones finish\n");
    printProgress(r->progress);
    return 0;
  }
  printf("mean usage %.1f%%, band +-%.1f points, %zu chunk servers up and not draining\n",
         r->mean, band, r->usage.size());
  printf("  %-6s %10s %10s %7s %7s\n", "SERVER", "CAPACITY", "USED", "USE%", "AFTER%");
  for (auto& u : r->usage) {
    double before = pct(u.used, u.capacity), after = pct(u.after, u.capacity);
    printf("  %-6lu %10s %10s %6.1f%% %6.1f%%%s\n", (unsigned long)u.id,
           mibText(u.capacity).c_str(), mibText(u.used).c_str(), before, after,
           std::abs(after - r->mean) > band ? "  outside the band" : "");
  }
  uint64_t bytes = 0;
  for (auto& m : r->moves) bytes += m.bytes;
  if (r->moves.empty()) {
    printf(r->balanced ? "balanced: every server is within the band; nothing to move\n"
                       : "no move would help (placement rules, or shards too large); nothing "
                         "to move\n");
    return 0;
  }
  printf("%zu moves, %s:\n", r->moves.size(), mibText(bytes).c_str());
  printf("  %-8s %-5s %-14s %10s   %s\n", "CHUNK", "SHARD", "FROM -> TO", "BYTES",
         "INODE/INDEX");
  for (auto& m : r->moves) {
    std::string fromTo = std::to_string(m.from) + " -> " + std::to_string(m.to);
    printf("  %-8lu %-5d %-14s %10lu   %lu/%lu\n", (unsigned long)m.chunk, m.shard,
           fromTo.c_str(), (unsigned long)m.bytes, (unsigned long)m.inode,
           (unsigned long)m.index);
  }
  if (!r->balanced) printf("(the plan cannot bring every server within the band)\n");
  if (dryRun) {
    printf("dry run: nothing moved\n");
    return 0;
  }
  printf("rebalance started (progress: tessera status)\n");
  fflush(stdout);
  if (!wait) return 0;
  std::optional<Progress> last;
  while (true) {
    auto p = askProgress(cluster);
    if (!p) {
      std::cerr << "tessera: error: " << p.error().toString() << std::endl;
      return 1;
    }
    if (!last || p->done != last->done || p->failed != last->failed ||
        p->running != last->running) {
      printProgress(*p);
      last = *p;
    }
    if (p->queued + p->running == 0) {
      if (p->failed > 0) {
        std::cerr << "tessera: error: " << p->failed
                  << " moves failed or no longer fit; run tessera rebalance again" << std::endl;
        return 1;
      }
      printf("rebalanced: %lu moves done, %s moved; old copies go with the garbage\n",
             (unsigned long)p->done, mibText(p->bytesMoved).c_str());
      return 0;
    }
    if (cluster.expired()) {
      std::cerr << "tessera: error: still rebalancing after --timeout" << std::endl;
      return 1;
    }
    cluster.sleepMs(500);
  }
}

}  // namespace tessera::tools
