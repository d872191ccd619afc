// allocChunk, commitWrite, punchChunks and removed: the chunk map of files and the garbage
// list.
#include <algorithm>
#include <bit>

#include "fs/wire.h"
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> allocChunk(Txn& txn, proto::Op::Reader op) {
  auto args = op.getAllocChunk();
  InodeId id(args.getInode());
  auto inode = txn.inode(id);
  if (!inode) return inode.error();
  if (Status s = checkWritable(**inode, "allocChunk:"); !s) return s.error();
  if ((*inode)->isDir()) return err(Errc::kIsDir, "allocChunk", idStr(id));
  if (!(*inode)->isReg()) return err(Errc::kInvalid, "allocChunk of a special file", idStr(id));
  auto chunk = fromWire(args.getChunk());  // kInvalid: bad layout, servers != k + m
  if (!chunk) return err(Errc::kInvalid, "allocChunk:", chunk.error().detail);
  if (!chunk->id) return err(Errc::kInvalid, "allocChunk: chunk id 0");
  // The file's last byte must stay addressable as an off_t.
  if (chunk->index >= uint64_t(INT64_MAX) / kChunkSize + 1) {
    return err(Errc::kTooBig, "allocChunk: index", std::to_string(chunk->index));
  }

  SessionId leaseTo(args.getLeaseSession());
  std::string key = keys::chunk(id, chunk->index);
  auto existing = txn.get(key);
  if (!existing) return existing.error();
  if (*existing) {
    // Two writers raced to allocate this chunk; the first one's placement stands.
    auto stored = decodeChunk(chunk->index, **existing);
    if (!stored) return stored.error();
    if (!leaseTo || stored->leaseSession == leaseTo) return Applied{attrOf(**inode), std::move(*stored)};
    // Other files read it: the meta leader gives the writer a private copy first (cowChunk).
    if (stored->shared) {
      return err(Errc::kBusy, "chunk " + std::to_string(stored->id.value) + " is shared (a clone)");
    }
    SessionId holder = stored->leaseSession;
    if (holder && holder.value != args.getReplace()) {
      return err(Errc::kBusy, "write lease held by session", std::to_string(holder.value));
    }
    if (holder) {
      txn.erase(keys::lease(holder, id, stored->index));
      stored->resync = true;  // taken over: the holder may be cut off in the middle of a write
    }
    // A new grant: a new epoch, so chunk servers refuse whatever the last holder still sends.
    stored->epoch++;
    stored->leaseSession = leaseTo;
    txn.put(keys::lease(leaseTo, id, stored->index), "");
    txn.put(key, encode(*stored));
    return Applied{attrOf(**inode), std::move(*stored)};
  }
  chunk->epoch = leaseTo ? 1 : 0;
  chunk->leaseSession = leaseTo;
  chunk->staleShards = 0;
  chunk->shared = false;
  chunk->written = 0;  // the writer reports what it writes (commitWrite)
  if (leaseTo) txn.put(keys::lease(leaseTo, id, chunk->index), "");
  txn.put(key, encode(*chunk));
  ++(*inode)->chunkCount;
  if (Status s = txn.addToCounter(keys::kChunkCount, 1); !s) return s.error();
  if (Status s = txn.raiseMark(keys::kChunkMark, chunk->id.value); !s) return s.error();
  return Applied{attrOf(**inode), std::move(*chunk), true};
}

