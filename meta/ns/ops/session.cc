// expireSession: a mount that went silent past the session timeout is forgotten, and everything
// it held goes as if it had released it. The leader decides when (meta_service.cc keeps the
// liveness, which is not replicated); applying the op decides nothing but what the store holds.
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {
namespace {

// The open-handle keys of `session`. 'o' keys are ordered by inode first, so this walks every
// open handle of every session: expiry is rare, and the order is the store's, the same on every
// replica. TODO(perf): a per-session index if clusters ever hold millions of open files.
Result<std::vector<std::string>> openKeysOf(Txn& txn, SessionId session) {
  std::vector<std::string> found;
  Status bad;
  Status s = txn.scan(std::string(1, char(keys::kOpen)), {},
                      [&](std::string_view key, std::string_view) {
                        if (key.size() != keys::kIdPrefixLen + 8) {
                          bad = corruption("open handle key", "wrong length");
                          return false;
                        }
                        if (keys::readU64(key, keys::kIdPrefixLen) == session.value) {
                          found.emplace_back(key);
                        }
                        return true;
                      });
  if (!s) return s.error();
  if (!bad) return bad.error();
  return found;
}

// Drops every stored reply of the session: nobody can ask for them again.
Status dropReplies(Txn& txn, SessionId session) {
  auto replies = txn.list(keys::prefix(keys::kReply, session.value));
  if (!replies) return replies.error();
  for (auto& [key, value] : *replies) txn.erase(key);
  return Status();
}

}  // namespace

Result<Applied> expireSession(Txn& txn, proto::Op::Reader op) {
  auto args = op.getExpireSession();
  SessionId id(args.getSession());
  if (!id) return err(Errc::kInvalid, "expireSession: session 0");
  auto bytes = txn.get(keys::session(id));
  if (!bytes) return bytes.error();
  // Expired already (a second leader proposed it too, or a retried proposal): nothing to do.
  if (!*bytes) return err(Errc::kNotFound, "expireSession: no session", std::to_string(id.value));
  auto rec = decodeSession(id, **bytes);
  if (!rec) return rec.error();
  // A request of the session was applied after the leader last heard from it: it is alive
  // (only possible across a leader change; the check costs nothing and never expires wrongly).
  if (args.getSilentSinceNs() != 0 && rec->lastActiveNs > args.getSilentSinceNs()) {
    return err(Errc::kBusy, "expireSession: session active since", std::to_string(id.value));
  }

  // 1. Write leases, then open files, released exactly as release would, so an unlinked file whose last opener
  //    this was goes now, its chunks to the garbage list.
  if (Status s = dropLeases(txn, id, InodeId(), false); !s) return s.error();
  auto opens = openKeysOf(txn, id);
  if (!opens) return opens.error();
  for (const std::string& key : *opens) {
    if (Status s = dropOpenHandle(txn, InodeId(keys::readU64(key, 1)), key); !s) {
      return s.error();
    }
  }
  // 2. Locks: the session's fcntl/OFD/flock locks go in this same batch, so no replica ever
  //    sees a lock of a session that no longer exists.
  if (Status s = dropSessionLocks(txn, id); !s) return s.error();

  // 3. Exactly-once replies and the session itself.
  if (Status s = dropReplies(txn, id); !s) return s.error();
  txn.erase(keys::session(id));
  return Applied{};
}

}  // namespace tessera::meta::ops
