// client/client.h — the Tessera client library: the namespace through the meta server, file
// data through the chunk servers (client/data_path.h), and per-file state for open files:
// cached chunk descriptors, write-back buffering and the size this client has written.
//
// Durability: fsync syncs every shard the file's writes touched since the last fsync, also
// through earlier opens of the file: what closed files leave unsynced is remembered (a chunk
// list per file, bounded) until the next fsync. Nothing is synced that nobody asked for.
//
// Write-back: a buffered write is copied into the file's pending buffer and acknowledged; the
// buffer goes out in large, stripe-sized writes when it grows past a threshold, when a write is
// not contiguous with it, and on flush/fsync/release/read/truncate. A failure of such a
// background write is kept and reported by the next flush or fsync of the file (and every one
// after, until the file is closed): it is never silently dropped. Direct (O_DIRECT) writes skip
// the buffer; direct and sync (O_SYNC/O_DSYNC) writes are durable on every shard before they
// return (small ec writes through the chunk's write log are durable anyway).
//
// Truncation: everything past the new size must read as zeros afterwards, whatever this client
// or the meta server believed the size was (there may be uncommitted writes past it): chunks
// wholly past it are dropped by the meta server, and the rest of the stripe that holds the new
// last byte is zeroed by the client first.
//
// Write leases (client_leases.cc): a chunk is written only under this session's lease, taken
// at the first write and kept while it is used. It is given back — after the writes under it
// finished and what they wrote is synced — when the meta leader recalls it (a repair, drain or
// rebalance wants to move the chunk, or another session wants to write it; heard in keepAlive
// replies, polled every leasePollMs while leases are held) or when it was not used for
// leaseIdleMs; and, all of a file's at once, when the file is closed. A write that needs the lease again waits until the release is done
// before it asks (a release applied after the new grant would take the new lease away), and
// then retries while the chunk is busy (moving): it sees latency, not an error.
//
// Sizes: the meta server stores a file's size; a write past the end grows the size this client
// reports at once and commits it (commitWrite) on flush, fsync and release.
//
// Not thread-safe: everything runs on the event loop that created the Client.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <kj/async-io.h>
#include <kj/timer.h>

#include "client/chunk_servers.h"
#include "client/data_path.h"
#include "client/meta_link.h"
#include "fs/result.h"
#include "fs/types.h"

