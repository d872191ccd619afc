#include "client/fuse/fuse_adapter.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <vector>

#include "fs/clone_ioctl.h"
#include "fs/log.h"
#include "fs/rpc.h"

namespace tessera::client {
namespace {

FuseAdapter& self(fuse_req_t req) { return *static_cast<FuseAdapter*>(fuse_req_userdata(req)); }

int errnoFor(const kj::Exception& e) {
  return errorFromException(e, "").code == Errc::kTimedOut ? ETIMEDOUT : EIO;
}

int errnoFor(const Error& e) { return toErrno(e.code); }

timespec toTimespec(int64_t ns) {
  timespec t;
  t.tv_sec = ns / 1'000'000'000;
  t.tv_nsec = ns % 1'000'000'000;
  if (t.tv_nsec < 0) {
    t.tv_nsec += 1'000'000'000;
    t.tv_sec -= 1;
  }
  return t;
}

int64_t toNs(const timespec& t) { return int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }

// --- static trampolines ------------------------------------------------------------------------

void opInit(void* userdata, fuse_conn_info* conn) { static_cast<FuseAdapter*>(userdata)->init(conn); }
void opLookup(fuse_req_t r, fuse_ino_t p, const char* n) { self(r).lookup(r, p, n); }
void opForget(fuse_req_t r, fuse_ino_t i, uint64_t n) {
  self(r).forget(i, n);
  fuse_reply_none(r);
}
void opForgetMulti(fuse_req_t r, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) self(r).forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(r);
}
void opGetattr(fuse_req_t r, fuse_ino_t i, fuse_file_info*) { self(r).getattr(r, i); }
void opSetattr(fuse_req_t r, fuse_ino_t i, struct stat* a, int s, fuse_file_info* fi) {
  self(r).setattr(r, i, a, s, fi);
}
void opReadlink(fuse_req_t r, fuse_ino_t i) { self(r).readlink(r, i); }
void opMknod(fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, dev_t d) {
  self(r).mknod(r, p, n, m, d);
}
void opMkdir(fuse_req_t r, fuse_ino_t p, const char* n, mode_t m) {
  self(r).mknod(r, p, n, (m & 07777) | S_IFDIR, 0);
}
void opUnlink(fuse_req_t r, fuse_ino_t p, const char* n) { self(r).unlink(r, p, n, false); }
void opRmdir(fuse_req_t r, fuse_ino_t p, const char* n) { self(r).unlink(r, p, n, true); }
void opSymlink(fuse_req_t r, const char* t, fuse_ino_t p, const char* n) {
  self(r).symlink(r, t, p, n);
}
void opRename(fuse_req_t r, fuse_ino_t p, const char* n, fuse_ino_t np, const char* nn,
              unsigned f) {
  self(r).rename(r, p, n, np, nn, f);
}
void opLink(fuse_req_t r, fuse_ino_t i, fuse_ino_t np, const char* nn) { self(r).link(r, i, np, nn); }
void opOpen(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).open(r, i, fi); }
void opRead(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
  self(r).read(r, i, s, o, fi);
}
void opWrite(fuse_req_t r, fuse_ino_t i, const char* b, size_t s, off_t o, fuse_file_info* fi) {
  self(r).write(r, i, b, s, o, fi);
}
void opFlush(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).flush(r, i, fi); }
void opRelease(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).release(r, i, fi); }
void opFsync(fuse_req_t r, fuse_ino_t i, int datasync, fuse_file_info* fi) {
  self(r).fsync(r, i, datasync != 0, fi);
}
void opOpendir(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).opendir(r, i, fi); }
void opReaddir(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
  self(r).readdir(r, i, s, o, fi, false);
}
void opReaddirplus(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
  self(r).readdir(r, i, s, o, fi, true);
}
void opReleasedir(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) { self(r).releasedir(r, i, fi); }
void opFsyncdir(fuse_req_t r, fuse_ino_t, int, fuse_file_info*) { self(r).fsyncdir(r); }
void opStatfs(fuse_req_t r, fuse_ino_t) { self(r).statfs(r); }
void opSetxattr(fuse_req_t r, fuse_ino_t i, const char* n, const char* v, size_t s, int f) {
  self(r).setxattr(r, i, n, v, s, f);
}
void opGetxattr(fuse_req_t r, fuse_ino_t i, const char* n, size_t s) { self(r).getxattr(r, i, n, s); }
void opListxattr(fuse_req_t r, fuse_ino_t i, size_t s) { self(r).listxattr(r, i, s); }
void opRemovexattr(fuse_req_t r, fuse_ino_t i, const char* n) { self(r).removexattr(r, i, n); }
void opCreate(fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, fuse_file_info* fi) {
  self(r).create(r, p, n, m, fi);
}
void opGetlk(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, struct flock* l) {
  self(r).getlk(r, i, fi, l);
}
void opSetlk(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, struct flock* l, int sleep) {
  self(r).setlk(r, i, fi, l, sleep != 0);
}
void opFlock(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi, int op) { self(r).flock(r, i, fi, op); }
void opLseek(fuse_req_t r, fuse_ino_t i, off_t o, int w, fuse_file_info* fi) {
  self(r).lseek(r, i, o, w, fi);
}

void opFallocate(fuse_req_t r, fuse_ino_t i, int m, off_t o, off_t l, fuse_file_info* fi) {
  self(r).fallocate(r, i, m, o, l, fi);
}

void opCopyFileRange(fuse_req_t r, fuse_ino_t in, off_t offIn, fuse_file_info* fiIn,
                     fuse_ino_t out, off_t offOut, fuse_file_info* fiOut, size_t len, int flags) {
  self(r).copyFileRange(r, in, offIn, out, offOut, len, flags);
}

