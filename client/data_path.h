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
// interleaves two read-modify-writes of one row.
// Small ec writes go to the chunk's write log instead (DESIGN.md rule 2; the argument is at the
// top of client/data_path_log.cc): durable on m + 1 shard servers when acknowledged, applied to
// the stripes in the background, visible to every reader meanwhile.
// replica(n): reads go to one replica and fall back to the others; writes go to all.
//
// Writes carry the chunk's lease epoch (ChunkDesc::epoch); a chunk server that knows a newer
// one refuses them (kStale: the lease moved to another writer). Shards marked stale in the
// descriptor are neither read nor written. A write that fails on some shards but reaches
// enough of them (at most m lost for ec(k,m), at least one replica) succeeds degraded and names
// the shards it missed, which the caller must have marked stale before it acknowledges.
// Not thread-safe: lives on the client's event loop.
#pragma once
#include <deque>
#include <functional>
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

struct DataPathLogConfig {
  bool enabled = true;
  uint64_t applyDelayMs = 200;      // a chunk's records wait this long for more before applying
  uint64_t applyBytes = 1 << 20;    // ... unless this much is waiting
  uint64_t memoryLimit = 64 << 20;  // logged, unapplied bytes; further small writes wait
  // Background applies (of different chunks) at once; more wait. Each holds its batch's rows
  // locked and writes and syncs on up to k + m disks. fio 4 KiB random writes at iodepth 16 on
  // ec(4,2) (tools/bench_ec_log --size 512M --runtime 30, 2026-11-27): unlimited, 2,404 IOPS
  // and a p99 of 21.4 ms; at most 2, 2,315-2,530 and 13.2-13.6 ms; at most 1, 2,213 and 13.7.
  unsigned maxApplies = 2;
  bool faultExitAfterParity = false;  // testing only: _exit(9) once an apply wrote its parity
  bool faultExitAfterData = false;  // testing only: _exit(9) once a large write wrote its data
};

class DataPath {
 public:
  using LogConfig = DataPathLogConfig;
  struct LogStats {
    uint64_t appended = 0, appliedRecords = 0, loggedBytes = 0, recovered = 0, applyErrors = 0;
    uint64_t pendingBytes = 0;
  };
  // Told which shards of a chunk a background apply could not write: must mark them stale
  // (the chunk's lease is ours) and answer the descriptor after that.
  using MissedFn =
      std::function<kj::Promise<Result<ChunkDesc>>(InodeId inode, const ChunkDesc&, uint32_t)>;

  // `servers` and `timer` must outlive this. Each shard RPC fails after `ioTimeoutMs`.
  DataPath(ChunkServers& servers, kj::Timer& timer, uint64_t ioTimeoutMs,
           LogConfig logConfig = LogConfig{});
  ~DataPath();
  void onMissed(MissedFn fn) { missed_ = kj::mv(fn); }

  // Chunk bytes [off, off + out.size()) into `out`, which must stay alive until resolved.
  // kUnavailable when more than m shards of a row (every replica) cannot be read.
  kj::Promise<Status> read(const ChunkDesc& chunk, uint64_t off, kj::ArrayPtr<kj::byte> out);

  // `data` (alive until resolved) at chunk offset `off`, on every shard. With `sync` every
  // shard written is on disk when this resolves. `fresh` (may be null) is what this client
  // knows of a chunk it placed; it is updated when the write succeeds. The value is the mask of
  // shards the write could not reach (0 when it reached all); kStale if a server fenced the
  // lease's epoch; kUnavailable if too many shards failed.
  // A write to an ec chunk smaller than a stripe goes to the chunk's write log when `inode` is
  // set (and the log is enabled): it is durable whatever `sync` says.
  kj::Promise<Result<uint32_t>> write(const ChunkDesc& chunk, uint64_t off,
                                      kj::ArrayPtr<const kj::byte> data, bool sync,
                                      std::shared_ptr<FreshChunk> fresh = nullptr,
                                      InodeId inode = InodeId());
  // Whether write() sends a write of `size` bytes to the chunk's write log.
  bool logs(const ChunkDesc& chunk, uint64_t size, InodeId inode, const FreshChunk* fresh) const;

