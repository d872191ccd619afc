#include "tools/repair_cmds.h"

#include <cstdio>
#include <iostream>

#include "fs/wire.h"

namespace tessera::tools {

namespace {

struct FsckReply {
  uint64_t healthy = 0, degraded = 0, lost = 0, misplaced = 0;
  struct Bad {
    uint64_t inode, index, chunk;
    std::string layout, health, detail;
    bool misplaced;
  };
  std::vector<Bad> bad;
  uint64_t running = 0, queued = 0, done = 0, bytes = 0;
};

std::string mib(uint64_t bytes) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  return buf;
}

}  // namespace

void printRepair(proto::RepairStatus::Reader r) {
  if (r.getPassed()) {
    printf("health  %lu chunks healthy, %lu degraded (under-replicated), %lu lost, %lu misplaced\n",
           (unsigned long)r.getHealthy(), (unsigned long)r.getDegraded(),
           (unsigned long)r.getLost(), (unsigned long)r.getMisplaced());
  } else {
    printf("health  not assessed yet (the leader's first pass over the chunks is under way)\n");
  }
  printf("repair  %lu queued, %lu running, %lu done, %lu failed, %s rebuilt; %lu orphan chunks "
         "deleted\n",
         (unsigned long)r.getQueued(), (unsigned long)r.getRunning(),
         (unsigned long)r.getDone(), (unsigned long)r.getFailed(),
         mib(r.getBytesRebuilt()).c_str(), (unsigned long)r.getOrphans());
}

int fsck(MetaCluster& cluster, const std::vector<std::string>& args) {
  uint32_t max = 100;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--max" && i + 1 < args.size()) {
      max = uint32_t(std::stoul(args[++i]));
    } else {
      std::cerr << "tessera: error: usage: tessera fsck [--max N]" << std::endl;
      return 3;
    }
  }
  auto r = cluster.onLeader<FsckReply>("fsck", [max](proto::MetaService::Client c) {
    auto req = c.fsckRequest();
    req.setMax(max);
    return req.send().then(
        [](capnp::Response<proto::MetaService::FsckResults> r) -> Result<FsckReply> {
          if (auto e = fromWire(r.getError()); !e) return e.error();
          FsckReply out;
          out.healthy = r.getHealthy();
          out.degraded = r.getDegraded();
          out.lost = r.getLost();
          out.misplaced = r.getMisplaced();
          for (auto b : r.getBad()) {
            auto chunk = b.getChunk();
            auto layout = fromWire(chunk.getLayout());
            out.bad.push_back(FsckReply::Bad{b.getInode(), chunk.getIndex(), chunk.getId(),
                                             layout ? layout->toString() : "?",
                                             b.getHealth().cStr(), b.getDetail().cStr(),
                                             b.getMisplaced()});
          }
          auto rep = r.getRepair();
          out.running = rep.getRunning();
          out.queued = rep.getQueued();
          out.done = rep.getDone();
          out.bytes = rep.getBytesRebuilt();
          return out;
        });
  });
  if (!r) {
    std::cerr << "tessera: error: " << r.error().toString() << std::endl;
    return 3;
  }
  uint64_t total = r->healthy + r->degraded + r->lost;
  printf("%lu chunks: %lu healthy, %lu degraded, %lu lost, %lu misplaced\n",
         (unsigned long)total, (unsigned long)r->healthy, (unsigned long)r->degraded,
         (unsigned long)r->lost, (unsigned long)r->misplaced);
  printf("repair: %lu queued, %lu running, %lu done, %s rebuilt\n", (unsigned long)r->queued,
         (unsigned long)r->running, (unsigned long)r->done, mib(r->bytes).c_str());
  if (!r->bad.empty()) {
    printf("%-10s %-8s %-6s %-18s %-11s %s\n", "INODE", "INDEX", "CHUNK", "LAYOUT", "STATE",
           "DETAIL");
    for (auto& b : r->bad) {
      std::string state = !b.misplaced          ? b.health
                          : b.health == "healthy" ? std::string("misplaced")
                                                  : b.health + "+misplaced";
      printf("%-10lu %-8lu %-6lu %-18s %-11s %s\n", (unsigned long)b.inode,
             (unsigned long)b.index, (unsigned long)b.chunk, b.layout.c_str(), state.c_str(),
             b.detail.c_str());
    }
    uint64_t bad = r->degraded + r->lost + r->misplaced;
    if (bad > r->bad.size()) printf("(more not listed; --max N)\n");
  }
  fflush(stdout);
  if (r->lost > 0) return 2;
  if (r->degraded > 0 || r->misplaced > 0) return 1;
  return 0;
}

}  // namespace tessera::tools
