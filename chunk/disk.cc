#include "chunk/disk.h"

#include "chunk/inventory.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <cstdio>
#include <utility>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "fs/log.h"
#include "fs/rpc.h"

namespace tessera::chunk {
namespace {

std::string bucketName(ChunkId chunk) {
  char name[4];
  snprintf(name, sizeof name, "%02x", unsigned(chunk.value & 0xff));
  return name;
}

bool endsWith(const std::string& s, const char* tail) {
  size_t n = strlen(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

// mkdir that is fine with an existing directory.
Status makeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return Status();
  int err = errno;
  struct stat st;
  if (err == EEXIST && ::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status();
    return Error{Errc::kNotDir, path + " is not a directory"};
  }
  return Error{err == ENOSPC ? Errc::kNoSpace : Errc::kIo,
               "cannot create " + path + ": " + strerror(err)};
}

struct Scan {
  uint64_t usedBytes = 0;
  uint64_t shards = 0;
  std::vector<ShardKey> keys;
};

// Adds up the shard files of one bucket and deletes the NAME.tmp files of creates that a crash
// interrupted (they never became shards).
Status scanBucket(const std::string& path, Scan& scan) {
  DIR* d = ::opendir(path.c_str());
  if (!d) return Error{Errc::kIo, "cannot read " + path + ": " + strerror(errno)};
  KJ_DEFER(::closedir(d));
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode)) continue;
    if (endsWith(name, ".tmp")) {
      ::unlinkat(::dirfd(d), e->d_name, 0);
      continue;
    }
    auto key = parseShardName(name);
    if (!key) continue;  // not a shard: neither counted nor served
    scan.usedBytes += uint64_t(st.st_blocks) * 512;
    ++scan.shards;
    scan.keys.push_back(*key);
  }
  return Status();
}

}  // namespace

const char* stateName(DiskState state) {
  switch (state) {
    case DiskState::kOk: return "ok";
    case DiskState::kFull: return "full";
    case DiskState::kFailed: return "failed";
  }
  return "?";
}