void opIoctl(fuse_req_t r, fuse_ino_t i, unsigned cmd, void* arg, fuse_file_info* fi,
             unsigned flags, const void* in, size_t inSize, size_t outSize) {
  self(r).ioctl(r, i, cmd, fi, flags, in, inSize, outSize);
}

fuse_lowlevel_ops makeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = opInit;
  ops.lookup = opLookup;
  ops.forget = opForget;
  ops.forget_multi = opForgetMulti;
  ops.getattr = opGetattr;
  ops.setattr = opSetattr;
  ops.readlink = opReadlink;
  ops.mknod = opMknod;
  ops.mkdir = opMkdir;
  ops.unlink = opUnlink;
  ops.rmdir = opRmdir;
  ops.symlink = opSymlink;
  ops.rename = opRename;
  ops.link = opLink;
  ops.open = opOpen;
  ops.read = opRead;
  ops.write = opWrite;
  ops.flush = opFlush;
  ops.release = opRelease;
  ops.fsync = opFsync;
  ops.opendir = opOpendir;
  ops.readdir = opReaddir;
  ops.readdirplus = opReaddirplus;
  ops.releasedir = opReleasedir;
  ops.fsyncdir = opFsyncdir;
  ops.statfs = opStatfs;
  ops.setxattr = opSetxattr;
  ops.getxattr = opGetxattr;
  ops.listxattr = opListxattr;
  ops.removexattr = opRemovexattr;
  ops.create = opCreate;
  ops.lseek = opLseek;
  ops.getlk = opGetlk;
  ops.setlk = opSetlk;
  ops.flock = opFlock;
  ops.fallocate = opFallocate;
  ops.copy_file_range = opCopyFileRange;
  ops.ioctl = opIoctl;
  return ops;
}

const fuse_lowlevel_ops kOps = makeOps();

}  // namespace

struct stat toStat(const Attr& a) {
  struct stat st {};
  st.st_ino = a.inode.value;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = a.rdev;
  st.st_size = off_t(a.size);
  st.st_blocks = blkcnt_t(a.blocks);
  st.st_blksize = 1 << 20;  // tools size their buffers by it; a MiB fills stripes
  st.st_atim = toTimespec(a.atimeNs);
  st.st_mtim = toTimespec(a.mtimeNs);
  st.st_ctim = toTimespec(a.ctimeNs);
  return st;
}

void FuseAdapter::ErrorHandler::taskFailed(kj::Exception&& e) {
  log::error("request task failed: ", e.getDescription());
}

FuseAdapter::FuseAdapter(Client& client, kj::UnixEventPort& eventPort, const MountOptions& options)
    : client_(client), eventPort_(eventPort), options_(options), tasks_(errorHandler_) {}

FuseAdapter::~FuseAdapter() {
  closing_ = true;
  observer_ = nullptr;
  // Work still under way (a meta call waiting for a leader, say) is cancelled with tasks_; its
  // requests get EIO now. The kernel may be gone already: libfuse then just frees them.
  for (fuse_req_t req : std::set<fuse_req_t>(unanswered_)) fuse_reply_err(req, EIO);
  unanswered_.clear();
  // After the answers: a kernel call of the notifier may wait for a request answered above.
  if (notifier_) notifier_->stop();
  if (session_) {
    // Also after the kernel let go (fusermount3 -u): libfuse sees the dead device, skips the
    // unmount and frees what it kept.
    fuse_session_unmount(session_);
    fuse_session_destroy(session_);
  }
  free(buf_.mem);
}

Status FuseAdapter::mount(const std::string& mountpoint) {
  std::string opts = "default_permissions,fsname=" + options_.fsname + ",subtype=tessera";
  if (options_.allowOther) opts += ",allow_other";
  std::vector<const char*> argv{"tessera-mount", "-o", opts.c_str()};
  fuse_args args = FUSE_ARGS_INIT(int(argv.size()), const_cast<char**>(argv.data()));
  session_ = fuse_session_new(&args, &kOps, sizeof kOps, this);
  fuse_opt_free_args(&args);
  if (!session_) return Error{Errc::kIo, "cannot create the FUSE session (options: " + opts + ")"};
  if (fuse_session_mount(session_, mountpoint.c_str()) != 0) {
    return Error{Errc::kIo, "cannot mount on " + mountpoint + " (is /dev/fuse available?)"};
  }
  int fd = fuse_session_fd(session_);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
    return Error{Errc::kIo, std::string("cannot make /dev/fuse non-blocking: ") + strerror(errno)};
  }
  observer_ = kj::heap<kj::UnixEventPort::FdObserver>(eventPort_, fd,
                                                      kj::UnixEventPort::FdObserver::OBSERVE_READ);
  notifier_ = std::make_unique<Notifier>(session_, [this] { return snapshot(); });
  return Status();
}

kj::Promise<void> FuseAdapter::run() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  stopped_ = kj::mv(paf.fulfiller);
  return pump().exclusiveJoin(kj::mv(paf.promise));
}

void FuseAdapter::stop() {
  if (stopped_ && stopped_->isWaiting()) stopped_->fulfill();
}

// Reads requests until /dev/fuse has none (it is edge-triggered, so we must reach EAGAIN before
// waiting), yielding to the loop every few requests so replies and RPCs make progress.
kj::Promise<void> FuseAdapter::pump() {
  for (int i = 0; i < 32; ++i) {
    int res = fuse_session_receive_buf(session_, &buf_);
    if (res == -EINTR) continue;
    if (res == -EAGAIN) {
      return observer_->whenBecomesReadable().then([this] { return pump(); });
    }
    if (res <= 0 || fuse_session_exited(session_)) {
      if (res < 0 && res != -ENODEV) log::error("reading /dev/fuse: ", strerror(-res));
      return kj::READY_NOW;
    }
    fuse_session_process_buf(session_, &buf_);
  }
  return kj::evalLater([this] { return pump(); });
}

