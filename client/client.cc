#include "client/client.h"
#include "client/file_state.h"
#include "client/replies.h"

#include <time.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "fs/log.h"
#include "fs/proto/meta.capnp.h"
#include "fs/wire.h"

namespace tessera::client {
namespace {

using MetaClient = proto::MetaService::Client;

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// How many chunk descriptors one getChunks asks for ahead of a read.
constexpr uint64_t kChunkPrefetch = 64;

kj::ArrayPtr<const kj::byte> bytesOf(const std::string& s) {
  return kj::arrayPtr(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}

}  // namespace


Client::Client(kj::Network& network, kj::Timer& timer, ClientConfig config)
    : timer_(timer),
      config_(kj::mv(config)),
      meta_(network, timer,
            {.addresses = config_.meta,
             .connectTimeoutMs = config_.connectTimeoutMs,
             .callTimeoutMs = std::min(config_.metaCallTimeoutMs, config_.metaRetryMs),
             .retryForMs = config_.metaRetryMs}),
      servers_(
          network, timer,
          [this](ServerId id) -> kj::Promise<Result<ChunkServers::Location>> {
            using L = ChunkServers::Location;
            return meta_.call<L>("servers", true, [id](MetaClient m) {
              auto req = m.serversRequest();
              req.initIds(1).set(0, id.value);
              return req.send().then([id](auto r) -> Result<L> {
                auto st = fromWire(r.getError());
                if (!st) return st.error();
                for (auto s : r.getServers()) {
                  if (s.getId() == id.value) return L{s.getAddress().cStr(), s.getUp()};
                }
                return Error{Errc::kNotFound,
                             "meta server does not know chunk server " + std::to_string(id.value)};
              });
            });
          },
          config_.connectTimeoutMs),
      data_(servers_, timer, config_.ioTimeoutMs, DataPath::LogConfig{.enabled = config_.ecLog,
                                              .applyDelayMs = config_.ecLogApplyDelayMs,
                                              .faultExitAfterParity = config_.faultExitAfterParity,
                                              .faultExitAfterData = config_.faultExitAfterData}) {
  data_.onMissed([this](InodeId inode, const ChunkDesc& chunk, uint32_t shards) {
    return markStale(inode, chunk, shards);
  });
}

Client::~Client() { stopWatching(); }

void Client::TaskErrors::taskFailed(kj::Exception&& e) {
  log::error("client task failed: ", e.getDescription());
}


kj::Promise<Status> Client::start() {
  meta_.onStaleSession = [this](uint64_t stale) { return renewSession(stale); };
  return meta_.connect().then([this](Status s) -> kj::Promise<Status> {
    if (!s) return s;
    return openSession().then([this](Result<Opened> opened) -> Status {
      if (!opened) return opened.error();
      session_ = SessionId(opened->session);
      meta_.setSession(opened->session);
      // A server that does not say its timeout is an older one: 10 s is safe under its 60 s.
      keepaliveMs_ = config_.keepaliveMs    ? config_.keepaliveMs
                     : opened->timeoutMs   ? std::max<uint64_t>(opened->timeoutMs / 3, 100)
                                           : 10'000;
      log::info("session ", opened->session, ", timeout ", opened->timeoutMs,
                " ms, keepalive every ", keepaliveMs_, " ms");
      keepalive_ = keepAliveLoop().eagerlyEvaluate([](kj::Exception&& e) {
        log::error("keepalive stopped: ", e.getDescription());
      });
      return Status();
    });
  });
}

kj::Promise<Result<Client::Opened>> Client::openSession() {
  return meta_.call<Opened>("openSession", false, [this](MetaClient m) {
    auto req = m.openSessionRequest();
    req.setHost(config_.host);
    req.setMountpoint(config_.mountpoint);
    return req.send().then([](auto r) -> Result<Opened> {
      auto st = fromWire(r.getError());
      if (!st) return st.error();
      return Opened{r.getSession(), r.getTimeoutMs()};
    });
  });
}

kj::Promise<void> Client::keepAliveLoop() {
  auto interval = int64_t(keepaliveMs_) * kj::MILLISECONDS;
  // Wakes at least every leasePollMs: a lease taken meanwhile must hear of its recall soon.
  auto tick = std::min(interval, int64_t(config_.leasePollMs) * kj::MILLISECONDS);
  return timer_.afterDelay(tick).then([this, interval]() -> kj::Promise<void> {
    releaseIdle();
    auto now = timer_.now();
    // A mutation counts as contact: only an idle client needs to say it is alive — or one
    // that holds leases, to hear of recalls.
    bool alive = now - meta_.lastMutation() < interval || now - lastKeepAlive_ < interval;
    if ((alive && !anyLeaseHeld()) || renewing_) return keepAliveLoop();
    lastKeepAlive_ = now;
    uint64_t session = session_.value;
    struct Recall {
      InodeId inode;
      uint64_t index, epoch;
    };
    return meta_
        .call<std::vector<Recall>>(
            "keepAlive", true,
            [session](MetaClient m) {
              auto req = m.keepAliveRequest();
              req.setSession(session);
              return req.send().then([](auto r) -> Result<std::vector<Recall>> {
                auto st = fromWire(r.getError());
                if (!st) return st.error();
                std::vector<Recall> out;
                for (auto l : r.getRecalled()) {
                  out.push_back(Recall{InodeId(l.getInode()), l.getIndex(), l.getEpoch()});
                  if (out.size() >= 100'000) break;
                }
                return out;
              });
            })
        .then([this](Result<std::vector<Recall>> r) {
          if (!r) return Result<bool>(r.error());
          for (auto& recall : *r) {
            auto it = leases_.find({recall.inode, recall.index});
            if (it != leases_.end() && it->second.held && it->second.epoch == recall.epoch) {
              letGo(recall.inode, recall.index, "recalled by the meta leader (a move, or another writer)");
            }
          }
          return Result<bool>(true);
        })
        .then([this, session](Result<bool> r) -> kj::Promise<void> {
          if (r.code() == Errc::kStale) return renewSession(session).ignoreResult();
          // The link logs a lost leader once; the next round tries again.
          if (!r) log::debug("keepalive: ", r.error().toString().c_str());
          return kj::READY_NOW;
        })
        .then([this] { return keepAliveLoop(); });
  });
}

kj::Promise<bool> Client::renewSession(uint64_t stale) {
  if (renewing_) {
    // A request of the old session waits for the new one; one of the new session (a reopen
    // while renewing) cannot wait for the renewal it is part of.
    if (stale == renewingFrom_) return KJ_ASSERT_NONNULL(renewal_).addBranch();
    return false;
  }
  // Renewed already: the request is sent again under the new session.
  if (stale != session_.value) return true;
  renewing_ = true;
  renewingFrom_ = stale;
  std::vector<std::pair<InodeId, int>> held;
  for (auto& [inode, f] : files_) {
    if (f->opens > 0) held.emplace_back(inode, f->opens);
  }
  log::warn("session ", stale, " expired on the meta servers (this mount was silent longer ",
            "than the session timeout); opening a new session and re-opening ", held.size(),
            " open files");
  auto done = openSession().then(
      [this, held = kj::mv(held)](Result<Opened> opened) mutable -> kj::Promise<bool> {
        if (!opened) {
          log::error("opening a new session: ", opened.error().toString().c_str());
          return false;
        }
        session_ = SessionId(opened->session);
        meta_.setSession(opened->session);
        // The expired session's leases went with it, and its locks: nobody holds those now.
        for (auto& [key, use] : leases_) use.held = false;
        if (!locked_.empty()) {
          log::warn("the expired session held locks on ", locked_.size(),
                    " files: they are released (their holders are not told)");
        }
        locked_.clear();
        log::info("session ", opened->session, " replaces expired session ", renewingFrom_);
        return reopenAll(kj::mv(held), 0).then([] { return true; });
      });
  renewal_ = done.then([this](bool ok) {
                   renewing_ = false;
                   return ok;
                 },
                 [this](kj::Exception&& e) {
                   renewing_ = false;
                   log::error("renewing the session: ", e.getDescription());
                   return false;
                 })
                 .fork();
  return KJ_ASSERT_NONNULL(renewal_).addBranch();
}

kj::Promise<void> Client::reopenAll(std::vector<std::pair<InodeId, int>> files, size_t next) {
  while (next < files.size() && files[next].second == 0) ++next;
  if (next == files.size()) return kj::READY_NOW;
  InodeId inode = files[next].first;
  // One open handle on the meta server per open here: each release gives one back.
  files[next].second--;
  return meta_
      .mutate<Attr>("reopen",
                    [inode](MetaClient m, MetaLink::Req r) {
                      auto req = m.openRequest();
                      r.fill(req.initReq());
                      req.setSession(r.session);
                      req.setInode(inode.value);
                      return req.send().then([](auto r) { return attrOf(r); });
                    })
      .then([this, inode, files = kj::mv(files), next](Result<Attr> a) mutable {
        if (!a) {
          log::warn("file ", inode.value, " held open could not be re-opened: ",
                    a.error().toString().c_str());
          files[next].second = 0;  // its other handles would fail alike
        }
        return reopenAll(kj::mv(files), next);
      });
}

// --- per-file state --------------------------------------------------------------------------

Client::FileState& Client::state(InodeId inode, uint64_t metaSize) {
  auto& f = files_[inode];
  if (!f) {
    f = std::make_unique<FileState>();
    f->inode = inode;
    f->xattrEpoch = ++xattrEpochs_;
    f->size = metaSize;
    f->durableSize = metaSize;
    auto closed = closedUnsynced_.find(inode);
    if (closed != closedUnsynced_.end()) {
      f->unsynced = std::move(closed->second);
      closedUnsynced_.erase(closed);
    }
  }
  return *f;
}

Client::FileState* Client::find(InodeId inode) {
  auto it = files_.find(inode);
  return it == files_.end() ? nullptr : it->second.get();
}

void Client::dropIfIdle(InodeId inode) {
  auto it = files_.find(inode);
  if (it == files_.end()) return;
  auto& f = *it->second;
  if (f.opens > 0 || f.busy() || f.attrDirty || f.commitsInFlight > 0 || !f.allocating.empty() ||
      !f.usage.empty()) {
    return;
  }
  // A later fsync through a new open must still cover what was written through this one.
  if (!f.unsynced.empty()) closedUnsynced_[inode] = std::move(f.unsynced);
  files_.erase(it);
  if (closedUnsynced_.size() > kMaxClosedUnsynced) trimClosedUnsynced();
}

Attr Client::merge(Attr attr) {
  if (auto* f = find(attr.inode)) {
    bool dirty = f->attrDirty || f->commitsInFlight > 0;
    if (dirty) {
      attr.size = f->size;
      attr.mtimeNs = std::max(attr.mtimeNs, f->mtimeNs);
    } else {
      f->size = attr.size;
    }
    if (dirty || !f->usage.empty() || !f->pending.empty()) {
      // What the meta server counts, plus the MiBs written here since (some may be counted
      // already) and what is still buffered; never more than the size.
      uint64_t more = 0;
      for (auto& [index, u] : f->usage) more += uint64_t(std::popcount(u.set)) * kUsageUnit;
      more += (f->pending.size() + kUsageUnit - 1) / kUsageUnit * kUsageUnit;
      uint64_t used = std::min(attr.size, attr.blocks * 512 + more);
      attr.blocks = std::max(attr.blocks, (used + 511) / 512);
    }
  }
  return attr;
}

// --- namespace -------------------------------------------------------------------------------


kj::Promise<Result<Attr>> Client::lookup(InodeId parent, std::string name) {
  return meta_
      .call<Attr>("lookup", true,
                  [parent, name](MetaClient m) {
                    auto req = m.lookupRequest();
                    req.setParent(parent.value);
                    req.setName(name);
                    return req.send().then([](auto r) { return attrOf(r); });
                  })
      .then([this](Result<Attr> a) -> Result<Attr> {
        if (a) return merge(*a);
        return a;
      });
}

kj::Promise<Result<Attr>> Client::getattr(InodeId inode) {
  return meta_
      .call<Attr>("getattr", true,
                  [inode](MetaClient m) {
                    auto req = m.getattrRequest();
                    req.setInode(inode.value);
                    return req.send().then([](auto r) { return attrOf(r); });
                  })
      .then([this](Result<Attr> a) -> Result<Attr> {
        if (a) return merge(*a);
        return a;
      });
}

kj::Promise<Result<Attr>> Client::setattr(InodeId inode, SetAttr change) {
  auto metaCall = [this, inode, change]() {
    return meta_.mutate<Attr>("setattr", [inode, change](MetaClient m, MetaLink::Req r) {
      auto req = m.setattrRequest();
      r.fill(req.initReq());
      req.setInode(inode.value);
      uint32_t valid = 0;
      if (change.mode) valid |= proto::SET_MODE, req.setMode(*change.mode);
      if (change.uid) valid |= proto::SET_UID, req.setUid(*change.uid);
      if (change.gid) valid |= proto::SET_GID, req.setGid(*change.gid);
      if (change.size) valid |= proto::SET_SIZE, req.setSize(*change.size);
      if (change.atimeNs) valid |= proto::SET_ATIME, req.setAtimeNs(*change.atimeNs);
      if (change.mtimeNs) valid |= proto::SET_MTIME, req.setMtimeNs(*change.mtimeNs);
      if (change.atimeNow) valid |= proto::SET_ATIME_NOW;
      if (change.mtimeNow) valid |= proto::SET_MTIME_NOW;
      req.setValid(valid);
      return req.send().then([](auto r) { return attrOf(r); });
    });
  };
  if (!change.size) {
    return metaCall().then([this](Result<Attr> a) -> Result<Attr> {
      if (a) return merge(*a);
      return a;
    });
  }
  // A size change: write out what is buffered, cut the data, then tell the meta server, which
  // drops the chunks past the new end.
  uint64_t newSize = *change.size;
  kj::Promise<Result<Attr>> current = nullptr;
  if (find(inode)) {
    current = Result<Attr>(Attr{});
  } else {
    current = getattr(inode);
  }
  return current.then(
      [this, inode, newSize, metaCall](Result<Attr> a) mutable -> kj::Promise<Result<Attr>> {
        if (!a) return a;
        auto& f = state(inode, a->size);
        f.opens++;  // keep the state alive across the calls below
        return drain(f)
            .then([this, &f, newSize](Status) { return truncateData(f, newSize); })
            .then([this, &f](Status s) -> kj::Promise<Status> {
              // The MiBs written so far go first: the kernel keeps the attributes the
              // truncate answers with, st_blocks included.
              if (!s || f.usage.empty()) return s;
              return commit(f);
            })
            .then([this, &f, metaCall](Status s) mutable -> kj::Promise<Result<Attr>> {
              if (!s) return Result<Attr>(s.error());
              // Busy while another mount holds the lease of a chunk past the new end.
              return whileBusy<Attr>(metaCall);
            })
            .then([this, &f, newSize, inode](Result<Attr> r) -> Result<Attr> {
              f.opens--;
              // Lookups made while zeroing may have cached chunks the meta server dropped since.
              forgetChunksFrom(f, (newSize + kChunkSize - 1) / kChunkSize);
              if (r) {
                f.size = newSize;
                f.attrDirty = false;
                f.metaDirty = true;
              }
              dropIfIdle(inode);
              return r;
            });
      });
}

kj::Promise<Status> Client::truncateData(FileState& f, uint64_t newSize) {
  log::debug("truncate inode ", f.inode.value, " to ", newSize);
  forgetChunksFrom(f, (newSize + kChunkSize - 1) / kChunkSize);
  if (newSize % kChunkSize == 0) return Status();
  uint64_t index = newSize / kChunkSize;
  InodeId inode = f.inode;
  return chunk(f, index, false)
      .then([this, inode, index](Result<std::optional<ChunkDesc>> c)
                -> kj::Promise<Result<std::optional<ChunkDesc>>> {
        if (!c || !*c) return kj::mv(c);
        // It exists: cutting it is a write, under its lease.
        return useLease(inode, index).then([](Result<ChunkDesc> c) {
          if (!c) return Result<std::optional<ChunkDesc>>(c.error());
          return Result<std::optional<ChunkDesc>>(std::optional<ChunkDesc>(kj::mv(*c)));
        });
      })
      .then([this, inode, newSize](Result<std::optional<ChunkDesc>> c) -> kj::Promise<Status> {
        if (!c) return Status(c.error());
        if (!*c) return Status();
        auto desc = **c;
        auto used = kj::defer([this, inode, index = desc.index] { endUse(inode, index); });
        return data_.truncate(desc, newSize % kChunkSize)
            .then([this, inode, desc](Result<uint32_t> missed) -> kj::Promise<Status> {
              if (!missed) {
                if (missed.code() == Errc::kStale) leaseLost(inode, desc);
                return Status(missed.error());
              }
              return markStale(inode, desc, *missed).then([](Result<ChunkDesc> c) -> Status {
                if (!c) return c.error();
                return Status();
              });
            })
            .attach(kj::mv(used));
      });
}

std::map<uint64_t, Client::Unsynced> Client::takeUnsynced(InodeId inode, uint64_t index) {
  std::map<uint64_t, Unsynced> out;
  auto* f = find(inode);
  std::map<uint64_t, Unsynced>* from = f ? &f->unsynced : nullptr;
  if (!f) {
    auto closed = closedUnsynced_.find(inode);
    if (closed != closedUnsynced_.end()) from = &closed->second;
  }
  if (!from) return out;
  auto u = from->find(index);
  if (u != from->end()) {
    out.emplace(index, u->second);
    from->erase(u);
  }
  return out;
}

void Client::restoreUnsynced(InodeId inode, const std::map<uint64_t, Unsynced>& chunks) {
  auto* f = find(inode);
  auto& to = f ? f->unsynced : closedUnsynced_[inode];
  for (auto& [index, u] : chunks) {
    auto& back = to[index];
    back.chunk = u.chunk;
    back.shards |= u.shards;
  }
}

void Client::uncacheLease(InodeId inode, uint64_t index, uint64_t epoch) {
  auto* f = find(inode);
  if (!f) return;
  auto it = f->chunks.find(index);
  if (it != f->chunks.end() && it->second.epoch == epoch && it->second.leaseSession == session_) {
    it->second.leaseSession = SessionId();
  }
}

void Client::forgetChunksFrom(FileState& f, uint64_t first) {
  f.mapEpoch++;
  f.chunks.erase(f.chunks.lower_bound(first), f.chunks.end());
  f.fresh.erase(f.fresh.lower_bound(first), f.fresh.end());
  f.absent.erase(f.absent.lower_bound(first), f.absent.end());
  f.unsynced.erase(f.unsynced.lower_bound(first), f.unsynced.end());
  forgetLeases(f.inode, first);
}

kj::Promise<Result<Attr>> Client::mknod(InodeId parent, std::string name, uint32_t mode,
                                        uint32_t rdev, uint32_t uid, uint32_t gid,
                                        std::string target) {
  return meta_.mutate<Attr>("mknod", [=](MetaClient m, MetaLink::Req r) {
    auto req = m.mknodRequest();
    r.fill(req.initReq());
    req.setParent(parent.value);
    req.setName(name);
    req.setMode(mode);
    req.setRdev(rdev);
    req.setUid(uid);
    req.setGid(gid);
    req.setTarget(target);
    return req.send().then([](auto r) { return attrOf(r); });
  });
}

kj::Promise<Result<Attr>> Client::create(InodeId parent, std::string name, uint32_t mode,
                                         uint32_t uid, uint32_t gid) {
  uint64_t invalidations = invalidations_;
  return meta_
      .mutate<Attr>("create",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.mknodRequest();
                      r.fill(req.initReq());
                      req.setParent(parent.value);
                      req.setName(name);
                      req.setMode(mode);
                      req.setUid(uid);
                      req.setGid(gid);
                      req.setSession(r.session);  // the session it is sent under
                      return req.send().then([](auto r) { return attrOf(r); });
                    })
      .then([this, invalidations](Result<Attr> a) -> Result<Attr> {
        if (!a) return a;
        auto& f = state(a->inode, a->size);
        f.opens++;
        f.metaDirty = true;
        // A new file has no capabilities: its first write need not ask (getxattr). Unless
        // another mount may have set some already, which it would have reported.
        if (invalidations == invalidations_ && coherent()) f.capability.emplace();
        return a;
      });
}

kj::Promise<Result<Attr>> Client::link(InodeId inode, InodeId newParent, std::string newName) {
  return meta_
      .mutate<Attr>("link",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.linkRequest();
                      r.fill(req.initReq());
                      req.setInode(inode.value);
                      req.setNewParent(newParent.value);
                      req.setNewName(newName);
                      return req.send().then([](auto r) { return attrOf(r); });
                    })
      .then([this](Result<Attr> a) -> Result<Attr> {
        if (a) return merge(*a);
        return a;
      });
}

kj::Promise<Status> Client::unlink(InodeId parent, std::string name, bool dir) {
  return meta_
      .mutate<bool>("unlink",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.unlinkRequest();
                      r.fill(req.initReq());
                      req.setParent(parent.value);
                      req.setName(name);
                      req.setDir(dir);
                      return req.send().then([](auto r) -> Result<bool> {
                        auto st = statusOf(r);
                        if (!st) return st.error();
                        return true;
                      });
                    })
      .then([](Result<bool> r) -> Status {
        if (!r) return r.error();
        return Status();
      });
}

