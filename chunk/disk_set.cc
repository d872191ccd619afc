#include "chunk/disk_set.h"

#include <string.h>
#include <sys/stat.h>

#include <algorithm>
#include <set>

#include <kj/vector.h>

#include "fs/log.h"

namespace tessera::chunk {

Result<size_t> pickDisk(const std::vector<DiskView>& disks) {
  std::optional<size_t> best;
  bool full = false;
  for (size_t i = 0; i < disks.size(); ++i) {
    if (disks[i].state == DiskState::kFull) full = true;
    if (disks[i].state != DiskState::kOk) continue;
    if (!best || disks[i].freeBytes > disks[*best].freeBytes) best = i;
  }
  if (best) return *best;
  if (full) return Error{Errc::kNoSpace, "every disk is full or failed"};
  return Error{Errc::kIo, "every disk failed"};
}

Result<kj::Own<DiskSet>> DiskSet::open(Config config) {
  if (config.dirs.empty()) return Error{Errc::kInvalid, "no data directory"};
  // The same directory twice would hold every shard twice over.
  std::set<std::pair<dev_t, ino_t>> seenIds;
  std::set<std::string> seenNames;
  for (auto& dir : config.dirs) {
    if (!seenNames.insert(dir).second) {
      return Error{Errc::kInvalid, "data directory " + dir + " is named twice"};
    }
    struct stat st;
    if (::stat(dir.c_str(), &st) == 0 && !seenIds.insert({st.st_dev, st.st_ino}).second) {
      return Error{Errc::kInvalid, "data directory " + dir + " is named twice (another path)"};
    }
  }
  std::vector<Entry> entries;
  std::optional<Error> firstError;
  size_t opened = 0;
  for (auto& dir : config.dirs) {
    Entry e;
    e.dir = dir;
    auto disk = Disk::open({.dir = dir,
                            .capacityCap = config.capacityCap,
                            .maxOpenFiles = config.maxOpenFiles,
                            .reserveBytes = config.reserveBytes,
                            .reserveFraction = config.reserveFraction});
    if (disk) {
      e.disk = kj::mv(*disk);
      ++opened;
    } else {
      if (disk.code() == Errc::kBusy || disk.code() == Errc::kInvalid) return disk.error();
      if (!firstError) firstError = disk.error();
      e.openError = disk.error().detail;
      e.seen = DiskState::kFailed;
    }
    entries.push_back(kj::mv(e));
  }
  if (opened == 0) return *firstError;
  for (auto& e : entries) {
    if (!e.disk) log::error("disk ", e.dir.c_str(), " failed: ", e.openError.c_str());
  }
  return kj::heap<DiskSet>(std::move(entries));
}

DiskSet::DiskSet(std::vector<Entry> disks) : disks_(std::move(disks)) {
  for (size_t i = 0; i < disks_.size(); ++i) {
    if (!disks_[i].disk) continue;
    for (ShardKey key : disks_[i].disk->takeShards()) {
      auto [it, inserted] = index_.emplace(key, uint32_t(i));
      if (!inserted) {
        log::warn("shard ", key.toString().c_str(), " is on ", disks_[it->second].dir.c_str(),
                  " and on ", disks_[i].dir.c_str(), "; serving the first");
      }
    }
  }
}

bool DiskSet::failedAtStart() const {
  for (auto& e : disks_) {
    if (!e.disk) return true;
  }
  return false;
}

std::string DiskSet::dirs() const {
  std::string all;
  for (auto& e : disks_) all += (all.empty() ? "" : ",") + e.dir;
  return all;
}

DiskState DiskSet::stateOf(size_t i) const {
  return disks_[i].disk ? disks_[i].disk->state() : DiskState::kFailed;
}

std::string DiskSet::reasonOf(size_t i) const {
  return disks_[i].disk ? disks_[i].disk->reason() : disks_[i].openError;
}

void DiskSet::observe(size_t i) {
  auto& e = disks_[i];
  DiskState now = stateOf(i);
  if (now == e.seen) return;
  DiskState before = e.seen;
  e.seen = now;
  switch (now) {
    case DiskState::kOk:
      log::info("disk ", e.dir.c_str(), " takes new shards again (was ", stateName(before), ")");
      break;
    case DiskState::kFull:
      log::warn("disk ", e.dir.c_str(), " is full: ", reasonOf(i).c_str(),
                "; no new shards go there");
      break;
    case DiskState::kFailed: {
      size_t n = 0;
      for (auto& [key, disk] : index_) {
        if (disk == i) {
          lost_.push_back(key);
          ++n;
        }
      }
      log::error("disk ", e.dir.c_str(), " failed: ", reasonOf(i).c_str(), "; its ", n,
                 " shards are lost here, serving the other disks");
      break;
    }
  }
}

std::optional<size_t> DiskSet::diskOf(ShardKey key) const {
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

std::optional<size_t> DiskSet::find(ShardKey key) const { return diskOf(key); }

std::string DiskSet::shardPath(ShardKey key) const {
  size_t i = diskOf(key).value_or(0);
  if (!disks_[i].disk) return disks_[i].dir + "/shards";
  return disks_[i].disk->shardPath(key);
}

Error DiskSet::onFailedDisk(ShardKey key, size_t i) const {
  return Error{Errc::kIo, "shard " + key.toString() + " is on failed disk " + disks_[i].dir +
                              ": " + reasonOf(i)};
}

Result<size_t> DiskSet::homeOf(ChunkId chunk) {
  for (unsigned shard = 0; shard < kMaxShards; ++shard) {
    if (auto at = diskOf(ShardKey{chunk, uint8_t(shard)})) return *at;
  }
  if (auto it = homes_.find(chunk.value); it != homes_.end()) return size_t(it->second);
  auto picked = pick("chunk " + std::to_string(chunk.value));
  if (picked) homes_[chunk.value] = uint32_t(*picked);
  return picked;
}

Result<size_t> DiskSet::place(ShardKey key) {
  if (auto it = homes_.find(key.chunk.value); it != homes_.end()) {
    size_t home = it->second;
    homes_.erase(it);
    if (stateOf(home) == DiskState::kOk) {
      index_[key] = uint32_t(home);
      return home;
    }
  }
  auto picked = pick("shard " + key.toString());
  if (picked) index_[key] = uint32_t(*picked);
  return picked;
}

Result<size_t> DiskSet::pick(const std::string& what) {
  std::vector<DiskView> views;
  for (size_t i = 0; i < disks_.size(); ++i) {
    auto& e = disks_[i];
    DiskView v;
    v.state = stateOf(i);
    if (e.disk) {
      // Free space as of the last probe, less what was written since: a burst of new shards
      // between two heartbeats spreads over the disks instead of all going to one.
      uint64_t used = e.disk->usedBytes();
      uint64_t since = used > e.usedAtProbe ? used - e.usedAtProbe : 0;
      v.freeBytes = e.last.freeBytes > since ? e.last.freeBytes - since : 0;
    }
    views.push_back(v);
  }
  auto picked = pickDisk(views);
  if (!picked) {
    std::string why;
    for (size_t i = 0; i < disks_.size(); ++i) {
      why += (why.empty() ? "" : "; ") + disks_[i].dir + " " + stateName(views[i].state);
      if (views[i].state != DiskState::kOk) why += " (" + reasonOf(i) + ")";
    }
    return Error{picked.code(), "no disk takes new " + what + ": " + why};
  }
  return picked;
}

kj::Promise<Status> DiskSet::write(ShardKey key, Layout layout, uint64_t offset,
                                   kj::ArrayPtr<const kj::byte> data, kj::Array<uint32_t> crcs,
                                   bool sync, NewShard ifAbsent) {
  std::optional<size_t> at = find(key);
  if (!at && ifAbsent == NewShard::kRefuse) {
    return Status(Error{Errc::kNotFound, "shard " + key.toString() +
                                             " is not here, and the write does not create it"});
  }
  if (!at && ifAbsent == NewShard::kLegacy && failedAtStart()) {
    return Status(Error{Errc::kIo, "shard " + key.toString() +
                                       " is not here, and a data directory that could not be "
                                       "opened at start may have held it: a writer that does "
                                       "not say it creates the shard creates none"});
  }
  if (!at) {
    auto placed = place(key);
    if (!placed) return Status(placed.error());
    at = *placed;
  }
  size_t i = *at;
  if (stateOf(i) == DiskState::kFailed) {
    observe(i);
    return Status(onFailedDisk(key, i));
  }
  return observed(i, disks_[i].disk->write(key, layout, offset, data, kj::mv(crcs), sync));
}

kj::Promise<Status> DiskSet::read(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                                  kj::ArrayPtr<uint32_t> crcs, bool lostAsStored) {
  std::optional<size_t> at = find(key);
  if (!at) {
    memset(out.begin(), 0, out.size());
    return Status(Error{Errc::kNotFound, "shard " + key.toString() + " is not here"});
  }
  size_t i = *at;
  if (stateOf(i) == DiskState::kFailed) {
    observe(i);
    return Status(onFailedDisk(key, i));
  }
  return observed(i, disks_[i].disk->read(key, offset, out, crcs, lostAsStored));
}

kj::Promise<Status> DiskSet::sync(kj::Array<ShardKey> keys) {
  std::vector<std::vector<ShardKey>> perDisk(disks_.size());
  Status result;
  for (ShardKey key : keys) {
    auto at = find(key);
    if (!at) {
      if (result) result = Error{Errc::kNotFound, "shard " + key.toString() + " is not here"};
    } else if (stateOf(*at) == DiskState::kFailed) {
      if (result) result = onFailedDisk(key, *at);
    } else {
      perDisk[*at].push_back(key);
    }
  }
  kj::Vector<kj::Promise<Status>> syncs;
  for (size_t i = 0; i < disks_.size(); ++i) {
    if (perDisk[i].empty()) continue;
    auto list = kj::heapArray<ShardKey>(perDisk[i].begin(), perDisk[i].end());
    syncs.add(observed(i, disks_[i].disk->sync(kj::mv(list))));
  }
  return kj::joinPromises(syncs.releaseAsArray())
      .then([result = kj::mv(result)](kj::Array<Status> done) mutable {
        for (auto& s : done) {
          if (!s && result) result = s;
        }
        return result;
      });
}

Result<size_t> DiskSet::diskFor(ShardKey key) {
  std::optional<size_t> at = find(key);
  if (!at) return Error{Errc::kNotFound, "shard " + key.toString() + " is not here"};
  if (stateOf(*at) == DiskState::kFailed) {
    observe(*at);
    return onFailedDisk(key, *at);
  }
  return *at;
}

kj::Promise<Status> DiskSet::truncate(ShardKey key, uint64_t length) {
  auto i = diskFor(key);
  if (!i) return Status(i.error());
  return observed(*i, disks_[*i].disk->truncate(key, length));
}

kj::Promise<Status> DiskSet::punch(ShardKey key, uint64_t offset, uint64_t length) {
  auto i = diskFor(key);
  if (!i) return Status(i.error());
  return observed(*i, disks_[*i].disk->punch(key, offset, length));
}

kj::Promise<Status> DiskSet::markLost(ShardKey key, uint64_t offset, uint64_t length) {
  auto i = diskFor(key);
  if (!i) return Status(i.error());
  return observed(*i, disks_[*i].disk->markLost(key, offset, length));
}

kj::Promise<Result<uint64_t>> DiskSet::reserve(ShardKey key, uint64_t offset, uint64_t length) {
  using R = Result<uint64_t>;
  auto i = diskFor(key);
  if (!i) return R(i.error());
  return observed(*i, disks_[*i].disk->reserve(key, offset, length));
}

kj::Promise<Status> DiskSet::create(ShardKey key, Layout layout) {
  std::optional<size_t> at = find(key);
  if (!at) {
    auto placed = place(key);
    if (!placed) return Status(placed.error());
    at = *placed;
  }
  size_t i = *at;
  if (stateOf(i) == DiskState::kFailed) {
    observe(i);
    return Status(onFailedDisk(key, i));
  }
  return observed(i, disks_[i].disk->create(key, layout));
}

kj::Promise<Status> DiskSet::remove(kj::Array<ChunkId> chunks) {
  std::vector<std::vector<ChunkId>> perDisk(disks_.size());
  for (ChunkId chunk : chunks) {
    homes_.erase(chunk.value);
    std::vector<bool> on(disks_.size(), false);
    for (unsigned shard = 0; shard < kMaxShards; ++shard) {
      ShardKey key{chunk, uint8_t(shard)};
      auto it = index_.find(key);
      if (it == index_.end()) continue;
      size_t i = it->second;
      if (stateOf(i) == DiskState::kFailed) {
        // Nothing to delete there. (It stays in lost_, which only grows: the meta leader
        // ignores lost shards of chunks that no longer exist.)
        index_.erase(it);
        continue;
      }
      if (!on[i]) perDisk[i].push_back(chunk);
      on[i] = true;
    }
    // Every other healthy disk is asked too: a shard file the index does not know (one left
    // behind by a crash, or put there by hand) must go as well; absent shards are fine.
    for (size_t i = 0; i < disks_.size(); ++i) {
      if (!on[i] && stateOf(i) != DiskState::kFailed) perDisk[i].push_back(chunk);
    }
  }
  kj::Vector<kj::Promise<Status>> removals;
  for (size_t i = 0; i < disks_.size(); ++i) {
    if (perDisk[i].empty()) continue;
    auto list = kj::heapArray<ChunkId>(perDisk[i].begin(), perDisk[i].end());
    removals.add(disks_[i].disk->remove(kj::mv(list))
                     .then([this, i, done = std::move(perDisk[i])](Status s) {
                       observe(i);
                       // Forget the shards only once they are gone: a failed removal is
                       // ordered again, and the shards are still served until then.
                       if (s) {
                         for (ChunkId chunk : done) {
                           for (unsigned shard = 0; shard < kMaxShards; ++shard) {
                             auto it = index_.find(ShardKey{chunk, uint8_t(shard)});
                             if (it != index_.end() && it->second == i) index_.erase(it);
                           }
                         }
                       }
                       return s;
                     }));
  }
  return kj::joinPromises(removals.releaseAsArray()).then([](kj::Array<Status> done) {
    for (auto& s : done) {
      if (!s) return s;
    }
    return Status();
  });
}

kj::Promise<DiskSet::Stats> DiskSet::stats() {
  kj::Vector<kj::Promise<void>> probes;
  for (size_t i = 0; i < disks_.size(); ++i) {
    if (!disks_[i].disk) continue;
    uint64_t usedBefore = disks_[i].disk->usedBytes();
    probes.add(disks_[i].disk->stats().then([this, i, usedBefore](Disk::Stats st) {
      disks_[i].last = st;
      disks_[i].usedAtProbe = usedBefore;
      observe(i);
    }));
  }
  return kj::joinPromises(probes.releaseAsArray()).then([this]() {
    Stats total;
    std::set<uint64_t> fsids;
    bool capped = false;
    for (size_t i = 0; i < disks_.size(); ++i) {
      auto& e = disks_[i];
      DiskReport r;
      r.dir = e.dir;
      r.state = stateOf(i);
      if (r.state != DiskState::kOk) r.reason = reasonOf(i);
      if (r.state == DiskState::kFailed) {
        for (auto& [key, disk] : index_) r.shards += disk == i;
        total.disks.push_back(std::move(r));
        continue;
      }
      r.capacityBytes = e.last.capacityBytes;
      r.usedBytes = e.last.usedBytes;
      r.freeBytes = e.last.freeBytes;
      r.shards = e.last.shards;
      total.usedBytes += r.usedBytes;
      total.shards += r.shards;
      if (r.state == DiskState::kOk) total.acceptsShards = true;
      // Two directories on one file system share its capacity and free space.
      bool counted = e.last.fsid != 0 && !fsids.insert(e.last.fsid).second;
      if (e.last.fsid == 0) capped = true;
      if (!counted) {
        total.capacityBytes += r.capacityBytes;
        if (r.state == DiskState::kOk) total.freeBytes += r.freeBytes;
      }
      total.disks.push_back(std::move(r));
    }
    if (!capped && fsids.size() == 1) {
      total.fsid = *fsids.begin();
    } else if (!capped && fsids.size() > 1) {
      // FNV-1a over the sorted ids: servers on the same set of file systems agree.
      uint64_t h = 14695981039346656037ull;
      for (uint64_t id : fsids) {
        for (int b = 0; b < 8; ++b) h = (h ^ ((id >> (8 * b)) & 0xff)) * 1099511628211ull;
      }
      total.fsid = h | 1;
    }
    return total;
  });
}

kj::Promise<Result<std::string>> DiskSet::readFile(std::string name) {
  kj::Vector<kj::Promise<Result<std::string>>> reads;
  std::vector<size_t> from;
  for (size_t i = 0; i < disks_.size(); ++i) {
    if (stateOf(i) == DiskState::kFailed) continue;
    reads.add(observed(i, disks_[i].disk->readFile(name)));
    from.push_back(i);
  }
  return kj::joinPromises(reads.releaseAsArray())
      .then([this, name, from = std::move(from)](
                kj::Array<Result<std::string>> texts) -> kj::Promise<Result<std::string>> {
        std::optional<size_t> found;
        std::vector<size_t> lacking;
        for (size_t j = 0; j < texts.size(); ++j) {
          if (!texts[j]) {
            if (texts[j].code() == Errc::kNotFound) {
              lacking.push_back(from[j]);
              continue;
            }
            return Result<std::string>(texts[j].error());
          }
          if (!found) {
            found = j;
          } else if (*texts[j] != *texts[*found]) {
            return Result<std::string>(Error{
                Errc::kCorruption, disks_[from[*found]].dir + "/" + name + " and " +
                                       disks_[from[j]].dir + "/" + name +
                                       " differ: these data directories belong to different servers"});
          }
        }
        if (!found) {
          return Result<std::string>(Error{Errc::kNotFound, "no data directory holds " + name});
        }
        std::string text = *texts[*found];
        kj::Vector<kj::Promise<Status>> copies;
        for (size_t i : lacking) {
          log::info("copying ", name.c_str(), " to data directory ", disks_[i].dir.c_str());
          copies.add(observed(i, disks_[i].disk->writeFile(name, text)));
        }
        return kj::joinPromises(copies.releaseAsArray())
            .then([text](kj::Array<Status> done) -> Result<std::string> {
              for (auto& s : done) {
                if (!s) return s.error();
              }
              return text;
            });
      });
}

kj::Promise<Status> DiskSet::writeFile(std::string name, std::string text) {
  kj::Vector<kj::Promise<Status>> writes;
  for (size_t i = 0; i < disks_.size(); ++i) {
    if (stateOf(i) == DiskState::kFailed) continue;
    writes.add(observed(i, disks_[i].disk->writeFile(name, text)));
  }
  if (writes.empty()) return Status(Error{Errc::kIo, "every disk failed"});
  return kj::joinPromises(writes.releaseAsArray()).then([](kj::Array<Status> done) {
    for (auto& s : done) {
      if (s) return s;
    }
    return done[0];
  });
}

kj::Promise<Result<std::vector<ShardKey>>> DiskSet::list() {
  kj::Vector<kj::Promise<Result<std::vector<ShardKey>>>> lists;
  for (size_t i = 0; i < disks_.size(); ++i) {
    if (stateOf(i) == DiskState::kFailed) continue;
    lists.add(observed(i, disks_[i].disk->list()));
  }
  return kj::joinPromises(lists.releaseAsArray())
      .then([](kj::Array<Result<std::vector<ShardKey>>> all) -> Result<std::vector<ShardKey>> {
        std::vector<ShardKey> out;
        for (auto& one : all) {
          if (!one) return one.error();
          out.insert(out.end(), one->begin(), one->end());
        }
        return out;
      });
}

}  // namespace tessera::chunk