namespace tessera::client {

struct ClientConfig {
  std::vector<Address> meta;  // the meta servers (client/meta_link.h finds the leader)
  std::string host;        // names this client's session on the meta server
  std::string mountpoint;
  uint64_t connectTimeoutMs = 5'000;
  uint64_t ioTimeoutMs = 30'000;     // one shard RPC
  uint64_t metaRetryMs = 30'000;     // how long a meta call is retried before EIO
  uint64_t metaCallTimeoutMs = 5'000;  // one attempt on one meta server, then the next
  uint64_t flushThreshold = 4 << 20; // pending bytes that start a background flush
  uint64_t pendingLimit = 16 << 20;  // pending + in-flight bytes before writes wait
  // How often an idle client tells the meta leader its session is alive; 0: a third of the
  // session timeout the meta server announces.
  uint64_t keepaliveMs = 0;
  // Small ec writes go through the chunk's write log (client/data_path.h); off: read-modify-
  // write in place.
  bool ecLog = true;
  uint64_t ecLogApplyDelayMs = 200;  // how long a chunk's records wait for more before applying
  // A write lease not used for this long is given back (what was written under it synced
  // first); 0: leases are kept until the file is closed.
  uint64_t leaseIdleMs = 5'000;
  // How often a client that holds write leases asks the meta leader whether one was recalled
  // (for a move of its chunk); more than 0.
  uint64_t leasePollMs = 500;
  // Coherence (client_watch.cc): how long a watch registration the meta leader confirmed is
  // trusted. Renewed about every quarter of it; past it without a confirmed renewal (leader
  // unreachable, failover, partition) this client reports `all` (drop every cache) and is not
  // coherent() until registered again.
  uint64_t watchLeaseMs = 3'000;
  // Fault injection for tests: each invalidation from the meta leader is acted on this much
  // later, as over a slow network (0: at once).
  uint64_t faultInvalidationDelayMs = 0;
  // Fault injection for tests: the process _exits as soon as an apply of the write log has
  // written its parity, before its data (a writer that dies in the middle of an apply).
  bool faultExitAfterParity = false;
  // ... as soon as a write straight to the stripes of an ec chunk has written its data blocks,
  // before its parity (a writer that dies in the middle of a large write).
  bool faultExitAfterData = false;
};

// What another mount changed, as the meta leader reports it (proto::Watcher): drop cached
// attributes and data of `inodes`, the directory entries `entries`; with `all`, everything.
struct Invalidation {
  std::vector<InodeId> inodes;
  std::vector<std::pair<InodeId, std::string>> entries;
  bool all = false;
};

struct DirEntry {
  std::string name;
  uint64_t cookie = 0;
  Attr attr;
};

struct DirPage {
  std::vector<DirEntry> entries;
  bool eof = false;
};

struct StatFs {
  uint64_t totalBytes = 0, freeBytes = 0, files = 0;
};

// What setattr changes; unset fields stay.
struct SetAttr {
  std::optional<uint32_t> mode, uid, gid;
  std::optional<uint64_t> size;
  std::optional<int64_t> atimeNs, mtimeNs;  // a value, or
  bool atimeNow = false, mtimeNow = false;  // the server's clock
};

enum class WriteMode { kBuffered, kDirect, kSync };

// A file lock as the kernel asks for it (client/client_locks.cc, meta/ns/lock_table.h).
struct LockRequest {
  uint64_t owner = 0;   // the kernel's lock owner: a process's file table, or an open file
  uint64_t handle = 0;  // the mount's handle of the open file it goes through
  bool flock = false;   // flock(2) (whole file) rather than fcntl/OFD
  uint8_t type = 0;     // 0 unlock (getLock's answer: no conflict), 1 read, 2 write
  uint64_t start = 0, end = 0;  // inclusive; end INT64_MAX: to the end of the file
  uint32_t pid = 0;
};

// A blocking lock request in progress, so a signal can cancel it (cancelLockWait).
struct LockWait {
  bool cancelled = false;
  uint64_t session = 0, seq = 0;  // of the request the meta leader is keeping
};

class Client {
 public:
  Client(kj::Network& network, kj::Timer& timer, ClientConfig config);
  ~Client();

  // Connects to the meta server and opens this client's session, which it then keeps alive
  // (keepAlive while idle). If the session expires anyway (the mount was stopped or cut off
  // longer than the server's session timeout), the first request to notice opens a new one and
  // re-opens every file this client holds open, with a warning: files unlinked while open are
  // gone by then (their reopen fails, and so do reads of them that need the meta server).
  kj::Promise<Status> start();
  SessionId session() const { return session_; }

  // --- coherence between mounts (client_watch.cc) ---
  // Registers a watcher with the meta leader (again after a failover or a new session) and
  // renews it every watchLeaseMs / 4. Invalidations go to `sink` on this loop, after this
  // client dropped what it caches itself (chunk descriptors, sizes of open files): from the
  // leader as they come, and {all} when a registration starts afresh (changes may have been
  // missed before it) or the lease ran out. Call once, after start().
  void watch(std::function<void(const Invalidation&)> sink);
  // For an unmount: gives back every write lease this session holds, each once the writes
  // under it are done, its chunk's write log is applied and what was written under it is
  // synced — the next writer then waits for no expiry and re-syncs nothing. Resolves when all
  // went back or failed (those expire on the meta leader).
  kj::Promise<void> letGoAll();
  // True while a registration the leader confirmed less than watchLeaseMs ago stands: every
  // change another mount makes is then reported to the sink. Caches may be kept long only then.
  bool coherent() const;
  // Forgets what this client caches of `inode` (an open file's chunk map, but for chunks this
  // session holds the lease of, and its size): the next read asks the meta server. For a
  // revalidation the mount decides itself, e.g. when it acquires a lock on the file.
  void revalidate(InodeId inode);

