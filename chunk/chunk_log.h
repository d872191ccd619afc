// chunk/chunk_log.h — this chunk server's share of the per-chunk write logs of DESIGN.md rule 2.
//
// A small write to an ec(k,m) chunk is not written into its stripe at once: the lease holder
// appends it as a record {chunk, shard, epoch, seq, shard offset, whole 4 KiB blocks} to m + 1
// of the chunk's shard servers — always including the server of the data shard it belongs to —
// and acknowledges it once every one of them has it on disk. Later the holder applies records to
// the stripes (client/ec_log.h) and trims them here. Until then:
//   - a read of the data shard on this server returns the newest record's blocks in place of
//     the stored ones (overlay), unless it asks for the stored bytes (raw: what the stripe's
//     parity agrees with);
//   - `records` gives every record of a chunk (or of one shard and range) to a reader that
//     rebuilds a lost data shard, and to the next lease holder, which applies what a crashed
//     holder left.
// "Newest" is the highest (epoch, seq): epochs order lease holders, seq the records of one.
//
// On disk: segment files DIR/log.NNNNNNNN of records
//   magic u32 'TLG2', type u8 (1 append, 2 trim, 3 drop, 4 pad), shard u8, zero u16,
//   chunk u64, epoch u64, seq u64, offset u64, length u32 (data bytes), crc u32,
//   segment u64 (the NNNNNNNN of the file it was written to),
//   then length / 4096 block CRCs (u32) and the data; a pad has length 0 and `offset` zero
//   bytes (under 4096) instead
// (little-endian; crc = crc32c of the whole record with the crc field zero). Each group commit
// ends with a pad to the disk's sector size (512 or 4096), so the next starts on a sector, and
// is written with O_DIRECT where the file system takes it: a commit then writes its records'
// sectors only, never a page that an earlier commit wrote already. A segment ends at
// the first record that is not of it: zeros, or the records a reused segment held before
// (their segment number is older). Dead segments are kept as DIR/spare.NNNNNNNN (up to
// `spareSegments`) and renamed to the next segment when one starts: writing over blocks a file
// already has changes no metadata, so the group commit's fdatasync writes the data alone. A trim drops the
// chunk's records with (epoch, seq) <= its own; a drop removes all of them (the chunk was
// removed here, or its shard here was rebuilt: its records describe an older copy). Appends,
// trims and drops are durable (fdatasync, one per batch: group commit) before they resolve.
// Records live in memory too (bounded: append answers kBusy beyond `memoryLimit` bytes,
// `tessera-chunk --log-memory`; writers wait and ask again, client/data_path_log.cc), and
// are read back from the segments at start, in order; a record of a segment that fails its CRC
// ends that segment (a torn group commit, never acknowledged; appends go on in a new segment).
// Segments become spares or are deleted oldest first once nothing in them is live (trims follow
// their appends, so nothing trimmed can come back); when the oldest pins too many, its live
// records are appended again and it goes.
// Not thread-safe: owned by the chunk server's event loop; file I/O runs on a worker thread.
#pragma once
#include <kj/async.h>

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/group_commit.h"
#include "fs/result.h"
#include "fs/types.h"
#include "fs/worker.h"

namespace tessera::chunk {

class ChunkLog {
 public:
  struct Config {
    uint64_t memoryLimit = 256ull << 20;  // bytes of record data held
    uint64_t segmentBytes = 16ull << 20;
    size_t maxSegments = 4;    // past this, the oldest segment's live records are moved
    size_t spareSegments = 2;  // dead segments kept for reuse
  };
  struct Record {
    ChunkId chunk;
    uint8_t shard = 0;
    uint64_t epoch = 0, seq = 0;
    uint64_t offset = 0;            // in the shard, a multiple of 4 KiB
    kj::Array<kj::byte> data;       // whole blocks
    kj::Array<uint32_t> crcs;       // one per block, as the writer computed them
  };
  struct Stats {
    uint64_t records = 0, bytes = 0, segments = 0, appended = 0, trimmed = 0;
    uint64_t reused = 0;  // segments started on a spare
  };

