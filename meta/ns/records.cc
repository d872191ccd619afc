#include "meta/ns/records.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "fs/wire.h"
#include "meta/ns/keys.h"

namespace tessera::meta {
namespace {

// Records are small: 256 bytes hold every record but a long symlink target's, which simply
// spills into a second segment.
constexpr unsigned kFirstSegmentWords = 32;

template <typename Root, typename Fill>
std::string encodeMessage(Fill&& fill) {
  capnp::MallocMessageBuilder message(kFirstSegmentWords);
  fill(message.initRoot<Root>());
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// "inode 7": names a record in errors. Built only on failure, decoding is on every hot path.
std::string recordName(const char* kind, uint64_t id) {
  return id ? std::string(kind) + " " + std::to_string(id) : std::string(kind);
}

// Parses `bytes` as a message with root `Root` and hands it to `read`, which turns it into a T
// or says why it is wrong. Any failure is kCorruption: the bytes came from our own store.
template <typename T, typename Root, typename Read>
Result<T> decodeMessage(const char* kind, uint64_t id, std::string_view bytes, Read&& read) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) {
    return corruption(recordName(kind, id),
                      "size " + std::to_string(bytes.size()) + " is not whole words");
  }
  // Cap'n Proto reads words in place. LevelDB hands out bytes at any alignment: a value read
  // with Get() sits in a heap string, but one from an iterator points into a block. Copy unless
  // aligned.
  kj::Array<capnp::word> copy;
  kj::ArrayPtr<const capnp::word> words;
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) == 0) {
    words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(bytes.data()),
                         bytes.size() / sizeof(capnp::word));
  } else {
    copy = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
    memcpy(copy.begin(), bytes.data(), bytes.size());
    words = copy;
  }
  std::optional<Result<T>> out;
  auto failure = kj::runCatchingExceptions([&] {
    capnp::ReaderOptions options;
    // A record is at most a few KiB; refuse to chase pointers far beyond its own size.
    options.traversalLimitInWords = words.size() * 4 + 64;
    capnp::FlatArrayMessageReader reader(words, options);
    out.emplace(read(reader.template getRoot<Root>()));
  });
  KJ_IF_MAYBE (e, failure) {
    return corruption(recordName(kind, id), e->getDescription().cStr());
  }
  if (!out->ok()) return corruption(recordName(kind, id), out->error().toString());
  return std::move(*out);
}

}  // namespace

Error corruption(std::string_view what, std::string_view why) {
  return Error{Errc::kCorruption, std::string(what) + ": " + std::string(why)};
}

bool validType(uint32_t type) {
  switch (type) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFIFO:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFSOCK:
      return true;
    default:
      return false;
  }
}

Attr attrOf(const Inode& inode) {
  Attr a = inode.attr;
  // Files are sparse: what was never written takes no space. A file counts the MiBs written
  // into it; one from before that was tracked, what its existing chunks could hold. Either is
  // capped by the file size.
  uint64_t allocated =
      inode.usageTracked
          ? (inode.writtenMiB > UINT64_MAX / kUsageUnit ? UINT64_MAX : inode.writtenMiB * kUsageUnit)
          : (inode.chunkCount > UINT64_MAX / kChunkSize ? UINT64_MAX : inode.chunkCount * kChunkSize);
  uint64_t used = inode.isReg() ? std::min(a.size, allocated) : a.size;
  a.blocks = used / 512 + (used % 512 != 0);
  a.readOnly = inode.frozen;
  return a;
}

std::string encode(const Inode& inode) {
  return encodeMessage<proto::InodeRecord>([&](proto::InodeRecord::Builder b) {
    Attr stored = inode.attr;
    stored.blocks = 0;
    stored.readOnly = false;  // the record's own field says it
    toWire(stored, b.initAttr());
    toWire(inode.policy, b.initPolicy());
    if (!inode.target.empty()) b.setTarget(inode.target);
    b.setNextCookie(inode.nextCookie);
    b.setParent(inode.parent.value);
    b.setChunkCount(inode.chunkCount);
    b.setOpenSessions(inode.openSessions);
    b.setXattrCount(inode.xattrCount);
    b.setFrozen(inode.frozen);
    b.setWrittenMiB(inode.writtenMiB);
    b.setUsageTracked(inode.usageTracked);
  });
}