template <typename T, typename F>
void FuseAdapter::handle(fuse_req_t req, kj::Promise<T> promise, F&& onValue) {
  unanswered_.insert(req);
  tasks_.add(promise
                 .then(kj::fwd<F>(onValue),
                       [req](kj::Exception&& e) {
                         log::warn("request failed: ", e.getDescription());
                         fuse_reply_err(req, errnoFor(e));
                       })
                 .attach(kj::defer([this, req] { unanswered_.erase(req); })));
}

void FuseAdapter::init(fuse_conn_info* conn) {
  conn->max_write = 1 << 20;
  conn->max_read = 0;
  conn->max_readahead = 1 << 20;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_ASYNC_READ);
  want(FUSE_CAP_ASYNC_DIO);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_AUTO_INVAL_DATA);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_READDIRPLUS_AUTO);
  // Locks are cluster-wide (the meta service keeps them): the kernel sends every fcntl, OFD and
  // flock request here.
  want(FUSE_CAP_POSIX_LOCKS);
  want(FUSE_CAP_FLOCK_LOCKS);
  // We truncate through setattr.
  conn->want &= ~(FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ |
                  FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  log::info("kernel FUSE protocol ", conn->proto_major, ".", conn->proto_minor,
            ", max_write ", conn->max_write);
}

// --- coherence: timeouts, lookup counts, invalidations ------------------------------------------

double FuseAdapter::timeoutFor(uint64_t seq) const {
  // An invalidation since the request started may have dropped what its answer carries (the
  // meta server read it before the change): cache that answer briefly only.
  if (seq != invalSeq_ || !client_.coherent()) return options_.attrTimeout;
  return std::max(options_.liveAttrTimeout, options_.attrTimeout);
}

fuse_entry_param FuseAdapter::entryParam(const Attr& attr, fuse_ino_t parent,
                                         const std::string& name, uint64_t seq) {
  fuse_entry_param e{};
  e.ino = attr.inode.value;
  e.generation = 1;
  e.attr = toStat(attr);
  e.attr_timeout = timeoutFor(seq);
  e.entry_timeout = e.attr_timeout;
  // invalidate({all}) must be able to find every entry cached long: past the bound of what is
  // remembered, new ones are cached briefly.
  if (e.entry_timeout > options_.attrTimeout && longEntries_.size() >= kMaxLongEntries &&
      !longEntries_.count({parent, name})) {
    e.entry_timeout = options_.attrTimeout;
  }
  return e;
}

void FuseAdapter::replyEntry(fuse_req_t req, const Attr& attr, fuse_ino_t parent,
                             const char* name, uint64_t seq) {
  std::string n(name);
  fuse_entry_param e = entryParam(attr, parent, n, seq);
  if (fuse_reply_entry(req, &e) != 0) return;  // the kernel did not take it
  lookedUp(e.ino);
  if (e.entry_timeout > options_.attrTimeout) rememberEntry(e.ino, parent, n);
}

void FuseAdapter::lookedUp(fuse_ino_t ino) { known_[ino].nlookup++; }

void FuseAdapter::rememberEntry(fuse_ino_t ino, fuse_ino_t parent, const std::string& name) {
  auto key = std::make_pair(uint64_t(parent), name);
  auto [it, added] = longEntries_.try_emplace(key, ino);
  if (!added && it->second != ino) {
    // The name leads elsewhere now: the old inode no longer has it.
    auto old = known_.find(it->second);
    if (old != known_.end()) std::erase(old->second.entries, key);
    it->second = ino;
  }
  auto& entries = known_[ino].entries;
  if (std::find(entries.begin(), entries.end(), key) == entries.end()) entries.push_back(key);
}

void FuseAdapter::forgetEntry(fuse_ino_t parent, const std::string& name) {
  auto key = std::make_pair(uint64_t(parent), name);
  auto it = longEntries_.find(key);
  if (it == longEntries_.end()) return;
  auto k = known_.find(it->second);
  if (k != known_.end()) std::erase(k->second.entries, key);
  longEntries_.erase(it);
}

void FuseAdapter::forget(fuse_ino_t ino, uint64_t n) {
  auto it = known_.find(ino);
  if (it == known_.end()) return;
  Known& k = it->second;
  k.nlookup -= std::min(n, k.nlookup);
  if (k.nlookup > 0) return;
  // The kernel let go of the inode, and so of every entry that led to it.
  for (auto& key : k.entries) {
    auto e = longEntries_.find(key);
    if (e != longEntries_.end() && e->second == ino) longEntries_.erase(e);
  }
  known_.erase(it);
}

Notifier::Known FuseAdapter::snapshot() const {
  Notifier::Known out;
  out.inodes.reserve(known_.size() + 1);
  out.inodes.push_back(FUSE_ROOT_ID);  // never looked up, always known
  for (auto& [ino, k] : known_) {
    if (ino != FUSE_ROOT_ID) out.inodes.push_back(ino);
  }
  out.entries.reserve(longEntries_.size());
  for (auto& [key, ino] : longEntries_) out.entries.emplace_back(key.first, key.second);
  return out;
}

void FuseAdapter::invalidate(const Invalidation& inv) {
  ++invalSeq_;
  if (!notifier_) return;
  if (inv.all) {
    for (auto& [ino, k] : known_) k.versioned = false;
    notifier_->invalAll();
    // The kernel drops every entry the snapshot named: none is cached long any more.
    longEntries_.clear();
    for (auto& [ino, k] : known_) k.entries.clear();
    return;
  }
  for (InodeId inode : inv.inodes) {
    auto it = known_.find(inode.value);
    if (it != known_.end()) it->second.versioned = false;
    if (it != known_.end() || inode.value == FUSE_ROOT_ID) invalInode(inode.value);
  }
  for (auto& [parent, name] : inv.entries) {
    forgetEntry(parent.value, name);
    // Only a directory the kernel knows can hold a cached entry.
    if (known_.count(parent.value) || parent.value == FUSE_ROOT_ID) {
      notifier_->invalEntry(parent.value, name);
    }
  }
}

