// The store itself, the dispatch of ops (each lives in ops/) and the read paths. The key layout
// is in keys.h, the record encodings in records.h.
#include "meta/ns/namespace.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>

#include <kj/exception.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>

#include "fs/log.h"
#include "meta/ns/keys.h"
#include "meta/ns/namespace_impl.h"
#include "meta/ns/ops/ops.h"
#include "meta/ns/records.h"
#include "meta/ns/txn.h"

namespace tessera::meta {

namespace {

Result<Applied> dispatch(Txn& txn, proto::Op::Reader op) {
  switch (op.which()) {
    case proto::Op::INIT:
      return ops::init(txn, op);
    case proto::Op::MKNOD:
      return ops::mknod(txn, op);
    case proto::Op::LINK:
      return ops::link(txn, op);
    case proto::Op::UNLINK:
      return ops::unlink(txn, op);
    case proto::Op::RENAME:
      return ops::rename(txn, op);
    case proto::Op::SETATTR:
      return ops::setattr(txn, op);
    case proto::Op::SETXATTR:
      return ops::setxattr(txn, op);
    case proto::Op::REMOVEXATTR:
      return ops::removexattr(txn, op);
    case proto::Op::OPEN:
      return ops::open(txn, op);
    case proto::Op::RELEASE:
      return ops::release(txn, op);
    case proto::Op::ALLOC_CHUNK:
      return ops::allocChunk(txn, op);
    case proto::Op::COMMIT_WRITE:
      return ops::commitWrite(txn, op);
    case proto::Op::OPEN_SESSION:
      return ops::openSession(txn, op);
    case proto::Op::REGISTER_SERVER:
      return ops::registerServer(txn, op);
    case proto::Op::SET_MEMBER:
      return ops::setMember(txn, op);
    case proto::Op::REMOVED:
      return ops::removed(txn, op);
    case proto::Op::EXPIRE_SESSION:
      return ops::expireSession(txn, op);
    case proto::Op::RELEASE_LEASES:
      return ops::releaseLeases(txn, op);
    case proto::Op::MARK_STALE:
      return ops::markStale(txn, op);
    case proto::Op::REPLACE_SHARD:
      return ops::replaceShard(txn, op);
    case proto::Op::SET_SERVER_STATE:
      return ops::setServerState(txn, op);
    case proto::Op::SET_LOCK:
      return ops::setLock(txn, op);
    case proto::Op::RELEASE_LOCKS:
      return ops::releaseLocks(txn, op);
    case proto::Op::PUNCH_CHUNKS:
      return ops::punchChunks(txn, op);
    case proto::Op::CLONE_CHUNKS:
      return ops::cloneChunks(txn, op);
    case proto::Op::COW_CHUNK:
      return ops::cowChunk(txn, op);
  }
  // An op from a newer proposer. Every replica refuses it alike, so they stay identical.
  return Error{Errc::kNotSupported, "unknown op " + std::to_string(unsigned(op.which()))};
}

// The inode an entry names; a dangling entry means the store is damaged.
Result<Inode*> entryTarget(Txn& txn, InodeId inode) {
  auto r = txn.inode(inode);
  if (!r && r.code() == Errc::kNotFound) {
    return corruption("directory entry", "names missing inode " + std::to_string(inode.value));
  }
  return r;
}

// fsyncs every LevelDB log file in `dir` but the newest (which the sync write just synced), then
// `dir` itself. A log that vanishes meanwhile was compacted into a synced table: nothing to do.
Status syncLogs(const std::string& dir) {
  std::error_code ec;
  std::map<uint64_t, std::string> logs;  // by number: "000012.log" → 12
  // The error_code overloads throughout: a failure is a value here, not an exception.
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() != ".log") continue;
    logs.emplace(std::strtoull(it->path().stem().c_str(), nullptr, 10), it->path().string());
  }
  if (ec) return Error{Errc::kIo, "sync: list " + dir + ": " + ec.message()};
  std::vector<std::string> paths;
  for (auto& [number, path] : logs) {
    if (number != logs.rbegin()->first) paths.push_back(path);
  }
  paths.push_back(dir);
  for (const std::string& p : paths) {
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) continue;
      return Error{Errc::kIo, "sync: open " + p + ": " + strerror(errno)};
    }
    int rc = ::fsync(fd);
    int fsyncErrno = errno;
    ::close(fd);
    if (rc != 0) return Error{Errc::kIo, "sync: fsync " + p + ": " + strerror(fsyncErrno)};
  }
  return Status();
}