  // Opens (creating) the log in directory `dir`, reading every record back. Blocks.
  static Result<kj::Own<ChunkLog>> open(std::string dir, Config config);
  static Result<kj::Own<ChunkLog>> open(std::string dir) { return open(kj::mv(dir), Config{}); }
  ~ChunkLog();

  // Durable when resolved. kInvalid for a malformed record (checked here: offset and length
  // within the shard, whole blocks, CRC list matching the data); kBusy beyond the memory limit.
  // The caller checks the epoch against the fence first.
  kj::Promise<Status> append(Record record);
  // Drops the chunk's records with (epoch, seq) <= (epoch, seq). Durable when resolved.
  kj::Promise<Status> trim(ChunkId chunk, uint64_t epoch, uint64_t seq);
  // Drops every record of the chunk. Durable when resolved.
  kj::Promise<Status> drop(ChunkId chunk);

  // Copies the newest record blocks of (chunk, shard) over `out` (the shard's bytes at
  // `offset`) and their CRCs over `crcs` (one per block of `out`).
  void overlay(ChunkId chunk, uint8_t shard, uint64_t offset, kj::ArrayPtr<kj::byte> out,
               kj::ArrayPtr<uint32_t> crcs) const;
  // The chunk's records in (epoch, seq) order: of one shard (shard < 0: all) overlapping shard
  // range [lo, hi).
  std::vector<const Record*> records(ChunkId chunk, int shard, uint64_t lo, uint64_t hi) const;
  size_t count(ChunkId chunk) const;
  Stats stats() const;

  struct Entry {
    Record record;
    uint64_t segment = 0;  // where its append is
  };
  using ChunkRecords = std::map<std::pair<uint64_t, uint64_t>, Entry>;  // (epoch, seq)
  // Needed by kj::heap; use open().
  ChunkLog(std::string dir, Config config, int fd, uint64_t segment, uint64_t segmentSize,
           std::unordered_map<uint64_t, ChunkRecords> chunks, std::map<uint64_t, uint64_t> live);

 private:
  kj::Promise<Status> flush();
  // Ends every pending batch with a pad record to a multiple of align_ (loop thread).
  void padBatches();
  // Switches the current segment to O_DIRECT where the file system takes it (at open).
  void useDirectIo();
  // Writes `bytes` at fileAt_ of the current segment (worker thread).
  Status writeAt(const std::string& bytes);
  void add(Entry entry);
  void forget(ChunkRecords::iterator it, ChunkRecords& records);
  // Encodes a record into the pending batch, starting a new segment first if it would not fit.
  void queue(uint8_t type, ChunkId chunk, uint8_t shard, uint64_t epoch, uint64_t seq,
             uint64_t offset, kj::ArrayPtr<const uint32_t> crcs, kj::ArrayPtr<const kj::byte> data);
  // Deletes/compacts old segments (after a flush).
  void collect();
  std::string segmentPath(uint64_t n) const;

  std::string dir_;
  Config config_;
  int fd_;                   // the current segment
  uint64_t segment_;         // its number
  uint64_t segmentSize_;     // bytes in it, written or queued
  std::unordered_map<uint64_t, ChunkRecords> chunks_;
  std::map<uint64_t, uint64_t> live_;  // segment -> live appends in it (every segment on disk)
  uint64_t bytes_ = 0;
  Stats counters_;
  struct Batch {
    std::string bytes;
    std::optional<uint64_t> rollTo;  // start segment N before writing the rest
    std::optional<std::string> reuse;  // ... by renaming this spare to it
  };
  std::deque<std::string> spares_;  // dead segments to reuse, oldest first
  uint64_t fileAt_ = 0;             // the worker's write position in the current segment
  size_t align_ = 512;              // batches end on a multiple of it (loop thread)
  bool direct_ = false;             // segments are written with O_DIRECT (worker thread)
  std::vector<Batch> pending_;
  std::optional<Error> broken_;
  GroupCommit commits_;
  WorkerThread worker_;
};

}  // namespace tessera::chunk