  kj::Promise<Result<Attr>> lookup(InodeId parent, std::string name);
  kj::Promise<Result<Attr>> getattr(InodeId inode);
  kj::Promise<Result<Attr>> setattr(InodeId inode, SetAttr change);
  // Any kind of node; `target` for symlinks.
  kj::Promise<Result<Attr>> mknod(InodeId parent, std::string name, uint32_t mode, uint32_t rdev,
                                  uint32_t uid, uint32_t gid, std::string target = {});
  kj::Promise<Result<Attr>> link(InodeId inode, InodeId newParent, std::string newName);
  kj::Promise<Status> unlink(InodeId parent, std::string name, bool dir);
  kj::Promise<Status> rename(InodeId parent, std::string name, InodeId newParent,
                             std::string newName, uint32_t flags);
  kj::Promise<Result<std::string>> readlink(InodeId inode);
  kj::Promise<Result<DirPage>> readdir(InodeId dir, uint64_t cookie, uint32_t max, bool plus);
  kj::Promise<Result<StatFs>> statfs();
  kj::Promise<Status> setxattr(InodeId inode, std::string name, std::string value, uint32_t flags);
  kj::Promise<Result<std::string>> getxattr(InodeId inode, std::string name);
  kj::Promise<Result<std::vector<std::string>>> listxattr(InodeId inode);
  kj::Promise<Status> removexattr(InodeId inode, std::string name);

  // Creates and opens a regular file (FUSE create).
  kj::Promise<Result<Attr>> create(InodeId parent, std::string name, uint32_t mode, uint32_t uid,
                                   uint32_t gid);
  // Opens an existing file: registers the open with the meta server (so an unlinked file stays
  // readable until released) and drops cached chunk descriptors (close-to-open).
  kj::Promise<Result<Attr>> open(InodeId inode);
  // Up to `len` bytes at `off`; fewer at the end of the file.
  kj::Promise<Result<kj::Array<kj::byte>>> read(InodeId inode, uint64_t off, uint64_t len);
  kj::Promise<Status> write(InodeId inode, uint64_t off, kj::Array<kj::byte> data, WriteMode mode);
  // Writes out buffered data and commits the size; reports any write-back failure.
  kj::Promise<Status> flush(InodeId inode);
  // flush, then makes every shard written and the metadata durable. With `dataOnly`
  // (fdatasync) the metadata only if the size changed.
  kj::Promise<Status> fsync(InodeId inode, bool dataOnly = false);
  // The last close of one open: flush and tell the meta server.
  kj::Promise<Status> release(InodeId inode);
  // Metadata durable on the meta server.
  kj::Promise<Status> syncMeta();

  // Called by the mount at unmount: flush everything still buffered.
  kj::Promise<Status> flushAll();

  // fallocate(2) (client/client_fallocate.cc); `mode` takes its FALLOC_FL_* flags:
  //   0, KEEP_SIZE: every chunk of [off, off + len) exists afterwards — placed, its shards
  //     created empty — so data already there stays and the rest reads as zeros; the size
  //     grows to off + len unless KEEP_SIZE. The chunk servers reserve the disk space the
  //     range's shards need (reserveRange); kNoSpace if one cannot.
  //   PUNCH_HOLE|KEEP_SIZE: the range reads as zeros, the size stays. Chunks wholly inside it
  //     are dropped (the meta server sends their shards to garbage; SEEK_HOLE finds them);
  //     in the others the whole stripes are freed on the chunk servers and the rest written
  //     as zeros (DataPath::punch), under the chunk's write lease.
  //   ZERO_RANGE, ZERO_RANGE|KEEP_SIZE: as PUNCH_HOLE, and the size grows unless KEEP_SIZE.
  // Any other mode: kNotSupported. kInvalid for len 0, kTooBig past the largest file. What is
  // buffered for the file goes out first (its failure is reported here). Durable, as writes
  // are, once fsync returns.
  kj::Promise<Status> fallocate(InodeId inode, int mode, uint64_t off, uint64_t len);