kj::Promise<Status> Client::rename(InodeId parent, std::string name, InodeId newParent,
                                   std::string newName, uint32_t flags) {
  return meta_
      .mutate<bool>("rename",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.renameRequest();
                      r.fill(req.initReq());
                      req.setParent(parent.value);
                      req.setName(name);
                      req.setNewParent(newParent.value);
                      req.setNewName(newName);
                      req.setFlags(flags);
                      return req.send().then([](auto r) -> Result<bool> {
                        auto st = statusOf(r);
                        if (!st) return st.error();
                        return true;
                      });
                    })
      .then([](Result<bool> r) -> Status {
        if (!r) return r.error();
        return Status();
      });
}

kj::Promise<Result<std::string>> Client::readlink(InodeId inode) {
  return meta_.call<std::string>("readlink", true, [inode](MetaClient m) {
    auto req = m.readlinkRequest();
    req.setInode(inode.value);
    return req.send().then([](auto r) -> Result<std::string> {
      auto st = statusOf(r);
      if (!st) return st.error();
      return std::string(r.getTarget().cStr(), r.getTarget().size());
    });
  });
}

kj::Promise<Result<DirPage>> Client::readdir(InodeId dir, uint64_t cookie, uint32_t max,
                                             bool plus) {
  return meta_
      .call<DirPage>(
          "readdir", true,
          [=](MetaClient m) {
            auto req = m.readdirRequest();
            req.setInode(dir.value);
            req.setCookie(cookie);
            req.setMax(max);
            req.setPlus(plus);
            return req.send().then([](auto r) -> Result<DirPage> {
              auto st = statusOf(r);
              if (!st) return st.error();
              DirPage page;
              page.eof = r.getEof();
              for (auto e : r.getEntries()) {
                page.entries.push_back(DirEntry{std::string(e.getName().cStr(), e.getName().size()),
                                                e.getCookie(), fromWire(e.getAttr())});
              }
              return page;
            });
          })
      .then([this](Result<DirPage> page) -> Result<DirPage> {
        if (page) {
          for (auto& e : page->entries) e.attr = merge(e.attr);
        }
        return page;
      });
}