  // Applies and trims every record this client logged for the chunk; resolves when none is
  // left, or with the error that stopped an apply (the records then stay on the servers).
  kj::Promise<Status> drainLog(ChunkId chunk);
  // Applies, in order, the records an earlier lease holder left in the chunk's logs (fence
  // counted some), then trims every record older than chunk.epoch. The mask of shards it could
  // not write or trim. The blocks of a stale data shard in the rows the records touch, which
  // that holder may have left half applied, are decoded by agreement (fs/row_agreement.h)
  // before any row is written; kUnavailable if that cannot be done.
  kj::Promise<Result<uint32_t>> recoverLog(const ChunkDesc& chunk);
  // Forgets what this client logged for the chunk (its lease moved on: the next holder applies
  // the records).
  void forgetLog(ChunkId chunk);
  LogStats logStats() const;

  // Cuts the chunk to `len` bytes (0 < len < kChunkSize): zeroes the rest of the stripe that
  // holds byte len - 1 and truncates every shard after it.
  // The mask of shards it could not reach, as write().
  kj::Promise<Result<uint32_t>> truncate(const ChunkDesc& chunk, uint64_t len);

  // Zeroes chunk bytes [off, off + len) (fallocate PUNCH_HOLE; client/data_path_punch.cc):
  // the whole stripes of the range are freed on every shard (the chunk servers punch their
  // shard files, storing the CRCs of zero blocks; the parity of zeros is zero), the bytes
  // around them are written as zeros like any write (`fresh`, `inode` as for write()). This
  // client's write log of the chunk is drained first, so no record older than the punch is
  // applied over it afterwards. Under the chunk's lease. The mask of shards it missed, as
  // write(); kStale if the lease moved on.
  kj::Promise<Result<uint32_t>> punch(const ChunkDesc& chunk, uint64_t off, uint64_t len,
                                      std::shared_ptr<FreshChunk> fresh, InodeId inode);
  // Creates every shard of a chunk this client placed (empty: it reads as zeros), so that a
  // chunk reserved without a write is readable. Not synced. The mask of shards it missed.
  kj::Promise<Result<uint32_t>> createShards(const ChunkDesc& chunk);

  // Reserves disk space for chunk bytes [off, off + len) (fallocate mode 0; see
  // client/data_path_reserve.cc) on every shard that is not stale: on each the shard range
  // writes inside [off, off + len) can touch (shardExtents), so that they cannot fail for lack
  // of space. With `create` (a chunk this client placed and never wrote) the shards are created
  // first, empty, as createShards does. Under the chunk's lease (its epoch fences the calls).
  // kNoSpace if a server has no room for its part (or, with `create`, for the shard), once
  // every call returned; kStale if the lease moved on; with `create`, kUnavailable if more
  // shards than the chunk can lose could not be created.
  struct Reserved {
    uint32_t missed = 0;      // with `create`: shards not created (to be marked stale)
    uint32_t unreserved = 0;  // shards whose server could not be asked, or cannot reserve
  };
  kj::Promise<Result<Reserved>> reserve(const ChunkDesc& chunk, uint64_t off, uint64_t len,
                                        bool create);

  // Makes rows [0, len) of the chunk consistent after an unclean lease handover (see
  // ChunkDesc::resync): ec parity re-encoded from the data shards, replicas copied from the
  // first readable one; durable when resolved. The mask of shards it could not write.
  kj::Promise<Result<uint32_t>> resync(const ChunkDesc& chunk, uint64_t len);

  // Makes the chunk's servers refuse writes with an epoch older than chunk.epoch. The mask of
  // shards whose server could not be reached (kStale if one knows a newer epoch already).
  // `logRecords` (may be null; alive until resolved): the most records of the chunk's log any
  // server reported.
  kj::Promise<Result<uint32_t>> fence(const ChunkDesc& chunk, uint32_t* logRecords = nullptr);

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