// For the reads that have no error channel: a corrupt counter is logged and read as 0.
uint64_t counterOr0(Txn& txn, keys::Counter c) {
  auto value = txn.counter(c);
  if (value) return *value;
  log::error("namespace: counter ", std::string(1, char(c)).c_str(), ": ",
             value.error().toString().c_str());
  return 0;
}

}  // namespace

Namespace::Namespace(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Namespace::~Namespace() = default;

Result<std::unique_ptr<Namespace>> Namespace::open(const std::string& path, leveldb::Env* env) {
  auto impl = std::make_unique<Impl>();
  // Most lookups are point reads of names, many of them for names that do not exist yet
  // (create checks first): a Bloom filter saves the disk read for those.
  impl->filter.reset(leveldb::NewBloomFilterPolicy(10));
  leveldb::Options options;
  options.create_if_missing = true;
  options.filter_policy = impl->filter.get();
  if (env) options.env = env;
  if (Status r = recoverSnapshotInstall(path, env); !r) return r.error();
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, path, &db);
  if (!s.ok()) return Error{Errc::kIo, "open namespace " + path + ": " + s.ToString()};
  impl->db.reset(db);
  impl->path = path;
  impl->onDisk = env == nullptr || env == leveldb::Env::Default();
  impl->env = env;
  return std::unique_ptr<Namespace>(new Namespace(std::move(impl)));
}

bool Namespace::initialized() {
  Txn txn(*impl_->db);
  auto flag = txn.get(keys::counter(keys::kInitialized));
  if (!flag) log::error("namespace: ", flag.error().toString().c_str());
  return flag && flag->has_value();
}

std::string Namespace::clusterId() {
  Txn txn(*impl_->db);
  auto id = txn.get(keys::counter(keys::kClusterId));
  if (!id) log::error("namespace: ", id.error().toString().c_str());
  return id && *id ? **id : std::string();
}

namespace {

// How many acknowledged replies one op drops at most (the rest go with later ops).
constexpr uint64_t kMaxReplyTrim = 1024;

// The session's record for a request of it: kStale if the session is gone (expired).
Result<SessionRec> sessionOf(Txn& txn, SessionId id) {
  auto bytes = txn.get(keys::session(id));
  if (!bytes) return bytes.error();
  if (!*bytes) return Error{Errc::kStale, "session " + std::to_string(id.value) + " expired"};
  return decodeSession(id, **bytes);
}

// Stores the first answer to (session, seq), drops the replies the client acknowledged and
// notes the session's activity: all in `txn`.
Status recordReply(Txn& txn, SessionRec session, uint64_t seq, uint64_t ackedBelow,
                   int64_t nowNs, const Result<Applied>& reply) {
  txn.put(keys::reply(session.id, seq), encodeReply(reply));
  uint64_t upTo = std::min({ackedBelow, seq, session.lowestReply + kMaxReplyTrim});
  for (uint64_t s = session.lowestReply; s < upTo; ++s) txn.erase(keys::reply(session.id, s));
  session.lowestReply = std::max(session.lowestReply, upTo);
  session.lastActiveNs = std::max(session.lastActiveNs, nowNs);
  txn.put(keys::session(session.id), encode(session));
  return Status();
}

}  // namespace

