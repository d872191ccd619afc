#include "meta/meta_service.h"

#include <time.h>

#include <cmath>
#include <set>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "fs/log.h"
#include "fs/options.h"
#include "fs/wire.h"
#include "meta/placement.h"
#include "meta/propose.h"
#include "meta/raft/raft_wire.h"

namespace tessera::meta {
namespace {

std::string_view view(capnp::Text::Reader t) { return std::string_view(t.begin(), t.size()); }

void setRequest(proto::Op::Builder op, proto::RequestId::Reader req) {
  op.setSession(req.getSession());
  op.setSeq(req.getSeq());
  op.setAckedBelow(req.getAckedBelow());
}

// An open handle belongs to the session that asks for it, in a tracked request: the exactly-once
// check then refuses it (stale) once the session expired, so no handle outlives its session.
Status checkOpener(uint64_t session, proto::RequestId::Reader req) {
  if (session == 0 || session != req.getSession() || req.getSeq() == 0) {
    return Error{Errc::kInvalid, "an open must come from its own session, as a tracked request"};
  }
  return Status();
}

template <typename Results>
void replyAttr(Results results, const Result<Applied>& r) {
  setError(results, r);
  if (r) toWire(r->attr, results.initAttr());
}

template <typename Results>
void replyAttr(Results results, const Result<Attr>& r) {
  setError(results, r);
  if (r) toWire(*r, results.initAttr());
}

}  // namespace

void MetaService::ErrorHandler::taskFailed(kj::Exception&& e) {
  log::error("meta service task failed: ", e.getDescription());
}

MetaService::MetaService(Namespace& ns, raft::RaftNode& raft, kj::Timer& timer,
                         const MetaConfig& config)
    : ns_(ns),
      raft_(raft),
      timer_(timer),
      config_(config),
      rng_(config.seed),
      started_(timer.now()) {
  raft_.onLeaderReady = [this] { becameLeader(); };
  raft_.onLeadershipLost = [this] {
    servers_.clear();
    sessions_.clear();
    dropWatchers();
    if (repair_) repair_->reset();
    scrub_.clear();
  };
}

void MetaService::becameLeader() {
  if (!ns_.initialized()) {
    // The first leader of a new cluster formats it, through the log like every change, so
    // every member gets the same cluster id and root.
    log::info("formatting the new cluster ", config_.newClusterId.c_str(), " with root policy ",
              config_.rootPolicy.toString().c_str());
    tasks_.add(proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
                 auto init = op.initInit();
                 init.setClusterId(config_.newClusterId);
                 toWire(config_.rootPolicy, init.initRootPolicy());
               })
                   .then([this](Result<Applied> r) {
                     if (!r && r.code() != Errc::kExists) {
                       log::error("formatting the cluster: ", r.error().toString().c_str());
                     }
                     // The root took inode 1.
                     IdMarks marks = ns_.idMarks();
                     next_.inode = std::max(next_.inode, marks.inode);
                   }));
  }
  next_ = ns_.idMarks();
  servers_.clear();
  scrub_.clear();
  auto now = timer_.now();
  for (auto& rec : ns_.servers()) {
    ServerState s;
    s.record = rec;
    // Until they heartbeat here, servers count as up for a grace period: a leader change must
    // not make a healthy cluster look dead (nor allocations fail) while heartbeats find us.
    // Finding us takes a chunk server its call timeout to the old leader, then backoffs: give
    // it more than one server timeout.
    s.up = true;
    s.lastHeartbeat = now;
    servers_.emplace(rec.id, std::move(s));
  }
  graceUntil_ = now + std::max<uint64_t>(2 * config_.serverTimeoutMs, 5'000) * kj::MILLISECONDS;
  trackSessions();
  dropWatchers();
  if (repair_) repair_->reset();
  log::info("leading: ", servers_.size(), " chunk servers known, next inode above ", next_.inode,
            ", ", sessions_.size(), " sessions");
}

int64_t MetaService::nowNs() const {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

kj::Promise<void> MetaService::run() {
  return timer_.afterDelay(1 * kj::SECONDS).then([this] {
    sweep();
    return run();
  });
}

void MetaService::sweep() {
  if (!raft_.leaderReady()) return;
  expireSilentSessions();
  auto now = timer_.now();
  if (now < graceUntil_) return;
  for (auto& [id, s] : servers_) {
    if (s.up && now - s.lastHeartbeat > config_.serverTimeoutMs * kj::MILLISECONDS) {
      s.up = false;
      log::warn("chunk server ", id.value, " at ", s.record.address.c_str(),
                " is down: no heartbeat for ", config_.serverTimeoutMs, " ms");
    }
  }
  if (repair_) repair_->tick(serverMap());
}

namespace {

}  // namespace

kj::Promise<void> MetaService::openSession(OpenSessionContext context) {
  auto p = context.getParams();
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), context.getResults().initError());
    return kj::READY_NOW;
  }
  uint64_t session = ++next_.session;
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           auto s = op.initOpenSession();
           s.setSession(session);
           s.setHost(p.getHost());
           s.setMountpoint(p.getMountpoint());
         })
      .then([this, context, session](Result<Applied> r) mutable {
        auto p = context.getParams();
        auto results = context.getResults();
        setError(results, r);
        if (r) {
          if (raft_.leaderReady()) sessions_[SessionId(session)].lastContact = timer_.now();
          results.setSession(session);
          results.setTimeoutMs(config_.sessionTimeoutMs);
          log::info("session ", session, " opened by ", p.getHost(), ":", p.getMountpoint());
        }
      });
}

kj::Promise<void> MetaService::lookup(LookupContext context) {
  return readThen(context, [this](LookupContext& context) {
    auto p = context.getParams();
    replyAttr(context.getResults(), ns_.lookup(InodeId(p.getParent()), view(p.getName())));
  });
}

kj::Promise<void> MetaService::getattr(GetattrContext context) {
  return readThen(context, [this](GetattrContext& context) {
    replyAttr(context.getResults(), ns_.getattr(InodeId(context.getParams().getInode())));
  });
}

