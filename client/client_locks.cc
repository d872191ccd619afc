// client/client_locks.cc — cluster-wide file locks: fcntl record locks, OFD locks and flock,
// kept by the meta service (meta/meta_locks.cc). The mount names each lock's owner and the open
// handle it goes through; this file sends the calls, waits for blocking locks, remembers which
// files hold locks of this session (so a close that holds none costs no meta call), and drops
// its caches of a file when it takes a lock on it: whoever held the lock before may have written
// the file (a migrating VM's source host hands its image over this way).
#include "client/client.h"
#include "fs/wire.h"

namespace tessera::client {
namespace {

using MetaClient = proto::MetaService::Client;

void fillSpec(proto::LockSpec::Builder b, const LockRequest& l) {
  b.setOwner(l.owner);
  b.setHandle(l.handle);
  b.setFlock(l.flock);
  b.setType(l.type);
  b.setStart(l.start);
  b.setEnd(l.end);
  b.setPid(l.pid);
}

}  // namespace

kj::Promise<Status> Client::setLock(InodeId inode, LockRequest lock,
                                    std::shared_ptr<LockWait> wait) {
  if (lock.type > 2 || lock.end < lock.start) {
    return Status(Error{Errc::kInvalid, "setLock: bad lock"});
  }
  return meta_
      .mutate<bool>("setLock",
                    [inode, lock, wait](MetaClient m, MetaLink::Req r) {
                      auto req = m.setLockRequest();
                      r.fill(req.initReq());
                      req.setSession(r.session);
                      req.setInode(inode.value);
                      fillSpec(req.initLock(), lock);
                      if (wait) {
                        wait->seq = r.seq;
                        wait->session = r.session;
                        req.setWait(true);
                        req.setWaitMs(uint32_t(kLockWaitMs));
                      }
                      return req.send().then([](auto r) -> Result<bool> {
                        auto st = fromWire(r.getError());
                        if (!st) return st.error();
                        return true;
                      });
                    })
      .then([this, inode, lock, wait](Result<bool> r) -> kj::Promise<Status> {
        if (r) {
          if (lock.type != 0) {
            auto& held = locked_[inode];
            held.owners.insert(lock.owner);
            held.handles.insert(lock.handle);
            revalidate(inode);
          }
          return Status();
        }
        if (r.code() != Errc::kWouldBlock || !wait) return Status(r.error());
        if (wait->cancelled) return Status(Error{Errc::kInterrupted, "lock wait interrupted"});
        // The leader kept the call for a while and the lock is still held: ask again, as a new
        // request (the answer to the old one is kept as it was).
        return setLock(inode, lock, wait);
      });
}

void Client::cancelLockWait(std::shared_ptr<LockWait> wait) {
  if (!wait || wait->cancelled) return;
  wait->cancelled = true;
  if (wait->seq == 0) return;
  uint64_t session = wait->session, seq = wait->seq;
  // Only the leader holds waits; if this misses it (a failover), the wait ends by itself
  // within kLockWaitMs and is not asked again.
  tasks_.add(meta_
                 .call<bool>("cancelLockWait", true,
                             [session, seq](MetaClient m) {
                               auto req = m.cancelLockWaitRequest();
                               req.setSession(session);
                               req.setSeq(seq);
                               return req.send().then([](auto) -> Result<bool> { return true; });
                             })
                 .ignoreResult());
}

kj::Promise<Result<LockRequest>> Client::getLock(InodeId inode, LockRequest lock) {
  using R = Result<LockRequest>;
  return meta_.call<LockRequest>(
      "getLock", true, [this, inode, lock](MetaClient m) {
        auto req = m.getLockRequest();
        req.setSession(session_.value);
        req.setInode(inode.value);
        fillSpec(req.initLock(), lock);
        return req.send().then([lock](auto r) -> R {
          auto st = fromWire(r.getError());
          if (!st) return st.error();
          auto c = r.getConflict();
          LockRequest out = lock;
          out.type = c.getType();
          if (out.type > 2) return Error{Errc::kInvalid, "getLock: lock type in reply"};
          if (out.type != 0) {
            out.owner = c.getOwner();
            out.start = c.getStart();
            out.end = c.getEnd();
            out.pid = c.getPid();
          }
          return out;
        });
      });
}

kj::Promise<Status> Client::releaseLocks(InodeId inode, uint64_t owner, uint64_t handle,
                                         bool posixOnly) {
  auto it = locked_.find(inode);
  if (it == locked_.end()) return Status();
  // Nothing of this owner or handle was ever locked here: nothing to drop.
  if (owner != 0 && it->second.owners.count(owner) == 0) return Status();
  if (handle != 0 && it->second.handles.count(handle) == 0) return Status();
  if (handle != 0) it->second.handles.erase(handle);
  return meta_
      .mutate<bool>("releaseLocks",
                    [inode, owner, handle, posixOnly](MetaClient m, MetaLink::Req r) {
                      auto req = m.releaseLocksRequest();
                      r.fill(req.initReq());
                      req.setSession(r.session);
                      req.setInode(inode.value);
                      req.setOwner(owner);
                      req.setHandle(handle);
                      req.setPosixOnly(posixOnly);
                      return req.send().then([](auto r) -> Result<bool> {
                        auto st = fromWire(r.getError());
                        if (!st) return st.error();
                        return true;
                      });
                    })
      .then([](Result<bool> r) -> Status {
        if (!r) return r.error();
        return Status();
      });
}

}  // namespace tessera::client
