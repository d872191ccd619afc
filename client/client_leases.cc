// Client: the write leases this session holds — given back when the meta leader recalls them
// for a move of their chunk, or when unused for a while (client.h, "Write leases").
//
// Why the order of things matters. Giving a lease back lets the meta leader copy the chunk's
// shards elsewhere and switch the chunk to the copy (meta/repair.h). So, before the release:
//   1. no write may start under the lease: `held` goes false first, and every writer checks it
//      (useLease) after it got the chunk and before it sends anything;
//   2. the writes and syncs already under way finish (inflight drains to 0): the copy must
//      see them;
//   3. what was written is synced, on the servers that hold the shards now: after the switch
//      an fsync would sync the new servers, which never had the unsynced bytes;
// (and before 3, the chunk's write log is applied to its stripes: a copy takes the stripes),
// and a write that needs the chunk again asks for the lease only once the release is applied
// (an acquire answered before the release was applied would be that same lease, taken away by
// the release a moment later). The release names the epoch it gives back, so even a release
// that arrives late drops nothing granted since.
#include "client/client.h"
#include "fs/log.h"
#include "fs/proto/meta.capnp.h"
#include "fs/wire.h"

namespace tessera::client {

void Client::noteLeased(InodeId inode, const ChunkDesc& chunk) {
  auto& use = leases_[{inode, chunk.index}];
  use.held = true;
  use.epoch = chunk.epoch;
  use.lastUse = timer_.now();
}

bool Client::holds(InodeId inode, uint64_t index, const ChunkDesc& chunk) const {
  auto it = leases_.find({inode, index});
  if (it == leases_.end() || !it->second.held || it->second.releasing != nullptr) return false;
  return chunk.leaseSession == session_ && chunk.epoch == it->second.epoch;
}

bool Client::anyLeaseHeld() const {
  for (auto& [key, use] : leases_) {
    if (use.held) return true;
  }
  return false;
}

kj::Promise<Result<ChunkDesc>> Client::useLease(InodeId inode, uint64_t index) {
  auto* f = find(inode);
  if (!f) return Result<ChunkDesc>(Error{Errc::kStale, "write to a file that is not open"});
  return chunk(*f, index, true)
      .then([this, inode, index](
                Result<std::optional<ChunkDesc>> c) -> kj::Promise<Result<ChunkDesc>> {
        if (!c) return Result<ChunkDesc>(c.error());
        if (!*c) return Result<ChunkDesc>(Error{Errc::kIo, "no chunk after allocation"});
        if (!holds(inode, index, **c)) {
          // Given back (recalled, idle) between the grant and now: ask again, after the
          // release (chunk() waits for it).
          return useLease(inode, index);
        }
        beginUse(inode, index);
        return Result<ChunkDesc>(kj::mv(**c));
      });
}

void Client::beginUse(InodeId inode, uint64_t index) {
  auto& use = leases_[{inode, index}];
  use.inflight++;
  use.lastUse = timer_.now();
}

void Client::endUse(InodeId inode, uint64_t index) {
  auto it = leases_.find({inode, index});
  if (it == leases_.end()) return;
  auto& use = it->second;
  if (use.inflight > 0) use.inflight--;
  use.lastUse = timer_.now();
  if (use.inflight > 0) return;
  auto idle = std::move(use.idle);
  use.idle.clear();
  for (auto& f : idle) f->fulfill();
  if (!use.held && use.releasing == nullptr) leases_.erase(it);
}

void Client::forgetLeases(InodeId inode, uint64_t first, uint64_t end) {
  for (auto it = leases_.lower_bound({inode, first});
       it != leases_.end() && it->first.first == inode && it->first.second < end; ++it) {
    it->second.held = false;
  }
}

void Client::letGo(InodeId inode, uint64_t index, const char* why) {
  auto it = leases_.find({inode, index});
  if (it == leases_.end() || !it->second.held || it->second.releasing != nullptr) return;
  auto& use = it->second;
  uint64_t epoch = use.epoch;
  use.held = false;
  log::debug("inode ", inode.value, " chunk index ", index, ": giving the write lease (epoch ",
             epoch, ") back: ", why);
  kj::Promise<bool> idle = true;
  if (use.inflight > 0) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    use.idle.push_back(kj::mv(paf.fulfiller));
    // Bounded: a write that outlives its own timeouts must not hold every later write back.
    auto limit = int64_t(config_.ioTimeoutMs + config_.metaRetryMs) * kj::MILLISECONDS;
    idle = paf.promise.then([] { return true; })
               .exclusiveJoin(timer_.afterDelay(limit).then([] { return false; }));
  }
  auto done = kj::newPromiseAndFulfiller<void>();
  use.releasing = done.promise.fork();
  auto work =
      idle.then([this, inode, index](bool finished) -> kj::Promise<Status> {
            if (!finished) return Status(Error{Errc::kTimedOut, "writes under it still run"});
            // The chunk's write log goes into its stripes first: a move copies the stripes.
            return drainChunkLog(inode, index).then([this, inode, index](Status d) -> kj::Promise<Status> {
              if (!d) return d;
              // What was written under the lease, synced where it is now.
              auto mine = takeUnsynced(inode, index);
              if (mine.empty()) return Status();
              auto syncing = syncChunks(inode, mine);
              return syncing.then([this, inode, mine = kj::mv(mine)](Status s) mutable {
                // Not durable: the next fsync must try again (and report it).
                if (!s) restoreUnsynced(inode, mine);
                return s;
              });
            });
          })
          .then([this, inode, index, epoch](Status synced) -> kj::Promise<void> {
            if (!synced) {
              // Keep the lease: a move now could lose what is not durable yet (or what is
              // still being written). The meta leader lets writers at the chunk again after
              // its hold time anyway.
              log::warn("inode ", inode.value, " chunk index ", index,
                        ": keeping the write lease, syncing failed: ",
                        synced.error().toString().c_str());
              auto it = leases_.find({inode, index});
              if (it != leases_.end() && it->second.epoch == epoch) it->second.held = true;
              return kj::READY_NOW;
            }
            return releaseLease(inode, index, epoch);
          })
          .catch_([inode, index](kj::Exception&& e) {
            log::warn("inode ", inode.value, " chunk index ", index,
                      ": giving a write lease back: ", e.getDescription());
          })
          .then([this, inode, index, fulfiller = kj::mv(done.fulfiller)]() mutable {
            fulfiller->fulfill();
            auto it = leases_.find({inode, index});
            if (it == leases_.end()) return;
            it->second.releasing = nullptr;
            if (!it->second.held && it->second.inflight == 0) leases_.erase(it);
          });
  tasks_.add(kj::mv(work));
}