void FuseAdapter::revalidate(fuse_ino_t ino) {
  ++invalSeq_;
  client_.revalidate(InodeId(ino));
  auto it = known_.find(ino);
  if (it != known_.end()) it->second.versioned = false;
  invalInode(ino);
}

void FuseAdapter::invalInode(fuse_ino_t ino) {
  if (!notifier_) return;
  if (attrsAsked_.count(ino)) {
    held_.insert(ino);
  } else {
    notifier_->invalInode(ino);
  }
}

void FuseAdapter::attrsAnswered(fuse_ino_t ino) {
  if (closing_) return;
  auto it = attrsAsked_.find(ino);
  if (it == attrsAsked_.end() || --it->second > 0) return;
  attrsAsked_.erase(it);
  if (held_.erase(ino)) invalInode(ino);
}

// --- requests ------------------------------------------------------------------------------

void FuseAdapter::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  uint64_t seq = invalSeq_;
  handle(req, client_.lookup(InodeId(parent), name),
         [this, req, parent, seq, n = std::string(name)](Result<Attr> a) {
           if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
           replyEntry(req, *a, parent, n.c_str(), seq);
         });
}

void FuseAdapter::getattr(fuse_req_t req, fuse_ino_t ino) {
  uint64_t seq = invalSeq_;
  // A kernel invalidation of the inode that lands while the kernel waits for this answer makes
  // it throw the answer away — and lseek(SEEK_END) then returns the size it held before, older
  // than the answer. So invalidations of the inode wait until the answer is out, and then go:
  // what changed after the meta leader answered is dropped right after (and the answer is
  // cached briefly only, see timeoutFor). The lambda's end (after the reply, or on an exception)
  // lets them go.
  ++attrsAsked_[ino];
  auto answered = kj::defer([this, ino] { attrsAnswered(ino); });
  handle(req, client_.getattr(InodeId(ino)),
         [this, req, seq, answered = kj::mv(answered)](Result<Attr> a) {
           if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
           auto st = toStat(*a);
           fuse_reply_attr(req, &st, timeoutFor(seq));
         });
}

void FuseAdapter::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int toSet,
                          fuse_file_info* fi) {
  SetAttr change;
  if (toSet & FUSE_SET_ATTR_MODE) change.mode = attr->st_mode;
  if (toSet & FUSE_SET_ATTR_UID) change.uid = attr->st_uid;
  if (toSet & FUSE_SET_ATTR_GID) change.gid = attr->st_gid;
  if (toSet & FUSE_SET_ATTR_SIZE) change.size = uint64_t(attr->st_size);
  if (toSet & FUSE_SET_ATTR_ATIME_NOW) change.atimeNow = true;
  else if (toSet & FUSE_SET_ATTR_ATIME) change.atimeNs = toNs(attr->st_atim);
  if (toSet & FUSE_SET_ATTR_MTIME_NOW) change.mtimeNow = true;
  else if (toSet & FUSE_SET_ATTR_MTIME) change.mtimeNs = toNs(attr->st_mtim);
  uint64_t seq = invalSeq_;
  handle(req, client_.setattr(InodeId(ino), change), [this, req, seq](Result<Attr> a) {
    if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
    auto st = toStat(*a);
    fuse_reply_attr(req, &st, timeoutFor(seq));
  });
}

void FuseAdapter::readlink(fuse_req_t req, fuse_ino_t ino) {
  handle(req, client_.readlink(InodeId(ino)), [req](Result<std::string> t) {
    if (!t) return (void)fuse_reply_err(req, errnoFor(t.error()));
    fuse_reply_readlink(req, t->c_str());
  });
}

void FuseAdapter::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                        dev_t rdev) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  uint64_t seq = invalSeq_;
  handle(req, client_.mknod(InodeId(parent), name, mode, uint32_t(rdev), ctx->uid, ctx->gid),
         [this, req, parent, seq, n = std::string(name)](Result<Attr> a) {
           if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
           replyEntry(req, *a, parent, n.c_str(), seq);
         });
}

void FuseAdapter::symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  uint64_t seq = invalSeq_;
  handle(req,
         client_.mknod(InodeId(parent), name, S_IFLNK | 0777, 0, ctx->uid, ctx->gid, target),
         [this, req, parent, seq, n = std::string(name)](Result<Attr> a) {
           if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
           replyEntry(req, *a, parent, n.c_str(), seq);
         });
}

void FuseAdapter::unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir) {
  handle(req, client_.unlink(InodeId(parent), name, dir),
         [this, req, parent, n = std::string(name)](Status s) {
           if (s) forgetEntry(parent, n);  // the kernel drops the entry
           fuse_reply_err(req, s ? 0 : errnoFor(s.error()));
         });
}

void FuseAdapter::rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newParent,
                         const char* newName, unsigned flags) {
  handle(req, client_.rename(InodeId(parent), name, InodeId(newParent), newName, flags),
         [this, req, parent, newParent, flags, from = std::string(name),
          to = std::string(newName)](Status s) {
           if (s) {
             // The kernel moves its entries (keeping their timeouts): so does what we remember.
             auto take = [this](fuse_ino_t dir, const std::string& n) -> fuse_ino_t {
               auto it = longEntries_.find({uint64_t(dir), n});
               fuse_ino_t ino = it == longEntries_.end() ? 0 : it->second;
               forgetEntry(dir, n);
               return ino;
             };
             fuse_ino_t moved = take(parent, from);
             fuse_ino_t other = take(newParent, to);
             if (moved) rememberEntry(moved, newParent, to);
             if (other && (flags & RENAME_EXCHANGE)) rememberEntry(other, parent, from);
           }
           fuse_reply_err(req, s ? 0 : errnoFor(s.error()));
         });
}