kj::Promise<Result<StatFs>> Client::statfs() {
  return meta_.call<StatFs>("statfs", true, [](MetaClient m) {
    return m.statfsRequest().send().then([](auto r) -> Result<StatFs> {
      auto st = statusOf(r);
      if (!st) return st.error();
      auto s = r.getStat();
      return StatFs{s.getTotalBytes(), s.getFreeBytes(), s.getFiles()};
    });
  });
}

kj::Promise<Status> Client::setxattr(InodeId inode, std::string name, std::string value,
                                     uint32_t flags) {
  xattrChanging(inode);
  return meta_
      .mutate<bool>("setxattr",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.setxattrRequest();
                      r.fill(req.initReq());
                      req.setInode(inode.value);
                      req.setName(name);
                      req.setValue(bytesOf(value));
                      req.setFlags(flags);
                      return req.send().then([](auto r) -> Result<bool> {
                        auto st = statusOf(r);
                        if (!st) return st.error();
                        return true;
                      });
                    })
      .then([this, inode](Result<bool> r) -> Status {
        xattrChanging(inode);
        if (!r) return r.error();
        return Status();
      });
}

void Client::xattrChanging(InodeId inode) {
  // Before the change (an answer in flight may predate it) and after (one that came in between
  // may too).
  if (auto* f = find(inode)) dropCapability(*f);
}

