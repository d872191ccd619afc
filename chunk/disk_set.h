// chunk/disk_set.h — the data directories of one chunk server (--data DIR, once per disk), one
// Disk each with its own worker thread, and which disk holds each shard.
//
// Routing. A shard lives on exactly one disk. The set keeps an in-memory index shard -> disk,
// built at open from the shard files every disk holds and updated when a write or create places
// a new shard and when chunks are removed. An operation on a known shard goes to its disk. A
// shard the index does not know does not exist here: read, truncate, punch, reserve and sync
// answer kNotFound without touching a disk. A write to such a shard does what its NewShard
// says: kRefuse answers kNotFound (the writer expected the shard here: it was lost with its
// disk, perhaps one this server no longer knows of, and must be rebuilt whole, not recreated
// empty but for the write); kCreate, and create(), place it on the disk homeOf chose for its
// chunk (for its write log, before the shard existed) if that still takes shards, else on the
// kOk disk with the most free space (pickDisk), or answer kNoSpace when no disk takes new
// shards; kLegacy (a writer that does not say) creates as kCreate unless a directory failed
// at start (below). Two disks holding one shard at open (a copied directory): the first in
// --data order keeps it, a warning names the other.
//
// Health (chunk/disk.h: kOk, kFull, kFailed). A failed disk gets no more I/O. Its shards stay in
// the index, so operations on them answer kIo "shard X is on failed disk DIR: ..." — a client
// reads around them, and a write never recreates such a shard, empty, on another disk — and
// they join lostShards(), which the meta link reports so the meta leader rebuilds them
// elsewhere. A full disk takes no new shards; writes and reservations on its shards go on
// and may answer kNoSpace. Each change of a disk's state is logged once. A directory that
// cannot be opened at start (other than one in use by another server, or named twice) is
// failed from the start, as long as one other opens; the server serves the others' shards and
// creates shards for writes that say kCreate, but not for kLegacy ones (kIo): which shards the
// dead one held is not known, and such a write may be to one of those. The meta leader finds
// them missing from the server's inventories and rebuilds them elsewhere.
//
// Not thread-safe: owned by the chunk server's main event loop. Promises it returns must be
// destroyed before it.
#pragma once
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "chunk/disk.h"

namespace tessera::chunk {

// What placement knows of one disk.
struct DiskView {
  DiskState state = DiskState::kOk;
  uint64_t freeBytes = 0;
};
// What a write does when its shard is not here (see Routing above; fs/proto/chunk.capnp
// ShardIntent).
enum class NewShard { kLegacy, kRefuse, kCreate };

// The disk that takes a new shard: the kOk one with the most free space (the first of equals).
// kNoSpace if none is kOk but one is full; kIo if every disk failed.
Result<size_t> pickDisk(const std::vector<DiskView>& disks);

class DiskSet {
 public:
  struct Config {
    std::vector<std::string> dirs;  // at least one
    uint64_t capacityCap = 0;       // per disk (Disk::Config)
    size_t maxOpenFiles = 256;      // per disk
    uint64_t reserveBytes = 0;      // per disk
    double reserveFraction = 0;
  };
  struct DiskReport {
    std::string dir;
    DiskState state = DiskState::kOk;
    std::string reason;  // why failed or full
    uint64_t capacityBytes = 0, usedBytes = 0, freeBytes = 0;
    uint64_t shards = 0;  // held (a failed disk: lost)
  };
  struct Stats {
    // Over the disks that have not failed (a file system shared by several counts once).
    uint64_t capacityBytes = 0;
    uint64_t usedBytes = 0;
    uint64_t freeBytes = 0;  // of the disks that take new shards
    uint64_t shards = 0;
    uint64_t fsid = 0;  // Disk::Stats::fsid of the one file system, a hash of several, 0 if capped
    bool acceptsShards = false;  // some disk is kOk
    std::vector<DiskReport> disks;
  };

  // Opens every directory (Disk::open; see above for one that fails). kInvalid for no
  // directory or one named twice; the Error of Disk::open when none opens or one is kBusy.
  static Result<kj::Own<DiskSet>> open(Config config);
  KJ_DISALLOW_COPY(DiskSet);

