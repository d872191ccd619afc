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
  inventories_.clear();
  placed_.clear();
  placing_.clear();
  placedValid_ = false;
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
  if (!cursorInode_ && cursorIndex_ == 0) {
    placing_.clear();
    placingMark_ = ns_.idMarks().chunk;
  }
  auto batch = ns_.scanChunks(cursorInode_, cursorIndex_, config_.scanBatch);
  NotHeldFn held = [this](uint64_t c, int s, ServerId id) { return notHeld(c, s, id); };
  for (auto& entry : batch) {
    placing_[entry.chunk.id.value] = entry.chunk.servers;
    auto h = assess(entry.chunk, servers, damaged_, config_.graceMs, held);
    switch (h.health) {
      case Health::kHealthy: ++pass_.healthy; break;
      case Health::kDegraded: ++pass_.degraded; break;
      case Health::kLost: ++pass_.lost; break;
    }
    if (h.misplaced) ++pass_.misplaced;
    for (ServerId s : entry.chunk.servers) ++pass_.shardsOn[s];
    if ((!h.repairable.empty() || !h.moves.empty()) && h.health != Health::kLost) {
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
    stats_.shardsOn = std::move(pass_.shardsOn);
    pass_ = Stats{};
    placed_ = std::move(placing_);
    placing_.clear();
    placedMark_ = placingMark_;
    placedValid_ = true;
    cursorInode_ = InodeId();
    cursorIndex_ = 0;
  } else {
    cursorInode_ = batch.back().inode;
    cursorIndex_ = batch.back().chunk.index + 1;
  }
}

