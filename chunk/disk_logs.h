// chunk/disk_logs.h — a chunk server's write logs (chunk/chunk_log.h) and lease epochs
// (chunk/epochs.h): one log and one epoch table per disk, in DIR/log and DIR/epochs of every
// data directory that opened. A chunk's records and fence live on its disk, so a disk that dies
// takes only its own chunks' with it — chunks whose shards it held, lost here all the same —
// and a server whose first disk is dead starts and serves the others.
//
// Home. New records and epochs of a chunk go to its home disk: the disk whose log holds records
// of the chunk already (a chunk keeps to one log until they are all trimmed, so "newest record"
// is decided within one log), else DiskSet::homeOf — the disk of its shard here, or the one its
// shard will be placed on. A chunk's epoch is the highest any table holds: up to 2026-11-27 the
// first disk kept the one log and table of every chunk, and those are read as the first disk's
// own. Reads of records (overlay, records, count) see every log.
// A chunk whose home disk failed has lost its shard here (DiskSet): appends, trims and raises of
// it fail in that disk's log or table; what its log held stays readable from memory until the
// server restarts. When no disk takes new shards, a fence for a chunk with no shard here goes
// to the first table still open: an epoch anywhere counts.
// Not thread-safe: owned by the chunk server's event loop; each log and table has its own
// worker thread.
#pragma once
#include <kj/async.h>

#include <vector>

#include "chunk/chunk_log.h"
#include "chunk/disk_set.h"
#include "chunk/epochs.h"

namespace tessera::chunk {

class DiskLogs {
 public:
  // Opens (creating) the log and the epoch table of every disk of `disks` that is not failed.
  // Blocks; call before serving. The Error of the first that fails to open. `disks` must outlive
  // the result.
  static Result<kj::Own<DiskLogs>> open(DiskSet& disks, ChunkLog::Config config);
  static Result<kj::Own<DiskLogs>> open(DiskSet& disks) { return open(disks, ChunkLog::Config{}); }

  // Epochs, as EpochTable's, over every table.
  uint64_t epoch(ChunkId chunk) const;
  kj::Promise<Status> admit(ChunkId chunk, uint64_t epoch);
  kj::Promise<Status> raise(ChunkId chunk, uint64_t epoch);

  // Records, as ChunkLog's: appended to the chunk's home; trimmed and dropped wherever held.
  kj::Promise<Status> append(ChunkLog::Record record);
  kj::Promise<Status> trim(ChunkId chunk, uint64_t epoch, uint64_t seq);
  kj::Promise<Status> drop(ChunkId chunk);
  void overlay(ChunkId chunk, uint8_t shard, uint64_t offset, kj::ArrayPtr<kj::byte> out,
               kj::ArrayPtr<uint32_t> crcs) const;
  std::vector<const ChunkLog::Record*> records(ChunkId chunk, int shard, uint64_t lo,
                                               uint64_t hi) const;
  size_t count(ChunkId chunk) const;
  // Summed over the logs.
  ChunkLog::Stats stats() const;

  struct PerDisk {
    size_t disk = 0;  // index in the DiskSet
    kj::Own<ChunkLog> log;
    kj::Own<EpochTable> epochs;
  };
  DiskLogs(DiskSet& disks, std::vector<PerDisk> perDisk);  // use open()

 private:
  // The entry of the log that holds records of the chunk, if one does.
  PerDisk* holding(ChunkId chunk);
  const PerDisk* holding(ChunkId chunk) const;
  // The entry of the chunk's home disk: kIo if that disk has no log (it failed at start).
  Result<PerDisk*> home(ChunkId chunk);

  DiskSet& disks_;
  std::vector<PerDisk> perDisk_;  // in disk order
};

}  // namespace tessera::chunk
