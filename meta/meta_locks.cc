// MetaService: cluster-wide file locks (meta/ns/lock_table.h). The locks are replicated state
// (meta/ns/ops/locks.cc); what is the leader's alone is the waiting: a setLock with `wait` that
// conflicts is kept here and tried again, through the log, each time locks on its file are
// dropped (an unlock, a close, a session's expiry). It is answered when granted, or with
// wouldBlock once its wait time passed (the mount asks again: a new leader knows no waiters).
//
// The one rule of waiting: a waiter is never answered wouldBlock while an attempt to grant it is
// in the log. The mount takes wouldBlock after a cancel for "not granted" and reports EINTR; a
// grant landing after that answer would leave a lock nobody knows it holds.
#include "fs/wire.h"
#include "meta/meta_service.h"
#include "meta/propose.h"

namespace tessera::meta {
namespace {

constexpr uint32_t kMaxWaitMs = 10'000;

Result<HeldLock> lockOf(SessionId session, proto::LockSpec::Reader spec) {
  if (spec.getType() > uint8_t(LockType::kWrite)) {
    return Error{Errc::kInvalid, "lock type " + std::to_string(spec.getType())};
  }
  if (spec.getEnd() < spec.getStart() || spec.getEnd() > kLockToEnd) {
    return Error{Errc::kInvalid, "lock range ends before it starts or past the largest offset"};
  }
  HeldLock l;
  l.session = session.value;
  l.owner = spec.getOwner();
  l.handle = spec.getHandle();
  l.start = spec.getStart();
  l.end = spec.getEnd();
  l.type = LockType(spec.getType());
  l.pid = spec.getPid();
  return l;
}

void fillSetLock(proto::Op::Builder op, InodeId inode, bool flock, const HeldLock& l) {
  auto o = op.initSetLock();
  o.setSession(l.session);
  o.setInode(inode.value);
  o.setOwner(l.owner);
  o.setHandle(l.handle);
  o.setFlock(flock);
  o.setType(uint8_t(l.type));
  o.setStart(l.start);
  o.setEnd(l.end);
  o.setPid(l.pid);
}

}  // namespace

kj::Promise<void> MetaService::setLock(SetLockContext context) {
  auto p = context.getParams();
  SessionId session(p.getSession());
  auto fail = [&](Error e) {
    toWire(e, context.getResults().initError());
    return kj::READY_NOW;
  };
  if (!session || session.value != p.getReq().getSession() || p.getReq().getSeq() == 0) {
    return fail(Error{Errc::kInvalid, "setLock must come from its own session, tracked"});
  }
  auto lock = lockOf(session, p.getLock());
  if (!lock) return fail(lock.error());
  InodeId inode(p.getInode());
  bool flock = p.getLock().getFlock();
  bool wait = p.getWait() && lock->type != LockType::kUnlock;
  uint32_t waitMs = std::min(p.getWaitMs(), kMaxWaitMs);
  uint64_t seq = p.getReq().getSeq();
  HeldLock want = *lock;
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           noteRequest(op, p.getReq());
           fillSetLock(op, inode, flock, want);
         })
      .then([this, context, inode, flock, want, wait, waitMs, seq](
                Result<Applied> r) mutable -> kj::Promise<void> {
        if (r) wakeLockWaiters(inode);
        if (r || r.code() != Errc::kWouldBlock || !wait || waitMs == 0) {
          setError(context.getResults(), r);
          return kj::READY_NOW;
        }
        return waitForLock(inode, flock, want, seq, waitMs)
            .then([context](Status s) mutable { setError(context.getResults(), s); });
      });
}

kj::Promise<Status> MetaService::waitForLock(InodeId inode, bool flock, const HeldLock& want,
                                             uint64_t seq, uint32_t waitMs) {
  auto paf = kj::newPromiseAndFulfiller<Status>();
  uint64_t id = ++lastLockWaiter_;
  auto& list = lockWaiters_[inode];
  list.push_back(LockWaiter{id, SessionId(want.session), seq, flock, want, kj::mv(paf.fulfiller)});
  // The waiter leaves the list however the call ends: answered, or dropped by the client.
  auto done = kj::defer([this, inode, id]() {
    auto it = lockWaiters_.find(inode);
    if (it == lockWaiters_.end()) return;
    auto& waiters = it->second;
    for (auto w = waiters.begin(); w != waiters.end(); ++w) {
      if (w->id == id) {
        waiters.erase(w);
        break;
      }
    }
    if (waiters.empty()) lockWaiters_.erase(it);
  });
  auto timeout = timer_.afterDelay(waitMs * kj::MILLISECONDS)
                     .then([this, inode, id]() {
                       finishLockWaiter(inode, id, Error{Errc::kWouldBlock, "still held"});
                     })
                     .eagerlyEvaluate(nullptr);
  return paf.promise.attach(kj::mv(timeout), kj::mv(done));
}