  // lseek SEEK_DATA (`data`) or SEEK_HOLE from `off` (client/client_seek.cc): the offset found,
  // or nullopt (ENXIO) when `off` is at or past the end of the file (or, for data, no data
  // follows it). At chunk granularity: a chunk never written is a hole, a chunk that exists is
  // data; the end of the file is a hole.
  kj::Promise<Result<std::optional<uint64_t>>> seek(InodeId inode, uint64_t off, bool data);

  // copy_file_range(2) (client/client_clone.cc): copies up to `len` bytes of `src` at `srcOff`
  // to `dst` at `dstOff` and returns how many it copied — fewer than asked at the end of the
  // source, and possibly fewer anyway (the caller asks again for the rest, as the kernel
  // does). Whole chunks at the same place within a chunk in both files are cloned, not copied:
  // the files share them (copy-on-write) and no data moves; the rest is read and written.
  // The destination grows to cover what was copied. Both files must be open here.
  kj::Promise<Result<uint64_t>> copyRange(InodeId src, uint64_t srcOff, InodeId dst,
                                          uint64_t dstOff, uint64_t len);
  // All of `src` as `dst`, copy-on-write, at one point in time (client/client_clone.cc): both
  // flushed, then the source's chunks shared with `dst` in one meta op per kMaxCloneChunks
  // chunks (256 GiB), which gives `dst` the source's size as it applies. A writer of the
  // source on another mount gives its leases back and waits meanwhile. Both files must be
  // open here and `dst` empty (kInvalid otherwise); kInvalid for src == dst.
  kj::Promise<Status> cloneFile(InodeId src, InodeId dst);

  // --- locks (client/client_locks.cc) ---
  // Sets or drops (type 0) a lock. Taken by another owner: kWouldBlock, unless `wait` is given:
  // then it waits until granted, or until cancelLockWait(wait) (kInterrupted; a grant that
  // raced the cancel wins and returns ok). A lock taken drops this client's caches of the file.
  kj::Promise<Status> setLock(InodeId inode, LockRequest lock, std::shared_ptr<LockWait> wait = {});
  void cancelLockWait(std::shared_ptr<LockWait> wait);
  // The first lock of another owner that conflicts with `lock`; type 0 if none.
  kj::Promise<Result<LockRequest>> getLock(InodeId inode, LockRequest lock);
  // Drops this session's locks on `inode` of `owner` (0: any) through `handle` (0: any); with
  // `posixOnly` flock locks stay (close(2) drops a process's fcntl locks, not its flocks). No
  // meta call if this client never locked anything so.
  kj::Promise<Status> releaseLocks(InodeId inode, uint64_t owner, uint64_t handle, bool posixOnly);
  // How long the meta leader keeps one blocking lock request before it is asked again.
  static constexpr uint64_t kLockWaitMs = 2'000;

 private:

  // The descriptors of the chunks of `inode` that exist, with first <= index < first + count.
  kj::Promise<Result<std::vector<ChunkDesc>>> getChunks(InodeId inode, uint64_t first,
                                                        uint64_t count);
  struct FileState;
  FileState& state(InodeId inode, uint64_t metaSize);
  FileState* find(InodeId inode);
  void dropIfIdle(InodeId inode);
  Attr merge(Attr attr);

  // The chunk at `index` (nullopt if it does not exist). With `allocate`: with this session's
  // write lease on it, placed first if it does not exist.
  kj::Promise<Result<std::optional<ChunkDesc>>> chunk(FileState& f, uint64_t index, bool allocate);
  struct Leased {
    ChunkDesc chunk;
    bool created;
  };
  // Asks for the write lease until granted or `deadline` (another session holds it: busy); a
  // lease that had a holder before is fenced on the chunk servers before it is returned.
  kj::Promise<Result<Leased>> acquireLease(InodeId inode, uint64_t index, kj::TimePoint deadline);
  // Marks `shards` of the chunk stale at the meta server (we hold its lease) and caches the
  // answer; the chunk as it is then.
  // With `resynced`, also that this client re-synced it (ChunkDesc::resync).
  kj::Promise<Result<ChunkDesc>> markStale(InodeId inode, const ChunkDesc& chunk, uint32_t shards,
                                           bool resynced = false);
  void leaseLost(InodeId inode, const ChunkDesc& chunk);
  // Applies what the chunk's write log holds of this client's writes (DataPath::drainLog).
  kj::Promise<Status> drainChunkLog(InodeId inode, uint64_t index);

