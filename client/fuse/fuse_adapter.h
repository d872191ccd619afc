// client/fuse/fuse_adapter.h — the FUSE lowlevel adapter: turns kernel requests into Client
// calls and replies when they resolve, so one thread keeps many requests in flight. Reads
// /dev/fuse from the KJ event loop (non-blocking, edge-triggered).
//
// Every request gets exactly one reply (forget: fuse_reply_none). Errors arrive as Errc values
// and become errno here; a kj::Exception that escapes a Client call (a bug or a transport fault)
// becomes EIO (ETIMEDOUT for timeouts) for that request alone.
//
// Coherence with other mounts (DESIGN.md "Client and FUSE mount"):
//   - Attribute and entry timeouts are `liveAttrTimeout` while the client is coherent() (the
//     meta leader pushes every other mount's change here: invalidate()), `attrTimeout` else.
//     A reply whose request started before an invalidation arrived gets the short one too: it
//     may carry what the invalidation just dropped.
//   - Opens keep the page cache (keep_cache) only while coherent and only if the file's size,
//     mtime and ctime are those this mount saw at its last open of it, with no invalidation of
//     it since (close-to-open). Otherwise the kernel drops the file's pages at open.
//   - The adapter owns the kernel's lookup counts (+1 per entry handed out, -n per forget) and
//     the entries it gave a long timeout: what invalidate({all}) drops, through the Notifier
//     (client/fuse/notifier.h), which talks to the kernel on a thread of its own.
// Not thread-safe: lives on the mount's event loop.
#pragma once
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <kj/async-unix.h>

#include "client/client.h"
#include "client/fuse/notifier.h"

namespace tessera::client {

struct MountOptions {
  // Seconds the kernel may cache attributes and entries while invalidations from the meta
  // leader are not live (not registered yet, lease run out), and with them (tessera-mount
  // --attr-timeout, --live-attr-timeout).
  double attrTimeout = 1.0;
  double liveAttrTimeout = 30.0;
  bool allowOther = false;    // other users may use the mount (POSIX permissions apply)
  std::string fsname = "tessera";
};

class FuseAdapter {
 public:
  FuseAdapter(Client& client, kj::UnixEventPort& eventPort, const MountOptions& options);
  ~FuseAdapter();

  // Creates the session and mounts it at `mountpoint`. kBusy / kIo with the reason.
  Status mount(const std::string& mountpoint);
  // Serves requests until the file system is unmounted (or stop() is called).
  kj::Promise<void> run();
  // Unmounts; run() resolves.
  void stop();
  // Resolves once every request read so far is answered and its work done.
  kj::Promise<void> settled() { return tasks_.onEmpty(); }

  // What another mount changed (Client::watch's sink): the kernel drops it, asynchronously.
  void invalidate(const Invalidation& inv);
  // Drops what the kernel and the client cache of `ino` (attributes, pages, chunk map) and
  // the next open of it does not keep pages: e.g. when a lock on it is acquired (the holder
  // before may have written it through another mount).
  void revalidate(fuse_ino_t ino);
  // The kernel-cache notifier, once mounted (nullptr before); its calls are for this loop.
  Notifier* notifier() { return notifier_.get(); }