ChunkReport checkChunks(Namespace& ns, const ServerMap& servers, const DamagedSet& damaged,
                        uint64_t graceMs, size_t max, const NotHeldFn& notHeld) {
  ChunkReport report;
  InodeId inode;
  uint64_t index = 0;
  constexpr size_t kBatch = 10'000;
  while (true) {
    auto batch = ns.scanChunks(inode, index, kBatch);
    for (auto& entry : batch) {
      auto h = assess(entry.chunk, servers, damaged, graceMs, notHeld);
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
  return checkChunks(ns_, servers, damaged_, config_.graceMs, max,
                     [this](uint64_t c, int s, ServerId id) { return notHeld(c, s, id); });
}

bool Repair::order(const Namespace::ChunkEntry& entry, const ChunkHealth& health,
                   const ServerMap& servers) {
  const ChunkDesc& chunk = entry.chunk;
  // A writer holds the chunk: its writes would race the copy. Wait for the lease to end.
  if (chunk.leaseSession) return false;
  if (running_.size() >= config_.maxOrders) return false;
  int shard = health.repairable.empty() ? health.moves[0] : health.repairable[0];
  std::set<ServerId> excluded;
  for (auto& [id, n] : perServer_) {
    if (n >= config_.maxPerServer) excluded.insert(id);
  }
  // A server still to delete its old shards of this chunk would delete the new one with them.
  if (auto g = ns_.garbageOf(chunk.id)) {
    for (ServerId s : g->pending) excluded.insert(s);
  }
  for (auto& [id, inv] : inventories_) {
    if (inv.ordered.count(chunk.id.value) ||
        std::find(inv.toOrder.begin(), inv.toOrder.end(), chunk.id.value) != inv.toOrder.end()) {
      excluded.insert(id);
    }
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
  log::info("repair: ", health.repairable.empty() ? "moving" : "rebuilding", " shard ",
            chunk.id.value, ".", shard, " (",
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
          if (generation == generation_) {
            // The target's reports predate its new shard: it would look missing there. Its
            // inventory counts again from the next two reports.
            auto inv = inventories_.find(to);
            if (inv != inventories_.end()) {
              inv->second.complete.clear();
              inv->second.building = false;
            }
            for (auto* map : {&placed_, &placing_}) {
              auto it = map->find(chunk.id.value);
              if (it != map->end() && size_t(shard) < it->second.size()) {
                it->second[shard] = to;
              }
            }
          }
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

// --- inventories -----------------------------------------------------------------------------

void Repair::inventory(ServerId server, bool start,
                       const std::vector<std::pair<uint64_t, int>>& shards, bool done) {
  auto& inv = inventories_[server];
  if (start) {
    inv.building = true;
    inv.partial = Listing{};
    inv.partial.mark = ns_.idMarks().chunk;
  }
  // A piece without its start (a report begun under another leader) is ignored.
  if (!inv.building) return;
  for (auto& [chunk, shard] : shards) {
    inv.partial.shards.insert({chunk, shard});
    inv.partial.chunks.insert(chunk);
  }
  if (!done) return;
  inv.building = false;
  inv.complete.push_back(std::move(inv.partial));
  inv.partial = Listing{};
  if (inv.complete.size() > 2) inv.complete.erase(inv.complete.begin());
  // Orders of earlier findings are done once a complete report lacks them.
  const Listing& latest = inv.complete.back();
  std::erase_if(inv.ordered, [&](uint64_t c) { return !latest.chunks.count(c); });
  findOrphans(server);
}

bool Repair::notHeld(uint64_t chunk, int shard, ServerId server) const {
  auto it = inventories_.find(server);
  if (it == inventories_.end() || it->second.complete.size() < 2) return false;
  const auto& reports = it->second.complete;
  if (chunk > reports[0].mark) return false;
  return !reports[0].shards.count({chunk, shard}) && !reports[1].shards.count({chunk, shard});
}

void Repair::findOrphans(ServerId server) {
  auto& inv = inventories_[server];
  inv.toOrder.clear();
  if (inv.complete.size() < 2 || !placedValid_) return;
  const Listing& older = inv.complete[0];
  const Listing& newer = inv.complete[1];
  // The chunk map of the pass must know every chunk the older report could hold.
  if (placedMark_ < older.mark) return;
  for (uint64_t chunk : newer.chunks) {
    if (chunk > older.mark || !older.chunks.count(chunk) || inv.ordered.count(chunk)) continue;
    auto running = running_.find(ChunkId(chunk));
    if (running != running_.end() && running->second.target == server) continue;
    auto it = placed_.find(chunk);
    if (it != placed_.end() &&
        std::find(it->second.begin(), it->second.end(), server) != it->second.end()) {
      continue;
    }
    // Still in the store's garbage list for this server: the garbage path deletes it.
    if (auto g = ns_.garbageOf(ChunkId(chunk))) {
      if (std::find(g->pending.begin(), g->pending.end(), server) != g->pending.end()) continue;
    }
    inv.toOrder.push_back(chunk);
  }
  if (!inv.toOrder.empty()) {
    log::info("repair: chunk server ", server.value, " holds ", inv.toOrder.size(),
              " orphan chunks; ordering them deleted");
  }
}

std::vector<ChunkId> Repair::takeOrphans(ServerId server, size_t max) {
  std::vector<ChunkId> out;
  auto it = inventories_.find(server);
  if (it == inventories_.end()) return out;
  auto& inv = it->second;
  while (!inv.toOrder.empty() && out.size() < max) {
    uint64_t chunk = inv.toOrder.back();
    inv.toOrder.pop_back();
    // A rebuild to this server may have started since the finding.
    auto running = running_.find(ChunkId(chunk));
    if (running != running_.end() && running->second.target == server) continue;
    // ... or finished, switching a shard of it here.
    auto placed = placed_.find(chunk);
    if (placed != placed_.end() &&
        std::find(placed->second.begin(), placed->second.end(), server) != placed->second.end()) {
      continue;
    }
    inv.ordered.insert(chunk);
    out.push_back(ChunkId(chunk));
    ++stats_.orphans;
  }
  return out;
}

}  // namespace tessera::meta
