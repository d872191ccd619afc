// cloneChunks and cowChunk: copy-on-write clones (tessera clone, FUSE copy_file_range).
//
// A clone copies no data: the destination's chunk records name the source's chunks, and both
// records say `shared`. Every file that refers to a shared chunk has an 'R' record (keys.h), so
// the files of a chunk are found without a scan of the chunk map. The rules:
//   - Nobody writes a shared chunk: allocChunk grants no write lease on it. The meta leader
//     first copies its shards (each on the server that holds it: ChunkService.copy) to a new
//     chunk and switches the writer's file to that copy (cowChunk); the other files keep the
//     old chunk, untouched.
//   - A shared chunk's shards go to garbage only when the last file lets go of it
//     (chunksToGarbage → unshare); a chunk left in one file is private again.
//   - Repair and rebalance switch a shard of a shared chunk in every file at once
//     (replaceShard): the records of one chunk always agree on where its shards are.
// A clone is refused (busy) while a chunk of its source range is leased: a writer could still
// have unsynced data or unapplied log records for it, which a copy would miss. The caller
// gives its own leases back first; others' are recalled by the meta service.
#include <algorithm>
#include <bit>

#include "fs/wire.h"
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

namespace {

// The chunk records of `inode` with first <= index < end, by index.
Result<std::vector<ChunkDesc>> chunksIn(Txn& txn, InodeId inode, uint64_t first, uint64_t end) {
  std::vector<ChunkDesc> out;
  auto list = txn.list(keys::chunks(inode), keys::chunk(inode, first));
  if (!list) return list.error();
  for (auto& [key, value] : *list) {
    if (key.size() != keys::kIdPrefixLen + 8) return corruption("chunk key", "wrong length");
    uint64_t index = keys::readU64(key, keys::kIdPrefixLen);
    if (index >= end) break;
    auto chunk = decodeChunk(index, value);
    if (!chunk) return chunk.error();
    out.push_back(std::move(*chunk));
  }
  return out;
}

constexpr uint64_t kIndexLimit = uint64_t(INT64_MAX) / kChunkSize + 1;

}  // namespace

Result<std::vector<std::pair<InodeId, uint64_t>>> chunkRefs(Txn& txn, ChunkId chunk) {
  std::vector<std::pair<InodeId, uint64_t>> out;
  auto list = txn.list(keys::refs(chunk));
  if (!list) return list.error();
  for (auto& [key, value] : *list) {
    if (key.size() != keys::kRefKeyLen) return corruption("chunk reference key", "wrong length");
    out.emplace_back(InodeId(keys::readU64(key, keys::kIdPrefixLen)),
                     keys::readU64(key, keys::kIdPrefixLen + 8));
  }
  return out;
}

Result<bool> unshare(Txn& txn, ChunkId chunk, InodeId inode, uint64_t index) {
  auto refs = chunkRefs(txn, chunk);
  if (!refs) return refs.error();
  auto mine = std::find(refs->begin(), refs->end(), std::make_pair(inode, index));
  // Private after all (the other files let go earlier in this op): its shards are garbage.
  if (mine == refs->end()) return false;
  txn.erase(keys::ref(chunk, inode, index));
  refs->erase(mine);
  if (refs->empty()) return false;
  if (refs->size() == 1) {
    // The last file of the chunk: private again, writable in place.
    auto [other, otherIndex] = refs->front();
    std::string key = keys::chunk(other, otherIndex);
    auto bytes = txn.get(key);
    if (!bytes) return bytes.error();
    if (*bytes) {
      auto desc = decodeChunk(otherIndex, **bytes);
      if (!desc) return desc.error();
      if (desc->id == chunk) {
        desc->shared = false;
        txn.put(key, encode(*desc));
      }
    }
    txn.erase(keys::ref(chunk, other, otherIndex));
  }
  return true;
}