Result<Inode> decodeInode(InodeId id, std::string_view bytes) {
  return decodeMessage<Inode, proto::InodeRecord>(
      "inode", id.value, bytes, [&](proto::InodeRecord::Reader r) -> Result<Inode> {
        Inode inode;
        inode.attr = fromWire(r.getAttr());
        if (inode.attr.inode != id) return Error{Errc::kInvalid, "record names another inode"};
        if (!validType(inode.type())) return Error{Errc::kInvalid, "unknown file type"};
        auto policy = fromWire(r.getPolicy());
        if (!policy) return policy.error();
        inode.policy = *policy;
        inode.target = toStd(r.getTarget());
        inode.nextCookie = r.getNextCookie();
        inode.parent = InodeId(r.getParent());
        inode.chunkCount = r.getChunkCount();
        inode.openSessions = r.getOpenSessions();
        inode.xattrCount = r.getXattrCount();
        inode.frozen = r.getFrozen();
        inode.writtenMiB = r.getWrittenMiB();
        inode.usageTracked = r.getUsageTracked();
        inode.attr.readOnly = false;
        if (inode.isDir() && (inode.nextCookie < kFirstCookie || !inode.parent)) {
          return Error{Errc::kInvalid, "directory without cookie or parent"};
        }
        return inode;
      });
}

std::string encode(const Dentry& dentry) {
  return encodeMessage<proto::DentryRecord>([&](proto::DentryRecord::Builder b) {
    b.setInode(dentry.inode.value);
    b.setType(dentry.type);
    b.setCookie(dentry.cookie);
  });
}

Result<Dentry> decodeDentry(std::string_view bytes) {
  return decodeMessage<Dentry, proto::DentryRecord>(
      "directory entry", 0, bytes, [&](proto::DentryRecord::Reader r) -> Result<Dentry> {
        Dentry d{InodeId(r.getInode()), r.getType(), r.getCookie()};
        if (!d.inode || !validType(d.type) || d.cookie < kFirstCookie) {
          return Error{Errc::kInvalid, "bad inode, type or cookie"};
        }
        return d;
      });
}

std::string encode(const ChunkDesc& chunk) {
  return encodeMessage<proto::ChunkDesc>([&](proto::ChunkDesc::Builder b) { toWire(chunk, b); });
}

Result<ChunkDesc> decodeChunk(uint64_t index, std::string_view bytes) {
  return decodeMessage<ChunkDesc, proto::ChunkDesc>(
      "chunk", index, bytes, [&](proto::ChunkDesc::Reader r) -> Result<ChunkDesc> {
        auto chunk = fromWire(r);
        if (chunk && chunk->index != index)
          return Error{Errc::kInvalid, "record names another index"};
        return chunk;
      });
}

std::string encode(const ServerRecordOut& server) {
  return encodeMessage<proto::ServerRecord>([&](proto::ServerRecord::Builder b) {
    b.setId(server.id.value);
    b.setAddress(server.address);
    b.setSite(server.site);
    b.setRack(server.rack);
    b.setHost(server.host);
    b.setDraining(server.draining);
    b.setToken(server.token);
  });
}

Result<ServerRecordOut> decodeServer(ServerId id, std::string_view bytes) {
  return decodeMessage<ServerRecordOut, proto::ServerRecord>(
      "server", id.value, bytes, [&](proto::ServerRecord::Reader r) -> Result<ServerRecordOut> {
        if (ServerId(r.getId()) != id) return Error{Errc::kInvalid, "record names another server"};
        return ServerRecordOut{id,
                               toStd(r.getAddress()),
                               toStd(r.getSite()),
                               toStd(r.getRack()),
                               toStd(r.getHost()),
                               r.getDraining(),
                               toStd(r.getToken())};
      });
}

std::string encode(const GarbageOut& garbage) {
  return encodeMessage<proto::GarbageRecord>([&](proto::GarbageRecord::Builder b) {
    toWire(garbage.chunk, b.initChunk());
    auto pending = b.initPending(garbage.pending.size());
    for (size_t i = 0; i < garbage.pending.size(); ++i) pending.set(i, garbage.pending[i].value);
  });
}