  // --- called by the static FUSE callbacks ---
  void forget(fuse_ino_t ino, uint64_t n);
  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void getattr(fuse_req_t req, fuse_ino_t ino);
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int toSet, fuse_file_info* fi);
  void readlink(fuse_req_t req, fuse_ino_t ino);
  void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir);
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newParent,
              const char* newName, unsigned flags);
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newParent, const char* newName);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
  void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi);
  void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);
  void copyFileRange(fuse_req_t req, fuse_ino_t in, off_t offIn, fuse_ino_t out, off_t offOut,
                     size_t len, int flags);
  void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                 fuse_file_info* fi);
  void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void fsync(fuse_req_t req, fuse_ino_t ino, bool datasync, fuse_file_info* fi);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus);
  void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void fsyncdir(fuse_req_t req);
  void statfs(fuse_req_t req);
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags);
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  void getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock);
  void setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, bool sleep);
  void flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op);
  void ioctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, fuse_file_info* fi, unsigned flags,
             const void* in, size_t inSize, size_t outSize);

 private:
  struct OpenFile {
    InodeId inode;
    int flags;
  };
  struct OpenDir {
    InodeId inode;
    // The last page fetched, kept because the kernel's buffer rarely takes a whole page.
    uint64_t cachedFrom = UINT64_MAX;
    bool cachedPlus = false;
    uint64_t cachedSeq = 0;  // invalidation count when it was asked for
    DirPage cached;
  };

  void replyEntry(fuse_req_t req, const Attr& attr);
  // Sets or drops a lock for `req`; with `sleep` it waits, and a signal interrupts the wait.
  void takeLock(fuse_req_t req, InodeId inode, LockRequest want, bool sleep);
  // Has the notifier drop the kernel's caches of `ino`, or holds that back while a getattr of it
  // is being answered (see getattr).
  void invalInode(fuse_ino_t ino);
  // A getattr of `ino` was answered: what was held back goes to the notifier.
  void attrsAnswered(fuse_ino_t ino);
  // Drops the kernel's and the client's caches of `inode` (a lock on it was granted, or it was
  // cloned onto); resolves once the kernel's are gone.
  kj::Promise<void> forgetFile(InodeId inode);
  // What the kernel holds of an inode: its lookup count, the entries it got a long timeout
  // under, and the version (size, mtime, ctime) of the file when this mount last opened it
  // with coherence live (for keep_cache).
  struct Known {
    uint64_t nlookup = 0;
    std::vector<std::pair<uint64_t, std::string>> entries;
    bool versioned = false;
    uint64_t size = 0;
    int64_t mtimeNs = 0, ctimeNs = 0;
  };
  static constexpr size_t kMaxLongEntries = 1'000'000;
  // The timeout for a reply to a request that started at invalidation count `seq`.
  double timeoutFor(uint64_t seq) const;
  // Replies with `attr` as the entry `name` in `parent` (lookup, mknod, link...), counting the
  // lookup and remembering a long-timed entry.
  void replyEntry(fuse_req_t req, const Attr& attr, fuse_ino_t parent, const char* name,
                  uint64_t seq);
  fuse_entry_param entryParam(const Attr& attr, fuse_ino_t parent, const std::string& name,
                              uint64_t seq);
  // The kernel took the entry (+1 lookup).
  void lookedUp(fuse_ino_t ino);
  // Long-timed entries: remembered while their inode is known, so invalidate({all}) finds them.
  void rememberEntry(fuse_ino_t ino, fuse_ino_t parent, const std::string& name);
  void forgetEntry(fuse_ino_t parent, const std::string& name);
  Notifier::Known snapshot() const;
  template <typename T, typename F>
  void handle(fuse_req_t req, kj::Promise<T> promise, F&& onValue);
  kj::Promise<void> pump();

  Client& client_;
  kj::UnixEventPort& eventPort_;
  MountOptions options_;
  fuse_session* session_ = nullptr;
  kj::Own<kj::UnixEventPort::FdObserver> observer_;
  fuse_buf buf_ = {};
  struct ErrorHandler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } errorHandler_;
  // Requests whose answer is still being worked on: answered EIO when the mount goes away, so
  // libfuse frees them (declared before tasks_, whose tasks remove their entries).
  std::set<fuse_req_t> unanswered_;
  // Getattrs being answered, per inode, and the inodes whose invalidation waits for them
  // (declared before tasks_: the requests' tasks update them when they go).
  std::unordered_map<uint64_t, uint32_t> attrsAsked_;
  std::unordered_set<uint64_t> held_;
  bool closing_ = false;  // the destructor runs: nothing more goes to the notifier
  kj::TaskSet tasks_;
  uint64_t nextHandle_ = 1;
  std::map<uint64_t, OpenFile> files_;
  std::map<uint64_t, OpenDir> dirs_;
  // Tokens of sources for a whole-file clone (fs/clone_ioctl.h): unguessable, one use, 60 s.
  struct CloneToken {
    fuse_ino_t inode;
    std::chrono::steady_clock::time_point expires;
  };
  static constexpr size_t kMaxCloneTokens = 4096;
  std::unordered_map<uint64_t, CloneToken> cloneTokens_;
  kj::Own<kj::PromiseFulfiller<void>> stopped_;
  // Coherence.
  std::unordered_map<uint64_t, Known> known_;
  std::map<std::pair<uint64_t, std::string>, uint64_t> longEntries_;  // (parent, name) -> inode
  uint64_t invalSeq_ = 0;  // invalidations received so far
  std::unique_ptr<Notifier> notifier_;
};

// struct stat of an Attr, as the kernel wants it.
struct stat toStat(const Attr& a);

}  // namespace tessera::client
