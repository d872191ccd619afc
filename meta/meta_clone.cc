// MetaService: copy-on-write clones (meta/ns/ops/clone.cc has the rules). The clone RPC shares
// chunks between files through the log; copyOnWrite gives the first writer of a shared chunk a
// private copy: each server of the chunk copies its own shard to a new chunk id
// (ChunkService.copy, local: no data crosses the network), then cowChunk switches the writer's
// file to the copy. A copy that fails on a server leaves that shard stale in the copy, to be
// rebuilt by repair like one its server missed, as long as the copy stays decodable.
//
// A crash (or a lost leadership) between the copies and the switch leaves shards of a chunk
// id that no file names: orphans, which the inventory reports find and delete (meta/repair.h),
// like an interrupted rebuild's.
#include <bit>

#include "fs/log.h"
#include "fs/rpc.h"
#include "fs/wire.h"
#include "meta/meta_service.h"
#include "meta/propose.h"
#include "meta/repair_plan.h"

namespace tessera::meta {

namespace {
// A copy reads and writes at most one shard (16 MiB for ec(4,2), 64 MiB for a replica) on one
// disk.
constexpr uint64_t kCopyTimeoutMs = 120'000;
}  // namespace

kj::Promise<void> MetaService::clone(CloneContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  SessionId session(p.getSession());
  InodeId src(p.getSrc()), dst(p.getDst());
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), results.initError());
    return kj::READY_NOW;
  }
  if (session) touch(session);
  // Other live writers of the range give their leases back once their writes are synced (their
  // keepAlive hears it); the op answers busy until then and the caller asks again.
  uint64_t count = std::min<uint64_t>(p.getCount(), kMaxCloneChunks);
  auto hold = [this, src, session] {
    cloneHolds_[src] =
        CloneHold{session, timer_.now() + config_.recallHoldMs * kj::MILLISECONDS};
  };
  for (auto [inode, first] : {std::pair{src, p.getSrcFirst()}, std::pair{dst, p.getDstFirst()}}) {
    auto chunks = ns_.chunks(inode, first, count);
    if (!chunks) continue;  // the op reports it
    for (const ChunkDesc& c : *chunks) {
      if (c.leaseSession && c.leaseSession != session && !leaseLapsed(c.leaseSession)) {
        wantedLeases_[{inode, c.index}] = WantedLease{c.leaseSession, c.epoch, timer_.now()};
        hold();
      }
    }
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           noteRequest(op, p.getReq());
           auto c = op.initCloneChunks();
           c.setSrc(src.value);
           c.setDst(dst.value);
           c.setSrcFirst(p.getSrcFirst());
           c.setDstFirst(p.getDstFirst());
           c.setCount(p.getCount());
           c.setSize(p.getSize());
           c.setExactSize(p.getExactSize());
           c.setSizeOfSrc(p.getSizeOfSrc());
           c.setSession(session.value);
         })
      .then([this, context, session, src, dst, hold](Result<Applied> r) mutable {
        // Other mounts drop what they cached of the destination: its chunk map changed.
        auto results = context.getResults();
        // Busy: a writer took a lease since; it is held back until the clone is through.
        if (!r && r.code() == Errc::kBusy) hold();
        auto it = cloneHolds_.find(src);
        if (r && it != cloneHolds_.end() && it->second.cloner == session) cloneHolds_.erase(it);
        if (!r) return toWire(r.error(), results.initError());
        invalidate(session, {dst});
        okToWire(results.initError());
        toWire(r->attr, results.initAttr());
      });
}