kj::Promise<void> MetaService::setattr(SetattrContext context) {
  auto p = context.getParams();
  std::vector<uint64_t> lapsed;
  if ((p.getValid() & proto::SET_SIZE) && raft_.leaderReady()) {
    uint64_t keep = p.getSize() / kChunkSize + (p.getSize() % kChunkSize != 0);
    Status s = leasesForDrop(InodeId(p.getInode()), keep, UINT64_MAX,
                             SessionId(p.getReq().getSession()), lapsed);
    if (!s) {
      replyAttr(context.getResults(), Result<Applied>(s.error()));
      return kj::READY_NOW;
    }
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto s = op.initSetattr();
    s.setInode(p.getInode());
    s.setValid(p.getValid());
    s.setMode(p.getMode());
    s.setUid(p.getUid());
    s.setGid(p.getGid());
    s.setSize(p.getSize());
    s.setAtimeNs(p.getAtimeNs());
    s.setMtimeNs(p.getMtimeNs());
    auto l = s.initLapsed(uint32_t(lapsed.size()));
    for (uint32_t i = 0; i < lapsed.size(); ++i) l.set(i, lapsed[i]);
  }).then([this, context](Result<Applied> r) mutable {
    auto p = context.getParams();
    if (r) invalidate(SessionId(p.getReq().getSession()), {InodeId(p.getInode())});
    replyAttr(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::mknod(MknodContext context) {
  auto p = context.getParams();
  if (p.getSession() != 0) {
    if (Status s = checkOpener(p.getSession(), p.getReq()); !s) {
      toWire(s.error(), context.getResults().initError());
      return kj::READY_NOW;
    }
  }
  uint64_t inode = ++next_.inode;
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto m = op.initMknod();
    m.setParent(p.getParent());
    m.setName(p.getName());
    m.setMode(p.getMode());
    m.setRdev(p.getRdev());
    m.setUid(p.getUid());
    m.setGid(p.getGid());
    m.setTarget(p.getTarget());
    m.setNewInode(inode);
    m.setSession(p.getSession());
  }).then([this, context](Result<Applied> r) mutable {
    auto p = context.getParams();
    // The directory's mtime and maybe nlink changed; another mount may hold the name (a
    // dentry of an entry that was there before, or a negative one).
    if (r) {
      invalidate(SessionId(p.getReq().getSession()), {InodeId(p.getParent())},
                 {{InodeId(p.getParent()), std::string(view(p.getName()))}});
    }
    replyAttr(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::link(LinkContext context) {
  auto p = context.getParams();
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto l = op.initLink();
    l.setInode(p.getInode());
    l.setNewParent(p.getNewParent());
    l.setNewName(p.getNewName());
  }).then([this, context](Result<Applied> r) mutable {
    auto p = context.getParams();
    if (r) {
      invalidate(SessionId(p.getReq().getSession()),
                 {InodeId(p.getInode()), InodeId(p.getNewParent())},
                 {{InodeId(p.getNewParent()), std::string(view(p.getNewName()))}});
    }
    replyAttr(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::unlink(UnlinkContext context) {
  auto p = context.getParams();
  // The inode the name leads to now loses a link (other mounts cache its nlink). Read before
  // the change: a concurrent change of the entry may make this the wrong inode, which costs
  // another mount a needless refetch, while the entry itself is invalidated in any case.
  std::vector<InodeId> touched{InodeId(p.getParent())};
  if (auto target = ns_.lookup(InodeId(p.getParent()), view(p.getName()))) {
    touched.push_back(target->inode);
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto u = op.initUnlink();
    u.setParent(p.getParent());
    u.setName(p.getName());
    u.setDir(p.getDir());
  }).then([this, context, touched = kj::mv(touched)](Result<Applied> r) mutable {
    auto p = context.getParams();
    if (r) {
      invalidate(SessionId(p.getReq().getSession()), kj::mv(touched),
                 {{InodeId(p.getParent()), std::string(view(p.getName()))}});
    }
    setError(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::rename(RenameContext context) {
  auto p = context.getParams();
  // Both directories (mtimes, nlink of a moved directory's parents), the inode moved (ctime,
  // its ".."), and one replaced or exchanged at the new name (nlink). Looked up before the
  // change, as in unlink.
  std::vector<InodeId> touched{InodeId(p.getParent()), InodeId(p.getNewParent())};
  if (auto from = ns_.lookup(InodeId(p.getParent()), view(p.getName()))) {
    touched.push_back(from->inode);
  }
  if (auto to = ns_.lookup(InodeId(p.getNewParent()), view(p.getNewName()))) {
    touched.push_back(to->inode);
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto m = op.initRename();
    m.setParent(p.getParent());
    m.setName(p.getName());
    m.setNewParent(p.getNewParent());
    m.setNewName(p.getNewName());
    m.setFlags(p.getFlags());
  }).then([this, context, touched = kj::mv(touched)](Result<Applied> r) mutable {
    auto p = context.getParams();
    if (r) {
      invalidate(SessionId(p.getReq().getSession()), kj::mv(touched),
                 {{InodeId(p.getParent()), std::string(view(p.getName()))},
                  {InodeId(p.getNewParent()), std::string(view(p.getNewName()))}});
    }
    setError(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::readlink(ReadlinkContext context) {
  return readThen(context, [this](ReadlinkContext& context) {
    auto r = ns_.readlink(InodeId(context.getParams().getInode()));
    auto results = context.getResults();
    setError(results, r);
    if (r) results.setTarget(*r);
  });
}

kj::Promise<void> MetaService::readdir(ReaddirContext context) {
  return readThen(context, [this](ReaddirContext& context) {
    auto p = context.getParams();
    uint32_t max = std::min<uint32_t>(std::max<uint32_t>(p.getMax(), 1), 4096);
    auto r = ns_.readdir(InodeId(p.getInode()), p.getCookie(), max, p.getPlus());
    auto results = context.getResults();
    setError(results, r);
    if (r) {
      auto entries = results.initEntries(r->entries.size());
      for (size_t i = 0; i < r->entries.size(); ++i) {
        const auto& e = r->entries[i];
        auto b = entries[i];
        b.setName(e.name);
        b.setCookie(e.cookie);
        toWire(e.attr, b.initAttr());
      }
      results.setEof(r->eof);
    }
  });
}

kj::Promise<void> MetaService::open(OpenContext context) {
  auto p = context.getParams();
  if (Status s = checkOpener(p.getSession(), p.getReq()); !s) {
    toWire(s.error(), context.getResults().initError());
    return kj::READY_NOW;
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto o = op.initOpen();
    o.setSession(p.getSession());
    o.setInode(p.getInode());
  }).then([context](Result<Applied> r) mutable { replyAttr(context.getResults(), r); });
}

kj::Promise<void> MetaService::release(ReleaseContext context) {
  auto p = context.getParams();
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto o = op.initRelease();
    o.setSession(p.getSession());
    o.setInode(p.getInode());
  }).then([this, context, inode = InodeId(p.getInode())](Result<Applied> r) mutable {
    if (r) wakeLockWaiters(inode);  // a last close drops the session's locks on the file
    setError(context.getResults(), r);
  });
}

proto::StatFs::Builder MetaService::fillStatFs(proto::StatFs::Builder b) {
  // Several chunk servers on one disk (a test cluster, or one server per directory) report the
  // same file system: count it once.
  uint64_t capacity = 0, free = 0;
  std::set<std::pair<std::string, uint64_t>> seen;
  for (auto& [id, s] : servers_) {
    if (!s.up) continue;
    if (s.fsid != 0) {
      auto host = Address::parse(s.record.address);
      if (!seen.insert({host ? host->host : s.record.address, s.fsid}).second) continue;
    }
    capacity += s.capacityBytes;
    free += s.freeBytes;
  }
  // Report what fits under the root's policy: ec(4,2) stores 4 bytes of data in 6 of disk.
  auto policy = ns_.policy(kRootInode);
  Layout l = policy ? *policy : Layout::ec(4, 2);
  b.setTotalBytes(uint64_t((unsigned __int128)capacity * l.k / l.shards()));
  b.setFreeBytes(uint64_t((unsigned __int128)free * l.k / l.shards()));
  b.setFiles(ns_.inodeCount());
  return b;
}

kj::Promise<void> MetaService::statfs(StatfsContext context) {
  return readThen(context, [this](StatfsContext& context) {
    auto results = context.getResults();
    okToWire(results.initError());
    fillStatFs(results.initStat());
  });
}

kj::Promise<void> MetaService::setxattr(SetxattrContext context) {
  auto p = context.getParams();
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto x = op.initSetxattr();
    x.setInode(p.getInode());
    x.setName(p.getName());
    x.setValue(p.getValue());
    x.setFlags(p.getFlags());
  }).then([this, context](Result<Applied> r) mutable {
    auto p = context.getParams();
    if (r) invalidate(SessionId(p.getReq().getSession()), {InodeId(p.getInode())});
    setError(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::getxattr(GetxattrContext context) {
  return readThen(context, [this](GetxattrContext& context) {
    auto p = context.getParams();
    auto r = ns_.getxattr(InodeId(p.getInode()), view(p.getName()));
    auto results = context.getResults();
    setError(results, r);
    if (r) {
      results.setValue(kj::arrayPtr(reinterpret_cast<const kj::byte*>(r->data()), r->size()));
    }
  });
}

kj::Promise<void> MetaService::listxattr(ListxattrContext context) {
  return readThen(context, [this](ListxattrContext& context) {
    auto r = ns_.listxattr(InodeId(context.getParams().getInode()));
    auto results = context.getResults();
    setError(results, r);
    if (r) {
      auto names = results.initNames(r->size());
      for (size_t i = 0; i < r->size(); ++i) names.set(i, (*r)[i]);
    }
  });
}

kj::Promise<void> MetaService::removexattr(RemovexattrContext context) {
  auto p = context.getParams();
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto x = op.initRemovexattr();
    x.setInode(p.getInode());
    x.setName(p.getName());
  }).then([this, context](Result<Applied> r) mutable {
    auto p = context.getParams();
    if (r) invalidate(SessionId(p.getReq().getSession()), {InodeId(p.getInode())});
    setError(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::fsync(FsyncContext context) {
  // Every change a client was answered for is committed: in the fsynced Raft log of a majority
  // of the meta servers. Nothing more to make durable.
  okToWire(context.getResults().initError());
  return kj::READY_NOW;
}

kj::Promise<void> MetaService::getChunks(GetChunksContext context) {
  return readThen(context, [this](GetChunksContext& context) {
    auto p = context.getParams();
    uint64_t count = std::min<uint64_t>(p.getCount(), kMaxGetChunks);
    auto r = ns_.chunks(InodeId(p.getInode()), p.getFirst(), count);
    auto results = context.getResults();
    setError(results, r);
    if (r) {
      auto list = results.initChunks(r->size());
      for (size_t i = 0; i < r->size(); ++i) toWire((*r)[i], list[i]);
    }
  });
}

Result<ChunkDesc> MetaService::newChunk(InodeId inode, uint64_t index) {
  auto policy = ns_.policy(inode);
  if (!policy) return policy.error();
  std::vector<Candidate> candidates;
  for (auto& [id, s] : servers_) {
    if (s.up && !s.record.draining && !s.noNewShards) {
      candidates.push_back(Candidate{id, s.record.site, s.record.rack, s.record.host, s.freeBytes});
    }
  }
  auto placed = placeChunk(*policy, candidates, rng_, config_.placement);
  if (!placed) return placed.error();
  ChunkDesc chunk;
  chunk.index = index;
  chunk.id = ChunkId(++next_.chunk);
  chunk.version = 1;
  chunk.layout = *policy;
  chunk.servers = *placed;
  return chunk;
}

kj::Promise<void> MetaService::allocChunk(AllocChunkContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  InodeId inode(p.getInode());
  uint64_t index = p.getIndex();
  auto fail = [&](Error e) {
    toWire(e, results.initError());
    return kj::READY_NOW;
  };
  if (index > kMaxChunkIndex) return fail(Error{Errc::kTooBig, "offset beyond the largest file"});
  // Placement uses this leader's view of the chunk servers: only the leader places.
  if (!raft_.leaderReady()) return fail(raft_.notLeader());
  auto existing = ns_.chunks(inode, index, 1);
  if (!existing) return fail(existing.error());
  if (!existing->empty()) {
    okToWire(results.initError());
    toWire(existing->front(), results.initChunk());
    return kj::READY_NOW;
  }
  auto chunk = newChunk(inode, index);
  if (!chunk) return fail(chunk.error());
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           noteRequest(op, p.getReq());
           auto a = op.initAllocChunk();
           a.setInode(inode.value);
           toWire(*chunk, a.initChunk());
         })
      .then([context](Result<Applied> r) mutable {
        auto results = context.getResults();
        if (!r) return toWire(r.error(), results.initError());
        okToWire(results.initError());
        KJ_ASSERT(r->chunk != std::nullopt, "allocChunk applied without a chunk");
        toWire(*r->chunk, results.initChunk());
        results.setCreated(r->created);
      });
}

kj::Promise<void> MetaService::commitWrite(CommitWriteContext context) {
  auto p = context.getParams();
  // Nothing that large goes into the log.
  if (p.getUsageChunks().size() > kMaxUsageChunks || p.getUsageSet().size() > kMaxUsageChunks ||
      p.getUsageClear().size() > kMaxUsageChunks) {
    toWire(Error{Errc::kInvalid, "commitWrite: usage of too many chunks"},
           context.getResults().initError());
    return kj::READY_NOW;
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto c = op.initCommitWrite();
    c.setInode(p.getInode());
    c.setSize(p.getSize());
    c.setMtimeNs(p.getMtimeNs());
    c.setUsageChunks(p.getUsageChunks());
    c.setUsageSet(p.getUsageSet());
    c.setUsageClear(p.getUsageClear());
  }).then([this, context](Result<Applied> r) mutable {
    auto p = context.getParams();
    // Data was written: other mounts drop their pages of the file and its size and mtime.
    if (r) invalidate(SessionId(p.getReq().getSession()), {InodeId(p.getInode())});
    replyAttr(context.getResults(), r);
  });
}

kj::Promise<void> MetaService::punchChunks(PunchChunksContext context) {
  auto p = context.getParams();
  std::vector<uint64_t> lapsed;
  if (raft_.leaderReady()) {
    uint64_t first = p.getFirst(), count = std::min<uint64_t>(p.getCount(), kMaxPunchChunks);
    uint64_t end = first > UINT64_MAX - count ? UINT64_MAX : first + count;
    Status s = leasesForDrop(InodeId(p.getInode()), first, end,
                             SessionId(p.getReq().getSession()), lapsed);
    if (!s) {
      replyAttr(context.getResults(), Result<Applied>(s.error()));
      return kj::READY_NOW;
    }
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
    noteRequest(op, p.getReq());
    auto c = op.initPunchChunks();
    c.setInode(p.getInode());
    c.setFirst(p.getFirst());
    c.setCount(p.getCount());
    auto l = c.initLapsed(uint32_t(lapsed.size()));
    for (uint32_t i = 0; i < lapsed.size(); ++i) l.set(i, lapsed[i]);
  }).then([this, context, p](Result<Applied> r) mutable {
    // Other mounts drop what they cached of the file: its chunk map lost chunks.
    if (r) invalidate(SessionId(p.getReq().getSession()), {InodeId(p.getInode())});
    replyAttr(context.getResults(), r);
  });
}

void MetaService::fillServerInfo(const ServerState& s, proto::ServerInfo::Builder b) {
  b.setId(s.record.id.value);
  b.setAddress(s.record.address);
  b.setSite(s.record.site);
  b.setRack(s.record.rack);
  b.setHost(s.record.host);
  b.setUp(s.up);
  b.setCapacityBytes(s.capacityBytes);
  b.setUsedBytes(s.usedBytes);
  b.setFreeBytes(s.freeBytes);
  b.setShards(s.shards);
  b.setDraining(s.record.draining);
  if (repair_) {
    auto st = repair_->stats();
    auto it = st.shardsOn.find(s.record.id);
    b.setPlacedShards(it == st.shardsOn.end() ? 0 : it->second);
  }
  b.setNoNewShards(s.noNewShards);
  b.setLogRecords(s.logRecords);
  b.setLogBytes(s.logBytes);
  if (s.disks) b.setDisks(s.disks->getRoot<proto::ServerInfo>().asReader().getDisks());
  if (s.lastHeartbeat != kj::origin<kj::TimePoint>()) {
    b.setLastHeartbeatMs((timer_.now() - s.lastHeartbeat) / kj::MILLISECONDS);
  } else {
    b.setLastHeartbeatMs(UINT64_MAX);
  }
  scrub_.fillProgress(s.record.id, b);
}

kj::Promise<void> MetaService::servers(ServersContext context) {
  return readThen(context, [this](ServersContext& context) {
    auto ids = context.getParams().getIds();
    std::vector<const ServerState*> found;
    for (auto id : ids) {
      auto it = servers_.find(ServerId(id));
      if (it != servers_.end()) found.push_back(&it->second);
    }
    auto results = context.getResults();
    okToWire(results.initError());
    auto list = results.initServers(found.size());
    for (size_t i = 0; i < found.size(); ++i) fillServerInfo(*found[i], list[i]);
  });
}

kj::Promise<void> MetaService::registerServer(RegisterServerContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  std::string cluster = ns_.clusterId();
  auto fail = [&](Error e) {
    if (e.code != Errc::kNotLeader) {
      log::warn("refused chunk server at ", p.getAddress(), ": ", e.toString().c_str());
    }
    toWire(e, results.initError());
    return kj::READY_NOW;
  };
  if (!raft_.leaderReady()) return fail(raft_.notLeader());
  if (p.getClusterId().size() > 0 && view(p.getClusterId()) != cluster) {
    return fail(Error{Errc::kWrongCluster, "data directory belongs to cluster " +
                                               std::string(view(p.getClusterId())) +
                                               ", this is cluster " + cluster});
  }
  if (p.getId() != 0 && p.getClusterId().size() == 0) {
    return fail(Error{Errc::kInvalid, "server id without a cluster id"});
  }
  ServerRecordOut rec;
  rec.address = view(p.getAddress());
  rec.site = view(p.getSite());
  rec.rack = view(p.getRack());
  rec.host = view(p.getHost());
  rec.token = view(p.getToken());
  if (!Address::parse(rec.address)) return fail(Error{Errc::kInvalid, "bad address"});
  if (!rec.token.empty()) {
    if (Status s = checkServerToken(rec.token); !s) return fail(s.error());
  }
  // A server that asks for an id with a token we know registered before and did not hear the
  // answer (a timeout, a leader that lost its leadership): it gets the same id again. Two
  // registrations of one token that race here both propose; the state machine answers the
  // same id to both (ops/cluster.cc).
  bool newId = false;
  if (p.getId() != 0) {
    rec.id = ServerId(p.getId());
  } else {
    for (auto& [id, s] : servers_) {
      if (!rec.token.empty() && s.record.token == rec.token) rec.id = id;
    }
    if (!rec.id) {
      rec.id = ServerId(++next_.server);
      newId = true;
    }
  }
  auto it = servers_.find(rec.id);
  if (it != servers_.end()) {
    rec.draining = it->second.record.draining;
    if (rec.token.empty()) rec.token = it->second.record.token;
  }
  bool changed = it == servers_.end() || it->second.record.address != rec.address ||
                 it->second.record.site != rec.site || it->second.record.rack != rec.rack ||
                 it->second.record.host != rec.host || it->second.record.token != rec.token;
  Applied same;
  same.server = rec.id;
  kj::Promise<Result<Applied>> recorded = Result<Applied>(same);
  if (changed) {
    recorded = proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
      auto reg = op.initRegisterServer();
      reg.setNewId(newId);
      auto s = reg.initServer();
      s.setId(rec.id.value);
      s.setAddress(rec.address);
      s.setSite(rec.site);
      s.setRack(rec.rack);
      s.setHost(rec.host);
      s.setToken(rec.token);
    });
  }
  return recorded.then([this, context, rec, cluster](Result<Applied> r) mutable {
    auto p = context.getParams();
    auto results = context.getResults();
    if (!r) {
      if (r.code() != Errc::kNotLeader) {
        log::warn("refused chunk server at ", rec.address.c_str(), ": ",
                  r.error().toString().c_str());
      }
      return toWire(r.error(), results.initError());
    }
    if (r->server && r->server != rec.id) {
      log::info("chunk server at ", rec.address.c_str(), " registered again with its token: id ",
                r->server.value, " (", rec.id.value, " unused)");
      rec.id = r->server;
      auto known = servers_.find(rec.id);
      if (known != servers_.end()) rec.draining = known->second.record.draining;
    }
    auto& s = servers_[rec.id];
    s.record = rec;
    s.up = true;
    s.lastHeartbeat = timer_.now();
    s.capacityBytes = p.getCapacityBytes();
    s.usedBytes = p.getUsedBytes();
    s.freeBytes = p.getFreeBytes();
    s.shards = p.getShards();
    s.fsid = p.getFsid();
    log::info("chunk server ", rec.id.value, " registered at ", rec.address.c_str());
    okToWire(results.initError());
    results.setId(rec.id.value);
    results.setClusterId(cluster);
  });
}

void MetaService::noteDisks(ServerId id, ServerState& s,
                            proto::MetaService::HeartbeatParams::Reader p) {
  if (p.getNoNewShards() != s.noNewShards) {
    if (p.getNoNewShards()) {
      log::warn("chunk server ", id.value, " takes no new shards: every disk failed or full");
    } else {
      log::info("chunk server ", id.value, " takes new shards again");
    }
  }
  s.noNewShards = p.getNoNewShards();
  // Kept for `tessera status`; a list no server could have is not.
  s.disks = kj::heap<capnp::MallocMessageBuilder>(64);
  if (p.getDisks().size() <= 1024) s.disks->initRoot<proto::ServerInfo>().setDisks(p.getDisks());
  size_t before = s.lostShards.size();
  for (auto ref : p.getLost()) {
    if (ref.getChunk() != 0 && ref.getShard() < 64) {
      bool added = s.lostShards.insert({ref.getChunk(), ref.getShard()}).second;
      // Rebuilt elsewhere like any damaged shard.
      if (added && repair_) repair_->reportDamaged(ChunkId(ref.getChunk()), ref.getShard(), id);
    }
  }
  if (s.lostShards.size() > before) {
    log::warn("chunk server ", id.value, " lost ", s.lostShards.size() - before,
              " shards on failed disks");
  }
}

kj::Promise<void> MetaService::heartbeat(HeartbeatContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  ServerId id(p.getId());
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), results.initError());
    return kj::READY_NOW;
  }
  auto it = servers_.find(id);
  if (it == servers_.end()) {
    toWire(Error{Errc::kNotFound, "unknown server; register first"}, results.initError());
    return kj::READY_NOW;
  }
  auto& s = it->second;
  if (!s.up) log::info("chunk server ", id.value, " is up again");
  s.up = true;
  s.lastHeartbeat = timer_.now();
  s.capacityBytes = p.getCapacityBytes();
  s.usedBytes = p.getUsedBytes();
  s.freeBytes = p.getFreeBytes();
  s.shards = p.getShards();
  s.fsid = p.getFsid();
  s.logRecords = p.getLogRecords();
  s.logBytes = p.getLogBytes();
  noteDisks(id, s, p);
  if (p.getRemoved().size() > 0) {
    // Not waited for: a report lost with a leader change is simply made again.
    tasks_.add(proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
                 auto rm = op.initRemoved();
                 rm.setServer(id.value);
                 rm.setChunks(p.getRemoved());
               })
                   .then([id](Result<Applied> r) {
                     if (!r) {
                       log::debug("recording removed shards of server ", id.value, ": ",
                                  r.error().toString().c_str());
                     }
                   }));
  }
  std::vector<uint64_t> orders;
  for (auto& g : ns_.garbage(10'000)) {
    for (auto server : g.pending) {
      if (server == id) {
        orders.push_back(g.chunk.id.value);
        break;
      }
    }
    if (orders.size() >= 1000) break;
  }
  // Orphans found in this server's inventory (meta/repair.h) go the same way as garbage.
  if (repair_ && orders.size() < 1000) {
    for (ChunkId c : repair_->takeOrphans(id, 1000 - orders.size())) orders.push_back(c.value);
  }
  okToWire(results.initError());
  auto list = results.initRemove(orders.size());
  for (size_t i = 0; i < orders.size(); ++i) list.set(i, orders[i]);
  if (p.hasScrub()) results.setScrubNow(scrub_.onHeartbeat(id, p.getScrub()));
  return kj::READY_NOW;
}

kj::Promise<void> MetaService::scrub(ScrubContext context) {
  auto results = context.getResults();
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), results.initError());
    return kj::READY_NOW;
  }
  std::vector<ServerId> up;
  for (auto& [id, s] : servers_) {
    if (s.up) up.push_back(id);
  }
  // Request ids must differ from any a chunk server acted on, also under an earlier leader.
  lastScrubRequest_ = std::max<uint64_t>(lastScrubRequest_ + 1, uint64_t(nowNs() / 1'000'000));
  scrub_.requestPass(up, lastScrubRequest_);
  log::info("scrub requested on ", up.size(), " chunk servers");
  okToWire(results.initError());
  results.setServers(uint32_t(up.size()));
  return kj::READY_NOW;
}

namespace {

const char* roleText(raft::Role role) {
  switch (role) {
    case raft::Role::kLeader: return "leader";
    case raft::Role::kCandidate: return "candidate";
    case raft::Role::kPreCandidate: return "pre-candidate";
    case raft::Role::kFollower: return "follower";
  }
  return "?";
}

}  // namespace

kj::Promise<void> MetaService::status(StatusContext context) {
  auto results = context.getResults();
  okToWire(results.initError());
  // The Raft view is this server's own; chunk servers are known to the leader only.
  auto st = raft_.status();
  auto info = results.initRaft();
  info.setId(st.id.value);
  info.setTerm(st.term.value);
  info.setRole(roleText(st.role));
  info.setLeader(st.leader.value);
  info.setLeaderAddress(st.leader ? raft_.addressOf(st.leader) : std::string());
  info.setCommit(st.commit.value);
  info.setApplied(raft_.appliedIndex());
  info.setLastIndex(st.lastIndex.value);
  info.setSnapshotIndex(st.firstIndex.value ? st.firstIndex.value - 1 : 0);
  auto members = info.initMembers(uint32_t(st.conf.voters.size()));
  for (size_t i = 0; i < st.conf.voters.size(); ++i) {
    raft::NodeId id = st.conf.voters[i];
    auto m = members[i];
    m.setId(id.value);
    m.setAddress(raft_.addressOf(id));
    m.setRole(id == st.leader ? "leader" : "follower");
    for (auto& peer : st.peers) {
      if (peer.id != id) continue;
      m.setMatch(peer.match.value);
      m.setLag(st.commit.value > peer.match.value ? st.commit.value - peer.match.value : 0);
      m.setActive(peer.recentActive || id == st.id);
    }
  }
  if (!ns_.initialized()) return kj::READY_NOW;
  results.setClusterId(ns_.clusterId());
  results.setAddress(config_.address);
  results.setUptimeMs((timer_.now() - started_) / kj::MILLISECONDS);
  results.setInodes(ns_.inodeCount());
  results.setChunks(ns_.chunkCount());
  auto list = results.initServers(servers_.size());
  size_t i = 0;
  for (auto& [id, s] : servers_) fillServerInfo(s, list[i++]);
  fillStatFs(results.initStat());
  fillRepairStatus(results.initRepair());
  scrub_.fillDamaged(results.initDamaged(uint32_t(scrub_.damagedCount())));
  fillRebalanceStatus(results.initRebalance());
  return kj::READY_NOW;
}

kj::Promise<void> MetaService::raftStep(RaftStepContext context) {
  std::vector<raft::Message> messages;
  for (auto m : context.getParams().getMessages()) {
    auto decoded = raft::fromWire(m);
    if (!decoded) {
      log::warn("raft: dropped a malformed message: ", decoded.error().toString().c_str());
      continue;
    }
    messages.push_back(std::move(*decoded));
  }
  raft_.receive(std::move(messages));
  return kj::READY_NOW;
}

kj::Promise<void> MetaService::raftSnapshot(RaftSnapshotContext context) {
  auto p = context.getParams();
  raft::RaftNode::SnapshotPiece piece;
  piece.from = raft::NodeId(p.getFrom());
  piece.term = raft::Term(p.getTerm());
  piece.meta = raft::fromWire(p.getMeta());
  piece.offset = p.getOffset();
  auto data = p.getData();
  piece.data.assign(reinterpret_cast<const char*>(data.begin()), data.size());
  piece.crc = p.getCrc();
  piece.done = p.getDone();
  piece.total = p.getTotal();
  context.releaseParams();
  return raft_.receiveSnapshot(std::move(piece)).then([context](Result<bool> r) mutable {
    auto results = context.getResults();
    setError(results, r);
    if (r) results.setComplete(*r);
  });
}

kj::Promise<void> MetaService::addMember(AddMemberContext context) {
  auto p = context.getParams();
  if (p.getId() == 0) {
    toWire(Error{Errc::kInvalid, "member id 0"}, context.getResults().initError());
    return kj::READY_NOW;
  }
  return raft_.addMember(raft::NodeId(p.getId()), std::string(p.getAddress().cStr()))
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> MetaService::removeMember(RemoveMemberContext context) {
  return raft_.removeMember(raft::NodeId(context.getParams().getId()))
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> MetaService::transferLeader(TransferLeaderContext context) {
  raft::NodeId to(context.getParams().getId());
  if (!to) {
    // Any other member that is up to date.
    auto st = raft_.status();
    for (auto& peer : st.peers) {
      if (peer.id != st.id && peer.match == st.lastIndex) to = peer.id;
    }
    if (!to) {
      for (auto v : st.conf.voters) {
        if (v != st.id) to = v;
      }
    }
  }
  setError(context.getResults(), raft_.transferLeadership(to));
  return kj::READY_NOW;
}

// --- session liveness ----------------------------------------------------------------------

void MetaService::noteRequest(proto::Op::Builder op, proto::RequestId::Reader req) {
  setRequest(op, req);
  touch(SessionId(req.getSession()));
}

void MetaService::touch(SessionId session) {
  // Only sessions that exist are tracked: contact from an expired one revives nothing (its
  // requests are answered stale by the state machine).
  auto it = sessions_.find(session);
  if (it != sessions_.end()) it->second.lastContact = timer_.now();
}

void MetaService::trackSessions() {
  sessions_.clear();
  auto now = timer_.now();
  for (SessionId id : ns_.sessions()) sessions_[id].lastContact = now;
}

void MetaService::expireSilentSessions() {
  auto now = timer_.now();
  auto timeout = int64_t(config_.sessionTimeoutMs) * kj::MILLISECONDS;
  for (auto& entry : sessions_) {
    SessionId id = entry.first;
    SessionState& s = entry.second;
    if (s.expiring || now - s.lastContact <= timeout) continue;
    s.expiring = true;
    log::warn("session ", id.value, " expires: silent for ",
              (now - s.lastContact) / kj::MILLISECONDS, " ms");
    // Activity the store saw after this instant would mean the session is alive after all.
    int64_t silentSince = nowNs() - int64_t(config_.sessionTimeoutMs) * 1'000'000;
    tasks_.add(proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
                 auto e = op.initExpireSession();
                 e.setSession(id.value);
                 e.setSilentSinceNs(silentSince);
               })
                   .then([this, id](Result<Applied> r) {
                     auto it = sessions_.find(id);
                     if (r || r.code() == Errc::kNotFound) {
                       if (it != sessions_.end()) sessions_.erase(it);
                       watchQueue_.forget(id);
                       watchers_.erase(id);
                       if (r) {
                         log::info("session ", id.value,
                                   " expired; its open files released, its locks dropped");
                         wakeAllLockWaiters();
                       }
                       return;
                     }
                     // Still active (kBusy), or no longer leading: the next sweep decides again.
                     log::info("session ", id.value, " not expired: ", r.error().toString().c_str());
                     if (it == sessions_.end()) return;
                     it->second.expiring = false;
                     if (r.code() == Errc::kBusy) it->second.lastContact = timer_.now();
                   }));
  }
}

kj::Promise<void> MetaService::keepAlive(KeepAliveContext context) {
  auto results = context.getResults();
  SessionId id(context.getParams().getSession());
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), results.initError());
    return kj::READY_NOW;
  }
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    // Not tracked: expired, or never opened. The store has the last word.
    auto exists = ns_.hasSession(id);
    if (!exists) {
      toWire(exists.error(), results.initError());
      return kj::READY_NOW;
    }
    if (!*exists) {
      toWire(Error{Errc::kStale, "session " + std::to_string(id.value) + " expired"},
             results.initError());
      return kj::READY_NOW;
    }
    it = sessions_.emplace(id, SessionState{}).first;
  }
  if (it->second.expiring) {
    toWire(Error{Errc::kStale, "session " + std::to_string(id.value) + " is expiring"},
           results.initError());
    return kj::READY_NOW;
  }
  it->second.lastContact = timer_.now();
  okToWire(results.initError());
  results.setTimeoutMs(config_.sessionTimeoutMs);
  {
    std::vector<RecalledLease> recalled;
    if (repair_) recalled = repair_->recalledFrom(id);
    addWantedLeases(id, recalled);
    auto list = results.initRecalled(uint32_t(recalled.size()));
    for (size_t i = 0; i < recalled.size(); ++i) {
      list[i].setInode(recalled[i].inode.value);
      list[i].setIndex(recalled[i].index);
      list[i].setEpoch(recalled[i].epoch);
    }
  }
  return kj::READY_NOW;
}

