// chunk/chunk_service.h — the chunk server's data RPC (proto::ChunkService, fs/proto/chunk.capnp)
// over the server's disks (chunk/disk_set.h). Every request is validated before it reaches the
// disk: a chunk id of 0, a shard index outside its layout (or beyond kMaxShards), an unaligned
// or out-of-range offset or length (a reservation past what a shard of its layout holds), a
// read longer than kMaxReadBytes, more than kMaxVectorParts ranges or pieces in a readV or
// writeV, or a CRC list that does not match the data is answered with kInvalid (a writeV
// stores none of its pieces unless every one is well formed and matches its CRCs); every reply
// carries `error`. Bytes of a block that fails its CRC are never sent. Writes, truncates,
// punches, reservations and creates carry the writer's lease epoch and are refused (kStale)
// when `logs` knows a newer one for the chunk (chunk/epochs.h); fence raises it.
// Reads see the chunk log's unapplied records (chunk/chunk_log.h, one log per disk:
// chunk/disk_logs.h) unless they ask for raw bytes;
// removing a chunk drops the chunk's records, and a shard rebuilt here takes the records the
// rebuild's sources hold of its chunk in place of its own.
// Not thread-safe: owned by the chunk server's main event loop.
#pragma once
#include <chrono>

#include "chunk/disk_logs.h"
#include "chunk/disk_set.h"
#include "chunk/rebuilder.h"
#include "fs/proto/chunk.capnp.h"

namespace tessera::chunk {

constexpr uint64_t kMaxReadBytes = 4 * 1024 * 1024;
// Bounds on the lists of one request.
constexpr size_t kMaxSyncShards = 4096;
constexpr size_t kMaxRemoveChunks = 65536;
constexpr size_t kMaxVectorParts = 4096;  // ranges of a readV, pieces of a writeV

class ChunkServiceImpl final : public proto::ChunkService::Server {
 public:
  // `disks`, `logs` and `rebuilder` must outlive the service. With a Rebuilder rebuild
  // orders are carried out; without one they are answered notSupported.
  ChunkServiceImpl(DiskSet& disks, DiskLogs& logs, Rebuilder* rebuilder = nullptr);

 protected:
  kj::Promise<void> write(WriteContext context) override;
  kj::Promise<void> read(ReadContext context) override;
  kj::Promise<void> sync(SyncContext context) override;
  kj::Promise<void> truncate(TruncateContext context) override;
  kj::Promise<void> create(CreateContext context) override;
  kj::Promise<void> remove(RemoveContext context) override;
  kj::Promise<void> fence(FenceContext context) override;
  kj::Promise<void> rebuild(RebuildContext context) override;
  kj::Promise<void> logAppend(LogAppendContext context) override;
  kj::Promise<void> logTrim(LogTrimContext context) override;
  kj::Promise<void> logFetch(LogFetchContext context) override;
  kj::Promise<void> readV(ReadVContext context) override;
  kj::Promise<void> writeV(WriteVContext context) override;
  kj::Promise<void> punch(PunchContext context) override;
  kj::Promise<void> copy(CopyContext context) override;
  kj::Promise<void> reserve(ReserveContext context) override;

 private:
  // After shard `key` was rebuilt here: replaces this server's records of its chunk with every
  // record the servers at `sources` ("" skipped) hold of it, once the rebuilt shard's blocks
  // in the rows those records touch are decoded again by agreement of the parity
  // (Rebuilder::redecodeLoggedRows).
  kj::Promise<Status> takeLogRecords(ShardKey key, Layout layout,
                                     std::vector<std::string> sources);
  // What a read `s` of `out` at `offset` of shard `key` answers once the log's unapplied
  // records of those blocks lie over it. A read that met a lost block (kLost) is read again
  // with lost blocks as stored: it succeeds if records cover every one of them, and answers
  // kLost naming the first they do not.
  kj::Promise<Status> overlayLog(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                                 kj::ArrayPtr<uint32_t> crcs, Status s);
  Status overlayRead(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                     kj::ArrayPtr<uint32_t> crcs, Status s);
  DiskSet& disk_;
  DiskLogs& logs_;
  Rebuilder* rebuilder_ = nullptr;
  std::chrono::steady_clock::time_point lastLogFullWarning_{};
};

// Largest data of one logFetch reply.
constexpr uint32_t kMaxLogFetchBytes = 8 << 20;

}  // namespace tessera::chunk
