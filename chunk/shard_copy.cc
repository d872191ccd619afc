// Copy of a shard in pieces of kPiece bytes, one piece read and written at a time: a copy is a
// background order and must not hold much memory or the disk for long at once.
#include "chunk/shard_copy.h"

#include <algorithm>
#include <cstring>

namespace tessera::chunk {

namespace {

constexpr uint64_t kPiece = 1 << 20;

bool allZero(const kj::byte* p, size_t n) {
  static const kj::byte zeros[kBlockSize] = {};
  return memcmp(p, zeros, n) == 0;
}

struct Copy {
  DiskSet& disks;
  ShardKey from, to;
  Layout layout;
  uint64_t length;
  uint64_t written = 0;
};


// Writes the runs of blocks of `buf` (read at `offset`) that are not all zeros, one after another.
kj::Promise<Status> writeRuns(Copy& c, uint64_t offset, kj::Array<kj::byte> buf,
                              kj::Array<uint32_t> crcs, size_t block) {
  size_t blocks = crcs.size();
  while (block < blocks && allZero(buf.begin() + block * kBlockSize, kBlockSize)) ++block;
  if (block == blocks) return Status();
  size_t end = block;
  while (end < blocks && !allZero(buf.begin() + end * kBlockSize, kBlockSize)) ++end;
  auto runCrcs = kj::heapArray<uint32_t>(crcs.slice(block, end));
  auto data = buf.slice(block * kBlockSize, end * kBlockSize);
  c.written += data.size();
  auto write = c.disks.write(c.to, c.layout, offset + block * kBlockSize, data, kj::mv(runCrcs),
                             false, NewShard::kCreate);
  return write.then([&c, offset, buf = kj::mv(buf), crcs = kj::mv(crcs),
                     end](Status s) mutable -> kj::Promise<Status> {
    if (!s) return s;
    return writeRuns(c, offset, kj::mv(buf), kj::mv(crcs), end);
  });
}

kj::Promise<Status> copyFrom(Copy& c, uint64_t offset) {
  if (offset >= c.length) return Status();
  uint64_t n = std::min(kPiece, c.length - offset);
  auto buf = kj::heapArray<kj::byte>(n);
  auto crcs = kj::heapArray<uint32_t>(n / kBlockSize);
  auto read = c.disks.read(c.from, offset, buf, crcs);
  return read.then([&c, offset, n, buf = kj::mv(buf),
                    crcs = kj::mv(crcs)](Status s) mutable -> kj::Promise<Status> {
    if (!s) return s;
    return writeRuns(c, offset, kj::mv(buf), kj::mv(crcs), 0)
        .then([&c, offset, n](Status s) -> kj::Promise<Status> {
          if (!s) return s;
          return copyFrom(c, offset + n);
        });
  });
}

}  // namespace

kj::Promise<Result<uint64_t>> copyShard(DiskSet& disks, ShardKey from, ShardKey to, Layout layout,
                                        uint64_t length) {
  using R = Result<uint64_t>;
  if (auto s = checkRange(0, length); !s) return R(s.error());
  if (from.chunk == to.chunk || from.shard != to.shard) {
    return R(Error{Errc::kInvalid, "copy of shard " + from.toString() + " to " + to.toString()});
  }
  if (!disks.diskOf(from)) return R(Error{Errc::kNotFound, "shard " + from.toString()});
  auto c = kj::heap<Copy>(Copy{disks, from, to, layout, length});
  auto& ref = *c;
  // An earlier try may have left part of a copy.
  return disks.remove(kj::heapArray<ChunkId>({to.chunk}))
      .then([&ref](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        // The target exists even if every block of the source is zeros.
        return ref.disks.create(ref.to, ref.layout);
      })
      .then([c = kj::mv(c)](Status s) mutable -> kj::Promise<R> {
        if (!s) return R(s.error());
        auto run = copyFrom(*c, 0);
        return run.then([c = kj::mv(c)](Status s) mutable -> kj::Promise<R> {
          if (!s) return R(s.error());
          auto sync = c->disks.sync(kj::heapArray<ShardKey>({c->to}));
          return sync.then([c = kj::mv(c)](Status s) -> R {
            if (!s) return s.error();
            return c->written;
          });
        });
      });
}

}  // namespace tessera::chunk