Result<Applied> cloneChunks(Txn& txn, proto::Op::Reader op) {
  auto args = op.getCloneChunks();
  InodeId srcId(args.getSrc()), dstId(args.getDst());
  if (srcId == dstId) return err(Errc::kInvalid, "clone of a file into itself", idStr(srcId));
  uint64_t count = args.getCount();
  if (count > kMaxCloneChunks) return err(Errc::kInvalid, "clone: count", std::to_string(count));
  uint64_t srcFirst = args.getSrcFirst(), dstFirst = args.getDstFirst();
  if (srcFirst > kIndexLimit - count || dstFirst > kIndexLimit - count) {
    return err(Errc::kTooBig, "clone: beyond the largest file");
  }
  if (args.getSize() > uint64_t(INT64_MAX)) return err(Errc::kTooBig, "clone: size");
  for (InodeId id : {srcId, dstId}) {
    auto inode = txn.inode(id);
    if (!inode) return inode.error();
    if ((*inode)->isDir()) return err(Errc::kIsDir, "clone", idStr(id));
    if (!(*inode)->isReg()) return err(Errc::kInvalid, "clone of a special file", idStr(id));
  }
  // A frozen source may be cloned (a snapshot's files are copied out so); a frozen
  // destination may not change.
  if (Status s = checkWritable(**txn.inode(dstId), "clone:"); !s) return s.error();
  SessionId session(args.getSession());
  auto src = chunksIn(txn, srcId, srcFirst, srcFirst + count);
  if (!src) return src.error();
  for (const ChunkDesc& c : *src) {
    if (c.leaseSession) {
      return err(Errc::kBusy, "clone: chunk " + std::to_string(c.id.value) +
                                  " of the source is leased to session " +
                                  std::to_string(c.leaseSession.value));
    }
    if (c.resync) {
      return err(Errc::kBusy, "clone: chunk " + std::to_string(c.id.value) +
                                  " of the source waits for a re-sync by its next writer");
    }
  }
  auto dst = chunksIn(txn, dstId, dstFirst, dstFirst + count);
  if (!dst) return dst.error();
  for (const ChunkDesc& c : *dst) {
    if (c.leaseSession && c.leaseSession != session) {
      return err(Errc::kBusy, "clone: chunk " + std::to_string(c.id.value) +
                                  " of the destination is leased to session " +
                                  std::to_string(c.leaseSession.value));
    }
  }
  // What the destination held in the range goes, as a punch's chunks do.
  Inode& dstInode = **txn.inode(dstId);
  if (Status s = chunksToGarbage(txn, dstInode, dstFirst, dstFirst + count); !s) return s.error();
  for (ChunkDesc& c : *src) {
    if (!c.shared) {
      c.shared = true;
      txn.put(keys::chunk(srcId, c.index), encode(c));
      txn.put(keys::ref(c.id, srcId, c.index), "");
    }
    ChunkDesc copy = c;
    copy.index = dstFirst + (c.index - srcFirst);
    txn.put(keys::chunk(dstId, copy.index), encode(copy));
    txn.put(keys::ref(c.id, dstId, copy.index), "");
  }
  dstInode.chunkCount += src->size();
  Inode& srcInode = **txn.inode(srcId);
  for (const ChunkDesc& c : *src) addWrittenMiB(dstInode, std::popcount(c.written));
  // Chunks of a file from before usage was tracked say too little of themselves.
  if (!srcInode.usageTracked) dstInode.usageTracked = false;
  if (Status s = txn.addToCounter(keys::kChunkCount, int64_t(src->size())); !s) return s.error();
  Attr& a = dstInode.attr;
  if (args.getSizeOfSrc()) {
    a.size = srcInode.attr.size;
  } else {
    a.size = args.getExactSize() ? args.getSize() : std::max(a.size, args.getSize());
  }
  a.mtimeNs = op.getNowNs();
  a.ctimeNs = op.getNowNs();
  return Applied{attrOf(dstInode), std::nullopt};
}

Result<Applied> cowChunk(Txn& txn, proto::Op::Reader op) {
  auto args = op.getCowChunk();
  InodeId id(args.getInode());
  uint64_t index = args.getIndex();
  auto inode = txn.inode(id);
  if (!inode) return inode.error();
  if (Status s = checkWritable(**inode, "cowChunk:"); !s) return s.error();
  std::string key = keys::chunk(id, index);
  auto bytes = txn.get(key);
  if (!bytes) return bytes.error();
  if (!*bytes) return err(Errc::kStale, "cowChunk: the chunk is gone");
  auto old = decodeChunk(index, **bytes);
  if (!old) return old.error();
  if (old->id.value != args.getOld()) return err(Errc::kStale, "cowChunk: the chunk was replaced");
  if (!old->shared) return err(Errc::kStale, "cowChunk: the chunk is no longer shared");
  auto copy = fromWire(args.getChunk());
  if (!copy) return err(Errc::kInvalid, "cowChunk:", copy.error().detail);
  if (!copy->id || copy->id == old->id) return err(Errc::kInvalid, "cowChunk: chunk id");
  if (!(copy->layout == old->layout)) return err(Errc::kInvalid, "cowChunk: another layout");
  copy->index = index;
  copy->leaseSession = SessionId();
  copy->shared = false;
  copy->resync = false;
  copy->written = old->written;  // the same bytes
  txn.put(key, encode(*copy));
  auto shared = unshare(txn, old->id, id, index);
  if (!shared) return shared.error();
  if (!*shared) {
    // Cannot happen while the record says shared, but a chunk nobody refers to is garbage.
    for (ServerId s : old->servers) {
      if (Status st = addGarbage(txn, *old, s); !st) return st.error();
    }
  }
  if (Status s = txn.raiseMark(keys::kChunkMark, copy->id.value); !s) return s.error();
  return Applied{attrOf(**inode), std::move(*copy)};
}

}  // namespace tessera::meta::ops