std::optional<ShardKey> parseShardName(const std::string& name) {
  // "%016llx.%u", shard < kMaxShards
  if (name.size() < 18 || name.size() > 19 || name[16] != '.') return std::nullopt;
  uint64_t chunk = 0;
  for (size_t i = 0; i < 16; ++i) {
    char c = name[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return std::nullopt;
    chunk = chunk << 4 | uint64_t(v);
  }
  unsigned shard = 0;
  for (size_t i = 17; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    shard = shard * 10 + unsigned(name[i] - '0');
  }
  if (chunk == 0 || shard >= kMaxShards) return std::nullopt;
  ShardKey key{ChunkId(chunk), uint8_t(shard)};
  if (key.toString() != name) return std::nullopt;  // leading zeros in the shard index
  return key;
}

// The worker thread's side: the cache of open shard files. Used only on the worker thread.
class Disk::Store {
 public:
  explicit Store(Disk& disk) : disk_(disk) {}

  // Not synced: Disk::write queues the shard for a sync batch.
  Status write(ShardKey key, Layout layout, uint64_t offset, kj::ArrayPtr<const kj::byte> data,
               kj::ArrayPtr<const uint32_t> crcs) {
    if (auto s = checkRange(offset, data.size()); !s) return s;
    auto found = get(key);
    ShardFile* file;
    if (found) {
      file = *found;
    } else {
      if (found.code() != Errc::kNotFound) return found.error();
      // Check before creating: a write damaged in transit leaves nothing behind.
      if (auto s = verifyBlocks(offset, data, crcs); !s) return s;
      auto created = createFile(key, layout);
      if (!created) return created.error();
      file = *created;
    }
    if (file->layout() != layout) return layoutMismatch(*file, layout);
    uint64_t before = file->allocatedBytes();
    Status s = file->write(offset, data, crcs);
    account(before, file->allocatedBytes());
    unsynced_.insert(key);
    return s;
  }

  Status read(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
              kj::ArrayPtr<uint32_t> crcs, bool lostAsStored) {
    auto file = get(key);
    if (!file) {
      memset(out.begin(), 0, out.size());
      return file.error();
    }
    return (*file)->read(offset, out, crcs, lostAsStored);
  }

  // One shard's fdatasync (and its directory's, after a create).
  Status sync(ShardKey key) {
    auto file = get(key);
    return file ? syncFile(key, **file) : Status(file.error());
  }

  // Runs f on the open shard `key` and keeps the disk's byte count in step with what the call
  // took or freed; get()'s error (kNotFound, ...) when the shard cannot be opened.
  template <typename F>
  auto changeFile(ShardKey key, F f) -> decltype(f(std::declval<ShardFile&>())) {
    auto file = get(key);
    if (!file) return file.error();
    uint64_t before = (*file)->allocatedBytes();
    unsynced_.insert(key);  // until f syncs it
    auto r = f(**file);
    account(before, (*file)->allocatedBytes());
    return r;
  }

  Status truncate(ShardKey key, uint64_t length) {
    return changeFile(key, [&](ShardFile& f) { return f.truncate(length); });
  }

  Status markLost(ShardKey key, uint64_t offset, uint64_t length) {
    return changeFile(key, [&](ShardFile& f) { return f.markLost(offset, length); });
  }

  Status punch(ShardKey key, uint64_t offset, uint64_t length) {
    return changeFile(key, [&](ShardFile& f) -> Status {
      if (auto s = f.punch(offset, length); !s) return s;
      return syncFile(key, f);
    });
  }

  Result<uint64_t> reserve(ShardKey key, uint64_t offset, uint64_t length) {
    return changeFile(key, [&](ShardFile& f) -> Result<uint64_t> {
      auto r = f.reserve(offset, length);
      if (!r) return r;
      // Durable before the reply: a reservation a crash could undo would let a later write
      // into the range fail for lack of space after all.
      if (auto s = syncFile(key, f); !s) return s.error();
      return r;
    });
  }

  Status create(ShardKey key, Layout layout) {
    auto found = get(key);
    if (found) {
      if ((*found)->layout() != layout) return layoutMismatch(**found, layout);
      return Status();
    }
    if (found.code() != Errc::kNotFound) return found.error();
    auto created = createFile(key, layout);
    if (!created) return created.error();
    return Status();
  }

  Status remove(kj::ArrayPtr<const ChunkId> chunks) {
    Status result;
    for (ChunkId chunk : chunks) {
      for (unsigned shard = 0; shard < kMaxShards; ++shard) {
        ShardKey key{chunk, uint8_t(shard)};
        std::string path = disk_.shardPath(key);
        uint64_t allocated = 0;
        auto it = cache_.find(key);
        unsynced_.erase(key);
        failedWriteBack_.erase(key);
        if (it != cache_.end()) {
          allocated = it->second.file.allocatedBytes();
          cache_.erase(it);
        } else {
          struct stat st;
          if (::lstat(path.c_str(), &st) != 0) continue;  // not here
          allocated = uint64_t(st.st_blocks) * 512;
        }
        if (::unlink(path.c_str()) != 0) {
          if (errno != ENOENT && result) {
            result = Error{Errc::kIo, "remove " + path + ": " + strerror(errno)};
          }
          continue;
        }
        disk_.usedBytes_.fetch_sub(allocated);
        disk_.shards_.fetch_sub(1);
      }
    }
    return result;
  }

 private:
  struct Entry {
    ShardFile file;
    uint64_t lastUse;
  };

  // The open shard file: from the cache, else opened (kNotFound, kCorruption, kIo).
  Result<ShardFile*> get(ShardKey key) {
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      it->second.lastUse = ++tick_;
      return &it->second.file;
    }
    auto opened = ShardFile::open(disk_.shardPath(key), key);
    if (!opened) return opened.error();
    return insert(kj::mv(*opened));
  }

  Result<ShardFile*> createFile(ShardKey key, Layout layout) {
    std::string path = disk_.shardPath(key);
    auto created = ShardFile::create(path, key, layout);
    if (!created) return created.error();
    unsyncedDirs_.insert(ShardFile::directoryOf(path));
    disk_.shards_.fetch_add(1);
    disk_.usedBytes_.fetch_add(created->allocatedBytes());
    return insert(kj::mv(*created));
  }

  ShardFile* insert(ShardFile file) {
    if (cache_.size() >= disk_.config_.maxOpenFiles) {
      // Linear, but only on a miss with a full cache of a few hundred entries.
      auto oldest = cache_.begin();
      for (auto it = cache_.begin(); it != cache_.end(); ++it) {
        if (it->second.lastUse < oldest->second.lastUse) oldest = it;
      }
      // A file with unsynced writes is synced before it is closed: an fdatasync through a
      // descriptor opened later would not see a write-back error (Linux reports it to the
      // descriptors open when it happened), so a failure is kept for the shard's next sync.
      ShardKey evicted = oldest->first;
      if (unsynced_.count(evicted) && !syncFile(evicted, oldest->second.file)) {
        failedWriteBack_.insert(evicted);
      }
      unsynced_.erase(evicted);
      cache_.erase(oldest);
    }
    ShardKey key = file.key();
    auto [it, inserted] = cache_.insert_or_assign(key, Entry{kj::mv(file), ++tick_});
    return &it->second.file;
  }

  void account(uint64_t before, uint64_t after) {
    if (after >= before) {
      disk_.usedBytes_.fetch_add(after - before);
    } else {
      disk_.usedBytes_.fetch_sub(before - after);
    }
  }

  static Status layoutMismatch(const ShardFile& file, Layout layout) {
    return Error{Errc::kInvalid, "shard " + file.key().toString() + " has layout " +
                                     file.layout().toString() + ", not " + layout.toString()};
  }

  // The data of the shard, and its directory entry if a shard was created there since the last
  // sync of that directory.
  Status syncFile(ShardKey key, ShardFile& file) {
    if (failedWriteBack_.erase(key)) {
      return Error{Errc::kIo, "sync " + disk_.shardPath(key) +
                                  ": writing back an earlier write failed when the file was closed"};
    }
    disk_.fileSyncs_.fetch_add(1);
    if (auto s = file.sync(); !s) return s;
    unsynced_.erase(key);
    std::string dir = ShardFile::directoryOf(disk_.shardPath(key));
    auto it = unsyncedDirs_.find(dir);
    if (it == unsyncedDirs_.end()) return Status();
    if (auto s = ShardFile::syncDirectory(dir); !s) return s;
    unsyncedDirs_.erase(it);
    return Status();
  }

  Disk& disk_;
  std::unordered_map<ShardKey, Entry> cache_;
  std::unordered_set<std::string> unsyncedDirs_;  // bucket directories with unsynced creates
  std::unordered_set<ShardKey> unsynced_;         // open shards written since their last sync
  std::unordered_set<ShardKey> failedWriteBack_;  // closed shards whose sync at close failed
  uint64_t tick_ = 0;
};

