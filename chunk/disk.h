// chunk/disk.h — one data directory of a chunk server and the thread that does its I/O.
//
//   DIR/lock               flock'ed while a server uses DIR (two servers on one DIR refuse)
//   DIR/server.id          the server's id and cluster id (chunk/meta_link.h)
//   DIR/shards/XX/NAME     shard files (chunk/shard_file.h); XX = last two hex digits of the
//                          chunk id, NAME = ShardKey::toString()
//
// Every blocking file operation runs on the Disk's own worker thread, which runs a
// kj::EventLoop of its own; the methods below are called from the owning (main) event loop and
// return promises that resolve there, so that loop never blocks on the disk. Operations run one
// at a time, in the order they were called.
//
// Buffers passed by reference (write's data, read's out) must stay valid until the promise
// resolves or is destroyed; destroying a promise whose operation is running waits for it.
//
// Syncs are grouped (DESIGN.md: not one fsync per 4 KiB). A synced write and sync() queue their
// shards for the next sync batch and resolve when it ends: a batch starts as soon as none runs,
// takes every shard queued by then and fdatasyncs each once, so what is queued while a batch
// runs shares the next. Each caller gets the outcome of its own shards. A write's bytes reach
// the file in call order as before; its sync may come after operations called later.
//
// Health. A Disk is kOk, kFull or kFailed (state()); the worker sets it:
//   - kFailed when an operation returns kIo (EIO and every errno but ENOSPC/EDQUOT), or when
//     the probe of stats() finds DIR/shards gone or replaced, or cannot write and fdatasync
//     DIR/lock. Final for the life of the Disk: every later operation answers kIo "disk DIR
//     failed: ..." without touching the disk.
//   - kFull when an operation returns kNoSpace, or the probe finds less free space than the
//     reserve (Config::reserveBytes + reserveFraction of the capacity) or no free inodes. A
//     probe that finds at least twice the reserve (and 1 MiB) free again makes it kOk.
// The disk set (chunk/disk_set.h) places no new shards on a disk that is not kOk.
//
// Not thread-safe: owned by the main event loop; its worker-side state is touched only on the
// worker thread (state_ and reason_ are read from the main loop).
#pragma once
#include <kj/async.h>
#include <kj/mutex.h>
#include <kj/thread.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <optional>
#include <string>
#include <vector>

#include "chunk/shard_file.h"
#include "fs/group_commit.h"
#include "fs/result.h"
#include "fs/types.h"

namespace tessera::chunk {

enum class DiskState : uint8_t { kOk, kFull, kFailed };
const char* stateName(DiskState state);

// The name of a shard file (ShardKey::toString()), or nullopt for any other name.
std::optional<ShardKey> parseShardName(const std::string& name);

class Disk {
 public:
  struct Config {
    std::string dir;
    uint64_t capacityCap = 0;  // 0: report what the file system holds
    size_t maxOpenFiles = 256;
    uint64_t reserveBytes = 0;    // free space below which the disk is kFull...
    double reserveFraction = 0;   // ...plus this share of the capacity (0.01: 1%)
  };
  struct Stats {
    uint64_t capacityBytes = 0;  // file system size, capped by capacityCap
    uint64_t usedBytes = 0;      // disk space taken by shard files
    uint64_t freeBytes = 0;      // what may still be written (also under the cap)
    uint64_t shards = 0;
    // Identifies the file system the data directory is on (statvfs f_fsid), so the meta server
    // counts a disk shared by several servers once; 0 with a --capacity cap.
    uint64_t fsid = 0;
    DiskState state = DiskState::kOk;  // after this probe
  };

  // Creates DIR (its parent must exist) and DIR/shards, checks DIR is a writable directory no
  // other server uses, deletes leftover temporary files, adds up the shard files, and starts
  // the worker thread. Blocks; call before serving. The Error says what is wrong with DIR.
  static Result<kj::Own<Disk>> open(Config config);
  ~Disk() noexcept(false);
  KJ_DISALLOW_COPY(Disk);

