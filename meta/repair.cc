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
      rng_(config.seed),
      recalls_(config.recallHoldMs) {}

void Repair::reset() {
  ++generation_;
  damaged_.clear();
  inventories_.clear();
  placed_.clear();
  placing_.clear();
  placedValid_ = false;
  running_.clear();
  perServer_.clear();
  recalls_.clear();
  // A rebalance is the leader's soft state: a new leader has none (run it again there).
  moves_.clear();
  rebalance_ = RebalanceStats{};
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
  recalls_.expire(timer_.now());
  // Writers wait for these: first.
  tickRecalled(servers);
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
      if (order(entry, h, servers) != Ordered::kYes) ++pass_.queued;
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
  tickMoves(servers);
}

std::optional<Namespace::ChunkEntry> Repair::entryOf(InodeId inode, uint64_t index) {
  auto found = ns_.chunks(inode, index, 1);
  if (!found || found->empty() || found->front().index != index) return std::nullopt;
  auto attr = ns_.getattr(inode);
  if (!attr) return std::nullopt;
  return Namespace::ChunkEntry{inode, attr->size, found->front()};
}

void Repair::tickRecalled(const ServerMap& servers) {
  for (auto [inode, index] : recalls_.inForce(timer_.now())) {
    auto entry = entryOf(inode, index);
    if (!entry) {
      recalls_.finished(inode, index, false);
      continue;
    }
    // Still held (the holder is finishing its writes), or the move runs already.
    if (entry->chunk.leaseSession || running_.count(entry->chunk.id)) continue;
    Ordered ordered = Ordered::kNoTarget;
    auto move = std::find_if(moves_.begin(), moves_.end(), [&](const QueuedMove& q) {
      return q.move.chunk == entry->chunk.id;
    });
    if (move != moves_.end()) {
      if (tryMove(*move, servers)) {
        moves_.erase(move);
        if (running_.count(entry->chunk.id)) ordered = Ordered::kYes;
      } else {
        ordered = Ordered::kThrottled;
      }
    } else {
      auto h = assess(entry->chunk, servers, damaged_, config_.graceMs,
                      [this](uint64_t c, int s, ServerId id) { return notHeld(c, s, id); });
      if ((!h.repairable.empty() || !h.moves.empty()) && h.health != Health::kLost) {
        ordered = order(*entry, h, servers);
      }
    }
    // Nothing to move after all (or nowhere to): the writer may have its lease back now. A
    // full throttle keeps the recall, within its hold time.
    if (ordered == Ordered::kNoTarget) recalls_.finished(inode, index, false);
  }
}

void Repair::tickMoves(const ServerMap& servers) {
  size_t n = moves_.size();
  for (size_t i = 0; i < n && !moves_.empty() && running_.size() < config_.maxOrders; ++i) {
    QueuedMove q = moves_.front();
    moves_.pop_front();
    if (!tryMove(q, servers)) moves_.push_back(q);
  }
}

bool Repair::tryMove(QueuedMove& q, const ServerMap& servers) {
  const PlannedMove& m = q.move;
  auto drop = [&](const char* why) {
    log::info("rebalance: dropping the move of shard ", m.chunk.value, ".", m.shard,
              " from server ", m.from.value, " to ", m.to.value, ": ", why);
    ++rebalance_.failed;
    return true;
  };
  auto entry = entryOf(m.inode, m.index);
  if (!entry || entry->chunk.id != m.chunk) return drop("the chunk is gone");
  const ChunkDesc& chunk = entry->chunk;
  if (size_t(m.shard) >= chunk.servers.size() || chunk.servers[m.shard] != m.from) {
    return drop("the shard moved since the plan");
  }
  if (std::find(chunk.servers.begin(), chunk.servers.end(), m.to) != chunk.servers.end()) {
    return drop("the target holds a shard of the chunk now");
  }
  auto target = servers.find(m.to);
  if (target == servers.end() || target->second.draining) {
    return drop("the target is gone or draining");
  }
  if (!target->second.up) return drop("the target is down");
  if (running_.count(chunk.id)) return false;
  NotHeldFn held = [this](uint64_t c, int s, ServerId id) { return notHeld(c, s, id); };
  auto h = assess(chunk, servers, damaged_, config_.graceMs, held);
  // Repair first: a chunk with shards missing is not moved (for a while).
  if (h.health != Health::kHealthy || !h.missing.empty()) {
    return ++q.waits >= kMoveWaits ? drop("the chunk stayed degraded") : false;
  }
  ChunkDesc moved = chunk;
  moved.servers[m.shard] = m.to;
  if (assess(moved, servers, {}, config_.graceMs).misplaced && !h.misplaced) {
    return drop("the placement rules would break");
  }
  switch (order(*entry, h, servers, &q)) {
    case Ordered::kYes: return true;
    case Ordered::kNoTarget: return drop("the target cannot take it now");
    case Ordered::kThrottled: return false;
    case Ordered::kRecalled:
      return ++q.waits >= kMoveWaits ? drop("its writer did not give the lease back") : false;
  }
  return false;
}