// --- repair ----------------------------------------------------------------------------------

void MetaService::enableRepair(kj::Network& network) {
  Repair::Config c;
  c.graceMs = config_.repairGraceMs;
  c.seed = config_.seed ^ 0x9e3779b97f4a7c15ull;
  c.recallHoldMs = config_.recallHoldMs;
  repair_ = kj::heap<Repair>(ns_, raft_, timer_, network, c);
  chunkPeers_ = kj::heap<ChunkPeers>(network, timer_, c.connectTimeoutMs);
  // A rebuild that ends frees a slot: the next one is ordered at once, not at the next sweep
  // (one extra tick, however many end together).
  repair_->onSlotFree([this] {
    if (repairKick_) return;
    repairKick_ = true;
    tasks_.add(kj::evalLater([this] {
      repairKick_ = false;
      if (repair_ && raft_.leaderReady() && timer_.now() >= graceUntil_) repair_->tick(serverMap());
    }));
  });
  scrub_.onDamaged = [this](ChunkId chunk, int shard, ServerId server) {
    if (repair_) repair_->reportDamaged(chunk, shard, server);
  };
}

ServerMap MetaService::serverMap() {
  ServerMap out;
  auto now = timer_.now();
  for (auto& [id, s] : servers_) {
    ServerView v;
    v.id = id;
    v.address = s.record.address;
    v.site = s.record.site;
    v.rack = s.record.rack;
    v.host = s.record.host;
    v.up = s.up;
    v.draining = s.record.draining;
    v.freeBytes = s.freeBytes;
    v.capacityBytes = s.capacityBytes;
    v.usedBytes = s.usedBytes;
    // Down since it missed its heartbeats for the server timeout.
    uint64_t silentMs =
        now > s.lastHeartbeat ? uint64_t((now - s.lastHeartbeat) / kj::MILLISECONDS) : 0;
    v.downMs = !s.up && silentMs > config_.serverTimeoutMs ? silentMs - config_.serverTimeoutMs : 0;
    out.emplace(id, std::move(v));
  }
  return out;
}