  // After a write (or punch) of the chunk's shards: a stale answer means the lease is lost
  // (kIo); shards `missed` are marked stale before the chunk counts as written.
  kj::Promise<Result<ChunkDesc>> afterShardWrite(InodeId inode, const ChunkDesc& desc,
                                               Result<uint32_t> missed);
  kj::Promise<Status> writeThrough(FileState& f, uint64_t off, kj::ArrayPtr<const kj::byte> data,
                                   bool sync);
  // Starts writing the pending buffer out; with `sync`, each shard syncs what it is sent before
  // answering (an fsync's own flush: no second round of syncs for it).
  void startFlush(FileState& f, bool sync = false);
  // Resolves when nothing is pending or in flight for the file; reports a kept failure.
  kj::Promise<Status> drain(FileState& f, bool sync = false);
  kj::Promise<Status> readChunks(FileState& f, uint64_t off, kj::ArrayPtr<kj::byte> out);
  kj::Promise<Status> commit(FileState& f);
  // fdatasync of every shard of the chunks written since the last sync.
  kj::Promise<Status> syncShards(FileState& f);
  struct Unsynced {
    ChunkDesc chunk;
    uint32_t shards = 0;  // bit j: shard j was written
  };
  // Shards whose server cannot sync them are marked stale (the chunk's own tolerance allowing).
  kj::Promise<Status> syncChunks(InodeId inode, const std::map<uint64_t, Unsynced>& chunks);
  // Which shards a write of [off, off+len) of a chunk touches; every one when `creating`.
  static uint32_t shardsWritten(const Layout& layout, uint64_t off, uint64_t len, bool creating);
  void trimClosedUnsynced();
  kj::Promise<Status> truncateData(FileState& f, uint64_t newSize);
  // Drops cached descriptors of chunks `first` and later (the meta server drops the chunks).
  void forgetChunksFrom(FileState& f, uint64_t first);

