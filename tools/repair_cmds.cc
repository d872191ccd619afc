#include "tools/repair_cmds.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>

#include "fs/wire.h"

namespace tessera::tools {

namespace {

struct FsckReply {
  uint64_t healthy = 0, degraded = 0, lost = 0, misplaced = 0;
  struct Bad {
    uint64_t inode, index, chunk;
    std::string layout, health, detail;
    bool misplaced;
    uint64_t lostBlocks;
  };
  std::vector<Bad> bad;
  uint64_t running = 0, queued = 0, done = 0, bytes = 0;
  uint64_t lostBlocks = 0, lostBlockChunks = 0;
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
      // A number, not an exception: bad input is one clear line.
      const std::string& text = args[++i];
      char* end = nullptr;
      errno = 0;
      unsigned long long n = std::strtoull(text.c_str(), &end, 10);
      if (text.empty() || text[0] == '-' || *end != '\0' || errno != 0 || n > 10'000) {
        std::cerr << "tessera: error: --max takes a number from 0 to 10000" << std::endl;
        return 3;
      }
      max = uint32_t(n);
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
                                             b.getMisplaced(), b.getLostBlocks()});
          }
          auto rep = r.getRepair();
          out.running = rep.getRunning();
          out.queued = rep.getQueued();
          out.done = rep.getDone();
          out.bytes = rep.getBytesRebuilt();
          out.lostBlocks = r.getLostBlocks();
          out.lostBlockChunks = r.getLostBlockChunks();
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
      // "healthy" only with a qualifier: misplaced, lost-blocks or both.
      std::string state = b.health == "healthy" ? "" : b.health;
      for (auto [on, what] : {std::pair{b.misplaced, "misplaced"},
                              std::pair{b.lostBlocks > 0, "lost-blocks"}}) {
        if (on) state += (state.empty() ? "" : "+") + std::string(what);
      }
      if (state.empty()) state = b.health;
      printf("%-10lu %-8lu %-6lu %-18s %-11s %s\n", (unsigned long)b.inode,
             (unsigned long)b.index, (unsigned long)b.chunk, b.layout.c_str(), state.c_str(),
             b.detail.c_str());
    }
    // Chunks can count twice (degraded and misplaced): only a full list can have left some out.
    uint64_t bad = r->degraded + r->lost + r->misplaced + r->lostBlockChunks;
    if (r->bad.size() >= max && bad > r->bad.size()) printf("(more not listed; --max N)\n");
  }
  if (r->lostBlocks > 0) {
    printf("%lu blocks marked lost on the chunk servers, in %lu chunks (state lost-blocks above): "
           "rebuilt from rows that held a mix of two writes, their content is known nowhere and "
           "reads of them fail until they are written again\n",
           (unsigned long)r->lostBlocks, (unsigned long)r->lostBlockChunks);
  }
  fflush(stdout);
  if (r->lost > 0 || r->lostBlocks > 0) return 2;
  if (r->degraded > 0 || r->misplaced > 0) return 1;
  return 0;
}

namespace {

Result<uint64_t> parseId(const std::string& text) {
  try {
    size_t used = 0;
    uint64_t id = std::stoull(text, &used);
    if (used == text.size() && id != 0) return id;
  } catch (...) {
  }
  return Error{Errc::kInvalid, "bad chunk server id '" + text + "'"};
}

// Shards the chunk map places on server `id`, per the leader's last pass (nullopt: unknown).
Result<std::optional<uint64_t>> placedOn(MetaCluster& cluster, uint64_t id) {
  return cluster.onLeader<std::optional<uint64_t>>("status", [id](proto::MetaService::Client c) {
    return c.statusRequest().send().then(
        [id](capnp::Response<proto::MetaService::StatusResults> r)
            -> Result<std::optional<uint64_t>> {
          if (auto e = fromWire(r.getError()); !e) return e.error();
          if (!r.getRepair().getPassed()) return std::optional<uint64_t>();
          for (auto s : r.getServers()) {
            if (s.getId() == id) return std::optional<uint64_t>(s.getPlacedShards());
          }
          return Error{Errc::kNotFound, "no chunk server " + std::to_string(id)};
        });
  });
}

}  // namespace

int drain(MetaCluster& cluster, const std::vector<std::string>& args) {
  bool stop = false, wait = false;
  std::optional<uint64_t> id;
  for (auto& a : args) {
    if (a == "--stop") {
      stop = true;
    } else if (a == "--wait") {
      wait = true;
    } else if (auto parsed = parseId(a); parsed && !id) {
      id = *parsed;
    } else {
      std::cerr << "tessera: error: usage: tessera drain ID [--stop] [--wait]" << std::endl;
      return 1;
    }
  }
  if (!id) {
    std::cerr << "tessera: error: usage: tessera drain ID [--stop] [--wait]" << std::endl;
    return 1;
  }
  auto r = cluster.onLeader<bool>("drainServer", [&](proto::MetaService::Client c) {
    auto req = c.drainServerRequest();
    req.setServer(*id);
    req.setDraining(!stop);
    return req.send().then([](capnp::Response<proto::MetaService::DrainServerResults> r)
                               -> Result<bool> {
      if (auto e = fromWire(r.getError()); !e) return e.error();
      return true;
    });
  });
  if (!r) {
    std::cerr << "tessera: error: " << r.error().toString() << std::endl;
    return 1;
  }
  printf("chunk server %lu %s\n", (unsigned long)*id,
         stop ? "no longer drains" : "is draining: its shards move to the others");
  if (stop || !wait) return 0;
  std::optional<uint64_t> lastShown;
  while (true) {
    auto left = placedOn(cluster, *id);
    if (!left) {
      std::cerr << "tessera: error: " << left.error().toString() << std::endl;
      return 1;
    }
    if (*left && (!lastShown || **left != *lastShown)) {
      printf("  %lu shards left on server %lu\n", (unsigned long)**left, (unsigned long)*id);
      fflush(stdout);
      lastShown = **left;
    }
    if (*left && **left == 0) {
      printf("drained: no shard left on server %lu; `tessera remove %lu` once its old copies "
             "are deleted\n",
             (unsigned long)*id, (unsigned long)*id);
      return 0;
    }
    if (cluster.expired()) {
      std::cerr << "tessera: error: still draining after --timeout" << std::endl;
      return 1;
    }
    cluster.sleepMs(500);
  }
}

int removeServer(MetaCluster& cluster, const std::vector<std::string>& args) {
  auto id = args.size() == 1 ? parseId(args[0]) : Result<uint64_t>(Error{Errc::kInvalid, ""});
  if (!id) {
    std::cerr << "tessera: error: usage: tessera remove ID" << std::endl;
    return 1;
  }
  auto r = cluster.onLeader<bool>("removeServer", [&](proto::MetaService::Client c) {
    auto req = c.removeServerRequest();
    req.setServer(*id);
    return req.send().then([](capnp::Response<proto::MetaService::RemoveServerResults> r)
                               -> Result<bool> {
      if (auto e = fromWire(r.getError()); !e) return e.error();
      return true;
    });
  });
  if (!r) {
    std::cerr << "tessera: error: " << r.error().toString() << std::endl;
    return 1;
  }
  printf("chunk server %lu removed; stop its tessera-chunk\n", (unsigned long)*id);
  return 0;
}

}  // namespace tessera::tools