  // Writes whole blocks checked against `crcs` (chunk/shard_file.h), creating the shard if it
  // does not exist; with `sync`, fdatasync before resolving. kInvalid for a bad range or a
  // layout other than the one the shard was created with; kCorruption if a block does not
  // match its CRC (then nothing is stored); kNoSpace, kIo.
  kj::Promise<Status> write(ShardKey key, Layout layout, uint64_t offset,
                            kj::ArrayPtr<const kj::byte> data, kj::Array<uint32_t> crcs, bool sync);
  // Reads out.size() bytes and their CRCs (ShardFile::read). kNotFound if the shard does not
  // exist; kCorruption naming the first bad block (`lostAsStored`: as ShardFile::read's).
  kj::Promise<Status> read(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                           kj::ArrayPtr<uint32_t> crcs, bool lostAsStored = false);
  // fdatasync of each shard, in the next sync batch; kNotFound if one does not exist (the others
  // are still synced).
  kj::Promise<Status> sync(kj::Array<ShardKey> keys);
  // fdatasyncs of shard files done so far (each shard of a sync batch counts once).
  uint64_t fileSyncs() const { return fileSyncs_.load(); }
  // kNotFound if the shard does not exist.
  kj::Promise<Status> truncate(ShardKey key, uint64_t length);
  // Frees a range of the shard (ShardFile::punch), then fdatasync. kNotFound if the shard does
  // not exist.
  kj::Promise<Status> punch(ShardKey key, uint64_t offset, uint64_t length);
  // Marks a range of the shard lost (ShardFile::markLost). Not synced. kNotFound if the shard
  // does not exist.
  kj::Promise<Status> markLost(ShardKey key, uint64_t offset, uint64_t length);
  // Reserves disk space for a range of the shard (ShardFile::reserve), then fdatasync; the
  // disk bytes it took. kNotFound if the shard does not exist; kNoSpace (the disk becomes kFull,
  // as after a write that found no room) when the range does not fit.
  kj::Promise<Result<uint64_t>> reserve(ShardKey key, uint64_t offset, uint64_t length);
  // Creates an empty shard; fine if it exists with the same layout (kInvalid if with another).
  kj::Promise<Status> create(ShardKey key, Layout layout);
  // Deletes every shard of the chunks; absent ones are fine.
  kj::Promise<Status> remove(kj::Array<ChunkId> chunks);
  // The figures, after probing the disk's health (see above). Never touches a failed disk.
  kj::Promise<Stats> stats();
  // Every shard file in DIR/shards, by name (chunk/inventory.h listShardFiles); kIo if a
  // bucket cannot be read.
  kj::Promise<Result<std::vector<ShardKey>>> list();

  DiskState state() const { return state_.load(); }
  // Disk space taken by shard files now (Stats::usedBytes without a probe).
  uint64_t usedBytes() const { return usedBytes_.load(); }
  // Why the disk is failed or full ("" when kOk).
  std::string reason() const { return *reason_.lockShared(); }
  // The shards found by open(), once (the disk set indexes them); empty afterwards.
  std::vector<ShardKey> takeShards() { return std::move(found_); }

  // A small file directly in DIR (server.id): kNotFound if absent.
  kj::Promise<Result<std::string>> readFile(std::string name);
  // Replaces a small file in DIR atomically (fs/rpc.h writeFileAtomic).
  kj::Promise<Status> writeFile(std::string name, std::string text);

  const std::string& dir() const { return config_.dir; }
  std::string shardPath(ShardKey key) const;

  // Runs `func` (blocking file work) on the worker thread, in order with the operations above;
  // the promise resolves on the calling loop to what it returns. For the scrubber
  // (chunk/scrubber.h), which reads shard files there itself.
  template <typename Func>
  auto onWorkerThread(Func&& func) {
    return onWorker(kj::fwd<Func>(func));
  }

  // Needed by kj::heap; use open().
  Disk(Config config, int lockFd, uint64_t usedBytes, uint64_t shards,
       std::vector<ShardKey> found);

 private:
  class Store;

  template <typename Func>
  auto onWorker(Func&& func) {
    return executor_->executeAsync(kj::fwd<Func>(func));
  }
  void runWorker();
  // Queues `keys` for the next sync batch (a group commit, fs/group_commit.h; main loop).
  kj::Promise<Status> syncGrouped(std::vector<ShardKey> keys);
  // On the worker: the error of an operation on a failed disk, or nullopt.
  std::optional<Error> refuse() const;
  // On the worker: takes note of an operation's outcome (kIo fails the disk, kNoSpace fills it).
  Status note(Status s);
  void fail(const std::string& why);
  void setFull(const std::string& why);
  // On the worker: DIR/shards is still there and DIR/lock takes a synced write; else fails.
  void probe();

  Config config_;
  kj::AutoCloseFd lockFd_;
  std::atomic<uint64_t> usedBytes_;
  std::atomic<uint64_t> shards_;
  std::atomic<DiskState> state_{DiskState::kOk};
  kj::MutexGuarded<std::string> reason_;
  std::vector<ShardKey> found_;
  uint64_t shardsDev_ = 0, shardsIno_ = 0;  // DIR/shards at open
  std::chrono::steady_clock::time_point lastSyncedProbe_{};  // worker thread only
  std::atomic<uint64_t> fileSyncs_{0};

  // Main loop: the sync batches, and the shards queued for the next one with each outcome once
  // it ran (null until a shard is queued after the last batch started).
  struct SyncBatch {
    std::set<std::pair<uint64_t, uint8_t>> keys;  // (chunk, shard)
    std::map<std::pair<uint64_t, uint8_t>, Status> outcomes;
  };
  std::shared_ptr<SyncBatch> syncQueued_;
  kj::Own<GroupCommit> syncs_;  // dropped first in the destructor
  kj::Own<Store> store_;  // touched only on the worker thread

  struct Published {
    kj::Own<const kj::Executor> executor;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;
  };
  kj::MutexGuarded<kj::Maybe<Published>> published_;
  kj::Own<const kj::Executor> executor_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  kj::Thread thread_;  // last: starts in the constructor, joins first in the destructor
};

}  // namespace tessera::chunk