Result<kj::Own<Disk>> Disk::open(Config config) {
  const std::string& dir = config.dir;
  if (dir.empty()) return Error{Errc::kInvalid, "the data directory is empty"};
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT || ::mkdir(dir.c_str(), 0755) != 0) {
      return Error{Errc::kIo, "cannot create data directory " + dir + ": " + strerror(errno)};
    }
  } else if (!S_ISDIR(st.st_mode)) {
    return Error{Errc::kNotDir, "data directory " + dir + " is not a directory"};
  }

  std::string lockPath = dir + "/lock";
  int raw = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (raw < 0) {
    return Error{Errc::kAccess, "data directory " + dir + " is not writable: " + strerror(errno)};
  }
  kj::AutoCloseFd lockFd(raw);
  if (::flock(lockFd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return Error{Errc::kBusy, "data directory " + dir + " is in use by another tessera-chunk"};
    }
    return Error{Errc::kIo, "cannot lock " + lockPath + ": " + strerror(errno)};
  }
  // Writing our pid proves the directory takes writes, and says who holds it.
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lockFd.get(), 0) != 0 ||
      ::pwrite(lockFd.get(), pid.data(), pid.size(), 0) != ssize_t(pid.size())) {
    return Error{Errc::kAccess, "data directory " + dir + " is not writable: " + strerror(errno)};
  }

  std::string shards = dir + "/shards";
  if (auto s = makeDir(shards); !s) return s.error();
  Scan scan;
  for (unsigned b = 0; b < 256; ++b) {
    char name[4];
    snprintf(name, sizeof name, "%02x", b);
    std::string bucket = shards + "/" + name;
    if (auto s = makeDir(bucket); !s) return s.error();
    if (auto s = scanBucket(bucket, scan); !s) return s.error();
  }
  // Shards created by an earlier run may not have their directory entries on disk yet, and
  // the Store only remembers this run's creates: flush the file system once now.
  if (::syncfs(lockFd.get()) != 0) {
    return Error{Errc::kIo, "cannot sync data directory " + dir + ": " + strerror(errno)};
  }
  if (::stat(shards.c_str(), &st) != 0) {
    return Error{Errc::kIo, "cannot stat " + shards + ": " + strerror(errno)};
  }
  auto disk = kj::heap<Disk>(kj::mv(config), lockFd.release(), scan.usedBytes, scan.shards,
                             kj::mv(scan.keys));
  disk->shardsDev_ = uint64_t(st.st_dev);
  disk->shardsIno_ = uint64_t(st.st_ino);
  return kj::mv(disk);
}