// The kernel asks for security.capability before every buffered write and truncate
// (file_remove_privs: a write drops the file's capabilities), which would cost a meta round
// trip per write. An open file keeps the answer while this client is coherent: the meta
// leader reports every setxattr and removexattr of another mount as an invalidation of the
// inode (dropFileCache drops the answer), and this client's own drop it too (xattrChanging).
// Other names are rare on any hot path and always asked for.
kj::Promise<Result<std::string>> Client::getxattr(InodeId inode, std::string name) {
  static constexpr std::string_view kCapability = "security.capability";
  FileState* f = name == kCapability ? find(inode) : nullptr;
  if (f && f->capability && coherent()) {
    if (*f->capability) return Result<std::string>(**f->capability);
    return Result<std::string>(Error{Errc::kNoData, "getxattr: " + name});
  }
  auto fetched = meta_.call<std::string>("getxattr", true, [=](MetaClient m) {
    auto req = m.getxattrRequest();
    req.setInode(inode.value);
    req.setName(name);
    return req.send().then([](auto r) -> Result<std::string> {
      auto st = statusOf(r);
      if (!st) return st.error();
      auto v = r.getValue();
      return std::string(reinterpret_cast<const char*>(v.begin()), v.size());
    });
  });
  if (!f) return fetched;
  // Epochs are unique across files: a file state dropped and made again meanwhile has another.
  return fetched.then([this, inode, epoch = f->xattrEpoch](Result<std::string> v) {
    bool answer = v || v.error().code == Errc::kNoData;
    auto* f = find(inode);
    if (f && answer && f->xattrEpoch == epoch && coherent()) {
      f->capability = v ? std::optional<std::string>(*v) : std::nullopt;
    }
    return v;
  });
}

kj::Promise<Result<std::vector<std::string>>> Client::listxattr(InodeId inode) {
  return meta_.call<std::vector<std::string>>("listxattr", true, [=](MetaClient m) {
    auto req = m.listxattrRequest();
    req.setInode(inode.value);
    return req.send().then([](auto r) -> Result<std::vector<std::string>> {
      auto st = statusOf(r);
      if (!st) return st.error();
      std::vector<std::string> names;
      for (auto n : r.getNames()) names.emplace_back(n.cStr(), n.size());
      return names;
    });
  });
}

kj::Promise<Status> Client::removexattr(InodeId inode, std::string name) {
  xattrChanging(inode);
  return meta_
      .mutate<bool>("removexattr",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.removexattrRequest();
                      r.fill(req.initReq());
                      req.setInode(inode.value);
                      req.setName(name);
                      return req.send().then([](auto r) -> Result<bool> {
                        auto st = statusOf(r);
                        if (!st) return st.error();
                        return true;
                      });
                    })
      .then([this, inode](Result<bool> r) -> Status {
        xattrChanging(inode);
        if (!r) return r.error();
        return Status();
      });
}

kj::Promise<Status> Client::syncMeta() {
  return meta_
      .call<bool>("fsync", true,
                  [](MetaClient m) {
                    return m.fsyncRequest().send().then([](auto r) -> Result<bool> {
                      auto st = statusOf(r);
                      if (!st) return st.error();
                      return true;
                    });
                  })
      .then([](Result<bool> r) -> Status {
        if (!r) return r.error();
        return Status();
      });
}

// --- open files ------------------------------------------------------------------------------

kj::Promise<Result<Attr>> Client::open(InodeId inode) {
  return meta_
      .mutate<Attr>("open",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.openRequest();
                      r.fill(req.initReq());
                      req.setSession(r.session);  // the session it is sent under
                      req.setInode(inode.value);
                      return req.send().then([](auto r) { return attrOf(r); });
                    })
      .then([this, inode](Result<Attr> a) -> Result<Attr> {
        if (!a) return a;
        auto& f = state(inode, a->size);
        if (f.opens == 0 && !f.busy() && !f.attrDirty) {
          // Close-to-open: another client may have written since we last looked.
          f.size = a->size;
          f.durableSize = a->size;
          f.chunks.clear();
          f.fresh.clear();
          f.absent.clear();
          f.mapEpoch++;
        }
        f.opens++;
        return merge(*a);
      });
}

kj::Promise<Status> Client::release(InodeId inode) {
  auto* f = find(inode);
  if (!f) return Status();
  return flush(inode)
      .then([this, inode](Status flushed) -> kj::Promise<Status> {
        // The write logs of the chunks we hold go into their stripes before the leases go
        // (the next holder would apply them too, but a clean handover leaves nothing behind).
        auto* f = find(inode);
        if (!f) return flushed;
        kj::Vector<kj::Promise<Status>> drains;
        for (auto& [index, c] : f->chunks) {
          if (c.leaseSession == session_) drains.add(data_.drainLog(c.id));
        }
        return joinStatus(drains.releaseAsArray()).then([flushed](Status d) {
          if (!flushed) return flushed;
          return d;
        });
      })
      .then([this, inode](Status flushed) {
    return meta_
        .mutate<bool>("release",
                      [=](MetaClient m, MetaLink::Req r) {
                        auto req = m.releaseRequest();
                        r.fill(req.initReq());
                        req.setSession(r.session);  // the session it is sent under
                        req.setInode(inode.value);
                        return req.send().then([](auto r) -> Result<bool> {
                          auto st = statusOf(r);
                          if (!st) return st.error();
                          return true;
                        });
                      })
        .then([this, inode, flushed](Result<bool> r) -> Status {
          if (auto* f = find(inode)) {
            if (f->opens > 0) f->opens--;
            // The session's last handle: the meta server dropped its leases and locks on the
            // file.
            if (f->opens == 0) forgetLeases(inode);
            if (f->opens == 0) locked_.erase(inode);
            if (f->opens == 0) f->writeError.reset();
            dropIfIdle(inode);
          }
          if (!flushed) return flushed;
          if (!r) return r.error();
          return Status();
        });
  });
}

kj::Promise<Result<std::vector<ChunkDesc>>> Client::getChunks(InodeId inode, uint64_t first,
                                                              uint64_t count) {
  return meta_.call<std::vector<ChunkDesc>>(
      "getChunks", true, [inode, first, count](MetaClient m) {
        auto req = m.getChunksRequest();
        req.setInode(inode.value);
        req.setFirst(first);
        req.setCount(count);
        return req.send().then([](auto r) -> Result<std::vector<ChunkDesc>> {
          auto st = statusOf(r);
          if (!st) return st.error();
          return fromWire(r.getChunks());
        });
      });
}

