// MetaService: write leases (DESIGN.md rule 3). The lease itself is replicated (the chunk record
// names its holder and epoch, meta/ns/ops/chunks.cc and leases.cc); whether a holder is still
// alive is the leader's soft state, the session liveness it keeps anyway. A lease moves to
// another session only when its holder released it, closed the file, or went silent past the
// lease timeout — and every move raises the chunk's epoch, which chunk servers use to refuse the
// old holder's writes, so a stale writer can never overwrite what the new one wrote.
#include "fs/wire.h"
#include "meta/meta_service.h"
#include "meta/propose.h"

namespace tessera::meta {

bool MetaService::leaseLapsed(SessionId session) const {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return true;  // expired (or never was)
  return timer_.now() - it->second.lastContact > config_.leaseTimeoutMs * kj::MILLISECONDS;
}

kj::Promise<void> MetaService::acquireLease(AcquireLeaseContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  InodeId inode(p.getInode());
  SessionId session(p.getSession());
  uint64_t index = p.getIndex();
  auto fail = [&](Error e) {
    toWire(e, results.initError());
    return kj::READY_NOW;
  };
  if (!session) return fail(Error{Errc::kInvalid, "acquireLease: session 0"});
  if (index > kMaxChunkIndex) return fail(Error{Errc::kTooBig, "offset beyond the largest file"});
  // Placement and lease liveness are this leader's view: only the leader grants.
  if (!raft_.leaderReady()) return fail(raft_.notLeader());
  touch(session);
  results.setLeaseMs(config_.leaseTimeoutMs);
  auto existing = ns_.chunks(inode, index, 1);
  if (!existing) return fail(existing.error());
  // A clone of the file waits for its chunks' leases: no new one but the cloner's meanwhile (a
  // holder keeps what it holds until it gives it back).
  if (auto h = cloneHolds_.find(inode); h != cloneHolds_.end()) {
    bool holds = !existing->empty() && existing->front().leaseSession == session;
    if (timer_.now() >= h->second.until) {
      cloneHolds_.erase(h);
    } else if (h->second.cloner != session && !holds) {
      return fail(Error{Errc::kBusy, "inode " + std::to_string(inode.value) +
                                         " is being cloned; its write leases are held back"});
    }
  }
  ChunkDesc chunk;
  SessionId replace;
  if (!existing->empty()) {
    chunk = existing->front();
    if (chunk.shared) {
      // A frozen file (a snapshot's) is not written: no copy for a lease that is refused.
      auto attr = ns_.getattr(inode);
      if (!attr) return fail(attr.error());
      if (attr->readOnly) {
        return fail(Error{Errc::kReadOnly, "acquireLease: frozen inode " +
                                               std::to_string(inode.value)});
      }
      // A clone's chunk: this file gets its own copy, then the lease (meta_clone.cc).
      return copyOnWrite(inode, chunk).then([this, context](Status s) mutable -> kj::Promise<void> {
        if (!s) {
          toWire(s.error(), context.getResults().initError());
          return kj::READY_NOW;
        }
        return acquireLease(context);
      });
    }
    SessionId holder = chunk.leaseSession;
    // A move of the chunk waits for its lease or runs (meta/lease_recall.h): new grants wait,
    // for at most the recall hold time. The holder keeps what it holds.
    if (holder != session && repair_ && repair_->leaseBusy(inode, index)) {
      return fail(Error{Errc::kBusy, "chunk " + std::to_string(chunk.id.value) +
                                         " is being moved; its write lease is held back"});
    }
    // Held by this session already: still through the log, so that a retried request whose
    // first try was applied gets that first answer (with `created`) from the stored reply.
    if (holder && holder != session) {
      if (!leaseLapsed(holder)) {
        // The holder hears in its next keepAlive that another session wants to write, and
        // gives the lease back once its writes are synced: the new writer waits for that, not
        // for the holder to go idle (a migrated VM's source keeps the image open a while).
        wantedLeases_[{inode, index}] = WantedLease{holder, chunk.epoch, timer_.now()};
        return fail(Error{Errc::kBusy, "chunk " + std::to_string(chunk.id.value) +
                                           ": write lease held by session " +
                                           std::to_string(holder.value)});
      }
      replace = holder;
    }
  } else {
    auto placed = newChunk(inode, index);
    if (!placed) return fail(placed.error());
    chunk = kj::mv(*placed);
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           noteRequest(op, p.getReq());
           auto a = op.initAllocChunk();
           a.setInode(inode.value);
           toWire(chunk, a.initChunk());
           a.setLeaseSession(session.value);
           a.setReplace(replace.value);
         })
      .then([context](Result<Applied> r) mutable {
        auto results = context.getResults();
        if (!r) return toWire(r.error(), results.initError());
        okToWire(results.initError());
        KJ_ASSERT(r->chunk != std::nullopt, "acquireLease applied without a chunk");
        toWire(*r->chunk, results.initChunk());
        results.setCreated(r->created);
      });
}

