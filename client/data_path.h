// client/data_path.h — reads and writes the bytes of one chunk on its shard servers.
//
// Every shard transfer is whole 4 KiB blocks, each with the CRC32C the client computed (writes)
// or checks (reads): a block the server or the wire damaged is a missing shard, never data.
// ec(k,m) reads fetch only the data shards a range touches; when shards are missing or fail
// their checksums, the same rows are read from every other shard and the lost ones rebuilt with
// ISA-L, so up to m bad shards per row are invisible. A write of a partial stripe reads the old
// contents of the untouched part of its rows, re-encodes parity over those rows and writes the
// touched data blocks and every parity shard; a full-stripe write reads nothing. Writes that
// touch the same rows of a chunk are serialised through a RangeLock, so this client never
// interleaves two read-modify-writes of one row. (Crash consistency of a partial-stripe
// overwrite — the write hole — is the per-chunk log of DESIGN.md rule 2, not yet here: a crash
// mid-write can leave a row whose parity disagrees with its data.)
// replica(n): reads go to one replica and fall back to the others; writes go to all.
//
// Writes carry the chunk's lease epoch (ChunkDesc::epoch); a chunk server that knows a newer
// one refuses them (kStale: the lease moved to another writer). Shards marked stale in the
// descriptor are neither read nor written. A write that fails on some shards but reaches
// enough of them (at most m lost for ec(k,m), at least one replica) succeeds degraded and names
// the shards it missed, which the caller must have marked stale before it acknowledges.
// Not thread-safe: lives on the client's event loop.
#pragma once
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <kj/async.h>
#include <kj/timer.h>

#include "client/chunk_servers.h"
#include "client/range_lock.h"
#include "client/stripe.h"
#include "fs/erasure.h"
#include "fs/types.h"

namespace tessera::client {

struct ShardKey {
  ChunkId chunk;
  int shard;
  friend auto operator<=>(const ShardKey&, const ShardKey&) = default;
};

// What a client knows of a chunk it placed itself (allocChunk said `created`): it holds nothing
// but this client's own writes. Rows it never wrote need no reading before a partial-stripe
// write (they are zeros), and its first write also creates the shards that write does not
// touch, so that untouched ranges read as zeros rather than as lost.
struct FreshChunk {
  bool shardsCreated = false;
  std::vector<std::vector<Extent>> written;  // per data shard: shard-offset ranges, sorted

  bool overlaps(int shard, uint64_t lo, uint64_t hi) const;
  void add(int shard, uint64_t lo, uint64_t hi);
};

class DataPath {
 public:
  // `servers` and `timer` must outlive this. Each shard RPC fails after `ioTimeoutMs`.
  DataPath(ChunkServers& servers, kj::Timer& timer, uint64_t ioTimeoutMs);

  // Chunk bytes [off, off + out.size()) into `out`, which must stay alive until resolved.
  // kUnavailable when more than m shards of a row (every replica) cannot be read.
  kj::Promise<Status> read(const ChunkDesc& chunk, uint64_t off, kj::ArrayPtr<kj::byte> out);

  // `data` (alive until resolved) at chunk offset `off`, on every shard. With `sync` every
  // shard written is on disk when this resolves. `fresh` (may be null) is what this client
  // knows of a chunk it placed; it is updated when the write succeeds. The value is the mask of
  // shards the write could not reach (0 when it reached all); kStale if a server fenced the
  // lease's epoch; kUnavailable if too many shards failed.
  kj::Promise<Result<uint32_t>> write(const ChunkDesc& chunk, uint64_t off,
                                      kj::ArrayPtr<const kj::byte> data, bool sync,
                                      std::shared_ptr<FreshChunk> fresh = nullptr);

  // Cuts the chunk to `len` bytes (0 < len < kChunkSize): zeroes the rest of the stripe that
  // holds byte len - 1 and truncates every shard after it.
  // The mask of shards it could not reach, as write().
  kj::Promise<Result<uint32_t>> truncate(const ChunkDesc& chunk, uint64_t len);

  // Makes rows [0, len) of the chunk consistent after an unclean lease handover (see
  // ChunkDesc::resync): ec parity re-encoded from the data shards, replicas copied from the
  // first readable one; durable when resolved. The mask of shards it could not write.
  kj::Promise<Result<uint32_t>> resync(const ChunkDesc& chunk, uint64_t len);

  // Makes the chunk's servers refuse writes with an epoch older than chunk.epoch. The mask of
  // shards whose server could not be reached (kStale if one knows a newer epoch already).
  kj::Promise<Result<uint32_t>> fence(const ChunkDesc& chunk);

  // Makes the listed shards on `server` durable.
  kj::Promise<Status> sync(ServerId server, const std::vector<ShardKey>& shards);

  // Largest byte count of one shard RPC.
  static constexpr uint64_t kMaxTransfer = 1 << 20;

 private:
  // One block-aligned range of one shard to read into `dest`.
  struct Want {
    int shard;
    uint64_t lo;
    kj::ArrayPtr<kj::byte> dest;
  };

  kj::Promise<Status> readShard(const ChunkDesc& chunk, int shard, uint64_t lo,
                                kj::ArrayPtr<kj::byte> dest);
  kj::Promise<Status> writeShard(const ChunkDesc& chunk, int shard, uint64_t lo,
                                 kj::ArrayPtr<const kj::byte> data, bool sync);
  // Fills every Want of an ec chunk, rebuilding the ones whose shard fails. `rowsLocked`: the
  // caller already holds the RangeLock over every row involved.
  kj::Promise<Status> readEc(const ChunkDesc& chunk, std::vector<Want> wants, bool rowsLocked);
  kj::Promise<Status> rebuild(const ChunkDesc& chunk, std::vector<Want> failed,
                              std::vector<int> missing);
  kj::Promise<Status> readReplica(const ChunkDesc& chunk, uint64_t lo,
                                  kj::ArrayPtr<kj::byte> dest, int attempt);
  kj::Promise<Result<uint32_t>> writeEc(const ChunkDesc& chunk, uint64_t off,
                                        kj::ArrayPtr<const kj::byte> data, bool sync,
                                        std::shared_ptr<FreshChunk> fresh);
  kj::Promise<Result<uint32_t>> writeReplica(const ChunkDesc& chunk, uint64_t off,
                                             kj::ArrayPtr<const kj::byte> data, bool sync,
                                             std::shared_ptr<FreshChunk> fresh);
  // Joins per-shard writes (`shards[i]` is the shard of `all[i]`) into the mask of failed
  // shards, or the error that fails the whole write (see write()).
  kj::Promise<Result<uint32_t>> resyncFrom(const ChunkDesc& chunk, uint64_t lo, uint64_t end,
                                           uint32_t missed);
  kj::Promise<Result<uint32_t>> joinShardWrites(const ChunkDesc& chunk,
                                                kj::Array<kj::Promise<Status>> all,
                                                std::vector<int> shards);
  ErasureCode& code(const Layout& layout);

  ChunkServers& servers_;
  kj::Timer& timer_;
  uint64_t ioTimeoutMs_;
  RangeLock rows_;
  std::map<std::pair<int, int>, std::unique_ptr<ErasureCode>> codes_;
};

// Resolves to the first error among `all`, or ok.
kj::Promise<Status> joinStatus(kj::Array<kj::Promise<Status>> all);

}  // namespace tessera::client