Disk::Disk(Config config, int lockFd, uint64_t usedBytes, uint64_t shards,
           std::vector<ShardKey> found)
    : config_(kj::mv(config)),
      lockFd_(lockFd),
      usedBytes_(usedBytes),
      shards_(shards),
      found_(std::move(found)),
      syncs_(kj::heap<GroupCommit>()),
      store_(kj::heap<Store>(*this)),
      thread_([this] { runWorker(); }) {
  published_.when([](const kj::Maybe<Published>& p) { return p != nullptr; },
                  [this](kj::Maybe<Published>& p) {
                    KJ_IF_MAYBE(published, p) {
                      executor_ = kj::mv(published->executor);
                      stop_ = kj::mv(published->stop);
                    }
                  });
}

Disk::~Disk() noexcept(false) {
  // A running sync batch is cancelled while the worker still runs (its callers' promises are
  // broken); thread_ is destroyed (joined) first of the members, after its loop was told to stop.
  syncs_ = nullptr;
  stop_->fulfill();
}

void Disk::runWorker() {
  kj::EventLoop loop;
  kj::WaitScope waitScope(loop);
  auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
  *published_.lockExclusive() =
      Published{kj::getCurrentThreadExecutor().addRef(), kj::mv(stop.fulfiller)};
  stop.promise.wait(waitScope);
}

std::string Disk::shardPath(ShardKey key) const {
  return config_.dir + "/shards/" + bucketName(key.chunk) + "/" + key.toString();
}

std::optional<Error> Disk::refuse() const {
  if (state_.load() != DiskState::kFailed) return std::nullopt;
  return Error{Errc::kIo, "disk " + config_.dir + " failed: " + reason()};
}

Status Disk::note(Status s) {
  if (s.code() == Errc::kIo) {
    fail(s.error().detail);
  } else if (s.code() == Errc::kNoSpace) {
    setFull(s.error().detail);
  }
  return s;
}

void Disk::fail(const std::string& why) {
  *reason_.lockExclusive() = why;
  state_.store(DiskState::kFailed);
  // Nothing more reaches the disk: drop the open files (closing them touches no data).
  store_ = kj::heap<Store>(*this);
}

void Disk::setFull(const std::string& why) {
  auto reason = reason_.lockExclusive();
  DiskState expected = DiskState::kOk;
  if (state_.compare_exchange_strong(expected, DiskState::kFull)) *reason = why;
}

