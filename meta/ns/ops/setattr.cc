// setattr: chmod, chown, truncate, utimens.
#include <bit>
#include <limits>

#include "fs/proto/meta.capnp.h"
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> setattr(Txn& txn, proto::Op::Reader op) {
  auto args = op.getSetattr();
  uint32_t valid = args.getValid();
  constexpr uint32_t kKnown = proto::SET_MODE | proto::SET_UID | proto::SET_GID | proto::SET_SIZE |
                              proto::SET_ATIME | proto::SET_MTIME | proto::SET_ATIME_NOW |
                              proto::SET_MTIME_NOW | proto::SET_CTIME;
  if ((valid & ~kKnown) != 0) return err(Errc::kInvalid, "setattr: unknown valid bits");
  InodeId id(args.getInode());
  auto inodeOr = txn.inode(id);
  if (!inodeOr) return inodeOr.error();
  Inode& inode = **inodeOr;
  if (Status s = checkWritable(inode, "setattr:"); !s) return s.error();
  Attr& a = inode.attr;
  int64_t now = op.getNowNs();

  if (valid & proto::SET_SIZE) {
    if (inode.isDir()) return err(Errc::kIsDir, "truncate", idStr(id));
    if (!inode.isReg()) return err(Errc::kInvalid, "truncate of a special file", idStr(id));
    uint64_t size = args.getSize();
    if (size > uint64_t(std::numeric_limits<int64_t>::max())) {
      return err(Errc::kTooBig, "truncate to", std::to_string(size));
    }
    // Chunks wholly past the new end go — also when the stored size is smaller, because a
    // client may have written past it without committing the size yet. The client already
    // zeroed the tail of the last partial chunk, so a later extension reads zeros there, as
    // POSIX requires.
    uint64_t keep = size / kChunkSize + (size % kChunkSize != 0);
    if (Status s = checkDropLeases(txn, inode, keep, UINT64_MAX, SessionId(op.getSession()),
                                   args.getLapsed());
        !s) {
      return s.error();
    }
    if (Status s = chunksToGarbage(txn, inode, keep); !s) return s.error();
    // The MiBs of the last chunk wholly past the end hold zeros now: no longer written.
    if (uint64_t within = size % kChunkSize; within != 0) {
      std::string key = keys::chunk(id, size / kChunkSize);
      auto bytes = txn.get(key);
      if (!bytes) return bytes.error();
      if (*bytes) {
        auto chunk = decodeChunk(size / kChunkSize, **bytes);
        if (!chunk) return chunk.error();
        // 1 to 64 MiBs keep theirs (a shift by 64 would be undefined).
        uint64_t keepBits = (within + kUsageUnit - 1) / kUsageUnit;
        uint64_t keep = keepBits >= 64 ? ~uint64_t(0) : (uint64_t(1) << keepBits) - 1;
        uint64_t written = chunk->written & keep;
        if (written != chunk->written && !chunk->shared) {
          addWrittenMiB(inode, int64_t(std::popcount(written)) -
                                   int64_t(std::popcount(chunk->written)));
          chunk->written = written;
          txn.put(key, encode(*chunk));
        }
      }
    }
    if (size != a.size && !(valid & (proto::SET_MTIME | proto::SET_MTIME_NOW))) a.mtimeNs = now;
    a.size = size;
  }
  if (valid & proto::SET_MODE) a.mode = (a.mode & S_IFMT) | (args.getMode() & 07777);
  if (valid & proto::SET_UID) a.uid = args.getUid();
  if (valid & proto::SET_GID) a.gid = args.getGid();
  if (valid & proto::SET_ATIME_NOW) {
    a.atimeNs = now;
  } else if (valid & proto::SET_ATIME) {
    a.atimeNs = args.getAtimeNs();
  }
  if (valid & proto::SET_MTIME_NOW) {
    a.mtimeNs = now;
  } else if (valid & proto::SET_MTIME) {
    a.mtimeNs = args.getMtimeNs();
  }
  // Every attribute change is a status change; SET_CTIME adds nothing the op could carry.
  a.ctimeNs = now;
  return Applied{attrOf(inode), std::nullopt};
}

}  // namespace tessera::meta::ops