  // As Disk's, routed as above.
  kj::Promise<Status> write(ShardKey key, Layout layout, uint64_t offset,
                            kj::ArrayPtr<const kj::byte> data, kj::Array<uint32_t> crcs, bool sync,
                            NewShard ifAbsent);
  kj::Promise<Status> read(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                           kj::ArrayPtr<uint32_t> crcs, bool lostAsStored = false);
  kj::Promise<Status> sync(kj::Array<ShardKey> keys);
  kj::Promise<Status> truncate(ShardKey key, uint64_t length);
  kj::Promise<Status> punch(ShardKey key, uint64_t offset, uint64_t length);
  kj::Promise<Status> markLost(ShardKey key, uint64_t offset, uint64_t length);
  kj::Promise<Result<uint64_t>> reserve(ShardKey key, uint64_t offset, uint64_t length);
  kj::Promise<Status> create(ShardKey key, Layout layout);
  kj::Promise<Status> remove(kj::Array<ChunkId> chunks);
  // Probes every disk (Disk::stats), notes changes of state, adds up.
  kj::Promise<Stats> stats();

  // A small file kept in every data directory (server.id). kNotFound if no disk has it;
  // kCorruption if two disks hold different texts (directories of different servers). A disk
  // that lacks it gets a copy (a disk added to the server).
  kj::Promise<Result<std::string>> readFile(std::string name);
  // Written to every usable disk; ok if one took it.
  kj::Promise<Status> writeFile(std::string name, std::string text);

  // Every shard on the disks that have not failed (Disk::list of each).
  kj::Promise<Result<std::vector<ShardKey>>> list();
  // Disk i, or null when it failed or never opened; its directory.
  Disk* diskAt(size_t i) {
    return stateOf(i) == DiskState::kFailed ? nullptr : disks_[i].disk.get();
  }
  const std::string& dirAt(size_t i) const { return disks_[i].dir; }

  // Shards on disks that failed, in the order they were lost; only grows.
  const std::vector<ShardKey>& lostShards() const { return lost_; }
  // A directory could not be opened at start: kLegacy writes place no shard (see above).
  bool failedAtStart() const;
  // The data directories, comma-separated, for messages.
  std::string dirs() const;
  size_t size() const { return disks_.size(); }
  // Which disk holds the shard, if any.
  std::optional<size_t> diskOf(ShardKey key) const;
  // The disk that keeps the chunk's write-log records and fence here (chunk/disk_logs.h): that
  // of a shard of it here; else the one a shard of it will be placed on, chosen now (as for a
  // new shard) and kept for that shard's placement. kNoSpace / kIo as place() when no disk
  // takes new shards.
  Result<size_t> homeOf(ChunkId chunk);
  // The file of the shard on its disk (on the first disk if the shard is unknown).
  std::string shardPath(ShardKey key) const;
  DiskState state(size_t disk) const { return disks_[disk].seen; }

  struct Entry {
    std::string dir;
    kj::Own<Disk> disk;  // null when it could not be opened
    std::string openError;
    DiskState seen = DiskState::kOk;  // as last logged
    Disk::Stats last;                 // of the last probe
    uint64_t usedAtProbe = 0;
  };
  explicit DiskSet(std::vector<Entry> disks);  // use open()

 private:
  // Takes note of the state of disk `i` now: logs a change; a failure moves its shards to lost_.
  void observe(size_t i);
  DiskState stateOf(size_t i) const;
  std::string reasonOf(size_t i) const;
  Error onFailedDisk(ShardKey key, size_t i) const;
  // The disk of a known shard, or the Error for one on a failed disk (nullopt: unknown).
  std::optional<size_t> find(ShardKey key) const;
  // The disk holding `key`: kNotFound if none does, the failed disk's error if it failed.
  Result<size_t> diskFor(ShardKey key);
  // Places a new shard (on its chunk's home if homeOf chose one that still takes shards);
  // kNoSpace / kIo when no disk takes it.
  Result<size_t> place(ShardKey key);
  // The disk a new shard of `what` goes to (pickDisk over the disks now).
  Result<size_t> pick(const std::string& what);
  template <typename T>
  kj::Promise<T> observed(size_t i, kj::Promise<T> p) {
    return p.then([this, i](T r) {
      observe(i);
      return r;
    });
  }

  std::vector<Entry> disks_;
  std::unordered_map<ShardKey, uint32_t> index_;
  std::unordered_map<uint64_t, uint32_t> homes_;  // chunk -> disk chosen by homeOf, no shard yet
  std::vector<ShardKey> lost_;
};

}  // namespace tessera::chunk
