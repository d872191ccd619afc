// chunk/rebuilder.h — rebuilds one shard of a chunk on this server from the other shards, on
// the meta leader's order (ChunkService.rebuild, fs/proto/chunk.capnp).
//
// The shard is rebuilt in pieces of rows [off, off + n), n <= 1 MiB: for ec(k,m) the piece is
// read from k usable sources (ChunkService.read, every block checked against its CRC32C) and
// the missing shard decoded with ISA-L; a replica is copied from one source. A data shard is
// read from one more source when there is one, to check the decode: a row whose parity
// disagrees with its data holds a mix of two writes (a writer died between a large write's
// data and its parity, or in the middle of an apply of its write log), and the block decoded
// from it is bytes nobody wrote. Such blocks are marked lost (ShardFile::markLost: they read
// as kCorruption until written again), never stored as if they were data; the rows of a dead
// writer's unapplied log records are then decoded again by agreement (redecodeLoggedRows). A source that
// fails (unreachable, notFound, corruption, a CRC mismatch, a short reply) is dropped for the
// rest of the job and the piece is read again from the others; fewer than k usable sources
// ends the job with kUnavailable. A decoded piece that is all zeros is not written, so holes
// stay holes (an unwritten block reads back as zeros with a valid CRC).
//
// The target shard is written through the Disk: any shard of the chunk this server held
// before is deleted first (the meta leader picks a server that holds none of the chunk's live
// shards, so whatever is here is a leftover of an earlier attempt), the rebuilt blocks are
// written, and the shard is fdatasynced before the job succeeds. A crash mid-way leaves a
// partial shard that no chunk descriptor names: an orphan, deleted later.
//
// Throttled: at most `maxJobs` rebuilds at once (more are refused kBusy; the meta leader
// retries later), and the pieces of all jobs together at most `rateBytesPerSec` of rebuilt
// shard data (the reads are k times that for ec, k + 1 for a data shard).
//
// Not thread-safe: owned by the chunk server's main event loop. The Disk, peers and timer
// outlive it.
#pragma once
#include <kj/async.h>
#include <kj/timer.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "chunk/disk_set.h"
#include "fs/chunk_peers.h"
#include "fs/erasure.h"
#include "fs/row_agreement.h"

namespace tessera::chunk {

// --- pure steps, for tests ---

// The sources to read for one piece: for ec the first k usable shards, for replicas the first
// usable one. `usable[i]` says shard i may be read (never the target). kUnavailable if too few.
Result<std::vector<int>> pickSources(const Layout& layout, int target,
                                     const std::vector<bool>& usable);

// Decodes shard `target` over one range of rows into `out`. `inputs[i]` holds the same rows of
// shard i (out.size() bytes) for every i in `read` (as pickSources chose, plus for ec any more
// shards to check with), and is ignored for the others. `code` must be ErasureCode(k, m) for ec
// layouts; unused for replicas. With `torn`, an ec decode that read more than k shards puts
// there the block indexes of `out` whose rows' parity disagrees with their data
// (fs/row_agreement.h: rowsDisagreeingWithParity), whose decoded bytes are garbage, and, for a
// data shard, those that decode to the lost pattern (fs/lost_block.h); sorted.
Status decodePiece(const Layout& layout, int target, const std::vector<int>& read,
                   const std::vector<kj::ArrayPtr<const kj::byte>>& inputs,
                   kj::ArrayPtr<kj::byte> out, ErasureCode* code,
                   std::vector<uint64_t>* torn = nullptr);

// The largest shard a layout can have: 64 MiB / k for ec, 64 MiB for replicas.
uint64_t maxShardBytes(const Layout& layout);

class Rebuilder {
 public:
  struct Config {
    uint64_t rateBytesPerSec = 50ull << 20;
    unsigned maxJobs = 2;
    uint64_t pieceBytes = 1 << 20;
    uint64_t callTimeoutMs = 30'000;  // each read from a peer
  };
  struct Stats {
    uint64_t running = 0, done = 0, failed = 0, bytes = 0;
    uint64_t lostBlocks = 0;  // left marked lost by finished rebuilds (see settleLost)
  };

  Rebuilder(DiskSet& disk, ChunkPeers& peers, kj::Timer& timer, Config config);
  ChunkPeers& peers() { return peers_; }
  kj::Timer& timer() { return timer_; }
  uint64_t callTimeoutMs() const { return config_.callTimeoutMs; }

  // Rebuilds `key` of a chunk with `layout` over shard bytes [0, length), `sources` as in
  // ChunkService.rebuild. Resolves to the bytes rebuilt, or kInvalid (bad arguments), kBusy
  // (too many jobs, or this shard is being rebuilt already), kUnavailable (too few sources),
  // or the Disk's error.
  kj::Promise<Result<uint64_t>> rebuild(ShardKey key, Layout layout,
                                        std::vector<std::string> sources, uint64_t length);

  // After rebuild() of a data shard of an ec chunk whose write log holds a dead writer's
  // records: the shard's blocks in the rows those records touch were decoded plainly, from
  // rows the writer may have left half applied (its parity written, its data not: garbage).
  // Decodes each of `rows` again by agreement of the parity blocks (fs/row_agreement.h), read
  // from every other shard, and writes and syncs them. `rows`: each block row's shard offset
  // and its records' blocks, oldest first, none of the target's shard (whose blocks the log
  // covers). kUnavailable when a row cannot be decoded that way.
  struct LoggedRow {
    uint64_t offset;
    std::vector<RowRecord> records;
  };
  kj::Promise<Status> redecodeLoggedRows(ShardKey key, Layout layout,
                                         std::vector<std::string> sources,
                                         std::vector<LoggedRow> rows);

  // The rebuild of `key` (rebuild(), then redecodeLoggedRows()) is over: the blocks it marked
  // lost and did not decode again since are counted (stats, onLostBlocks) if it succeeded, and
  // forgotten either way. Returns how many.
  uint64_t settleLost(ShardKey key, bool succeeded);
  // Blocks of the shard being rebuilt whose content is in write-log records it takes: not
  // lost, whatever the stored block holds (readers get the records; the next writer applies
  // them over it).
  void coveredByLog(ShardKey key, const std::set<uint64_t>& offsets);
  // Told how many blocks a rebuild left marked lost (the chunk server's scrubber counts them).
  std::function<void(ShardKey key, uint64_t blocks)> onLostBlocks;

  const Stats& stats() const { return stats_; }

 private:
  struct Job;
  kj::Promise<Status> runPieces(Job& job, uint64_t offset);
  kj::Promise<Status> piece(Job& job, uint64_t offset, uint64_t n);
  // Marks blocks[next..] (block indexes from shard offset `offset`, ascending) lost.
  kj::Promise<Status> markLost(Job& job, uint64_t offset, const std::vector<uint64_t>& blocks,
                               size_t next);
  kj::Promise<Status> redecodeRow(Job& job, const std::vector<LoggedRow>& rows, size_t next);
  kj::Promise<Result<kj::Array<kj::byte>>> readFrom(Job& job, int shard, uint64_t offset,
                                                   uint64_t n);
  kj::Promise<void> throttle(uint64_t bytes);

  DiskSet& disk_;
  ChunkPeers& peers_;
  kj::Timer& timer_;
  Config config_;
  Stats stats_;
  std::set<std::pair<uint64_t, int>> active_;
  // Per shard being rebuilt: the shard offsets of the blocks marked lost, until settleLost().
  std::map<std::pair<uint64_t, int>, std::set<uint64_t>> lost_;
  kj::TimePoint next_;  // when the throttle lets the next piece go
};

}  // namespace tessera::chunk