kj::Promise<Result<std::optional<ChunkDesc>>> Client::chunk(FileState& f, uint64_t index,
                                                            bool allocate) {
  using R = Result<std::optional<ChunkDesc>>;
  auto cached = f.chunks.find(index);
  // A writer needs the chunk's write lease; a reader any descriptor.
  if (cached != f.chunks.end() && (!allocate || holds(f.inode, index, cached->second))) {
    return R(std::optional<ChunkDesc>(cached->second));
  }
  if (allocate) {
    // The lease is being given back: ask again only once the release is applied.
    auto lease = leases_.find({f.inode, index});
    if (lease != leases_.end()) {
      KJ_IF_MAYBE(releasing, lease->second.releasing) {
        InodeId inode = f.inode;
        return releasing->addBranch().then([this, inode, index]() -> kj::Promise<R> {
          auto* f = find(inode);
          if (!f) return R(Error{Errc::kStale, "file closed"});
          return chunk(*f, index, true);
        });
      }
    }
  }
  auto busy = f.allocating.find(index);
  if (busy != f.allocating.end()) {
    return busy->second.addBranch().then(
        [this, &f, index, allocate] { return chunk(f, index, allocate); });
  }
  InodeId inode = f.inode;
  uint64_t epoch = f.mapEpoch;
  if (!allocate) {
    if (f.absent.count(index)) return R(std::optional<ChunkDesc>());
    uint64_t lookupEpoch = f.lookupEpoch;
    return getChunks(inode, index, kChunkPrefetch)
        .then([this, inode, index, epoch, lookupEpoch](Result<std::vector<ChunkDesc>> list) -> R {
          if (!list) return list.error();
          auto* f = find(inode);
          // It answers a question asked before a truncate or another mount's write.
          if (f && (f->mapEpoch != epoch || f->lookupEpoch != lookupEpoch)) f = nullptr;
          std::optional<ChunkDesc> found;
          std::set<uint64_t> present;
          for (auto& c : *list) {
            log::debug("inode ", inode.value, " chunk index ", c.index, " is chunk ", c.id.value,
                       f ? " (cached)" : " (stale answer, not cached)");
            present.insert(c.index);
            if (c.index == index) found = c;
            if (f) f->chunks[c.index] = c;
          }
          if (f) {
            for (uint64_t i = index; i < index + kChunkPrefetch; ++i) {
              if (!present.count(i) && !f->chunks.count(i)) f->absent.insert(i);
            }
          }
          return found;
        });
  }
  // Lease (placing the chunk if it does not exist yet): only the lease holder writes a chunk,
  // and chunk servers refuse the writes of any holder before it (DESIGN.md rule 3). A chunk
  // placed by this call is fresh: its first write creates its shards (FreshChunk).
  auto work = acquireLease(inode, index, timer_.now() + config_.metaRetryMs * kj::MILLISECONDS)
                  .then([this, inode, index, epoch](Result<Leased> a) -> R {
                    auto* f = find(inode);
                    if (f) f->allocating.erase(index);
                    if (!a) return a.error();
                    noteLeased(inode, a->chunk);
                    log::debug("inode ", inode.value, " index ", index, ": chunk ",
                               a->chunk.id.value, " leased at epoch ", a->chunk.epoch,
                               a->created ? " (new)" : "");
                    if (f && f->mapEpoch == epoch) {
                      f->chunks[index] = a->chunk;
                      f->absent.erase(index);
                      if (a->created) f->fresh[index] = std::make_shared<FreshChunk>();
                    }
                    return std::optional<ChunkDesc>(a->chunk);
                  })
                  .fork();
  auto result = work.addBranch();
  f.allocating.emplace(index, work.addBranch().ignoreResult().fork());
  return result;
}

kj::Promise<Result<Client::Leased>> Client::acquireLease(InodeId inode, uint64_t index,
                                                         kj::TimePoint deadline) {
  return meta_
      .mutate<Leased>("acquireLease",
                      [inode, index](MetaClient m, MetaLink::Req r) {
                        auto req = m.acquireLeaseRequest();
                        r.fill(req.initReq());
                        req.setSession(r.session);  // the session it is sent under
                        req.setInode(inode.value);
                        req.setIndex(index);
                        return req.send().then([](auto r) -> Result<Leased> {
                          auto st = statusOf(r);
                          if (!st) return st.error();
                          auto c = fromWire(r.getChunk());
                          if (!c) return c.error();
                          return Leased{kj::mv(*c), r.getCreated()};
                        });
                      })
      .then([this, inode, index, deadline](Result<Leased> a) -> kj::Promise<Result<Leased>> {
        if (!a && a.code() == Errc::kBusy) {
          // Another mount writes this chunk: wait until it lets go or its lease lapses.
          if (timer_.now() >= deadline) {
            return Result<Leased>(Error{Errc::kIo, a.error().detail});
          }
          return timer_.afterDelay(200 * kj::MILLISECONDS).then([this, inode, index, deadline] {
            return acquireLease(inode, index, deadline);
          });
        }
        if (!a || (a->chunk.epoch <= 1 && !a->chunk.resync)) return kj::mv(a);
        // The lease was someone's before (or ours, released): fence out whatever its last holder
        // still has in flight before writing. A server that cannot be reached misses our writes:
        // its shard is stale from now on.
        struct Fenced {
          Leased leased;
          uint32_t logRecords = 0;
        };
        auto fenced = kj::heap<Fenced>();
        fenced->leased = kj::mv(*a);
        auto& ref = fenced->leased;
        uint32_t& logRecords = fenced->logRecords;
        return data_.fence(ref.chunk, &logRecords)
            .then([this, inode, &ref](Result<uint32_t> missed) -> kj::Promise<Result<ChunkDesc>> {
              if (!missed) return Result<ChunkDesc>(missed.error());
              return markStale(inode, ref.chunk, *missed);
            })
            .then([this, inode, &ref, &logRecords](Result<ChunkDesc> c)
                      -> kj::Promise<Result<ChunkDesc>> {
              // Records an earlier holder logged but did not apply: into the stripes first,
              // before the re-sync below re-encodes rows from their data (a lost data block of
              // a row those records touch is decoded by agreement of the parity, which a
              // re-sync would have overwritten).
              if (!c || logRecords == 0 || !ref.chunk.layout.isEc()) return kj::mv(c);
              ref.chunk = kj::mv(*c);
              return data_.recoverLog(ref.chunk).then(
                  [this, inode, &ref](Result<uint32_t> missed) -> kj::Promise<Result<ChunkDesc>> {
                    if (!missed) return Result<ChunkDesc>(missed.error());
                    return markStale(inode, ref.chunk, *missed);
                  });
            })
            .then([this, inode, &ref](Result<ChunkDesc> c) -> kj::Promise<Result<ChunkDesc>> {
              if (!c || !c->resync) return kj::mv(c);
              ref.chunk = kj::mv(*c);
              // Only the bytes the file has can be half written.
              uint64_t len = kChunkSize;
              if (auto* f = find(inode)) {
                uint64_t start = ref.chunk.index * kChunkSize;
                len = f->size > start ? std::min(kChunkSize, f->size - start) : 0;
              }
              log::info("inode ", inode.value, " chunk ", ref.chunk.id.value,
                        ": its last writer let go uncleanly; re-syncing ", len, " bytes");
              auto resynced = len ? data_.resync(ref.chunk, len)
                                 : kj::Promise<Result<uint32_t>>(Result<uint32_t>(0u));
              return resynced.then([this, inode, &ref](Result<uint32_t> missed) {
                if (!missed) return kj::Promise<Result<ChunkDesc>>(missed.error());
                return markStale(inode, ref.chunk, *missed, true);
              });
            })
            .then([&ref](Result<ChunkDesc> c) -> Result<Leased> {
              if (!c) return c.error();
              ref.chunk = kj::mv(*c);
              return kj::mv(ref);
            })
            .attach(kj::mv(fenced));
      });
}