void MetaService::fillRebalanceStatus(proto::RebalanceStatus::Builder b) {
  if (!repair_) return;
  auto st = repair_->rebalanceStats();
  b.setActive(st.queued + st.running > 0);
  b.setBandPct(st.bandPct);
  b.setPlanned(st.planned);
  b.setQueued(st.queued);
  b.setRunning(st.running);
  b.setDone(st.done);
  b.setFailed(st.failed);
  b.setBytesPlanned(st.bytesPlanned);
  b.setBytesMoved(st.bytesMoved);
}

void MetaService::fillRepairStatus(proto::RepairStatus::Builder b) {
  if (!repair_) return;
  auto st = repair_->stats();
  b.setPassed(st.passed);
  b.setHealthy(st.healthy);
  b.setDegraded(st.degraded);
  b.setLost(st.lost);
  b.setMisplaced(st.misplaced);
  b.setQueued(st.queued);
  b.setRunning(st.running);
  b.setDone(st.done);
  b.setFailed(st.failed);
  b.setBytesRebuilt(st.bytes);
  b.setOrphans(st.orphans);
}

kj::Promise<void> MetaService::reportDamaged(ReportDamagedContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), results.initError());
    return kj::READY_NOW;
  }
  if (!repair_) {
    toWire(Error{Errc::kNotSupported, "repair is off"}, results.initError());
    return kj::READY_NOW;
  }
  if (p.getShards().size() > 65536) {
    toWire(Error{Errc::kInvalid, "too many shards"}, results.initError());
    return kj::READY_NOW;
  }
  for (auto ref : p.getShards()) {
    repair_->reportDamaged(ChunkId(ref.getChunk()), ref.getShard(), ServerId(p.getServer()));
  }
  okToWire(results.initError());
  return kj::READY_NOW;
}