// Exactly once: a request that names its session and seq is answered from the stored reply if
// it was applied before (a client retrying after a lost answer or a leader change), and its
// first answer — success or error — is stored with its effects, in the same batch.
Result<Applied> Namespace::apply(proto::Op::Reader op, uint64_t logIndex) {
  Txn txn(*impl_->db);
  // Every batch that leaves here notes the log entry it applied.
  auto noteApplied = [logIndex](Txn& t) -> Status {
    return logIndex ? t.raiseMark(keys::kApplied, logIndex) : Status();
  };
  SessionId sessionId(op.getSession());
  uint64_t seq = op.getSeq();
  std::optional<SessionRec> session;
  if (sessionId && seq) {
    auto stored = txn.get(keys::reply(sessionId, seq));
    if (!stored) return stored.error();
    if (*stored) {
      auto reply = decodeReply(**stored);
      if (!reply) return reply.error();
      if (Status s = markApplied(logIndex); !s) return s.error();
      return *reply;
    }
    auto s = sessionOf(txn, sessionId);
    if (!s) {
      if (Status m = markApplied(logIndex); !m) return m.error();
      return s.error();
    }
    if (seq < s->lowestReply) {
      if (Status m = markApplied(logIndex); !m) return m.error();
      return Error{Errc::kStale, "request " + std::to_string(seq) + " was acknowledged already"};
    }
    session = std::move(*s);
  }
  // An op whose bytes do not hold together (Cap'n Proto throws as it reads them) is refused like
  // any invalid op: every replica refuses the same bytes alike, and the log can move on past it.
  std::optional<Result<Applied>> result;
  KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { result.emplace(dispatch(txn, op)); })) {
    log::error("namespace: malformed op: ", e->getDescription());
    if (Status m = markApplied(logIndex); !m) return m.error();
    return Error{Errc::kInvalid, std::string("malformed op: ") + e->getDescription().cStr()};
  }
  Result<Applied>& applied = *result;
  if (!session) {
    if (!applied) {
      if (Status m = markApplied(logIndex); !m) return m.error();
      return applied;
    }
    if (Status s = noteApplied(txn); !s) return s.error();
    if (Status s = txn.commit(); !s) return s.error();
    return applied;
  }
  // A failed op changed nothing; only its answer is kept.
  Txn replyTxn(*impl_->db);
  Txn& keep = applied ? txn : replyTxn;
  if (Status s = recordReply(keep, *session, seq, op.getAckedBelow(), op.getNowNs(), applied); !s) {
    return s.error();
  }
  if (Status s = noteApplied(keep); !s) return s.error();
  if (Status s = keep.commit(); !s) return s.error();
  return applied;
}

Status Namespace::markApplied(uint64_t logIndex) {
  if (logIndex == 0) return Status();
  Txn txn(*impl_->db);
  if (Status s = txn.raiseMark(keys::kApplied, logIndex); !s) return s;
  return txn.commit();
}

uint64_t Namespace::appliedIndex() {
  Txn txn(*impl_->db);
  return counterOr0(txn, keys::kApplied);
}

std::vector<Namespace::Member> Namespace::members() {
  Txn txn(*impl_->db);
  std::vector<Member> out;
  Status s = txn.scan(keys::members(), {}, [&](std::string_view key, std::string_view value) {
    if (key.size() == keys::kIdPrefixLen) {
      out.push_back(Member{keys::readU64(key, 1), std::string(value)});
    }
    return true;
  });
  if (!s) log::error("namespace: members: ", s.error().toString().c_str());
  return out;
}

Result<Attr> Namespace::getattr(InodeId inode) {
  Txn txn(*impl_->db);
  auto r = txn.inode(inode);
  if (!r) return r.error();
  return attrOf(**r);
}

Result<std::optional<HeldLock>> Namespace::lockConflict(InodeId inode, bool flock,
                                                        const HeldLock& want) {
  Txn txn(*impl_->db);
  auto node = txn.inode(inode);
  if (!node) return node.error();
  auto rows = txn.list(keys::locks(inode, flock ? keys::kFlockLocks : keys::kPosixLocks));
  if (!rows) return rows.error();
  for (auto& [key, value] : *rows) {
    auto lock = decodeLock(key, value);
    if (!lock) return lock.error();
    if (conflicts(*lock, want)) return std::optional<HeldLock>(*lock);
  }
  return std::optional<HeldLock>();
}

Result<Attr> Namespace::lookup(InodeId parent, std::string_view name) {
  // The kernel resolves "." and ".." itself.
  if (Status s = ops::checkName(name); !s) return s.error();
  Txn txn(*impl_->db);
  auto dir = txn.inode(parent);
  if (!dir) return dir.error();
  if (!(*dir)->isDir()) return ops::err(Errc::kNotDir, "lookup in", ops::idStr(parent));
  auto entry = ops::findEntry(txn, parent, name);
  if (!entry) return entry.error();
  if (!*entry) return ops::err(Errc::kNotFound, "lookup", name);
  auto child = entryTarget(txn, (*entry)->inode);
  if (!child) return child.error();
  return attrOf(**child);
}

Result<std::string> Namespace::readlink(InodeId inode) {
  Txn txn(*impl_->db);
  auto r = txn.inode(inode);
  if (!r) return r.error();
  if ((*r)->type() != S_IFLNK) return ops::err(Errc::kInvalid, "readlink of a non-symlink");
  return (*r)->target;
}