kj::Promise<Result<ChunkDesc>> Client::markStale(InodeId inode, const ChunkDesc& chunk,
                                                 uint32_t shards, bool resynced) {
  if (!resynced && (shards == 0 || (chunk.staleShards | shards) == chunk.staleShards)) {
    return Result<ChunkDesc>(chunk);
  }
  uint64_t index = chunk.index, epoch = chunk.epoch;
  return meta_
      .mutate<ChunkDesc>("markStale",
                         [inode, index, epoch, shards, resynced](MetaClient m,
                                                                 MetaLink::Req r) {
                           auto req = m.markStaleRequest();
                           req.setResynced(resynced);
                           r.fill(req.initReq());
                           req.setInode(inode.value);
                           req.setIndex(index);
                           req.setEpoch(epoch);
                           req.setShards(shards);
                           return req.send().then([](auto r) -> Result<ChunkDesc> {
                             auto st = statusOf(r);
                             if (!st) return st.error();
                             return fromWire(r.getChunk());
                           });
                         })
      .then([this, inode](Result<ChunkDesc> c) -> Result<ChunkDesc> {
        if (!c) {
          // The lease moved on (busy) or the meta group is gone: the write is not safe to
          // acknowledge.
          return Error{Errc::kIo, "cannot mark missed shards stale: " + c.error().toString()};
        }
        if (auto* f = find(inode)) {
          auto it = f->chunks.find(c->index);
          if (it != f->chunks.end() && it->second.id == c->id) it->second = *c;
        }
        return c;
      });
}

kj::Promise<Status> Client::drainChunkLog(InodeId inode, uint64_t index) {
  auto* f = find(inode);
  if (!f) return Status();
  auto c = f->chunks.find(index);
  if (c == f->chunks.end()) return Status();
  return data_.drainLog(c->second.id);
}

// A chunk server refused a write because the lease moved on: forget that we held it, so the
// next write asks again, and fail this one — its data must not land after the new holder's.
void Client::leaseLost(InodeId inode, const ChunkDesc& chunk) {
  log::warn("inode ", inode.value, " chunk ", chunk.id.value, ": write lease (epoch ",
            chunk.epoch, ") was taken over by another writer");
  data_.forgetLog(chunk.id);
  if (auto* f = find(inode)) {
    auto it = f->chunks.find(chunk.index);
    if (it != f->chunks.end() && it->second.id == chunk.id && it->second.epoch == chunk.epoch) {
      it->second.leaseSession = SessionId();
    }
  }
  auto lease = leases_.find({inode, chunk.index});
  if (lease != leases_.end() && lease->second.epoch == chunk.epoch) lease->second.held = false;
}

kj::Promise<Result<ChunkDesc>> Client::afterShardWrite(InodeId inode, const ChunkDesc& desc,
                                                     Result<uint32_t> missed) {
  if (!missed) {
    if (missed.code() == Errc::kStale) {
      leaseLost(inode, desc);
      return Result<ChunkDesc>(Error{Errc::kIo, missed.error().detail});
    }
    return Result<ChunkDesc>(missed.error());
  }
  // Degraded: acknowledged only once the missed shards are marked stale.
  return markStale(inode, desc, *missed);
}

kj::Promise<Status> Client::writeThrough(FileState& f, uint64_t off,
                                         kj::ArrayPtr<const kj::byte> data, bool sync) {
  kj::Vector<kj::Promise<Status>> parts;
  uint64_t end = off + data.size();
  InodeId inode = f.inode;
  for (uint64_t pos = off; pos < end;) {
    uint64_t index = pos / kChunkSize;
    uint64_t chunkOff = pos % kChunkSize;
    uint64_t n = std::min(end - pos, kChunkSize - chunkOff);
    auto piece = data.slice(pos - off, pos - off + n);
    parts.add(useLease(inode, index)
                  .then([this, inode, chunkOff, piece,
                         sync](Result<ChunkDesc> c) -> kj::Promise<Status> {
                    if (!c) return Status(c.error());
                    auto desc = *c;
                    std::shared_ptr<FreshChunk> fresh;
                    if (auto* f = find(inode)) {
                      // For st_blocks, once the chunk exists (a commit skips chunks that do
                      // not); a write that then fails still counts (a little high, never low).
                      f->noteUsage(desc.index * kChunkSize + chunkOff, piece.size(), true);
                      auto it = f->fresh.find(desc.index);
                      if (it != f->fresh.end()) fresh = it->second;
                    }
                    uint32_t shards = shardsWritten(desc.layout, chunkOff, piece.size(),
                                                    fresh && !fresh->shardsCreated);
                    // A synced or logged write is on disk when it succeeds: nothing for the
                    // next fsync to sync.
                    bool durable = sync || data_.logs(desc, piece.size(), inode, fresh.get());
                    return data_.write(desc, chunkOff, piece, sync, kj::mv(fresh), inode)
                        .then([this, inode, desc](Result<uint32_t> missed) {
                          return afterShardWrite(inode, desc, kj::mv(missed));
                        })
                        .then([this, inode, shards, durable](Result<ChunkDesc> written) -> Status {
                          if (!written) return written.error();
                          if (auto* f = find(inode)) {
                            // Earlier write-back of the chunk is synced through its newest
                            // descriptor (lease epoch, stale shards).
                            auto it = f->unsynced.find(written->index);
                            if (it != f->unsynced.end()) it->second.chunk = *written;
                            if (!durable) {
                              auto& u = f->unsynced[written->index];
                              u.chunk = *written;
                              u.shards |= shards & ~written->staleShards;
                            }
                          }
                          return Status();
                        })
                        .attach(kj::defer([this, inode, index = desc.index] {
                          endUse(inode, index);
                        }));
                  }));
    pos += n;
  }
  return joinStatus(parts.releaseAsArray());
}

void Client::startFlush(FileState& f, bool sync) {
  if (f.pending.empty()) return;
  auto data = kj::heapArray<kj::byte>(f.pending.size());
  memcpy(data.begin(), f.pending.data(), data.size());
  uint64_t off = f.pendingOff;
  uint64_t n = data.size();
  f.pending.clear();
  f.inflightBytes += n;
  // One flush at a time per file, in order: a later write of the same bytes must land last.
  f.flushChain = f.flushChain
                     .then([this, &f, off, data = kj::mv(data), sync]() mutable {
                       auto ptr = data.asPtr();
                       return writeThrough(f, off, ptr, sync).attach(kj::mv(data));
                     })
                     .then(
                         [&f, n, off](Status s) {
                           if (!s && !f.writeError) {
                             log::warn("write-back of inode ", f.inode.value, " at ", off,
                                       " failed: ", s.error().toString().c_str());
                             f.writeError = s.error();
                           }
                           f.inflightBytes -= n;
                           f.wake();
                         },
                         [&f, n](kj::Exception&& e) {
                           if (!f.writeError) f.writeError = errorFromException(e, "write-back");
                           f.inflightBytes -= n;
                           f.wake();
                         })
                     .eagerlyEvaluate(nullptr);
}

kj::Promise<Status> Client::drain(FileState& f, bool sync) {
  startFlush(f, sync);
  if (f.inflightBytes == 0) {
    if (f.writeError) return Status(*f.writeError);
    return Status();
  }
  auto paf = kj::newPromiseAndFulfiller<void>();
  f.waiters.push_back(kj::mv(paf.fulfiller));
  return paf.promise.then([this, &f, sync] { return drain(f, sync); });
}