Result<GarbageOut> decodeGarbage(ChunkId id, std::string_view bytes) {
  return decodeMessage<GarbageOut, proto::GarbageRecord>(
      "garbage chunk", id.value, bytes, [&](proto::GarbageRecord::Reader r) -> Result<GarbageOut> {
        auto chunk = fromWire(r.getChunk());
        if (!chunk) return chunk.error();
        if (chunk->id != id) return Error{Errc::kInvalid, "record names another chunk"};
        GarbageOut g{std::move(*chunk), {}};
        for (uint64_t s : r.getPending()) g.pending.push_back(ServerId(s));
        return g;
      });
}

std::string encode(const SessionRec& session) {
  return encodeMessage<proto::SessionRecord>([&](proto::SessionRecord::Builder b) {
    b.setId(session.id.value);
    b.setHost(session.host);
    b.setMountpoint(session.mountpoint);
    b.setOpenedNs(session.openedNs);
    b.setLastActiveNs(session.lastActiveNs);
    b.setLowestReply(session.lowestReply);
  });
}

Result<SessionRec> decodeSession(SessionId id, std::string_view bytes) {
  return decodeMessage<SessionRec, proto::SessionRecord>(
      "session", id.value, bytes, [&](proto::SessionRecord::Reader r) -> Result<SessionRec> {
        SessionRec s;
        s.id = SessionId(r.getId());
        if (s.id != id) return Error{Errc::kInvalid, "record names another session"};
        s.host = toStd(r.getHost());
        s.mountpoint = toStd(r.getMountpoint());
        s.openedNs = r.getOpenedNs();
        s.lastActiveNs = r.getLastActiveNs();
        s.lowestReply = std::max<uint64_t>(r.getLowestReply(), 1);
        return s;
      });
}

std::string encodeReply(const Result<Applied>& reply) {
  return encodeMessage<proto::StoredReply>([&](proto::StoredReply::Builder b) {
    if (!reply) {
      toWire(reply.error(), b.initError());
      return;
    }
    okToWire(b.initError());
    toWire(reply->attr, b.initAttr());
    if (reply->chunk) {
      b.setHasChunk(true);
      toWire(*reply->chunk, b.initChunk());
    }
    b.setCreated(reply->created);
  });
}

Result<Result<Applied>> decodeReply(std::string_view bytes) {
  return decodeMessage<Result<Applied>, proto::StoredReply>(
      "reply", 0, bytes, [&](proto::StoredReply::Reader r) -> Result<Result<Applied>> {
        auto status = fromWire(r.getError());
        if (!status) return Result<Applied>(status.error());
        Applied a;
        a.attr = fromWire(r.getAttr());
        if (r.getHasChunk()) {
          auto chunk = fromWire(r.getChunk());
          if (!chunk) return chunk.error();
          a.chunk = std::move(*chunk);
        }
        a.created = r.getCreated();
        return Result<Applied>(std::move(a));
      });
}

Result<uint64_t> decodeU64(std::string_view bytes) {
  if (bytes.size() != 8) return corruption("counter", "not 8 bytes");
  uint64_t v = 0;
  for (char c : bytes) v = (v << 8) | uint8_t(c);
  return v;
}


std::string encodeLock(const HeldLock& lock) {
  return encodeMessage<proto::LockRecord>([&](proto::LockRecord::Builder b) {
    b.setEnd(lock.end);
    b.setType(uint8_t(lock.type));
    b.setPid(lock.pid);
    b.setHandle(lock.handle);
  });
}

Result<HeldLock> decodeLock(std::string_view key, std::string_view value) {
  if (key.size() != keys::kLockKeyLen) return corruption("lock key", "wrong length");
  HeldLock lock;
  lock.session = keys::readU64(key, 10);
  lock.owner = keys::readU64(key, 18);
  lock.start = keys::readU64(key, 26);
  uint64_t inode = keys::readU64(key, 1);
  return decodeMessage<HeldLock, proto::LockRecord>(
      "lock on inode", inode, value, [&](proto::LockRecord::Reader r) -> Result<HeldLock> {
        lock.end = r.getEnd();
        lock.pid = r.getPid();
        lock.handle = r.getHandle();
        uint8_t type = r.getType();
        if (type != uint8_t(LockType::kRead) && type != uint8_t(LockType::kWrite)) {
          return Error{Errc::kInvalid, "type " + std::to_string(type)};
        }
        lock.type = LockType(type);
        if (lock.end < lock.start || lock.end > kLockToEnd) {
          return Error{Errc::kInvalid, "range ends before it starts"};
        }
        return lock;
      });
}

}  // namespace tessera::meta
