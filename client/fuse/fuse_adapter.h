// client/fuse/fuse_adapter.h — the FUSE lowlevel adapter: turns kernel requests into Client
// calls and replies when they resolve, so one thread keeps many requests in flight. Reads
// /dev/fuse from the KJ event loop (non-blocking, edge-triggered).
//
// Every request gets exactly one reply (forget: fuse_reply_none). Errors arrive as Errc values
// and become errno here; a kj::Exception that escapes a Client call (a bug or a transport fault)
// becomes EIO (ETIMEDOUT for timeouts) for that request alone.
// Not thread-safe: lives on the mount's event loop.
#pragma once
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <map>
#include <set>
#include <string>

#include <kj/async-unix.h>

#include "client/client.h"

namespace tessera::client {

struct MountOptions {
  double attrTimeout = 1.0;   // seconds the kernel may cache attributes and entries
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

  // --- called by the static FUSE callbacks ---
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
    DirPage cached;
  };

  void replyEntry(fuse_req_t req, const Attr& attr);
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
  kj::TaskSet tasks_;
  uint64_t nextHandle_ = 1;
  std::map<uint64_t, OpenFile> files_;
  std::map<uint64_t, OpenDir> dirs_;
  kj::Own<kj::PromiseFulfiller<void>> stopped_;
};

// struct stat of an Attr, as the kernel wants it.
struct stat toStat(const Attr& a);

}  // namespace tessera::client