  // `raw`: the stored bytes, without the server's unapplied log records. `lostAsStored` (with
  // `raw`): a block marked lost reads as its pattern (fs/lost_block.h), not kLost.
  kj::Promise<Status> readShard(const ChunkDesc& chunk, int shard, uint64_t lo,
                                kj::ArrayPtr<kj::byte> dest, bool raw = false,
                                bool lostAsStored = false);
  // `create`: this is the first write of a chunk this client placed (FreshChunk), which
  // creates the shard; any other write expects to find it (ShardIntent in chunk.capnp).
  kj::Promise<Status> writeShard(const ChunkDesc& chunk, int shard, uint64_t lo,
                                 kj::ArrayPtr<const kj::byte> data, bool sync, bool create);
  kj::Promise<Status> punchShard(const ChunkDesc& chunk, int shard, Extent rows);
  kj::Promise<Status> reserveShard(const ChunkDesc& chunk, int shard, Extent range);
  // Fills every Want of an ec chunk, rebuilding the ones whose shard fails. `rowsLocked`: the
  // caller already holds the RangeLock over every row involved.
  // `raw`: the stored stripes (what a read-modify-write must encode over: a block marked lost
  // is read as the pattern it holds), else what a reader sees (unapplied log records over
  // them; a block its shard's server answers kLost for fails the read with kLost, without a
  // decode, and a data block that decodes to the lost pattern with kUnavailable).
  // A rebuild that decodes a lost data block checks the rows it decoded against a parity
  // shard to spare (fs/row_agreement.h): a row whose parity disagrees holds a mix of two writes
  // and its decoded block is garbage. Such rows fail the read with kBusy (kUnavailable once
  // the caller stops trying again) — unless `torn` is given: then their shard offsets are
  // added to it and the read succeeds, with garbage in those rows (the re-sync's way).
  kj::Promise<Status> readEc(const ChunkDesc& chunk, std::vector<Want> wants, bool rowsLocked,
                             bool raw = false, std::vector<uint64_t>* torn = nullptr);
  kj::Promise<Status> rebuild(const ChunkDesc& chunk, std::vector<Want> failed,
                              std::vector<int> missing, bool raw,
                              std::vector<uint64_t>* torn = nullptr);
  // rebuild() under the RangeLock of rows [lo, hi), tried again while it answers kBusy.
  kj::Promise<Status> rebuildLocked(const ChunkDesc& chunk, std::vector<Want> failed,
                                    std::vector<int> missing, bool raw, uint64_t lo, uint64_t hi,
                                    int attempt);
  static Status notBusy(Status s);  // kBusy (parity blocks that do not agree) as kUnavailable
  kj::Promise<Status> readReplica(const ChunkDesc& chunk, uint64_t lo,
                                  kj::ArrayPtr<kj::byte> dest, int attempt);
  // The read-modify-write of whole rows (no log). `parityFirst` (an apply of log records):
  // the parity shards are written, and synced, before the data shards.
  kj::Promise<Result<uint32_t>> writeEc(const ChunkDesc& chunk, uint64_t off,
                                        kj::ArrayPtr<const kj::byte> data, bool sync,
                                        std::shared_ptr<FreshChunk> fresh,
                                        bool parityFirst = false);