void FuseAdapter::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newParent, const char* newName) {
  uint64_t seq = invalSeq_;
  handle(req, client_.link(InodeId(ino), InodeId(newParent), newName),
         [this, req, newParent, seq, n = std::string(newName)](Result<Attr> a) {
           if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
           replyEntry(req, *a, newParent, n.c_str(), seq);
         });
}

void FuseAdapter::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  int flags = fi->flags;
  uint64_t seq = invalSeq_;
  handle(req, client_.open(InodeId(ino)), [this, req, flags, ino, seq](Result<Attr> a) {
    if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
    // A frozen file (tessera.readonly) would refuse the first write, or only the flush after a
    // buffered one; answer at open, as a read-only mount does. The attributes came with the
    // open from the meta leader, so they are current.
    if (a->readOnly && (flags & O_ACCMODE) != O_RDONLY) {
      tasks_.add(client_.release(InodeId(ino)).ignoreResult());
      return (void)fuse_reply_err(req, EROFS);
    }
    fuse_file_info out{};
    out.flags = flags;
    out.fh = nextHandle_++;
    out.direct_io = (flags & O_DIRECT) ? 1 : 0;
    // Close-to-open: the pages the kernel holds are good only if the file is as this mount saw
    // it when it last opened it, and no invalidation could have slipped past since.
    bool live = seq == invalSeq_ && client_.coherent();
    auto k = known_.find(ino);
    if (k != known_.end()) {
      Known& v = k->second;
      out.keep_cache = live && v.versioned && v.size == a->size && v.mtimeNs == a->mtimeNs &&
                       v.ctimeNs == a->ctimeNs;
      v.versioned = live;
      v.size = a->size;
      v.mtimeNs = a->mtimeNs;
      v.ctimeNs = a->ctimeNs;
    }
    files_[out.fh] = OpenFile{InodeId(ino), flags};
    if (fuse_reply_open(req, &out) != 0) {
      // The opener went away (interrupted): undo the open.
      files_.erase(out.fh);
      tasks_.add(client_.release(InodeId(ino)).ignoreResult());
    }
  });
}

void FuseAdapter::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                         fuse_file_info* fi) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  int flags = fi->flags;
  uint64_t seq = invalSeq_;
  handle(req, client_.create(InodeId(parent), name, (mode & 07777) | S_IFREG, ctx->uid, ctx->gid),
         [this, req, flags, parent, seq, n = std::string(name)](Result<Attr> a) {
           if (!a) return (void)fuse_reply_err(req, errnoFor(a.error()));
           fuse_file_info out{};
           out.flags = flags;
           out.fh = nextHandle_++;
           out.direct_io = (flags & O_DIRECT) ? 1 : 0;
           files_[out.fh] = OpenFile{a->inode, flags};
           fuse_entry_param e = entryParam(*a, parent, n, seq);
           if (fuse_reply_create(req, &e, &out) != 0) {
             files_.erase(out.fh);
             tasks_.add(client_.release(a->inode).ignoreResult());
             return;
           }
           lookedUp(e.ino);
           if (e.entry_timeout > options_.attrTimeout) rememberEntry(e.ino, parent, n);
         });
}

void FuseAdapter::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  handle(req, client_.read(InodeId(ino), uint64_t(off), size),
         [req, ino, off](Result<kj::Array<kj::byte>> data) {
           if (!data) {
             log::warn("read of inode ", ino, " at ", off, ": ", data.error().toString().c_str());
             return (void)fuse_reply_err(req, errnoFor(data.error()));
           }
           fuse_reply_buf(req, reinterpret_cast<const char*>(data->begin()), data->size());
         });
}

void FuseAdapter::write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                        fuse_file_info* fi) {
  auto it = files_.find(fi->fh);
  int flags = it == files_.end() ? fi->flags : it->second.flags;
  WriteMode mode = WriteMode::kBuffered;
  if (flags & (O_SYNC | O_DSYNC)) mode = WriteMode::kSync;
  else if (flags & O_DIRECT) mode = WriteMode::kDirect;
  // The request buffer is reused for the next request: keep a copy.
  auto data = kj::heapArray<kj::byte>(reinterpret_cast<const kj::byte*>(buf), size);
  handle(req, client_.write(InodeId(ino), uint64_t(off), kj::mv(data), mode),
         [req, size, ino, off](Status s) {
    if (!s) {
      log::warn("write of inode ", ino, " at ", off, ": ", s.error().toString().c_str());
      return (void)fuse_reply_err(req, errnoFor(s.error()));
    }
    fuse_reply_write(req, size);
  });
}

// The kernel answers SEEK_SET, SEEK_CUR and SEEK_END itself; SEEK_DATA and SEEK_HOLE come here.
void FuseAdapter::lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  if ((whence != SEEK_DATA && whence != SEEK_HOLE) || off < 0) {
    return (void)fuse_reply_err(req, EINVAL);
  }
  handle(req, client_.seek(InodeId(ino), uint64_t(off), whence == SEEK_DATA),
         [req](Result<std::optional<uint64_t>> at) {
           if (!at) return (void)fuse_reply_err(req, errnoFor(at.error()));
           if (!*at) return (void)fuse_reply_err(req, ENXIO);
           fuse_reply_lseek(req, off_t(**at));
         });
}

