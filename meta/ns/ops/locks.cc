// setLock and releaseLocks: cluster-wide fcntl, OFD and flock locks (the rules: lock_table.h).
// Locks live in the replicated store, so a meta failover keeps them; a session's locks go with
// its last handle of the file (release), with its expiry, and when its mount drops them (close).
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {
namespace {

// Every lock of one kind on `inode`, with the key it is stored under.
Result<std::vector<std::pair<std::string, HeldLock>>> locksOf(Txn& txn, InodeId inode,
                                                             char kind) {
  auto rows = txn.list(keys::locks(inode, kind));
  if (!rows) return rows.error();
  std::vector<std::pair<std::string, HeldLock>> out;
  out.reserve(rows->size());
  for (auto& [key, value] : *rows) {
    auto lock = decodeLock(key, value);
    if (!lock) return lock.error();
    out.emplace_back(std::move(key), *lock);
  }
  return out;
}

}  // namespace

Result<Applied> setLock(Txn& txn, proto::Op::Reader op) {
  auto args = op.getSetLock();
  SessionId session(args.getSession());
  InodeId inode(args.getInode());
  if (!session || !inode) return err(Errc::kInvalid, "setLock: session or inode 0");
  uint8_t type = args.getType();
  if (type > uint8_t(LockType::kWrite)) {
    return err(Errc::kInvalid, "setLock: lock type", std::to_string(type));
  }
  uint64_t start = args.getStart(), end = args.getEnd();
  if (end < start || end > kLockToEnd) return err(Errc::kInvalid, "setLock: bad range");
  // The session must exist: a lock of a session that expired would never go away. (A tracked
  // request of an expired session was answered stale before this; the leader's retries of a
  // waiting lock are untracked.)
  auto sessionRec = txn.get(keys::session(session));
  if (!sessionRec) return sessionRec.error();
  if (!*sessionRec) return err(Errc::kStale, "setLock: session expired", std::to_string(session.value));
  auto node = txn.inode(inode);
  if (!node) return node.error();
  if (!(*node)->isReg() && type != uint8_t(LockType::kUnlock)) {
    return err(Errc::kInvalid, "setLock: not a regular file", idStr(inode));
  }

  char kind = args.getFlock() ? keys::kFlockLocks : keys::kPosixLocks;
  HeldLock want;
  want.session = session.value;
  want.owner = args.getOwner();
  want.handle = args.getHandle();
  want.start = start;
  want.end = end;
  want.type = LockType(type);
  want.pid = args.getPid();

  auto held = locksOf(txn, inode, kind);
  if (!held) return held.error();
  std::vector<HeldLock> all, own;
  for (auto& [key, lock] : *held) {
    all.push_back(lock);
    if (lock.sameOwner(want)) own.push_back(lock);
  }
  if (auto conflict = findConflict(all, want)) {
    return err(Errc::kWouldBlock, "setLock: held by session " + std::to_string(conflict->session) +
                                      " pid " + std::to_string(conflict->pid));
  }
  // The owner's records are rewritten whole: the few it holds on one file, merged and split.
  for (auto& [key, lock] : *held) {
    if (lock.sameOwner(want)) txn.erase(key);
  }
  for (const HeldLock& lock : applyToOwn(own, want)) {
    txn.put(keys::lock(inode, kind, lock.session, lock.owner, lock.start), encodeLock(lock));
  }
  return Applied{};
}

Status dropLocks(Txn& txn, SessionId session, InodeId inode, uint64_t owner, uint64_t handle,
                 bool posixOnly) {
  for (char kind : {keys::kPosixLocks, keys::kFlockLocks}) {
    if (posixOnly && kind == keys::kFlockLocks) continue;
    auto held = locksOf(txn, inode, kind);
    if (!held) return held.error();
    for (auto& [key, lock] : *held) {
      if (lock.session != session.value) continue;
      if (owner != 0 && lock.owner != owner) continue;
      if (handle != 0 && lock.handle != handle) continue;
      txn.erase(key);
    }
  }
  return Status();
}

Status dropSessionLocks(Txn& txn, SessionId session) {
  // Locks are keyed by inode first: expiry walks every lock of the cluster. Expiry is rare and
  // locks are few (a handful per open VM image). TODO(perf): a per-session index if not.
  std::vector<std::string> doomed;
  Status bad;
  Status s = txn.scan(std::string(1, char(keys::kLock)), {},
                      [&](std::string_view key, std::string_view) {
                        if (key.size() != keys::kLockKeyLen) {
                          bad = corruption("lock key", "wrong length");
                          return false;
                        }
                        if (keys::readU64(key, 10) == session.value) doomed.emplace_back(key);
                        return true;
                      });
  if (!s) return s;
  if (!bad) return bad;
  for (std::string& key : doomed) txn.erase(std::move(key));
  return Status();
}

Result<Applied> releaseLocks(Txn& txn, proto::Op::Reader op) {
  auto args = op.getReleaseLocks();
  SessionId session(args.getSession());
  InodeId inode(args.getInode());
  if (!session || !inode) return err(Errc::kInvalid, "releaseLocks: session or inode 0");
  if (Status s = dropLocks(txn, session, inode, args.getOwner(), args.getHandle(),
                           args.getPosixOnly());
      !s) {
    return s.error();
  }
  return Applied{};
}

}  // namespace tessera::meta::ops