void Disk::probe() {
  std::string shards = config_.dir + "/shards";
  struct stat st;
  if (::stat(shards.c_str(), &st) != 0) {
    return fail("cannot stat " + shards + ": " + strerror(errno));
  }
  if (uint64_t(st.st_dev) != shardsDev_ || uint64_t(st.st_ino) != shardsIno_) {
    return fail(shards + " was replaced by another directory");
  }
  // A dead device often still serves reads from the page cache; a synced write reaches it. At
  // most every few seconds: it waits for the disk on the worker that client I/O waits behind.
  auto now = std::chrono::steady_clock::now();
  if (now - lastSyncedProbe_ < std::chrono::seconds(5)) return;
  lastSyncedProbe_ = now;
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::pwrite(lockFd_.get(), pid.data(), pid.size(), 0) != ssize_t(pid.size()) ||
      ::fdatasync(lockFd_.get()) != 0) {
    int err = errno;
    if (err == ENOSPC || err == EDQUOT) return setFull("write " + config_.dir + "/lock: " + strerror(err));
    return fail("write " + config_.dir + "/lock: " + strerror(err));
  }
}

kj::Promise<Status> Disk::write(ShardKey key, Layout layout, uint64_t offset,
                                kj::ArrayPtr<const kj::byte> data, kj::Array<uint32_t> crcs,
                                bool sync) {
  auto written = onWorker([this, key, layout, offset, data, crcs = kj::mv(crcs)]() -> Status {
    if (auto e = refuse()) return *e;
    return note(store_->write(key, layout, offset, data, crcs));
  });
  if (!sync) return written;
  return written.then([this, key](Status s) -> kj::Promise<Status> {
    if (!s) return s;
    return syncGrouped({key});
  });
}

kj::Promise<Status> Disk::read(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                               kj::ArrayPtr<uint32_t> crcs, bool lostAsStored) {
  return onWorker([this, key, offset, out, crcs, lostAsStored]() -> Status {
    if (auto e = refuse()) return *e;
    return note(store_->read(key, offset, out, crcs, lostAsStored));
  });
}

kj::Promise<Status> Disk::sync(kj::Array<ShardKey> keys) {
  return syncGrouped(std::vector<ShardKey>(keys.begin(), keys.end()));
}

kj::Promise<Status> Disk::syncGrouped(std::vector<ShardKey> keys) {
  if (keys.empty()) return Status();
  if (!syncQueued_) syncQueued_ = std::make_shared<SyncBatch>();
  auto batch = syncQueued_;
  for (ShardKey k : keys) batch->keys.emplace(k.chunk.value, k.shard);
  return syncs_
      ->flush([this]() -> kj::Promise<Status> {
        // Everything queued by now; later callers queue for the next batch.
        auto b = kj::mv(syncQueued_);
        return onWorker([this, b]() {
          for (auto [chunk, shard] : b->keys) {
            ShardKey key{ChunkId(chunk), shard};
            auto e = refuse();
            b->outcomes[{chunk, shard}] = e ? Status(*e) : note(store_->sync(key));
          }
        }).then([]() { return Status(); },
                [this](kj::Exception&& e) -> Status {
                  return Error{Errc::kIo, "disk " + config_.dir + ": sync: " +
                                              e.getDescription().cStr()};
                });
      })
      .then([batch, keys = std::move(keys)](Status s) -> Status {
        if (!s) return s;
        for (ShardKey k : keys) {
          if (auto& o = batch->outcomes.at({k.chunk.value, k.shard}); !o) return o;
        }
        return Status();
      });
}

kj::Promise<Status> Disk::truncate(ShardKey key, uint64_t length) {
  return onWorker([this, key, length]() -> Status {
    if (auto e = refuse()) return *e;
    return note(store_->truncate(key, length));
  });
}

kj::Promise<Status> Disk::punch(ShardKey key, uint64_t offset, uint64_t length) {
  return onWorker([this, key, offset, length]() -> Status {
    if (auto e = refuse()) return *e;
    return note(store_->punch(key, offset, length));
  });
}

kj::Promise<Status> Disk::markLost(ShardKey key, uint64_t offset, uint64_t length) {
  return onWorker([this, key, offset, length]() -> Status {
    if (auto e = refuse()) return *e;
    return note(store_->markLost(key, offset, length));
  });
}