kj::Promise<void> MetaService::fsck(FsckContext context) {
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), context.getResults().initError());
    return kj::READY_NOW;
  }
  return readThen(context, [this](FsckContext& context) {
    size_t max = std::min<uint32_t>(context.getParams().getMax(), 10'000);
    auto servers = serverMap();
    auto up = [&servers](ServerId id) {
      auto it = servers.find(id);
      return it != servers.end() && it->second.up;
    };
    // Lost blocks count where the chunk map places the shard: a copy elsewhere (a move's
    // source, an orphan) is not the chunk's.
    auto lost = scrub_.lostShards(up);
    LostBlocksFn lostOf = [&lost](const ChunkDesc& c) {
      std::vector<std::pair<int, uint64_t>> out;
      auto it = lost.find(c.id.value);
      if (it == lost.end()) return out;
      for (auto& l : it->second) {
        if (size_t(l.shard) < c.servers.size() && c.servers[l.shard] == l.server) {
          out.emplace_back(l.shard, l.blocks);
        }
      }
      return out;
    };
    Repair::Report report =
        repair_ ? repair_->check(servers, max, lostOf)
                : checkChunks(ns_, servers, {}, config_.repairGraceMs, max, {}, lostOf);
    auto results = context.getResults();
    okToWire(results.initError());
    results.setHealthy(report.healthy);
    results.setDegraded(report.degraded);
    results.setLost(report.lost);
    results.setMisplaced(report.misplaced);
    auto list = results.initBad(report.bad.size());
    for (size_t i = 0; i < report.bad.size(); ++i) {
      auto& bad = report.bad[i];
      auto b = list[i];
      b.setInode(bad.inode.value);
      toWire(bad.chunk, b.initChunk());
      b.setHealth(healthName(bad.health.health));
      b.setMisplaced(bad.health.misplaced);
      b.setDetail(bad.health.why);
      b.setLostBlocks(bad.lostBlocks);
    }
    fillRepairStatus(results.initRepair());
    results.setLostBlocks(scrub_.lostBlocks(up));
    results.setLostBlockChunks(report.lostBlockChunks);
  });
}