void FuseAdapter::fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                            fuse_file_info* fi) {
  if (off < 0 || len <= 0) return (void)fuse_reply_err(req, EINVAL);
  // Never ENOSYS: the kernel would stop asking for every mode, for good.
  handle(req, client_.fallocate(InodeId(ino), mode, uint64_t(off), uint64_t(len)),
         [req, ino, mode, off](Status s) {
           if (!s && s.code() != Errc::kNotSupported) {
             log::warn("fallocate (mode ", mode, ") of inode ", ino, " at ", off, ": ",
                       s.error().toString().c_str());
           }
           fuse_reply_err(req, s ? 0 : errnoFor(s.error()));
         });
}

// Whole chunks are cloned (shared copy-on-write), the rest copied by the client (client.h,
// copyRange). A short count is fine: the kernel's caller asks again for the rest.
void FuseAdapter::copyFileRange(fuse_req_t req, fuse_ino_t in, off_t offIn, fuse_ino_t out,
                                off_t offOut, size_t len, int flags) {
  if (offIn < 0 || offOut < 0 || flags != 0) return (void)fuse_reply_err(req, EINVAL);
  handle(req,
         client_.copyRange(InodeId(in), uint64_t(offIn), InodeId(out), uint64_t(offOut), len),
         [req, in, out](Result<uint64_t> n) {
           if (!n) {
             log::warn("copy_file_range of inode ", in, " to inode ", out, ": ",
                       n.error().toString().c_str());
             return (void)fuse_reply_err(req, errnoFor(n.error()));
           }
           fuse_reply_write(req, size_t(*n));
         });
}

// The whole-file clone (fs/clone_ioctl.h); every other ioctl is not ours (ENOTTY, which is also
// what isatty(3) wants to hear).
void FuseAdapter::ioctl(fuse_req_t req, fuse_ino_t ino, unsigned cmd, fuse_file_info* fi,
                        unsigned flags, const void* in, size_t inSize, size_t outSize) {
  if (flags & FUSE_IOCTL_COMPAT) return (void)fuse_reply_err(req, ENOTTY);
  auto open = files_.find(fi->fh);
  int mode = open == files_.end() ? -1 : (open->second.flags & O_ACCMODE);
  auto now = std::chrono::steady_clock::now();
  std::erase_if(cloneTokens_, [now](const auto& t) { return t.second.expires <= now; });
  if (cmd == TESSERA_IOC_CLONE_TOKEN) {
    if (outSize != sizeof(uint64_t)) return (void)fuse_reply_err(req, EINVAL);
    if (mode != O_RDONLY && mode != O_RDWR) return (void)fuse_reply_err(req, EBADF);
    if (cloneTokens_.size() >= kMaxCloneTokens) return (void)fuse_reply_err(req, EAGAIN);
    uint64_t token = 0;
    while (token == 0 || cloneTokens_.count(token)) {
      if (getrandom(&token, sizeof token, 0) != ssize_t(sizeof token)) {
        return (void)fuse_reply_err(req, EIO);
      }
    }
    cloneTokens_[token] = CloneToken{ino, now + std::chrono::seconds(60)};
    fuse_reply_ioctl(req, 0, &token, sizeof token);
    return;
  }
  if (cmd == TESSERA_IOC_CLONE_FROM) {
    TesseraCloneFrom from{};
    if (inSize != sizeof from) return (void)fuse_reply_err(req, EINVAL);
    memcpy(&from, in, sizeof from);
    if (mode != O_WRONLY && mode != O_RDWR) return (void)fuse_reply_err(req, EBADF);
    auto t = cloneTokens_.find(from.token);
    if (from.flags != 0 || t == cloneTokens_.end()) return (void)fuse_reply_err(req, EINVAL);
    fuse_ino_t src = t->second.inode;
    cloneTokens_.erase(t);
    // The kernel knows the destination as it was (empty): it learns its new size before the
    // caller goes on.
    auto cloned = client_.cloneFile(InodeId(src), InodeId(ino))
                      .then([this, ino](Status s) -> kj::Promise<Status> {
                        if (!s) return s;
                        return forgetFile(InodeId(ino)).then([s]() { return s; });
                      });
    handle(req, kj::mv(cloned), [req, src, ino](Status s) {
      if (!s) {
        log::warn("clone of inode ", src, " to inode ", ino, ": ", s.error().toString().c_str());
        return (void)fuse_reply_err(req, errnoFor(s.error()));
      }
      fuse_reply_ioctl(req, 0, nullptr, 0);
    });
    return;
  }
  fuse_reply_err(req, ENOTTY);
}

void FuseAdapter::flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // close(2) of any descriptor drops the closing process's fcntl locks on the file (POSIX); the
  // kernel leaves that to us and names the process's lock owner here.
  InodeId inode(ino);
  uint64_t owner = fi->lock_owner;
  handle(req,
         client_.flush(inode).then([this, inode, owner](Status flushed) {
           return client_.releaseLocks(inode, owner, 0, true).then([flushed](Status unlocked) {
             if (!unlocked) log::warn("close: dropping locks: ", unlocked.error().toString().c_str());
             return flushed;
           });
         }),
         [req](Status s) { fuse_reply_err(req, s ? 0 : errnoFor(s.error())); });
}

void FuseAdapter::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  files_.erase(fi->fh);
  // The last close of an open file description: its OFD and flock locks go (the kernel sends
  // no unlock for them). The session's last handle of the file drops all its locks anyway.
  InodeId inode(ino);
  handle(req,
         client_.releaseLocks(inode, 0, fi->fh, false).then([this, inode](Status unlocked) {
           if (!unlocked) log::warn("release: dropping locks: ", unlocked.error().toString().c_str());
           return client_.release(inode);
         }),
         [req](Status s) { fuse_reply_err(req, s ? 0 : errnoFor(s.error())); });
}

void FuseAdapter::fsync(fuse_req_t req, fuse_ino_t ino, bool datasync, fuse_file_info* fi) {
  handle(req, client_.fsync(InodeId(ino), datasync), [req](Status s) {
    fuse_reply_err(req, s ? 0 : errnoFor(s.error()));
  });
}