kj::Promise<Result<uint64_t>> Disk::reserve(ShardKey key, uint64_t offset, uint64_t length) {
  return onWorker([this, key, offset, length]() -> Result<uint64_t> {
    if (auto e = refuse()) return *e;
    auto r = store_->reserve(key, offset, length);
    if (!r) return note(Status(r.error())).error();
    return r;
  });
}

kj::Promise<Status> Disk::create(ShardKey key, Layout layout) {
  return onWorker([this, key, layout]() -> Status {
    if (auto e = refuse()) return *e;
    return note(store_->create(key, layout));
  });
}

kj::Promise<Status> Disk::remove(kj::Array<ChunkId> chunks) {
  return onWorker([this, chunks = kj::mv(chunks)]() -> Status {
    if (auto e = refuse()) return *e;
    return note(store_->remove(chunks));
  });
}

kj::Promise<Disk::Stats> Disk::stats() {
  return onWorker([this]() {
    Stats s;
    if (state_.load() != DiskState::kFailed) probe();
    s.state = state_.load();
    if (s.state == DiskState::kFailed) return s;
    s.usedBytes = usedBytes_.load();
    s.shards = shards_.load();
    struct statvfs vfs;
    bool noInodes = false;
    if (::statvfs(config_.dir.c_str(), &vfs) != 0) {
      fail("statvfs " + config_.dir + ": " + strerror(errno));
      s.state = DiskState::kFailed;
      return s;
    }
    s.capacityBytes = uint64_t(vfs.f_blocks) * vfs.f_frsize;
    s.freeBytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
    noInodes = vfs.f_files != 0 && vfs.f_favail == 0;
    if (config_.capacityCap == 0) s.fsid = uint64_t(vfs.f_fsid) | 1;  // never 0
    if (config_.capacityCap != 0 && config_.capacityCap < s.capacityBytes) {
      s.capacityBytes = config_.capacityCap;
    }
    if (config_.capacityCap != 0) {
      uint64_t room = config_.capacityCap > s.usedBytes ? config_.capacityCap - s.usedBytes : 0;
      if (room < s.freeBytes) s.freeBytes = room;
    }
    uint64_t reserve =
        config_.reserveBytes + uint64_t(config_.reserveFraction * double(s.capacityBytes));
    if (noInodes) {
      setFull("no free inodes on " + config_.dir);
    } else if (s.freeBytes < reserve) {
      setFull(std::to_string(s.freeBytes) + " bytes free on " + config_.dir + ", below the reserve of " +
              std::to_string(reserve));
    } else if (state_.load() == DiskState::kFull &&
               s.freeBytes >= std::max<uint64_t>(2 * reserve, 1 << 20)) {
      // Hysteresis: a disk at the edge of its reserve does not flip at every heartbeat.
      auto reason = reason_.lockExclusive();
      DiskState expected = DiskState::kFull;
      if (state_.compare_exchange_strong(expected, DiskState::kOk)) reason->clear();
    }
    s.state = state_.load();
    return s;
  });
}

kj::Promise<Result<std::string>> Disk::readFile(std::string name) {
  return onWorker([this, name = kj::mv(name)]() -> Result<std::string> {
    if (auto e = refuse()) return *e;
    std::string path = config_.dir + "/" + name;
    if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) {
      return Error{Errc::kNotFound, path + " does not exist"};
    }
    auto text = tessera::readFile(path);
    if (!text) return Error{Errc::kIo, "cannot read " + path};
    return text;
  });
}

kj::Promise<Status> Disk::writeFile(std::string name, std::string text) {
  return onWorker([this, name = kj::mv(name), text = kj::mv(text)]() -> Status {
    if (auto e = refuse()) return *e;
    return note(writeFileAtomic(config_.dir + "/" + name, text));
  });
}

kj::Promise<Result<std::vector<ShardKey>>> Disk::list() {
  return onWorker([this]() { return listShardFiles(config_.dir + "/shards"); });
}

}  // namespace tessera::chunk