bool Repair::leaseBusy(InodeId inode, uint64_t index) const {
  return recalls_.holding(inode, index, timer_.now());
}

std::vector<RecalledLease> Repair::recalledFrom(SessionId session) const {
  return recalls_.recalledFrom(session, timer_.now());
}

void Repair::startRebalance(const RebalancePlan& plan, double bandPct) {
  moves_.clear();
  ++plan_;
  uint64_t running = 0;
  for (auto& [id, o] : running_) running += o.move ? 1 : 0;
  rebalance_ = RebalanceStats{};
  rebalance_.bandPct = bandPct;
  rebalance_.planned = plan.moves.size();
  for (auto& m : plan.moves) {
    moves_.push_back(QueuedMove{m, 0, 0, plan_});
    rebalance_.bytesPlanned += m.bytes;
  }
  log::info("rebalance: ", plan.moves.size(), " moves planned (", rebalance_.bytesPlanned,
            " bytes) to bring every server within ", bandPct, " points of the mean usage ",
            plan.meanPct, "%", running ? "; moves of an earlier plan still run" : "");
}

void Repair::stopRebalance() {
  if (!moves_.empty()) log::info("rebalance: stopped; ", moves_.size(), " queued moves dropped");
  rebalance_.failed += moves_.size();
  moves_.clear();
  ++plan_;
}

Repair::RebalanceStats Repair::rebalanceStats() const {
  RebalanceStats s = rebalance_;
  s.queued = moves_.size();
  s.running = 0;
  for (auto& [id, o] : running_) s.running += o.move ? 1 : 0;
  return s;
}

ChunkReport checkChunks(Namespace& ns, const ServerMap& servers, const DamagedSet& damaged,
                        uint64_t graceMs, size_t max, const NotHeldFn& notHeld,
                        const LostBlocksFn& lostBlocks) {
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
      uint64_t lost = 0;
      if (lostBlocks) {
        for (auto [shard, blocks] : lostBlocks(entry.chunk)) {
          lost += blocks;
          h.why += std::string(h.why.empty() ? "" : "; ") + std::to_string(blocks) +
                   " blocks marked lost on shard " + std::to_string(shard);
        }
      }
      if (lost > 0) ++report.lostBlockChunks;
      if ((h.health != Health::kHealthy || h.misplaced || lost > 0) && report.bad.size() < max) {
        report.bad.push_back(ChunkReport::Bad{entry.inode, entry.chunk, std::move(h), lost});
      }
    }
    if (batch.size() < kBatch) break;
    inode = batch.back().inode;
    index = batch.back().chunk.index + 1;
  }
  return report;
}

Repair::Report Repair::check(const ServerMap& servers, size_t max,
                             const LostBlocksFn& lostBlocks) {
  return checkChunks(ns_, servers, damaged_, config_.graceMs, max,
                     [this](uint64_t c, int s, ServerId id) { return notHeld(c, s, id); },
                     lostBlocks);
}