void FuseAdapter::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  fuse_file_info out = *fi;
  out.fh = nextHandle_++;
  dirs_[out.fh].inode = InodeId(ino);
  fuse_reply_open(req, &out);
}

void FuseAdapter::releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  dirs_.erase(fi->fh);
  fuse_reply_err(req, 0);
}

void FuseAdapter::fsyncdir(fuse_req_t req) {
  handle(req, client_.syncMeta(), [req](Status s) { fuse_reply_err(req, s ? 0 : errnoFor(s.error())); });
}

void FuseAdapter::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          fuse_file_info* fi, bool plus) {
  uint64_t fh = fi->fh;
  uint64_t cookie = uint64_t(off);
  auto fill = [this, req, size, plus, fh, cookie, ino]() {
    auto it = dirs_.find(fh);
    if (it == dirs_.end()) return (void)fuse_reply_err(req, EBADF);
    const DirPage& page = it->second.cached;
    uint64_t seq = it->second.cachedSeq;
    // Entries handed to the kernel with readdirplus, counted once the reply went out.
    std::vector<std::pair<fuse_ino_t, const std::string*>> added;
    std::vector<bool> longTimed;
    std::vector<char> out(size);
    size_t used = 0;
    for (const auto& e : page.entries) {
      if (e.cookie <= cookie) continue;
      auto st = toStat(e.attr);
      size_t n;
      if (plus) {
        fuse_entry_param p = entryParam(e.attr, ino, e.name, seq);
        n = fuse_add_direntry_plus(req, out.data() + used, size - used, e.name.c_str(), &p,
                                   off_t(e.cookie));
        // The kernel takes no lookup of "." and "..".
        if (n <= size - used && e.name != "." && e.name != "..") {
          added.emplace_back(p.ino, &e.name);
          longTimed.push_back(p.entry_timeout > options_.attrTimeout);
        }
      } else {
        n = fuse_add_direntry(req, out.data() + used, size - used, e.name.c_str(), &st,
                              off_t(e.cookie));
      }
      if (n > size - used) break;
      used += n;
    }
    if (fuse_reply_buf(req, out.data(), used) != 0) return;
    for (size_t i = 0; i < added.size(); ++i) {
      lookedUp(added[i].first);
      if (longTimed[i]) rememberEntry(added[i].first, ino, *added[i].second);
    }
  };
  auto it = dirs_.find(fh);
  if (it == dirs_.end()) return (void)fuse_reply_err(req, EBADF);
  auto& dir = it->second;
  // Serve from the page fetched last time when it still holds what comes after `cookie`.
  if (dir.cachedPlus == plus && dir.cachedFrom <= cookie) {
    const auto& entries = dir.cached.entries;
    bool covers = !entries.empty() && entries.back().cookie > cookie;
    if (covers || (dir.cached.eof && (entries.empty() || entries.back().cookie <= cookie))) {
      return fill();
    }
  }
  uint32_t max = uint32_t(std::min<size_t>(std::max<size_t>(size / 24, 16), 2048));
  uint64_t seq = invalSeq_;
  handle(req, client_.readdir(InodeId(ino), cookie, max, plus),
         [this, req, fh, cookie, plus, fill, seq](Result<DirPage> page) {
           if (!page) return (void)fuse_reply_err(req, errnoFor(page.error()));
           auto it = dirs_.find(fh);
           if (it == dirs_.end()) return (void)fuse_reply_err(req, EBADF);
           it->second.cached = kj::mv(*page);
           it->second.cachedSeq = seq;
           it->second.cachedFrom = cookie;
           it->second.cachedPlus = plus;
           fill();
         });
}

void FuseAdapter::statfs(fuse_req_t req) {
  handle(req, client_.statfs(), [req](Result<StatFs> s) {
    if (!s) return (void)fuse_reply_err(req, errnoFor(s.error()));
    struct statvfs v {};
    v.f_bsize = 1 << 20;
    v.f_frsize = 4096;
    v.f_blocks = s->totalBytes / 4096;
    v.f_bfree = s->freeBytes / 4096;
    v.f_bavail = v.f_bfree;
    v.f_files = s->files + (uint64_t(1) << 32);
    v.f_ffree = uint64_t(1) << 32;
    v.f_favail = v.f_ffree;
    v.f_namemax = kMaxNameLen;
    fuse_reply_statfs(req, &v);
  });
}

void FuseAdapter::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                           size_t size, int flags) {
  // POSIX ACLs are not enforced (yet): storing them as plain attributes would show a '+' in
  // ls -l that means nothing. Refused, tools fall back to the mode bits.
  if (strncmp(name, "system.posix_acl_", 17) == 0) return (void)fuse_reply_err(req, EOPNOTSUPP);
  handle(req, client_.setxattr(InodeId(ino), name, std::string(value, size), uint32_t(flags)),
         [req](Status s) { fuse_reply_err(req, s ? 0 : errnoFor(s.error())); });
}

void FuseAdapter::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  handle(req, client_.getxattr(InodeId(ino), name), [req, size](Result<std::string> v) {
    if (!v) return (void)fuse_reply_err(req, errnoFor(v.error()));
    if (size == 0) return (void)fuse_reply_xattr(req, v->size());
    if (v->size() > size) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, v->data(), v->size());
  });
}

void FuseAdapter::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  handle(req, client_.listxattr(InodeId(ino)), [req, size](Result<std::vector<std::string>> names) {
    if (!names) return (void)fuse_reply_err(req, errnoFor(names.error()));
    std::string all;
    for (auto& n : *names) {
      all += n;
      all += '\0';
    }
    if (size == 0) return (void)fuse_reply_xattr(req, all.size());
    if (all.size() > size) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, all.data(), all.size());
  });
}