Result<DirPage> Namespace::readdir(InodeId dir, uint64_t cookie, uint32_t max, bool plus) {
  if (max == 0) return ops::err(Errc::kInvalid, "readdir: max 0");
  Txn txn(*impl_->db);
  auto d = txn.inode(dir);
  if (!d) return d.error();
  if (!(*d)->isDir()) return ops::err(Errc::kNotDir, "readdir", ops::idStr(dir));

  DirPage page;
  auto entryFor = [&](std::string name, uint64_t c, InodeId id, uint32_t type) -> Status {
    DirEntryOut e{std::move(name), c, Attr{}};
    if (plus) {
      auto child = entryTarget(txn, id);
      if (!child) return child.error();
      e.attr = attrOf(**child);
    } else {
      e.attr.inode = id;
      e.attr.mode = type;
    }
    page.entries.push_back(std::move(e));
    return Status();
  };
  if (cookie < kDotCookie) {
    if (Status s = entryFor(".", kDotCookie, dir, S_IFDIR); !s) return s.error();
  }
  if (cookie < kDotDotCookie && page.entries.size() < max) {
    // A removed directory that is still open may have outlived its parent; its ".." then
    // shows itself, as the root's does.
    InodeId up = (*d)->parent;
    if ((*d)->attr.nlink == 0) {
      auto exists = txn.hasInode(up);
      if (!exists) return exists.error();
      if (!*exists) up = dir;
    }
    if (Status s = entryFor("..", kDotDotCookie, up, S_IFDIR); !s) return s.error();
  }
  if (cookie == UINT64_MAX) {
    page.eof = true;
    return page;
  }

  // One entry more than fits tells whether this page is the last.
  size_t room = max - page.entries.size();
  uint64_t from = std::max(cookie + 1, kFirstCookie);
  auto index = txn.list(keys::readdirs(dir), keys::readdir(dir, from), room + 1);
  if (!index) return index.error();
  page.eof = index->size() <= room;
  if (!page.eof) index->pop_back();
  for (auto& [key, name] : *index) {
    if (key.size() != keys::kIdPrefixLen + 8 || !ops::checkName(name)) {
      return corruption("readdir index of " + ops::idStr(dir), "bad key or name");
    }
    uint64_t c = keys::readU64(key, keys::kIdPrefixLen);
    auto entry = ops::findEntry(txn, dir, name);
    if (!entry) return entry.error();
    if (!*entry || (*entry)->cookie != c) {
      return corruption("readdir index of " + ops::idStr(dir), "disagrees with entry " + name);
    }
    if (Status s = entryFor(std::move(name), c, (*entry)->inode, (*entry)->type); !s) {
      return s.error();
    }
  }
  return page;
}

Result<std::string> Namespace::getxattr(InodeId inode, std::string_view name) {
  if (Status s = ops::checkXattrName(name); !s) return s.error();
  Txn txn(*impl_->db);
  auto r = txn.inode(inode);
  if (!r) return r.error();
  if (name == ops::kPolicyXattr) return (*r)->policy.toString();
  if (name == ops::kReadOnlyXattr) {
    if (!(*r)->frozen) return ops::err(Errc::kNoData, "getxattr", name);
    return std::string("1");
  }
  auto value = txn.get(keys::xattr(inode, name));
  if (!value) return value.error();
  if (!*value) return ops::err(Errc::kNoData, "getxattr", name);
  return std::move(**value);
}

Result<std::vector<std::string>> Namespace::listxattr(InodeId inode) {
  Txn txn(*impl_->db);
  auto r = txn.inode(inode);
  if (!r) return r.error();
  auto all = txn.list(keys::xattrs(inode));
  if (!all) return all.error();
  // tessera.policy and tessera.readonly are not listed: `cp -a` and `rsync -X` would copy them
  // to files that must get their own directory's policy, and would freeze the copies.
  std::vector<std::string> names;
  for (auto& [key, value] : *all) names.push_back(key.substr(keys::kIdPrefixLen));
  return names;
}

