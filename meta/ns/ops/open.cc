// open and release: per-session counts of open handles, which keep unlinked files alive.
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> open(Txn& txn, proto::Op::Reader op) {
  auto args = op.getOpen();
  SessionId session(args.getSession());
  if (!session) return err(Errc::kInvalid, "open: session 0");
  InodeId id(args.getInode());
  auto inode = txn.inode(id);
  if (!inode) return inode.error();
  std::string key = keys::open(id, session);
  auto count = txn.get(key);
  if (!count) return count.error();
  uint64_t n = 0;
  if (*count) {
    auto decoded = decodeU64(**count);
    if (!decoded) return decoded.error();
    n = *decoded;
  }
  if (n == 0) (*inode)->openSessions++;
  txn.put(key, keys::u64Value(n + 1));
  if (Status s = txn.raiseMark(keys::kSessionMark, session.value); !s) return s.error();
  return Applied{attrOf(**inode), std::nullopt};
}

Result<Applied> release(Txn& txn, proto::Op::Reader op) {
  auto args = op.getRelease();
  SessionId session(args.getSession());
  InodeId id(args.getInode());
  std::string key = keys::open(id, session);
  auto count = txn.get(key);
  if (!count) return count.error();
  if (!*count) return err(Errc::kNotFound, "release: not open", idStr(id));
  auto n = decodeU64(**count);
  if (!n) return n.error();
  if (*n > 1) {
    txn.put(key, keys::u64Value(*n - 1));
    return Applied{};
  }
  // The session's last handle of the file: its write leases on the file go too (its mount
  // flushed before it released), and so do its locks on it (no lock outlives every open file
  // description it was taken through).
  if (Status s = dropLeases(txn, session, id, true); !s) return s.error();
  if (Status s = dropLocks(txn, session, id, 0, 0, false); !s) return s.error();
  if (Status s = dropOpenHandle(txn, id, key); !s) return s.error();
  return Applied{};
}

Status dropOpenHandle(Txn& txn, InodeId id, const std::string& key) {
  txn.erase(key);
  auto inode = txn.inode(id);
  if (!inode) {
    return inode.code() == Errc::kNotFound
               ? corruption("open handle", "of missing inode " + idStr(id))
               : inode.error();
  }
  if ((*inode)->openSessions > 0) (*inode)->openSessions--;
  // The last handle of an unlinked file: now it goes.
  if ((*inode)->attr.nlink == 0 && (*inode)->openSessions == 0) {
    return deleteInode(txn, **inode);
  }
  return Status();
}

}  // namespace tessera::meta::ops