kj::Promise<Status> MetaService::copyOnWrite(InodeId inode, const ChunkDesc& chunk) {
  auto key = std::make_pair(inode, chunk.index);
  if (auto it = cows_.find(key); it != cows_.end()) return it->second.addBranch();
  if (!chunkPeers_) {
    return Status(Error{Errc::kUnavailable, "copy-on-write: no connections to chunk servers"});
  }
  ChunkDesc copy = chunk;
  copy.id = ChunkId(++next_.chunk);
  copy.epoch = 0;
  copy.leaseSession = SessionId();
  copy.shared = false;
  copy.resync = false;
  uint64_t length = shardLength(chunk.layout, kChunkSize);
  log::info("copy-on-write: inode ", inode.value, " chunk index ", chunk.index,
            ": copying shared chunk ", chunk.id.value, " to chunk ", copy.id.value);
  auto started = timer_.now();
  // The copy's shards are no orphans while it runs (meta/repair.h).
  if (repair_) repair_->copyStarted(copy.id, chunk.servers);
  kj::Vector<kj::Promise<bool>> copies;
  for (size_t i = 0; i < chunk.servers.size(); ++i) {
    auto it = servers_.find(chunk.servers[i]);
    // A stale shard copies as stale; one on a server that is down cannot be copied now.
    if (chunk.stale(int(i)) || it == servers_.end() || !it->second.up) {
      copies.add(false);
      continue;
    }
    std::string address = it->second.record.address;
    copies.add(chunkPeers_->get(address).then(
        [this, chunk, copy, i, length, address](
            Result<proto::ChunkService::Client> c) -> kj::Promise<bool> {
          if (!c) {
            log::warn("copy-on-write: chunk ", chunk.id.value, " shard ", i, ": ",
                      c.error().toString().c_str());
            return false;
          }
          auto req = c->copyRequest();
          req.setFrom(chunk.id.value);
          req.setTo(copy.id.value);
          req.setShard(uint8_t(i));
          toWire(chunk.layout, req.initLayout());
          req.setLength(length);
          using Response = capnp::Response<proto::ChunkService::CopyResults>;
          return withTimeout(timer_, kCopyTimeoutMs, kj::Promise<Response>(req.send()))
              .then(
                  [chunk, i](Response r) {
                    auto s = fromWire(r.getError());
                    if (!s) {
                      log::warn("copy-on-write: chunk ", chunk.id.value, " shard ", i, ": ",
                                s.error().toString().c_str());
                    }
                    return bool(s);
                  },
                  [this, chunk, i, address](kj::Exception&& e) {
                    chunkPeers_->failed(address);
                    log::warn("copy-on-write: chunk ", chunk.id.value, " shard ", i, ": ",
                              e.getDescription());
                    return false;
                  });
        }));
  }
  auto work =
      kj::joinPromises(copies.releaseAsArray())
          .then([this, inode, chunk, copy, started](kj::Array<bool> ok) mutable
                -> kj::Promise<Status> {
            uint32_t stale = 0;
            for (size_t i = 0; i < ok.size(); ++i) {
              if (!ok[i]) stale |= 1u << i;
            }
            // The copy must decode: at most m shards missing (n - 1 of a replica).
            if (std::popcount(stale) > chunk.layout.m) {
              if (repair_) repair_->copyEnded(copy.id, chunk.servers, false);
              return Status(Error{Errc::kUnavailable,
                                  "copy-on-write of chunk " + std::to_string(chunk.id.value) +
                                      ": too few shards could be copied"});
            }
            copy.staleShards = stale;
            if (!raft_.leaderReady()) {
              if (repair_) repair_->copyEnded(copy.id, chunk.servers, false);
              return Status(raft_.notLeader());
            }
            return proposeOp(raft_, nowNs(),
                             [&](proto::Op::Builder op) {
                               auto c = op.initCowChunk();
                               c.setInode(inode.value);
                               c.setIndex(chunk.index);
                               c.setOld(chunk.id.value);
                               toWire(copy, c.initChunk());
                             })
                .then([this, inode, chunk, copy, started](Result<Applied> r) -> Status {
                  if (repair_) repair_->copyEnded(copy.id, chunk.servers, bool(r));
                  if (!r) {
                    // Replaced or private meanwhile: the caller looks again. The copy is an
                    // orphan.
                    if (r.code() == Errc::kStale) return Status();
                    return r.error();
                  }
                  log::info("copy-on-write: inode ", inode.value, " chunk index ", chunk.index,
                            " is chunk ", copy.id.value, " now (",
                            (timer_.now() - started) / kj::MILLISECONDS, " ms)",
                            copy.staleShards ? ", some shards stale" : "");
                  return Status();
                });
          })
          .fork();
  auto result = work.addBranch();
  auto done = work.addBranch();
  cows_.emplace(key, kj::mv(work));
  tasks_.add(done.then([this, key](Status) { cows_.erase(key); }));
  return result;
}

}  // namespace tessera::meta