MetaService::LockWaiter* MetaService::findLockWaiter(InodeId inode, uint64_t id) {
  auto it = lockWaiters_.find(inode);
  if (it == lockWaiters_.end()) return nullptr;
  for (LockWaiter& w : it->second) {
    if (w.id == id) return &w;
  }
  return nullptr;
}

void MetaService::finishLockWaiter(InodeId inode, uint64_t id, Status result) {
  LockWaiter* w = findLockWaiter(inode, id);
  if (!w || !w->fulfiller->isWaiting()) return;
  if (w->attempting && result.code() == Errc::kWouldBlock) {
    w->giveUp = true;  // the attempt in the log answers it
    return;
  }
  w->fulfiller->fulfill(kj::mv(result));
}

void MetaService::wakeLockWaiters(InodeId inode) {
  if (lockWaiters_.count(inode) == 0) return;
  if (!lockWakes_.insert(inode).second) {
    lockWakeAgain_.insert(inode);  // a pass is under way: it runs once more when done
    return;
  }
  std::vector<uint64_t> ids;
  for (const LockWaiter& w : lockWaiters_[inode]) ids.push_back(w.id);
  tasks_.add(retryLockWaiters(inode, kj::mv(ids), 0).then([this, inode]() {
    lockWakes_.erase(inode);
    if (lockWakeAgain_.erase(inode) > 0) wakeLockWaiters(inode);
  }));
}

void MetaService::wakeAllLockWaiters() {
  std::vector<InodeId> inodes;
  for (auto& [inode, waiters] : lockWaiters_) inodes.push_back(inode);
  for (InodeId inode : inodes) wakeLockWaiters(inode);
}

kj::Promise<void> MetaService::retryLockWaiters(InodeId inode, std::vector<uint64_t> ids,
                                                size_t next) {
  // In arrival order, one at a time: the first waiter that fits gets the lock first.
  while (next < ids.size()) {
    LockWaiter* w = findLockWaiter(inode, ids[next]);
    if (!w || !w->fulfiller->isWaiting()) {
      ++next;
      continue;
    }
    w->attempting = true;
    uint64_t id = w->id;
    touch(w->session);
    HeldLock want = w->want;
    bool flock = w->flock;
    // Untracked: the client's sequence numbers are its own. Setting a lock twice gives what
    // setting it once did, so a retry after a lost answer does no harm.
    return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
             fillSetLock(op, inode, flock, want);
           })
        .then([this, inode, id, ids = kj::mv(ids), next](Result<Applied> r) mutable {
          LockWaiter* w = findLockWaiter(inode, id);
          if (w && w->fulfiller->isWaiting()) {
            w->attempting = false;
            if (r) {
              w->fulfiller->fulfill(Status());
            } else if (r.code() != Errc::kWouldBlock || w->giveUp) {
              w->fulfiller->fulfill(Status(r.error()));
            }
          }
          return retryLockWaiters(inode, kj::mv(ids), next + 1);
        });
  }
  return kj::READY_NOW;
}

kj::Promise<void> MetaService::getLock(GetLockContext context) {
  return readThen(context, [this](GetLockContext& context) {
    auto p = context.getParams();
    auto results = context.getResults();
    auto lock = lockOf(SessionId(p.getSession()), p.getLock());
    if (!lock) return toWire(lock.error(), results.initError());
    auto conflict = ns_.lockConflict(InodeId(p.getInode()), p.getLock().getFlock(), *lock);
    if (!conflict) return toWire(conflict.error(), results.initError());
    okToWire(results.initError());
    auto out = results.initConflict();
    out.setFlock(p.getLock().getFlock());
    if (!*conflict) return;  // type 0: nothing in the way
    const HeldLock& c = **conflict;
    out.setOwner(c.owner);
    out.setType(uint8_t(c.type));
    out.setStart(c.start);
    out.setEnd(c.end);
    out.setPid(c.pid);
  });
}

kj::Promise<void> MetaService::releaseLocks(ReleaseLocksContext context) {
  auto p = context.getParams();
  InodeId inode(p.getInode());
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           noteRequest(op, p.getReq());
           auto o = op.initReleaseLocks();
           o.setSession(p.getSession());
           o.setInode(p.getInode());
           o.setOwner(p.getOwner());
           o.setHandle(p.getHandle());
           o.setPosixOnly(p.getPosixOnly());
         })
      .then([this, context, inode](Result<Applied> r) mutable {
        if (r) wakeLockWaiters(inode);
        setError(context.getResults(), r);
      });
}

kj::Promise<void> MetaService::cancelLockWait(CancelLockWaitContext context) {
  auto p = context.getParams();
  SessionId session(p.getSession());
  for (auto& [inode, waiters] : lockWaiters_) {
    for (LockWaiter& w : waiters) {
      if (w.session == session && w.seq == p.getSeq()) {
        finishLockWaiter(inode, w.id, Error{Errc::kWouldBlock, "wait cancelled"});
        okToWire(context.getResults().initError());
        return kj::READY_NOW;
      }
    }
  }
  okToWire(context.getResults().initError());  // answered already, or never waited here
  return kj::READY_NOW;
}

}  // namespace tessera::meta