Repair::Ordered Repair::order(const Namespace::ChunkEntry& entry, const ChunkHealth& health,
                              const ServerMap& servers, const QueuedMove* move) {
  const ChunkDesc& chunk = entry.chunk;
  if (running_.size() >= config_.maxOrders) return Ordered::kThrottled;
  int shard = move                      ? move->move.shard
              : health.repairable.empty() ? health.moves[0]
                                          : health.repairable[0];
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
  Result<ServerId> target = Error{Errc::kUnavailable, ""};
  if (move) {
    if (excluded.count(move->move.to)) return Ordered::kThrottled;
    target = move->move.to;
  } else {
    target = pickTarget(chunk, shard, servers, excluded, rng_);
  }
  if (!target) {
    log::debug("repair: ", target.error().toString().c_str());
    // Every target busy with its share of orders is the throttle, not a lack of targets.
    bool throttled = false;
    for (auto& [id, n] : perServer_) throttled = throttled || n >= config_.maxPerServer;
    return throttled ? Ordered::kThrottled : Ordered::kNoTarget;
  }
  // A writer holds the chunk: its writes would race the copy. Ask for the lease back; the
  // move is ordered at a tick after the holder let go (tickRecalled).
  if (chunk.leaseSession) {
    auto now = timer_.now();
    bool already = recalls_.holding(entry.inode, chunk.index, now);
    // Writers wait for recalled chunks: no more of them at once than moves may run.
    if (!already && recalls_.countInForce(now) >= config_.maxOrders) return Ordered::kThrottled;
    if (recalls_.recall(entry.inode, chunk.index, chunk.leaseSession, chunk.epoch, now) &&
        !already) {
      log::info("repair: recalling the write lease of chunk ", chunk.id.value, " (epoch ",
                chunk.epoch, ") from session ", chunk.leaseSession.value, " to move shard ",
                shard);
    }
    return Ordered::kRecalled;
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
  running_[chunk.id] = Order{*target, generation, entry.inode, chunk.index,
                             move ? std::optional<QueuedMove>(*move) : std::nullopt};
  ++perServer_[*target];
  log::info(move ? "rebalance: " : "repair: ",
            move || health.repairable.empty() ? "moving" : "rebuilding", " shard ",
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
  return Ordered::kYes;
}

void Repair::finished(ChunkId chunk, uint64_t generation, bool ok, uint64_t bytes) {
  if (generation != generation_) return;
  auto it = running_.find(chunk);
  if (it == running_.end()) return;
  auto s = perServer_.find(it->second.target);
  if (s != perServer_.end() && --s->second == 0) perServer_.erase(s);
  Order o = std::move(it->second);
  running_.erase(it);
  KJ_DEFER(if (slotFree_ && (stats_.queued > 0 || pass_.queued > 0 || !moves_.empty())) slotFree_());
  recalls_.finished(o.inode, o.index, ok);
  if (o.move) {
    if (o.move->plan != plan_) return;  // of a plan since replaced or stopped
    if (ok) {
      ++rebalance_.done;
      rebalance_.bytesMoved += bytes;
    } else if (++o.move->attempts < kMoveAttempts) {
      // A writer that took the chunk back, a copy that failed: try again later.
      moves_.push_back(*o.move);
    } else {
      ++rebalance_.failed;
    }
    return;
  }
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

void Repair::copyStarted(ChunkId chunk, const std::vector<ServerId>& servers) {
  copying_[chunk.value] = servers;
}

void Repair::copyEnded(ChunkId chunk, const std::vector<ServerId>& servers, bool placed) {
  copying_.erase(chunk.value);
  if (!placed) return;
  for (auto* map : {&placed_, &placing_}) (*map)[chunk.value] = servers;
  for (ServerId s : servers) {
    auto inv = inventories_.find(s);
    if (inv != inventories_.end()) {
      inv->second.complete.clear();
      inv->second.building = false;
    }
  }
}

bool Repair::copyingTo(uint64_t chunk, ServerId server) const {
  auto it = copying_.find(chunk);
  return it != copying_.end() &&
         std::find(it->second.begin(), it->second.end(), server) != it->second.end();
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
    if (copyingTo(chunk, server)) continue;
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
    if (copyingTo(chunk, server)) continue;
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