Status MetaService::leasesForDrop(InodeId inode, uint64_t first, uint64_t end, SessionId session,
                                  std::vector<uint64_t>& lapsed) {
  if (first >= end) return Status();
  auto chunks = ns_.chunks(inode, first, end - first);
  if (!chunks) return Status();  // the op reports it
  Status busy;
  for (const ChunkDesc& c : *chunks) {
    SessionId holder = c.leaseSession;
    if (!holder || holder == session) continue;
    if (leaseLapsed(holder)) {
      if (std::find(lapsed.begin(), lapsed.end(), holder.value) == lapsed.end()) {
        lapsed.push_back(holder.value);
      }
      continue;
    }
    // Every live holder is asked at once, not one per retry.
    wantedLeases_[{inode, c.index}] = WantedLease{holder, c.epoch, timer_.now()};
    if (busy) {
      busy = Error{Errc::kBusy, "chunk " + std::to_string(c.id.value) +
                                    ": write lease held by session " +
                                    std::to_string(holder.value)};
    }
  }
  return busy;
}

void MetaService::addWantedLeases(SessionId session, std::vector<RecalledLease>& out) {
  auto now = timer_.now();
  for (auto it = wantedLeases_.begin(); it != wantedLeases_.end();) {
    // Asked for once, a lease stays wanted for a lease timeout: the asker retries meanwhile
    // and renews it; a stale entry costs at most one needless release.
    if (now - it->second.since > config_.leaseTimeoutMs * kj::MILLISECONDS) {
      it = wantedLeases_.erase(it);
      continue;
    }
    if (it->second.holder != session) {
      ++it;
      continue;
    }
    // Only a lease the session still holds at that epoch: one taken over meanwhile must not be
    // "given back" (its holder would take the next lease afresh and never hear it lost the
    // last one).
    auto chunk = ns_.chunks(it->first.first, it->first.second, 1);
    if (!chunk || chunk->empty() || chunk->front().leaseSession != session ||
        chunk->front().epoch != it->second.epoch) {
      it = wantedLeases_.erase(it);
      continue;
    }
    out.push_back(RecalledLease{it->first.first, it->first.second, it->second.epoch});
    ++it;
  }
}

kj::Promise<void> MetaService::releaseLeases(ReleaseLeasesContext context) {
  auto p = context.getParams();
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           noteRequest(op, p.getReq());
           auto r = op.initReleaseLeases();
           r.setSession(p.getSession());
           r.setInode(p.getInode());
           r.setIndexes(p.getIndexes());
           r.setEpochs(p.getEpochs());
         })
      .then([context](Result<Applied> r) mutable {
        auto error = context.getResults().initError();
        if (!r) return toWire(r.error(), error);
        okToWire(error);
      });
}

kj::Promise<void> MetaService::markStale(MarkStaleContext context) {
  auto p = context.getParams();
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           noteRequest(op, p.getReq());
           auto m = op.initMarkStale();
           m.setInode(p.getInode());
           m.setIndex(p.getIndex());
           m.setEpoch(p.getEpoch());
           m.setShards(p.getShards());
           m.setResynced(p.getResynced());
         })
      .then([context](Result<Applied> r) mutable {
        auto results = context.getResults();
        if (!r) return toWire(r.error(), results.initError());
        okToWire(results.initError());
        if (r->chunk) toWire(*r->chunk, results.initChunk());
      });
}

}  // namespace tessera::meta