kj::Promise<Status> Client::write(InodeId inode, uint64_t off, kj::Array<kj::byte> data,
                                  WriteMode mode) {
  auto* fp = find(inode);
  if (!fp) return Status(Error{Errc::kStale, "write to a file that is not open"});
  auto& f = *fp;
  uint64_t end = off + data.size();
  if (end < off || end > uint64_t(INT64_MAX))
    return Status(Error{Errc::kTooBig, "write past the largest file"});
  if (data.size() == 0) return Status();
  if (mode == WriteMode::kBuffered) {
    if (!f.pending.empty() && off != f.pendingEnd()) startFlush(f);
    if (f.pending.empty()) f.pendingOff = off;
    f.pending.insert(f.pending.end(), data.begin(), data.end());
    f.size = std::max(f.size, end);
    f.mtimeNs = nowNs();
    f.attrDirty = true;
    if (f.pending.size() >= config_.flushThreshold) startFlush(f);
    if (f.inflightBytes + f.pending.size() <= config_.pendingLimit) return Status();
    // Too much in flight: hold this write's reply until the backlog shrinks.
    auto paf = kj::newPromiseAndFulfiller<void>();
    f.waiters.push_back(kj::mv(paf.fulfiller));
    return paf.promise.then([]() { return Status(); });
  }
  // Direct and sync writes go out now, after anything buffered before them.
  f.opens++;
  kj::Promise<Status> before = f.busy() ? drain(f) : kj::Promise<Status>(Status());
  auto ptr = data.asPtr();
  // O_DIRECT and O_SYNC/O_DSYNC data is on disk on every shard written when the write returns
  // (DESIGN.md rule 1); only O_SYNC also commits the size and mtime first.
  bool sync = mode == WriteMode::kSync;
  bool durable = mode != WriteMode::kBuffered;
  return before
      .then([this, &f, off, ptr, durable](Status) { return writeThrough(f, off, ptr, durable); })
      .then([this, &f, end, sync](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        f.size = std::max(f.size, end);
        f.mtimeNs = nowNs();
        f.attrDirty = true;
        if (!sync) return s;
        // O_SYNC: the size that makes the data reachable is durable too.
        return commit(f).then([this, &f](Status c) -> kj::Promise<Status> {
          if (!c || !f.metaDirty) return c;
          f.metaDirty = false;
          return syncMeta();
        });
      })
      .then([this, &f](Status s) {
        f.opens--;
        dropIfIdle(f.inode);
        return s;
      })
      .attach(kj::mv(data));
}

kj::Promise<Status> Client::commit(FileState& f) {
  if (!f.attrDirty && f.usage.empty()) return Status();
  InodeId inode = f.inode;
  uint64_t size = f.size;
  // 0: the times stay (only st_blocks' MiBs changed, e.g. by a reservation).
  int64_t mtime = f.attrDirty ? f.mtimeNs : 0;
  bool attrDirty = f.attrDirty;
  f.attrDirty = false;
  // At most kMaxUsageChunks chunks' MiBs a call; the rest go in the next.
  std::vector<std::pair<uint64_t, FileState::Usage>> usage;
  while (!f.usage.empty() && usage.size() < kMaxUsageChunks) {
    usage.emplace_back(f.usage.begin()->first, f.usage.begin()->second);
    f.usage.erase(f.usage.begin());
  }
  f.commitsInFlight++;
  return meta_
      .mutate<Attr>("commitWrite",
                    [=](MetaClient m, MetaLink::Req r) {
                      auto req = m.commitWriteRequest();
                      r.fill(req.initReq());
                      req.setInode(inode.value);
                      req.setSize(size);
                      req.setMtimeNs(mtime);
                      auto chunks = req.initUsageChunks(usage.size());
                      auto set = req.initUsageSet(usage.size());
                      auto clear = req.initUsageClear(usage.size());
                      for (size_t i = 0; i < usage.size(); ++i) {
                        chunks.set(i, usage[i].first);
                        set.set(i, usage[i].second.set);
                        clear.set(i, usage[i].second.clear);
                      }
                      return req.send().then([](auto r) { return attrOf(r); });
                    })
      .then([this, inode, attrDirty, usage](Result<Attr> a) -> kj::Promise<Status> {
        auto* f = find(inode);
        if (f) f->commitsInFlight--;
        if (!a) {
          if (f) {
            f->attrDirty = f->attrDirty || attrDirty;
            // Back, under what was noted since (newer notes win).
            for (auto& [index, old] : usage) {
              auto [it, fresh] = f->usage.try_emplace(index, old);
              if (fresh) continue;
              auto& now = it->second;
              now.set = (old.set & ~now.clear) | now.set;
              now.clear = (old.clear & ~now.set) | now.clear;
            }
          }
          return Status(a.error());
        }
        if (!f) return Status();
        f->metaDirty = true;
        if (!f->usage.empty()) return commit(*f);
        return Status();
      });
}

kj::Promise<Result<kj::Array<kj::byte>>> Client::read(InodeId inode, uint64_t off, uint64_t len) {
  using R = Result<kj::Array<kj::byte>>;
  auto* fp = find(inode);
  if (!fp) return R(Error{Errc::kStale, "read of a file that is not open"});
  auto& f = *fp;
  f.opens++;
  // Reads see this client's own buffered writes: send them first.
  kj::Promise<Status> before = f.busy() ? drain(f) : kj::Promise<Status>(Status());
  if (f.sizeStale) {
    // Another mount wrote it: its size (merge() takes the meta server's) before reading.
    f.sizeStale = false;
    before = before.then([this, inode](Status s) {
      return getattr(inode).then([s](Result<Attr>) { return s; });
    });
  }
  return before
      .then([this, &f, off, len](Status) -> kj::Promise<R> {
        uint64_t n = off >= f.size ? 0 : std::min(len, f.size - off);
        auto out = kj::heapArray<kj::byte>(n);
        auto ptr = out.asPtr();
        return readChunks(f, off, ptr).then([out = kj::mv(out)](Status s) mutable -> R {
          if (!s) return s.error();
          return kj::mv(out);
        });
      })
      .then([this, &f](R r) {
        f.opens--;
        dropIfIdle(f.inode);
        return r;
      });
}

kj::Promise<Status> Client::readChunks(FileState& f, uint64_t off, kj::ArrayPtr<kj::byte> out) {
  kj::Vector<kj::Promise<Status>> parts;
  uint64_t end = off + out.size();
  for (uint64_t pos = off; pos < end;) {
    uint64_t index = pos / kChunkSize;
    uint64_t chunkOff = pos % kChunkSize;
    uint64_t n = std::min(end - pos, kChunkSize - chunkOff);
    auto piece = out.slice(pos - off, pos - off + n);
    parts.add(chunk(f, index, false)
                  .then([this, chunkOff,
                         piece](Result<std::optional<ChunkDesc>> c) mutable -> kj::Promise<Status> {
                    if (!c) return Status(c.error());
                    if (!*c) {
                      memset(piece.begin(), 0, piece.size());  // a hole
                      return Status();
                    }
                    auto desc = kj::heap<ChunkDesc>(**c);
                    auto& d = *desc;
                    return data_.read(d, chunkOff, piece).attach(kj::mv(desc));
                  }));
    pos += n;
  }
  return joinStatus(parts.releaseAsArray());
}

kj::Promise<Status> Client::flush(InodeId inode) {
  auto* fp = find(inode);
  if (!fp) return Status();
  auto& f = *fp;
  f.opens++;
  return drain(f)
      .then([this, &f](Status drained) {
        return commit(f).then([drained](Status c) { return drained ? c : drained; });
      })
      .then([this, &f](Status s) {
        if (!s) log::warn("flush of inode ", f.inode.value, ": ", s.error().toString().c_str());
        f.opens--;
        dropIfIdle(f.inode);
        return s;
      });
}

