// releaseLeases and markStale: the write leases of DESIGN.md rule 3 (granted by allocChunk with
// a lease session, chunks.cc) and the shards a holder could not write.
#include <algorithm>
#include <optional>

#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {
namespace {

// Clears the lease of the chunk at `index` of `inode` if `session` holds it (at `epoch`, if
// given). Not `clean` (the session expired): the chunk needs a re-sync before its next write.
Status dropLease(Txn& txn, SessionId session, InodeId inode, uint64_t index, bool clean,
                 std::optional<uint64_t> epoch = std::nullopt) {
  std::string key = keys::chunk(inode, index);
  auto bytes = txn.get(key);
  if (!bytes) return bytes.error();
  if (!*bytes) {
    txn.erase(keys::lease(session, inode, index));
    return Status();  // the chunk went (truncate, unlink)
  }
  auto chunk = decodeChunk(index, **bytes);
  if (!chunk) return chunk.error();
  // A release of an earlier grant (sent before the session took the lease again) keeps the
  // lease granted since.
  if (epoch && chunk->epoch != *epoch && chunk->leaseSession == session) return Status();
  txn.erase(keys::lease(session, inode, index));
  if (chunk->leaseSession != session) return Status();
  chunk->leaseSession = SessionId();
  if (!clean) chunk->resync = true;
  txn.put(key, encode(*chunk));
  return Status();
}

}  // namespace

Status dropLeases(Txn& txn, SessionId session, InodeId inode, bool clean) {
  std::string prefix = inode ? keys::leases(session, inode) : keys::leases(session);
  auto held = txn.list(prefix);
  if (!held) return held.error();
  for (auto& [key, value] : *held) {
    if (key.size() != keys::kIdPrefixLen + 16) return corruption("lease key", "wrong length");
    InodeId of(keys::readU64(key, keys::kIdPrefixLen));
    uint64_t index = keys::readU64(key, keys::kIdPrefixLen + 8);
    if (Status s = dropLease(txn, session, of, index, clean); !s) return s;
  }
  return Status();
}

Result<Applied> releaseLeases(Txn& txn, proto::Op::Reader op) {
  auto args = op.getReleaseLeases();
  SessionId session(args.getSession());
  InodeId inode(args.getInode());
  if (!session || !inode) return err(Errc::kInvalid, "releaseLeases: session or inode 0");
  if (args.getIndexes().size() == 0) {
    if (Status s = dropLeases(txn, session, inode, true); !s) return s.error();
    return Applied{};
  }
  auto indexes = args.getIndexes();
  auto epochs = args.getEpochs();
  if (epochs.size() != 0 && epochs.size() != indexes.size()) {
    return err(Errc::kInvalid, "releaseLeases: one epoch per index");
  }
  for (size_t i = 0; i < indexes.size(); ++i) {
    std::optional<uint64_t> epoch;
    if (epochs.size() != 0) epoch = epochs[i];
    if (Status s = dropLease(txn, session, inode, indexes[i], true, epoch); !s) return s.error();
  }
  return Applied{};
}

Result<Applied> markStale(Txn& txn, proto::Op::Reader op) {
  auto args = op.getMarkStale();
  InodeId inode(args.getInode());
  std::string key = keys::chunk(inode, args.getIndex());
  auto bytes = txn.get(key);
  if (!bytes) return bytes.error();
  if (!*bytes) return err(Errc::kNotFound, "markStale: no chunk at index", std::to_string(args.getIndex()));
  auto chunk = decodeChunk(args.getIndex(), **bytes);
  if (!chunk) return chunk.error();
  // Only the holder of the current lease knows which shards missed its writes.
  if (chunk->epoch != args.getEpoch()) {
    return err(Errc::kBusy, "markStale: lease epoch " + std::to_string(args.getEpoch()) +
                                 " was replaced by " + std::to_string(chunk->epoch));
  }
  uint32_t shards = args.getShards();
  if (shards >> chunk->layout.shards()) return err(Errc::kInvalid, "markStale: no such shard");
  chunk->staleShards |= shards;
  if (args.getResynced()) chunk->resync = false;
  txn.put(key, encode(*chunk));
  auto a = txn.inode(inode);
  if (!a) return a.error();
  return Applied{attrOf(**a), std::move(*chunk)};
}

}  // namespace tessera::meta::ops