  // --- the write log (client/data_path_log.cc) ---
  struct LogRecord {
    uint64_t epoch = 0, seq = 0;
    int shard = 0;
    uint64_t offset = 0;  // shard offset, block-aligned
    kj::Array<kj::byte> data;
    uint32_t holders = 0;  // shards whose servers have it
  };
  struct LogChunk;
  // The epoch of the lease under which this client logs writes of `chunk`; 0 if it does not.
  uint64_t loggingEpoch(ChunkId chunk) const;
  // Rows [lo, lo + rows[0].size()) of every shard (`missing` ones rebuilt by a plain decode):
  // in each block row that log records `recs` of an epoch other than `ourEpoch` (this client's
  // lease, 0 if none) touch, the one lost data block no record covers decoded again by
  // agreement of the parity blocks (fs/row_agreement.h). kBusy when that cannot be done now
  // (the parity blocks do not agree yet, or too few are readable): an apply may be under way,
  // or records waiting to be applied and trimmed.
  Status decodeByAgreement(const Layout& l, const std::vector<int>& missing, uint64_t lo,
                           std::vector<kj::Array<kj::byte>>& rows,
                           const std::map<std::pair<uint64_t, uint64_t>, LogRecord>& recs,
                           uint64_t ourEpoch);
  // `fresh` (may be null) learns the blocks the records cover, before they are appended: a
  // later direct write must read them, not take them for never-written zeros.
  kj::Promise<Result<uint32_t>> writeLogged(const ChunkDesc& chunk, uint64_t off,
                                            kj::ArrayPtr<const kj::byte> data, InodeId inode,
                                            std::shared_ptr<FreshChunk> fresh);
  kj::Promise<Result<uint32_t>> appendRecord(const ChunkDesc& chunk, LogRecord& rec);
  kj::Promise<Status> appendTo(const ChunkDesc& chunk, int target, const LogRecord& rec);
  void scheduleApply(uint64_t chunk);
  kj::Promise<Status> applyNow(uint64_t chunk);
  // Applies `records` (in order) to the stripes: durable when resolved; the mask of missed
  // shards.
  // (client/data_path_apply.cc)
  kj::Promise<Result<uint32_t>> applyRecords(const ChunkDesc& chunk,
                                             std::vector<const LogRecord*> records);
  // For each block row `records` touch and each stale data shard: its block, as a record (the
  // newest record of that shard there, else decoded by agreement from the stored row).
  kj::Promise<Result<std::vector<LogRecord>>> lostBlocksOfRecords(
      const ChunkDesc& chunk, std::vector<const LogRecord*> records);
  // Sorts a live writer's records by row (shard offset) unless two records of one shard overlap
  // (those must land in the order given, newer over older): the applier cuts its batches in
  // this order, so a batch covers a narrow band of rows and each shard's synced write of it
  // dirties few pages of the shard's CRC table, each of which its fdatasync writes whole. Not
  // for a dead writer's records, where the blocks of lost data shards come first and must.
  static void inRowOrder(std::vector<const LogRecord*>& records);
  // One batch (at most 128 KiB of records): vectored reads and synced writes.
  kj::Promise<Result<uint32_t>> applyBatch(const ChunkDesc& chunk,
                                           std::vector<const LogRecord*> records);
  // One read-modify-write per record, then a sync: reads that fail are rebuilt.
  kj::Promise<Result<uint32_t>> applyEach(const ChunkDesc& chunk,
                                          std::vector<const LogRecord*> records);
  // Several block-aligned ranges of one shard, stored (raw) bytes, in one round trip;
  // `lostAsStored`: a block marked lost reads as its pattern (fs/lost_block.h), not kLost.
  kj::Promise<Status> readShardV(const ChunkDesc& chunk, int shard, std::vector<Want> wants,
                                 bool lostAsStored = false);
  // Several (shard offset, blocks) pieces of one shard in one round trip, synced.
  kj::Promise<Status> writeShardV(const ChunkDesc& chunk, int shard,
                                  std::vector<std::pair<uint64_t, kj::ArrayPtr<const kj::byte>>> parts);
  kj::Promise<Result<uint32_t>> trimLog(const ChunkDesc& chunk, uint32_t holders, uint64_t epoch,
                                        uint64_t seq);
  // Every record of `shard` (-1: all) in [lo, hi) that the servers of `from` (a shard mask)
  // hold, merged by (epoch, seq).
  kj::Promise<Result<std::map<std::pair<uint64_t, uint64_t>, LogRecord>>> fetchLog(
      const ChunkDesc& chunk, uint32_t from, int shard, uint64_t lo, uint64_t hi);
  kj::Promise<void> waitForLogRoom();
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

  LogConfig logConfig_;
  MissedFn missed_;
  std::map<uint64_t, std::shared_ptr<LogChunk>> logs_;  // by chunk id (an apply keeps its own)
  uint64_t logBytes_ = 0;
  LogStats logStats_;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> logRoomWaiters_;
  // Background applies running, and those waiting for one to finish (maxApplies).
  unsigned appliesRunning_ = 0;
  std::deque<kj::Own<kj::PromiseFulfiller<void>>> applyWaiters_;
  kj::Promise<void> applySlot();
  void releaseApplySlot();
  struct TaskErrors : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } taskErrors_;
  kj::TaskSet logTasks_{taskErrors_};  // scheduled applies; last, destroyed first
};

// Resolves to the first error among `all`, or ok.
kj::Promise<Status> joinStatus(kj::Array<kj::Promise<Status>> all);

}  // namespace tessera::client