void FuseAdapter::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  handle(req, client_.removexattr(InodeId(ino), name), [req](Status s) {
    fuse_reply_err(req, s ? 0 : errnoFor(s.error()));
  });
}

// --- locks: fcntl record locks, OFD locks and flock, kept by the meta service -----------------

namespace {

LockRequest lockOf(fuse_file_info* fi, const struct flock* l) {
  LockRequest r;
  r.owner = fi->lock_owner;
  r.handle = fi->fh;
  r.type = l->l_type == F_RDLCK ? 1 : l->l_type == F_WRLCK ? 2 : 0;
  // libfuse hands over the kernel's range as l_start and l_len (0: to the end).
  r.start = uint64_t(l->l_start);
  r.end = l->l_len == 0 ? uint64_t(INT64_MAX) : uint64_t(l->l_start + l->l_len - 1);
  r.pid = uint32_t(l->l_pid);
  return r;
}

// What an interrupt of a waiting lock request needs; lives until the request is answered.
struct LockInterrupt {
  Client* client;
  std::shared_ptr<LockWait> wait;
};

// libfuse calls this on the loop's thread when the kernel interrupts the request (a signal
// reached the waiting process). It must not answer the request itself.
void onLockInterrupt(fuse_req_t, void* data) {
  auto* i = static_cast<LockInterrupt*>(data);
  i->client->cancelLockWait(i->wait);
}

}  // namespace

void FuseAdapter::getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  LockRequest want = lockOf(fi, lock);
  if (want.type == 0 || lock->l_start < 0 || lock->l_len < 0) {
    return (void)fuse_reply_err(req, EINVAL);
  }
  struct flock asked = *lock;
  handle(req, client_.getLock(InodeId(ino), want), [req, asked](Result<LockRequest> c) mutable {
    if (!c) return (void)fuse_reply_err(req, errnoFor(c.error()));
    struct flock out = asked;
    if (c->type == 0) {
      out.l_type = F_UNLCK;
    } else {
      out.l_type = c->type == 1 ? F_RDLCK : F_WRLCK;
      out.l_whence = SEEK_SET;
      out.l_start = off_t(c->start);
      out.l_len = c->end >= uint64_t(INT64_MAX) ? 0 : off_t(c->end - c->start + 1);
      out.l_pid = pid_t(c->pid);
    }
    fuse_reply_lock(req, &out);
  });
}

void FuseAdapter::setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
                        bool sleep) {
  if (lock->l_start < 0 || lock->l_len < 0) return (void)fuse_reply_err(req, EINVAL);
  takeLock(req, InodeId(ino), lockOf(fi, lock), sleep);
}

void FuseAdapter::flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  LockRequest want;
  want.owner = fi->lock_owner;
  want.handle = fi->fh;
  want.flock = true;
  int kind = op & ~LOCK_NB;
  want.type = kind == LOCK_SH ? 1 : kind == LOCK_EX ? 2 : 0;
  if (kind != LOCK_SH && kind != LOCK_EX && kind != LOCK_UN) return (void)fuse_reply_err(req, EINVAL);
  want.start = 0;
  want.end = uint64_t(INT64_MAX);
  want.pid = uint32_t(fuse_req_ctx(req)->pid);
  takeLock(req, InodeId(ino), want, want.type != 0 && !(op & LOCK_NB));
}

void FuseAdapter::takeLock(fuse_req_t req, InodeId inode, LockRequest want, bool sleep) {
  std::shared_ptr<LockWait> wait;
  kj::Own<LockInterrupt> interrupt;
  if (sleep) {
    wait = std::make_shared<LockWait>();
    interrupt = kj::heap<LockInterrupt>(LockInterrupt{&client_, wait});
    // Called at once if the interrupt came already; never after the answer.
    fuse_req_interrupt_func(req, onLockInterrupt, interrupt.get());
  }
  uint8_t type = want.type;
  // The answer's lambda owns `interrupt`, so it lives until the request is answered (an
  // exception becomes an error here for that reason, instead of going around the lambda).
  auto taken =
      client_.setLock(inode, want, wait)
          .catch_([](kj::Exception&& e) { return Status(errorFromException(e, "setLock")); })
          .then([this, inode, type](Status s) -> kj::Promise<Status> {
            // Whoever held the lock before may have changed the file: the kernel
            // forgets what it cached of it before the locker goes on (a migration's
            // destination checks the image's length right after it takes its locks).
            if (!s || type == 0) return s;
            return forgetFile(inode).then([s]() { return s; });
          });
  handle(req, kj::mv(taken), [req, interrupt = kj::mv(interrupt)](Status s) {
    fuse_reply_err(req, s ? 0 : errnoFor(s.error()));
  });
}

kj::Promise<void> FuseAdapter::forgetFile(InodeId inode) {
  // The attributes now, on this loop, before the reply: offset -1 takes no page locks, so it
  // cannot wait for a read this loop has not answered. The page cache goes through the
  // notifier thread (revalidate), which may wait for such reads.
  int rc = fuse_lowlevel_notify_inval_inode(session_, fuse_ino_t(inode.value), -1, 0);
  if (rc != 0 && rc != -ENOENT) {
    log::warn("lock: dropping the kernel's attributes of inode ", inode.value, ": ", strerror(-rc));
  }
  revalidate(fuse_ino_t(inode.value));
  // The locker is answered once the page cache is dropped too. Else the notifier's call could
  // come while the kernel waits for the answer to the locker's next request: a GETATTR, whose
  // answer the kernel then throws away as older than the invalidation — and lseek(SEEK_END)
  // returns the old size it still holds (a migration's destination would read the image's new
  // metadata clusters as zeros, past that size).
  if (!notifier_) return kj::READY_NOW;
  return notifier_->dropped(fuse_ino_t(inode.value));
}

}  // namespace tessera::client