kj::Promise<void> Client::releaseLease(InodeId inode, uint64_t index, uint64_t epoch) {
  using MetaClient = proto::MetaService::Client;
  return meta_
      .mutate<bool>("releaseLeases",
                    [inode, index, epoch](MetaClient m, MetaLink::Req r) {
                      auto req = m.releaseLeasesRequest();
                      r.fill(req.initReq());
                      req.setSession(r.session);  // the session it is sent under
                      req.setInode(inode.value);
                      req.initIndexes(1).set(0, index);
                      req.initEpochs(1).set(0, epoch);
                      return req.send().then([](auto r) -> Result<bool> {
                        auto st = fromWire(r.getError());
                        if (!st) return st.error();
                        return true;
                      });
                    })
      .then([this, inode, index, epoch](Result<bool> r) {
        if (!r) {
          // The lease stays ours on the meta servers until the file is closed (or the
          // session ends); we do not write under it any more.
          log::warn("inode ", inode.value, " chunk index ", index, ": releasing the lease: ",
                    r.error().toString().c_str());
          return;
        }
        log::debug("inode ", inode.value, " chunk index ", index, ": lease (epoch ", epoch,
                   ") given back");
        uncacheLease(inode, index, epoch);
      });
}

kj::Promise<void> Client::letGoAll() {
  std::vector<LeaseKey> held;
  for (auto& [key, use] : leases_) {
    if (use.held) held.push_back(key);
  }
  for (auto& [inode, index] : held) letGo(inode, index, "unmount");
  kj::Vector<kj::Promise<void>> going;
  for (auto& [key, use] : leases_) {
    KJ_IF_MAYBE(releasing, use.releasing) { going.add(releasing->addBranch()); }
  }
  return kj::joinPromises(going.releaseAsArray());
}

void Client::releaseIdle() {
  if (config_.leaseIdleMs == 0) return;
  auto now = timer_.now();
  auto idleFor = int64_t(config_.leaseIdleMs) * kj::MILLISECONDS;
  std::vector<LeaseKey> idle;
  for (auto& [key, use] : leases_) {
    if (use.held && use.inflight == 0 && use.releasing == nullptr && now - use.lastUse >= idleFor) {
      idle.push_back(key);
    }
  }
  for (auto& [inode, index] : idle) letGo(inode, index, "unused");
}

}  // namespace tessera::client
