#include "meta/repair.h"

#include <time.h>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "fs/log.h"
#include "fs/wire.h"

namespace tessera::meta {

void Repair::ErrorHandler::taskFailed(kj::Exception&& e) {
  log::error("repair task failed: ", e.getDescription());
}

Repair::Repair(Namespace& ns, raft::RaftNode& raft, kj::Timer& timer, kj::Network& network,
               Config config)
    : ns_(ns),
      raft_(raft),
      timer_(timer),
      config_(config),
      peers_(network, timer, config.connectTimeoutMs),
      rng_(config.seed) {}

void Repair::reset() {
  ++generation_;
  damaged_.clear();
  running_.clear();
  perServer_.clear();
  cursorInode_ = InodeId();
  cursorIndex_ = 0;
  pass_ = Stats{};
  uint64_t done = stats_.done, failed = stats_.failed, bytes = stats_.bytes;
  stats_ = Stats{};
  stats_.done = done;
  stats_.failed = failed;
  stats_.bytes = bytes;
}

void Repair::reportDamaged(ChunkId chunk, int shard, ServerId server) {
  if (!chunk || shard < 0 || shard >= 32 || !server) return;
  if (damaged_.insert({chunk.value, shard, server.value}).second) {
    log::warn("shard ", chunk.value, ".", shard, " on chunk server ", server.value,
              " reported damaged; it will be rebuilt");
  }
}

Repair::Stats Repair::stats() const {
  Stats s = stats_;
  s.running = running_.size();
  return s;
}

void Repair::tick(const ServerMap& servers) {
  auto batch = ns_.scanChunks(cursorInode_, cursorIndex_, config_.scanBatch);
  for (auto& entry : batch) {
    auto h = assess(entry.chunk, servers, damaged_, config_.graceMs);
    switch (h.health) {
      case Health::kHealthy: ++pass_.healthy; break;
      case Health::kDegraded: ++pass_.degraded; break;
      case Health::kLost: ++pass_.lost; break;
    }
    if (h.misplaced) ++pass_.misplaced;
    if (!h.repairable.empty() && h.health != Health::kLost) {
      if (running_.count(entry.chunk.id)) continue;
      if (!order(entry, h, servers)) ++pass_.queued;
    }
  }
  if (batch.size() < config_.scanBatch) {
    // The pass is complete: publish its counts and start over.
    stats_.passed = true;
    stats_.healthy = pass_.healthy;
    stats_.degraded = pass_.degraded;
    stats_.lost = pass_.lost;
    stats_.misplaced = pass_.misplaced;
    stats_.queued = pass_.queued;
    pass_ = Stats{};
    cursorInode_ = InodeId();
    cursorIndex_ = 0;
  } else {
    cursorInode_ = batch.back().inode;
    cursorIndex_ = batch.back().chunk.index + 1;
  }
}

ChunkReport checkChunks(Namespace& ns, const ServerMap& servers, const DamagedSet& damaged,
                        uint64_t graceMs, size_t max) {
  ChunkReport report;
  InodeId inode;
  uint64_t index = 0;
  constexpr size_t kBatch = 10'000;
  while (true) {
    auto batch = ns.scanChunks(inode, index, kBatch);
    for (auto& entry : batch) {
      auto h = assess(entry.chunk, servers, damaged, graceMs);
      switch (h.health) {
        case Health::kHealthy: ++report.healthy; break;
        case Health::kDegraded: ++report.degraded; break;
        case Health::kLost: ++report.lost; break;
      }
      if (h.misplaced) ++report.misplaced;
      if ((h.health != Health::kHealthy || h.misplaced) && report.bad.size() < max) {
        report.bad.push_back(ChunkReport::Bad{entry.inode, entry.chunk, std::move(h)});
      }
    }
    if (batch.size() < kBatch) break;
    inode = batch.back().inode;
    index = batch.back().chunk.index + 1;
  }
  return report;
}

Repair::Report Repair::check(const ServerMap& servers, size_t max) {
  return checkChunks(ns_, servers, damaged_, config_.graceMs, max);
}

bool Repair::order(const Namespace::ChunkEntry& entry, const ChunkHealth& health,
                   const ServerMap& servers) {
  const ChunkDesc& chunk = entry.chunk;
  // A writer holds the chunk: its writes would race the copy. Wait for the lease to end.
  if (chunk.leaseSession) return false;
  if (running_.size() >= config_.maxOrders) return false;
  int shard = health.repairable[0];
  std::set<ServerId> excluded;
  for (auto& [id, n] : perServer_) {
    if (n >= config_.maxPerServer) excluded.insert(id);
  }
  // A server still to delete its old shards of this chunk would delete the new one with them.
  if (auto g = ns_.garbageOf(chunk.id)) {
    for (ServerId s : g->pending) excluded.insert(s);
  }
  auto target = pickTarget(chunk, shard, servers, excluded, rng_);
  if (!target) {
    log::debug("repair: ", target.error().toString().c_str());
    return false;
  }
  std::vector<std::string> sources(chunk.servers.size());
  for (size_t i = 0; i < chunk.servers.size(); ++i) {
    if (std::find(health.missing.begin(), health.missing.end(), int(i)) != health.missing.end()) {
      continue;
    }
    auto it = servers.find(chunk.servers[i]);
    if (it != servers.end()) sources[i] = it->second.address;
  }
  uint64_t start = chunk.index * kChunkSize;
  uint64_t chunkBytes = entry.fileSize > start ? entry.fileSize - start : 0;
  uint64_t length = shardLength(chunk.layout, chunkBytes);
  std::string address = servers.at(*target).address;
  uint64_t generation = generation_;
  running_[chunk.id] = Order{*target, generation};
  ++perServer_[*target];
  log::info("repair: rebuilding shard ", chunk.id.value, ".", shard, " (",
            chunk.layout.toString().c_str(), ", ", length, " bytes, was on server ",
            chunk.servers[shard].value, ") on server ", target->value, " at ", address.c_str());

  ServerId to = *target;
  InodeId inode = entry.inode;
  auto done = peers_.get(address).then(
      [this, chunk, shard, sources, length, address](
          Result<proto::ChunkService::Client> c) -> kj::Promise<Result<uint64_t>> {
        using R = Result<uint64_t>;
        if (!c) return R(c.error());
        auto req = c->rebuildRequest();
        req.setChunk(chunk.id.value);
        req.setShard(uint8_t(shard));
        toWire(chunk.layout, req.initLayout());
        auto list = req.initSources(sources.size());
        for (size_t i = 0; i < sources.size(); ++i) list.set(i, sources[i]);
        req.setLength(length);
        using Response = capnp::Response<proto::ChunkService::RebuildResults>;
        return withTimeout(timer_, config_.rebuildTimeoutMs, kj::Promise<Response>(req.send()))
            .then(
                [](Response r) -> R {
                  if (auto s = fromWire(r.getError()); !s) return s.error();
                  return r.getBytes();
                },
                [this, address](kj::Exception&& e) -> R {
                  peers_.failed(address);
                  return errorFromException(e, "rebuild");
                });
      });
  tasks_.add(done.then([this, chunk, shard, to, inode, generation](
                           Result<uint64_t> rebuilt) -> kj::Promise<void> {
    if (!rebuilt) {
      log::warn("repair: rebuilding shard ", chunk.id.value, ".", shard, " on server ", to.value,
                ": ", rebuilt.error().toString().c_str());
      finished(chunk.id, generation, false, 0);
      return kj::READY_NOW;
    }
    if (generation != generation_ || !raft_.leaderReady()) return kj::READY_NOW;
    capnp::MallocMessageBuilder message;
    auto op = message.initRoot<proto::Op>();
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    op.setNowNs(int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec);
    auto r = op.initReplaceShard();
    r.setInode(inode.value);
    r.setIndex(chunk.index);
    r.setChunk(chunk.id.value);
    r.setShard(uint8_t(shard));
    r.setEpoch(chunk.epoch);
    auto list = r.initServers(chunk.servers.size());
    for (size_t i = 0; i < chunk.servers.size(); ++i) list.set(i, chunk.servers[i].value);
    r.setTarget(to.value);
    uint64_t bytes = *rebuilt;
    return raft_.propose(capnp::messageToFlatArray(message))
        .then([this, chunk, shard, to, generation, bytes](Result<Applied> applied) {
          if (!applied) {
            // The rebuilt copy is an orphan now; a later pass orders the repair again if it
            // is still needed.
            log::warn("repair: switching shard ", chunk.id.value, ".", shard, " to server ",
                      to.value, ": ", applied.error().toString().c_str());
            finished(chunk.id, generation, false, 0);
            return;
          }
          log::info("repair: shard ", chunk.id.value, ".", shard, " now on server ", to.value);
          std::erase_if(damaged_, [&](const auto& d) {
            return std::get<0>(d) == chunk.id.value && std::get<1>(d) == shard;
          });
          finished(chunk.id, generation, true, bytes);
        });
  }));
  return true;
}

void Repair::finished(ChunkId chunk, uint64_t generation, bool ok, uint64_t bytes) {
  if (generation != generation_) return;
  auto it = running_.find(chunk);
  if (it == running_.end()) return;
  auto s = perServer_.find(it->second.target);
  if (s != perServer_.end() && --s->second == 0) perServer_.erase(s);
  running_.erase(it);
  if (ok) {
    ++stats_.done;
    stats_.bytes += bytes;
  } else {
    ++stats_.failed;
  }
}

}  // namespace tessera::meta
