#include "meta/scrub_tracker.h"

#include "fs/log.h"

namespace tessera::meta {

uint64_t ScrubTracker::onHeartbeat(ServerId server, proto::ScrubProgress::Reader report) {
  auto& p = progress_[server];
  p.running = report.getRunning();
  p.bytesThisPass = report.getBytesThisPass();
  p.passBytes = report.getPassBytes();
  p.passes = report.getPasses();
  p.lastPassEndMs = report.getLastPassEndMs();
  p.badBlocks = report.getBadBlocks();
  p.request = report.getRequest();
  p.lostBlocks = report.getLostBlocks();
  p.lostShards.clear();
  for (auto l : report.getLostShards()) {
    if (p.lostShards.size() == kMaxLostShards) break;
    if (l.getChunk() == 0 || l.getShard() >= kMaxShardsInLayout || l.getBlocks() == 0 ||
        l.getBlocks() > kChunkSize / kBlockSize) {
      log::warn("chunk server ", server.value, " sent a malformed lost shard (chunk ",
                l.getChunk(), ", shard ", unsigned(l.getShard()), ", ", l.getBlocks(),
                " blocks); dropped");
      continue;
    }
    p.lostShards.push_back({l.getChunk(), int(l.getShard()), l.getBlocks()});
  }
  p.reported = true;

  auto damaged = report.getDamaged();
  size_t n = 0;
  for (auto d : damaged) {
    if (++n > kMaxReports) {
      log::warn("chunk server ", server.value, " sent ", damaged.size(),
                " damage reports in one heartbeat; kept the first ", kMaxReports);
      break;
    }
    uint64_t chunk = d.getChunk();
    unsigned shard = d.getShard();
    bool ok = chunk != 0 && shard < kMaxShardsInLayout && d.getBlocks().size() <= kChunkSize / kBlockSize;
    std::set<uint64_t> blocks;
    for (uint64_t o : d.getBlocks()) {
      if (o % kBlockSize != 0 || o >= kChunkSize) ok = false;
      blocks.insert(o);
    }
    if (!ok) {
      log::warn("chunk server ", server.value, " sent a malformed damage report (chunk ", chunk,
                ", shard ", shard, "); dropped");
      continue;
    }
    reportDamaged(ChunkId(chunk), int(shard), server, blocks);
  }

  auto it = pending_.find(server);
  if (it == pending_.end()) return 0;
  if (p.request == it->second) {
    pending_.erase(it);
    return 0;
  }
  return it->second;
}

void ScrubTracker::requestPass(const std::vector<ServerId>& servers, uint64_t id) {
  for (ServerId s : servers) pending_[s] = id;
}

void ScrubTracker::reportDamaged(ChunkId chunk, int shard, ServerId server,
                                 const std::set<uint64_t>& blocks) {
  Key key{chunk.value, shard, server.value};
  auto [it, added] = damaged_.try_emplace(key, blocks);
  if (!added && it->second == blocks) return;
  it->second = blocks;
  log::warn("chunk server ", server.value, " reports shard ", shard, " of chunk ", chunk.value,
            " damaged (", blocks.empty() ? std::string("whole shard").c_str()
                                         : (std::to_string(blocks.size()) + " bad blocks").c_str(),
            ")");
  // The repair scheduler (meta/repair.h) rebuilds shard `shard` of `chunk` held by `server`
  // elsewhere, like a lost one.
  if (onDamaged) onDamaged(chunk, shard, server);
}

void ScrubTracker::repaired(ChunkId chunk, int shard, ServerId server) {
  damaged_.erase(Key{chunk.value, shard, server.value});
}

void ScrubTracker::fillProgress(ServerId server, proto::ServerInfo::Builder b) const {
  size_t count = 0;
  for (auto& [key, blocks] : damaged_) count += std::get<2>(key) == server.value;
  b.setDamagedShards(count);
  auto it = progress_.find(server);
  if (it == progress_.end()) return;
  const Progress& p = it->second;
  auto s = b.initScrub();
  s.setRunning(p.running);
  s.setBytesThisPass(p.bytesThisPass);
  s.setPassBytes(p.passBytes);
  s.setPasses(p.passes);
  s.setLastPassEndMs(p.lastPassEndMs);
  s.setBadBlocks(p.badBlocks);
  s.setRequest(p.request);
  s.setLostBlocks(p.lostBlocks);
}

std::map<uint64_t, std::vector<ScrubTracker::LostOn>> ScrubTracker::lostShards(
    const std::function<bool(ServerId)>& counted) const {
  std::map<uint64_t, std::vector<LostOn>> out;
  for (auto& [server, p] : progress_) {
    if (!counted(server)) continue;
    for (auto& l : p.lostShards) out[l.chunk].push_back(LostOn{l.shard, server, l.blocks});
  }
  return out;
}

uint64_t ScrubTracker::lostBlocks(const std::function<bool(ServerId)>& counted) const {
  uint64_t n = 0;
  for (auto& [server, p] : progress_) {
    if (counted(server)) n += p.lostBlocks;
  }
  return n;
}

void ScrubTracker::fillDamaged(capnp::List<proto::DamagedShard>::Builder list) const {
  unsigned i = 0;
  for (auto& [key, blocks] : damaged_) {
    if (i >= list.size()) break;
    auto d = list[i++];
    d.setChunk(std::get<0>(key));
    d.setShard(uint8_t(std::get<1>(key)));
    d.setServer(std::get<2>(key));
    auto b = d.initBlocks(unsigned(blocks.size()));
    unsigned j = 0;
    for (uint64_t o : blocks) b.set(j++, o);
  }
}

void ScrubTracker::clear() {
  progress_.clear();
  pending_.clear();
  damaged_.clear();
}

}  // namespace tessera::meta