  // --- fallocate (client_fallocate.cc) ---
  // Mode 0: reserves disk space for [off, end) of the file on every shard of every chunk it
  // covers, placing the chunks that do not exist. On failure the chunks it placed (and nobody
  // wrote since) are dropped again.
  kj::Promise<Status> reserveRange(InodeId inode, uint64_t off, uint64_t end);
  // The chunk at `index` and those after it, up to `end`; `placed` learns the chunks placed.
  kj::Promise<Status> reserveChunks(InodeId inode, uint64_t off, uint64_t end, uint64_t index,
                                    std::shared_ptr<std::vector<uint64_t>> placed);
  // Drops the chunks at `indexes` that this client placed and nobody wrote (fresh, no write
  // recorded), in runs of consecutive indexes.
  kj::Promise<Status> dropUnwritten(InodeId inode, std::vector<uint64_t> indexes);
  // Zeroes [off, end) of the file: partial chunks through DataPath::punch, whole ones dropped.
  kj::Promise<Status> punchRange(InodeId inode, uint64_t off, uint64_t end);
  // Zeroes chunk bytes [off, off + len) of the chunk at `index`, if it exists.
  kj::Promise<Status> zeroInChunk(InodeId inode, uint64_t index, uint64_t off, uint64_t len);
  // Drops the chunks first <= index < end at the meta server, after this client's own work
  // on them (write logs, lease releases) is done, and forgets them here.
  kj::Promise<Status> dropChunks(InodeId inode, uint64_t first, uint64_t end);
  kj::Promise<Status> dropBatch(InodeId inode, uint64_t first, uint64_t end);
  // `call()` again every 100 ms while it answers busy — a chunk it would drop is leased to
  // another session, which the meta leader asked to give it back — for at most metaRetryMs.
  template <typename T, typename Call>
  kj::Promise<Result<T>> whileBusy(Call call, std::optional<kj::TimePoint> deadline = {}) {
    kj::TimePoint until =
        deadline ? *deadline : timer_.now() + config_.metaRetryMs * kj::MILLISECONDS;
    return call().then([this, call, until](Result<T> r) mutable -> kj::Promise<Result<T>> {
      if (r || r.code() != Errc::kBusy || timer_.now() >= until) return kj::mv(r);
      return timer_.afterDelay(100 * kj::MILLISECONDS).then([this, call, until]() mutable {
        return whileBusy<T>(kj::mv(call), until);
      });
    });
  }
  // --- clones (client_clone.cc) ---
  kj::Promise<Result<uint64_t>> copyBytes(InodeId src, uint64_t srcOff, InodeId dst,
                                          uint64_t dstOff, uint64_t len);
  // Gives back the write leases this session holds on chunks first <= index < end of `inode`
  // and waits until they are released (kIo if one is kept: its writes could not be synced).
  kj::Promise<Status> giveBackLeases(InodeId inode, uint64_t first, uint64_t end);
  // Takes the lease of each chunk of the source range that another session holds or that
  // waits for a re-sync (so it is this session's to give back).
  kj::Promise<Status> settleForClone(InodeId src, uint64_t first, uint64_t count);
  // Shares `count` chunks of `src` from srcFirst with `dst` from dstFirst (meta clone), whose
  // size becomes at least `size` (with `sizeOfSrc`: the source's size then); asks again while
  // the meta leader answers busy.
  kj::Promise<Status> cloneChunks(InodeId src, uint64_t srcFirst, InodeId dst, uint64_t dstFirst,
                                  uint64_t count, uint64_t size, bool sizeOfSrc = false);
  kj::Promise<Status> cloneCall(InodeId src, uint64_t srcFirst, InodeId dst, uint64_t dstFirst,
                                uint64_t count, uint64_t size, bool sizeOfSrc,
                                kj::TimePoint deadline);
  kj::Promise<Status> clonePieces(InodeId src, InodeId dst, uint64_t first, uint64_t chunks);
  void forgetChunkRange(FileState& f, uint64_t first, uint64_t end);
  // Creates the shards of a chunk this client placed and never wrote (FreshChunk); the chunk
  // as it is then (shards it could not create are stale).
  kj::Promise<Result<ChunkDesc>> createFreshShards(InodeId inode, const ChunkDesc& chunk);

  // --- write leases held (client_leases.cc) ---
  struct LeaseUse {
    bool held = false;  // granted to this session, not given back nor lost
    uint64_t epoch = 0;
    int inflight = 0;   // writes and syncs under the lease now
    kj::TimePoint lastUse = kj::origin<kj::TimePoint>();
    std::vector<kj::Own<kj::PromiseFulfiller<void>>> idle;  // woken when inflight is 0
    kj::Maybe<kj::ForkedPromise<void>> releasing;           // letGo under way
  };
  using LeaseKey = std::pair<InodeId, uint64_t>;
  // The lease on `chunk` was granted to this session.
  void noteLeased(InodeId inode, const ChunkDesc& chunk);
  // Whether this session holds the lease of `chunk` (as cached) and may write it now.
  bool holds(InodeId inode, uint64_t index, const ChunkDesc& chunk) const;
  // The chunk at `index` under this session's lease, counted in use until endUse.
  kj::Promise<Result<ChunkDesc>> useLease(InodeId inode, uint64_t index);
  void beginUse(InodeId inode, uint64_t index);
  void endUse(InodeId inode, uint64_t index);
  // Gives the lease back once the writes under it are done and synced (recalled, or idle).
  void letGo(InodeId inode, uint64_t index, const char* why);
  kj::Promise<void> releaseLease(InodeId inode, uint64_t index, uint64_t epoch);
  // Leases unused for leaseIdleMs go.
  void releaseIdle();
  bool anyLeaseHeld() const;
  // The leases of `inode` at `first` <= index < `end` are gone (close, truncate, punch):
  // forget them.
  void forgetLeases(InodeId inode, uint64_t first = 0, uint64_t end = UINT64_MAX);
  // What was written to the chunk at `index` and not synced (taken out of the file's list, or
  // of the list its last close left), and putting it back (client.cc).
  std::map<uint64_t, Unsynced> takeUnsynced(InodeId inode, uint64_t index);
  void restoreUnsynced(InodeId inode, const std::map<uint64_t, Unsynced>& chunks);
  // The cached descriptor of the chunk no longer counts as leased at `epoch`.
  void uncacheLease(InodeId inode, uint64_t index, uint64_t epoch);