kj::Promise<Status> Client::fsync(InodeId inode, bool dataOnly) {
  auto* fp = find(inode);
  if (!fp) return dataOnly ? kj::Promise<Status>(Status()) : syncMeta();
  auto& f = *fp;
  f.opens++;
  // What is still buffered goes out synced: it needs no sync of its own below. fdatasync needs
  // the metadata only if it is what finds the data again: the size. An overwrite inside the
  // file leaves mtime for the next close or fsync.
  auto prepare =
      drain(f, true).then([this, &f, inode, dataOnly](Status drained) -> kj::Promise<Status> {
        if (!dataOnly) return flush(inode);
        if (!drained || f.size == f.durableSize) return drained;
        return commit(f);
      });
  return prepare
      .then([this, &f](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return syncShards(f);
      })
      .then([this, &f, dataOnly](Status s) -> kj::Promise<Status> {
        if (!s || !f.metaDirty) return s;
        if (dataOnly && f.size == f.durableSize) return s;
        uint64_t size = f.size;
        f.metaDirty = false;
        return syncMeta().then([&f, size](Status synced) {
          if (synced)
            f.durableSize = size;
          else
            f.metaDirty = true;
          return synced;
        });
      })
      .then([this, &f](Status s) {
        if (!s) log::warn("fsync of inode ", f.inode.value, ": ", s.error().toString().c_str());
        f.opens--;
        dropIfIdle(f.inode);
        return s;
      });
}

kj::Promise<Status> Client::syncChunks(InodeId inode,
                                       const std::map<uint64_t, Unsynced>& chunks) {
  struct Sync {
    ServerId server;
    std::vector<ShardKey> shards;
    std::vector<uint64_t> indexes;  // chunk index of each shard
  };
  std::map<ServerId, Sync> byServer;
  for (auto& [index, u] : chunks) {
    const ChunkDesc& c = u.chunk;
    for (int j = 0; j < c.layout.shards(); ++j) {
      if ((u.shards & (1u << j)) && !c.stale(j)) {
        auto& sync = byServer[c.servers[j]];
        sync.server = c.servers[j];
        sync.shards.push_back(ShardKey{c.id, j});
        sync.indexes.push_back(index);
      }
    }
  }
  auto plan = kj::heap<std::vector<Sync>>();
  kj::Vector<kj::Promise<Status>> syncs;
  for (auto& [server, sync] : byServer) {
    syncs.add(data_.sync(server, sync.shards));
    plan->push_back(kj::mv(sync));
  }
  auto copy = kj::heap<std::map<uint64_t, Unsynced>>(chunks);
  auto& ref = *copy;
  auto& planRef = *plan;
  return kj::joinPromises(syncs.releaseAsArray())
      .then([this, inode, &ref, &planRef](kj::Array<Status> results) -> kj::Promise<Status> {
        // A server that cannot make its shards durable (it died since the write) is a lost
        // shard like any other: marked stale, the chunk stays durable on the rest (rule 5) as
        // long as no more than m of it (every replica but one) are lost.
        std::map<uint64_t, uint32_t> missed;
        std::optional<Error> first;
        for (size_t i = 0; i < results.size(); ++i) {
          if (results[i]) continue;
          if (!first) first = results[i].error();
          for (size_t n = 0; n < planRef[i].shards.size(); ++n) {
            missed[planRef[i].indexes[n]] |= 1u << planRef[i].shards[n].shard;
          }
        }
        if (missed.empty()) return Status();
        kj::Vector<kj::Promise<Status>> marks;
        for (auto& [index, shards] : missed) {
          const ChunkDesc& c = ref.at(index).chunk;
          int lost = std::popcount(c.staleShards | shards);
          int tolerable = c.layout.isEc() ? c.layout.m : c.layout.shards() - 1;
          if (lost > tolerable) return Status(*first);
          log::warn("chunk ", c.id.value, ": sync failed on shards (mask ", shards, "): ",
                    first->toString().c_str(), "; they become stale");
          marks.add(markStale(inode, c, shards).then([](Result<ChunkDesc> r) -> Status {
            if (!r) return r.error();
            return Status();
          }));
        }
        return joinStatus(marks.releaseAsArray());
      })
      .attach(kj::mv(copy), kj::mv(plan));
}

kj::Promise<Status> Client::syncShards(FileState& f) {
  if (f.unsynced.empty()) return Status();
  auto chunks = std::move(f.unsynced);
  f.unsynced.clear();
  InodeId inode = f.inode;
  // A lease given back meanwhile waits for this sync (client_leases.cc).
  std::vector<uint64_t> used;
  for (auto& [index, u] : chunks) {
    if (leases_.count({inode, index})) {
      beginUse(inode, index);
      used.push_back(index);
    }
  }
  auto ended = kj::defer([this, inode, used = kj::mv(used)] {
    for (uint64_t index : used) endUse(inode, index);
  });
  auto syncing = syncChunks(inode, chunks);
  return syncing.then([this, inode, chunks = kj::mv(chunks)](Status s) mutable {
    // Not durable: keep them, so the next fsync tries again (and fails again if lost).
    if (!s) {
      if (auto* f = find(inode)) {
        for (auto& [index, u] : chunks) {
          auto& mine = f->unsynced[index];
          mine.chunk = u.chunk;
          mine.shards |= u.shards;
        }
      }
    }
    return s;
  }).attach(kj::mv(ended));
}

// Sync what closed files left unsynced once too many are remembered; arbitrary ones go first.
void Client::trimClosedUnsynced() {
  while (closedUnsynced_.size() > kMaxClosedUnsynced) {
    auto it = closedUnsynced_.begin();
    InodeId inode = it->first;
    auto chunks = std::move(it->second);
    closedUnsynced_.erase(it);
    auto syncing = syncChunks(inode, chunks);
    tasks_.add(syncing
                   .then([inode](Status s) {
                     if (!s)
                       log::debug("sync of closed inode ", inode.value, ": ",
                                  s.error().toString().c_str());
                   })
                   .attach(kj::mv(chunks)));
  }
}

uint32_t Client::shardsWritten(const Layout& layout, uint64_t off, uint64_t len, bool creating) {
  if (!layout.isEc() || creating) return (1u << layout.shards()) - 1;
  uint32_t mask = 0;
  auto extents = dataExtents(layout, off, len);
  for (int j = 0; j < layout.k; ++j) {
    if (!extents[j].empty()) mask |= 1u << j;
  }
  for (int j = layout.k; j < layout.shards(); ++j) mask |= 1u << j;
  return mask;
}

kj::Promise<Status> Client::flushAll() {
  kj::Vector<kj::Promise<Status>> all;
  std::vector<InodeId> inodes;
  for (auto& [inode, f] : files_) inodes.push_back(inode);
  for (auto inode : inodes) all.add(flush(inode));
  return joinStatus(all.releaseAsArray());
}

// --- coherence: what another mount changed (client_watch.cc) ----------------------------

void Client::dropFileCache(FileState& f) {
  f.lookupEpoch++;
  dropCapability(f);
  f.absent.clear();
  for (auto it = f.chunks.begin(); it != f.chunks.end();) {
    // A chunk this session holds the lease of is written by nobody else.
    if (holds(f.inode, it->first, it->second)) {
      ++it;
    } else {
      // Nor is "never written here, reads as zeros" true any more of a chunk we do not hold.
      f.fresh.erase(it->first);
      it = f.chunks.erase(it);
    }
  }
  f.sizeStale = true;
}

void Client::dropCapability(FileState& f) {
  f.capability.reset();
  f.xattrEpoch = ++xattrEpochs_;
}

void Client::revalidate(InodeId inode) {
  if (auto* f = find(inode)) dropFileCache(*f);
}

void Client::invalidated(Invalidation inv) {
  invalidations_++;
  if (inv.all) {
    for (auto& [inode, f] : files_) dropFileCache(*f);
  } else {
    for (InodeId inode : inv.inodes) {
      if (auto* f = find(inode)) dropFileCache(*f);
    }
  }
  if (invalidationSink_) invalidationSink_(inv);
}

}  // namespace tessera::client