kj::Promise<void> MetaService::reportInventory(ReportInventoryContext context) {
  auto p = context.getParams();
  auto results = context.getResults();
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), results.initError());
    return kj::READY_NOW;
  }
  if (servers_.find(ServerId(p.getServer())) == servers_.end()) {
    toWire(Error{Errc::kNotFound, "unknown server; register first"}, results.initError());
    return kj::READY_NOW;
  }
  if (p.getShards().size() > 100'000) {
    toWire(Error{Errc::kInvalid, "inventory piece too large"}, results.initError());
    return kj::READY_NOW;
  }
  if (repair_) {
    std::vector<std::pair<uint64_t, int>> shards;
    shards.reserve(p.getShards().size());
    for (auto ref : p.getShards()) {
      if (ref.getChunk() != 0 && ref.getShard() < 32) {
        shards.emplace_back(ref.getChunk(), ref.getShard());
      }
    }
    repair_->inventory(ServerId(p.getServer()), p.getStart(), shards, p.getDone());
  }
  okToWire(results.initError());
  return kj::READY_NOW;
}

kj::Promise<void> MetaService::drainServer(DrainServerContext context) {
  auto p = context.getParams();
  ServerId id(p.getServer());
  bool draining = p.getDraining();
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), context.getResults().initError());
    return kj::READY_NOW;
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           auto s = op.initSetServerState();
           s.setServer(id.value);
           s.setDraining(draining);
         })
      .then([this, context, id, draining](Result<Applied> r) mutable {
        if (r) {
          auto it = servers_.find(id);
          if (it != servers_.end()) it->second.record.draining = draining;
          log::info("chunk server ", id.value, draining ? " is draining" : " drains no more");
        }
        setError(context.getResults(), r);
      });
}

kj::Promise<void> MetaService::removeServer(RemoveServerContext context) {
  ServerId id(context.getParams().getServer());
  if (!raft_.leaderReady()) {
    toWire(raft_.notLeader(), context.getResults().initError());
    return kj::READY_NOW;
  }
  return proposeOp(raft_, nowNs(), [&](proto::Op::Builder op) {
           auto s = op.initSetServerState();
           s.setServer(id.value);
           s.setRemove(true);
         })
      .then([this, context, id](Result<Applied> r) mutable {
        if (r) {
          servers_.erase(id);
          log::info("chunk server ", id.value, " removed from the cluster");
        }
        setError(context.getResults(), r);
      });
}

}  // namespace tessera::meta
