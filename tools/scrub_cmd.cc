#include "tools/scrub_cmd.h"

#include <sys/stat.h>
#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "fs/types.h"
#include "fs/wire.h"
#include "tools/cli_util.h"

namespace tessera::tools {
namespace {

uint64_t wallMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1'000'000;
}

std::string ago(uint64_t atMs) {
  if (atMs == 0) return "never";
  uint64_t now = wallMs();
  uint64_t ms = now > atMs ? now - atMs : 0;
  char buf[32];
  if (ms < 60'000) snprintf(buf, sizeof buf, "%.1fs ago", double(ms) / 1000);
  else if (ms < 3'600'000) snprintf(buf, sizeof buf, "%lum ago", (unsigned long)(ms / 60'000));
  else if (ms < 172'800'000) snprintf(buf, sizeof buf, "%luh ago", (unsigned long)(ms / 3'600'000));
  else snprintf(buf, sizeof buf, "%lud ago", (unsigned long)(ms / 86'400'000));
  return buf;
}

Result<capnp::Response<proto::MetaService::StatusResults>> leaderStatus(MetaCluster& cluster) {
  return cluster.onLeader<capnp::Response<proto::MetaService::StatusResults>>(
      "status", [](proto::MetaService::Client c) {
        return c.statusRequest().send().then(
            [](capnp::Response<proto::MetaService::StatusResults> r)
                -> Result<capnp::Response<proto::MetaService::StatusResults>> {
              if (auto e = fromWire(r.getError()); !e) return e.error();
              // Only the leader knows the chunk servers; a follower's reply names none.
              if (r.getRaft().getRole() != "leader") {
                return Error{Errc::kNotLeader, "not the leader", ""};
              }
              return kj::mv(r);
            });
      });
}

void printProgress(proto::MetaService::StatusResults::Reader r) {
  printf("scrub progress of %u chunk servers:\n", r.getServers().size());
  printf("  %-4s %-5s %-8s %-24s %7s %-12s %10s %8s %11s\n", "ID", "STATE", "SCRUB",
         "THIS PASS", "PASSES", "LAST PASS", "BAD BLOCKS", "DAMAGED", "LOST BLOCKS");
  for (auto s : r.getServers()) {
    auto p = s.getScrub();
    std::string pass = human(p.getBytesThisPass()) + " of " + human(p.getPassBytes());
    printf("  %-4lu %-5s %-8s %-24s %7lu %-12s %10lu %8lu %11lu\n", (unsigned long)s.getId(),
           s.getUp() ? "up" : "DOWN", p.getRunning() ? "running" : "idle", pass.c_str(),
           (unsigned long)p.getPasses(), ago(p.getLastPassEndMs()).c_str(),
           (unsigned long)p.getBadBlocks(), (unsigned long)s.getDamagedShards(),
           (unsigned long)p.getLostBlocks());
  }
}

void printDamaged(proto::MetaService::StatusResults::Reader r) {
  auto damaged = r.getDamaged();
  printf("damaged shards: %u\n", damaged.size());
  if (damaged.size() == 0) return;
  printf("  %-10s %5s %6s  %s\n", "CHUNK", "SHARD", "SERVER", "BAD BLOCKS (shard offsets)");
  for (auto d : damaged) {
    std::string blocks;
    auto list = d.getBlocks();
    if (list.size() == 0) blocks = "whole shard (header)";
    for (unsigned i = 0; i < list.size() && i < 8; ++i) {
      blocks += (i ? "," : "") + std::to_string(list[i]);
    }
    if (list.size() > 8) blocks += ",... (" + std::to_string(list.size()) + " blocks)";
    printf("  %-10lu %5u %6lu  %s\n", (unsigned long)d.getChunk(), unsigned(d.getShard()),
           (unsigned long)d.getServer(), blocks.c_str());
  }
}

}  // namespace

int scrubCommand(MetaCluster& cluster, std::vector<std::string> args) {
  bool now = false;
  for (auto& a : args) {
    if (a == "--now") now = true;
    else return fail("usage: tessera scrub [--now]");
  }
  if (now) {
    auto asked = cluster.onLeader<uint32_t>("scrub", [](proto::MetaService::Client c) {
      return c.scrubRequest().send().then(
          [](capnp::Response<proto::MetaService::ScrubResults> r) -> Result<uint32_t> {
            if (auto e = fromWire(r.getError()); !e) return e.error();
            return r.getServers();
          });
    });
    if (!asked) return fail("scrub: " + asked.error().toString());
    printf("asked %u chunk servers to start a scrub pass now\n", *asked);
  }
  auto st = leaderStatus(cluster);
  if (!st) return fail("status: " + st.error().toString());
  printProgress(*st);
  printDamaged(*st);
  return 0;
}

void printScrubSummary(proto::MetaService::StatusResults::Reader r) {
  uint64_t running = 0, scrubbed = 0, total = 0, bad = 0, lost = 0, oldest = UINT64_MAX;
  for (auto s : r.getServers()) {
    auto p = s.getScrub();
    running += p.getRunning();
    if (p.getRunning()) {
      scrubbed += p.getBytesThisPass();
      total += p.getPassBytes();
    }
    bad += p.getBadBlocks();
    if (s.getUp()) lost += p.getLostBlocks();
    oldest = std::min<uint64_t>(oldest, p.getLastPassEndMs());
  }
  printf("scrub   %lu of %u chunk servers scrubbing", (unsigned long)running,
         r.getServers().size());
  if (running) printf(" (%s of %s)", human(scrubbed).c_str(), human(total).c_str());
  printf("; oldest last pass %s; %lu bad blocks found; %u damaged shards%s\n",
         oldest == UINT64_MAX ? "never" : ago(oldest).c_str(), (unsigned long)bad,
         r.getDamaged().size(), r.getDamaged().size() ? " (tessera scrub lists them)" : "");
  if (lost > 0) {
    printf("        %lu blocks marked lost (rebuilt from rows holding a mix of two writes; reads of "
           "them fail until they are written again)\n",
           (unsigned long)lost);
  }
}

int chunksCommand(MetaCluster& cluster, const std::vector<std::string>& args) {
  if (args.size() != 1) return fail("usage: tessera chunks FILE");
  struct stat st;
  if (::stat(args[0].c_str(), &st) != 0) return fail(args[0] + ": " + strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail(args[0] + " is not a regular file");
  uint64_t inode = st.st_ino;
  uint64_t count = (uint64_t(st.st_size) + kChunkSize - 1) / kChunkSize;
  printf("%-8s %-10s %-11s %s\n", "INDEX", "CHUNK", "LAYOUT", "SERVERS (shard 0, 1, ...)");
  for (uint64_t first = 0; first < count; first += kMaxGetChunks) {
    auto chunks = cluster.onLeader<std::vector<ChunkDesc>>(
        "getChunks", [inode, first](proto::MetaService::Client c) {
          auto req = c.getChunksRequest();
          req.setInode(inode);
          req.setFirst(first);
          req.setCount(kMaxGetChunks);
          return req.send().then([](capnp::Response<proto::MetaService::GetChunksResults> r)
                                     -> Result<std::vector<ChunkDesc>> {
            if (auto e = fromWire(r.getError()); !e) return e.error();
            return fromWire(r.getChunks());
          });
        });
    if (!chunks) return fail("getChunks: " + chunks.error().toString());
    for (auto& c : *chunks) {
      std::string servers;
      for (auto s : c.servers) servers += (servers.empty() ? "" : " ") + std::to_string(s.value);
      printf("%-8lu %-10lu %-11s %s\n", (unsigned long)c.index, (unsigned long)c.id.value,
             c.layout.toString().c_str(), servers.c_str());
    }
  }
  return 0;
}

}  // namespace tessera::tools