  // --- the session (start, keepalive, renewal after expiry) ---
  struct Opened {
    uint64_t session = 0, timeoutMs = 0;
  };
  kj::Promise<Result<Opened>> openSession();
  kj::Promise<void> keepAliveLoop();
  // The session `stale` expired: opens a new one and re-opens the files held open. True when
  // requests may be sent again (under a new session); one renewal at a time.
  kj::Promise<bool> renewSession(uint64_t stale);
  kj::Promise<void> reopenAll(std::vector<std::pair<InodeId, int>> files, size_t next);

  // --- coherence (client_watch.cc) ---
  class WatcherImpl;
  kj::Promise<void> watchLoop();
  void renewWatch();
  void stopWatching();
  void invalidated(Invalidation inv);
  // The cached chunk map (but what this session holds leases on) and size of the file are no
  // longer to be trusted.
  void dropFileCache(FileState& f);
  // The file's cached security.capability (getxattr) is no longer to be trusted.
  void dropCapability(FileState& f);
  // This client changes an xattr of `inode`: called before and after.
  void xattrChanging(InodeId inode);

  kj::Timer& timer_;
  ClientConfig config_;
  MetaLink meta_;
  ChunkServers servers_;
  DataPath data_;
  SessionId session_;
  std::unordered_map<InodeId, std::unique_ptr<FileState>> files_;
  // Chunks written through files that are closed now and not synced since; a new open takes
  // them over. Past kMaxClosedUnsynced files, some are synced and forgotten.
  std::unordered_map<InodeId, std::map<uint64_t, Unsynced>> closedUnsynced_;
  static constexpr size_t kMaxClosedUnsynced = 100'000;
  struct TaskErrors : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } taskErrors_;
  kj::TaskSet tasks_{taskErrors_};
  std::map<LeaseKey, LeaseUse> leases_;
  // Files this session took locks on, with the owners and handles used: a close that matches
  // none of them needs no releaseLocks call.
  struct Locked {
    std::set<uint64_t> owners, handles;
  };
  std::unordered_map<InodeId, Locked> locked_;
  uint64_t keepaliveMs_ = 10'000;
  kj::TimePoint lastKeepAlive_ = kj::origin<kj::TimePoint>();
  bool renewing_ = false;
  uint64_t renewingFrom_ = 0;  // the expired session being replaced
  kj::Maybe<kj::ForkedPromise<bool>> renewal_;
  std::function<void(const Invalidation&)> invalidationSink_;
  WatcherImpl* watcherImpl_ = nullptr;  // owned by watcherCap_; told when we go
  kj::Maybe<proto::Watcher::Client> watcherCap_;
  bool watchInFlight_ = false;
  bool live_ = false;  // a confirmed registration stands (see coherent())
  uint64_t invalidations_ = 0;  // invalidations acted on so far
  uint64_t xattrEpochs_ = 0;    // the last FileState::xattrEpoch given out
  kj::TimePoint confirmedAt_ = kj::origin<kj::TimePoint>();  // when its renewal was sent
  kj::Promise<void> watching_ = nullptr;
  kj::Promise<void> keepalive_ = nullptr;  // last: stops before what it uses goes
};

}  // namespace tessera::client