Result<Applied> commitWrite(Txn& txn, proto::Op::Reader op) {
  auto args = op.getCommitWrite();
  InodeId id(args.getInode());
  auto inode = txn.inode(id);
  if (!inode) return inode.error();
  if (Status s = checkWritable(**inode, "commitWrite:"); !s) return s.error();
  if ((*inode)->isDir()) return err(Errc::kIsDir, "commitWrite", idStr(id));
  if (!(*inode)->isReg()) return err(Errc::kInvalid, "commitWrite of a special file", idStr(id));
  if (args.getSize() > uint64_t(INT64_MAX)) return err(Errc::kTooBig, "commitWrite: size");
  auto chunks = args.getUsageChunks();
  auto set = args.getUsageSet();
  auto clear = args.getUsageClear();
  if (set.size() != chunks.size() || clear.size() != chunks.size()) {
    return err(Errc::kInvalid, "commitWrite: usage lists of different lengths");
  }
  if (chunks.size() > kMaxUsageChunks) return err(Errc::kInvalid, "commitWrite: too many chunks");
  Inode& file = **inode;
  for (size_t i = 0; i < chunks.size(); ++i) {
    std::string key = keys::chunk(id, chunks[i]);
    auto bytes = txn.get(key);
    if (!bytes) return bytes.error();
    // Dropped since (truncate, punch): its MiBs went with it.
    if (!*bytes) continue;
    auto chunk = decodeChunk(chunks[i], **bytes);
    if (!chunk) return chunk.error();
    uint64_t written = (chunk->written & ~clear[i]) | set[i];
    if (written == chunk->written) continue;
    int64_t delta = int64_t(std::popcount(written)) - int64_t(std::popcount(chunk->written));
    chunk->written = written;
    txn.put(key, encode(*chunk));
    addWrittenMiB(file, delta);
  }
  Attr& a = (*inode)->attr;
  // Writes may commit out of order; a file never shrinks by a write.
  a.size = std::max(a.size, args.getSize());
  // mtime 0: only the written MiBs changed (a reservation), not the data.
  if (args.getMtimeNs() != 0) {
    a.mtimeNs = args.getMtimeNs();
    a.ctimeNs = op.getNowNs();
  }
  return Applied{attrOf(**inode), std::nullopt};
}

Result<Applied> punchChunks(Txn& txn, proto::Op::Reader op) {
  auto args = op.getPunchChunks();
  InodeId id(args.getInode());
  auto inode = txn.inode(id);
  if (!inode) return inode.error();
  if (Status s = checkWritable(**inode, "punchChunks:"); !s) return s.error();
  if ((*inode)->isDir()) return err(Errc::kIsDir, "punchChunks", idStr(id));
  if (!(*inode)->isReg()) return err(Errc::kInvalid, "punchChunks of a special file", idStr(id));
  uint64_t first = args.getFirst(), count = args.getCount();
  if (count > kMaxPunchChunks) {
    return err(Errc::kInvalid, "punchChunks: count", std::to_string(count));
  }
  // The chunks go as a truncate's do (their shards to garbage, their leases with them — only
  // the requester's or lapsed ones, see checkDropLeases); the size stays: what they held reads
  // as a hole now.
  uint64_t end = first > UINT64_MAX - count ? UINT64_MAX : first + count;
  if (Status s = checkDropLeases(txn, **inode, first, end, SessionId(op.getSession()),
                                 args.getLapsed());
      !s) {
    return s.error();
  }
  if (Status s = chunksToGarbage(txn, **inode, first, end); !s) return s.error();
  Attr& a = (*inode)->attr;
  a.mtimeNs = op.getNowNs();
  a.ctimeNs = op.getNowNs();
  return Applied{attrOf(**inode), std::nullopt};
}

Result<Applied> removed(Txn& txn, proto::Op::Reader op) {
  auto args = op.getRemoved();
  ServerId server(args.getServer());
  for (uint64_t chunkId : args.getChunks()) {
    std::string key = keys::garbage(ChunkId(chunkId));
    auto bytes = txn.get(key);
    if (!bytes) return bytes.error();
    // Already drained (a repeated report): nothing to do.
    if (!*bytes) continue;
    auto garbage = decodeGarbage(ChunkId(chunkId), **bytes);
    if (!garbage) return garbage.error();
    if (std::erase(garbage->pending, server) == 0) continue;
    if (garbage->pending.empty()) {
      txn.erase(key);
      if (Status s = txn.addToCounter(keys::kGarbageCount, -1); !s) return s.error();
    } else {
      txn.put(key, encode(*garbage));
    }
  }
  return Applied{};
}

}  // namespace tessera::meta::ops