Result<std::vector<ChunkDesc>> Namespace::chunks(InodeId inode, uint64_t first, uint64_t count) {
  Txn txn(*impl_->db);
  auto r = txn.inode(inode);
  if (!r) return r.error();
  std::vector<ChunkDesc> out;
  Status bad;
  Status s = txn.scan(keys::chunks(inode), keys::chunk(inode, first),
                      [&](std::string_view key, std::string_view value) {
                        if (key.size() != keys::kIdPrefixLen + 8) {
                          bad = corruption("chunk key", "wrong length");
                          return false;
                        }
                        uint64_t index = keys::readU64(key, keys::kIdPrefixLen);
                        if (index - first >= count) return false;
                        auto chunk = decodeChunk(index, value);
                        if (!chunk) {
                          bad = chunk.error();
                          return false;
                        }
                        out.push_back(std::move(*chunk));
                        return true;
                      });
  if (!s) return s.error();
  if (!bad) return bad.error();
  return out;
}

Result<Layout> Namespace::policy(InodeId inode) {
  Txn txn(*impl_->db);
  auto r = txn.inode(inode);
  if (!r) return r.error();
  return (*r)->policy;
}

std::vector<ServerRecordOut> Namespace::servers() {
  Txn txn(*impl_->db);
  std::vector<ServerRecordOut> out;
  Status s = txn.scan(keys::servers(), {}, [&](std::string_view key, std::string_view value) {
    auto server = key.size() == keys::kIdPrefixLen
                      ? decodeServer(ServerId(keys::readU64(key, 1)), value)
                      : Result<ServerRecordOut>(corruption("server key", "wrong length"));
    // No error channel here: a damaged record is left out and logged, the rest still serve.
    if (server) {
      out.push_back(std::move(*server));
    } else {
      log::error("namespace: ", server.error().toString().c_str());
    }
    return true;
  });
  if (!s) log::error("namespace: servers: ", s.error().toString().c_str());
  return out;
}

std::vector<GarbageOut> Namespace::garbage(size_t max) {
  Txn txn(*impl_->db);
  std::vector<GarbageOut> out;
  // Heartbeats ask often; a scan of a drained garbage range walks all its deleted keys.
  if (max == 0 || counterOr0(txn, keys::kGarbageCount) == 0) return out;
  Status s = txn.scan(keys::garbages(), {}, [&](std::string_view key, std::string_view value) {
    auto garbage = key.size() == keys::kIdPrefixLen
                       ? decodeGarbage(ChunkId(keys::readU64(key, 1)), value)
                       : Result<GarbageOut>(corruption("garbage key", "wrong length"));
    if (garbage) {
      out.push_back(std::move(*garbage));
    } else {
      log::error("namespace: ", garbage.error().toString().c_str());
    }
    return out.size() < max;
  });
  if (!s) log::error("namespace: garbage: ", s.error().toString().c_str());
  return out;
}

IdMarks Namespace::idMarks() {
  Txn txn(*impl_->db);
  return IdMarks{counterOr0(txn, keys::kInodeMark), counterOr0(txn, keys::kChunkMark),
                 counterOr0(txn, keys::kSessionMark), counterOr0(txn, keys::kServerMark)};
}

uint64_t Namespace::inodeCount() {
  Txn txn(*impl_->db);
  return counterOr0(txn, keys::kInodeCount);
}

uint64_t Namespace::chunkCount() {
  Txn txn(*impl_->db);
  return counterOr0(txn, keys::kChunkCount);
}

Status Namespace::sync() {
  // An empty batch written with sync=true fsyncs LevelDB's current log.
  Txn txn(*impl_->db);
  if (Status s = txn.commit(/*sync=*/true); !s) return s;
  // But only the current one: writes that went to the previous log before a memtable switch
  // sit in the page cache until a background compaction turns that memtable into a (synced)
  // table file, and a power loss in between loses them while later ones survive
  // (google/leveldb#193). So fsync every log still there, and the directory naming them.
  return impl_->onDisk ? syncLogs(impl_->path) : Status();
}

// --- sessions ---------------------------------------------------------------------------------

std::vector<SessionId> Namespace::sessions() {
  Txn txn(*impl_->db);
  std::vector<SessionId> out;
  Status s = txn.scan(std::string(1, char(keys::kSession)), {},
                      [&](std::string_view key, std::string_view) {
                        if (key.size() == keys::kIdPrefixLen) {
                          out.push_back(SessionId(keys::readU64(key, 1)));
                        }
                        return true;
                      });
  if (!s) log::error("namespace: sessions: ", s.error().toString().c_str());
  return out;
}

Result<bool> Namespace::hasSession(SessionId id) {
  Txn txn(*impl_->db);
  auto bytes = txn.get(keys::session(id));
  if (!bytes) return bytes.error();
  return bytes->has_value();
}

}  // namespace tessera::meta
