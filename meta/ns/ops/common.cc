#include <algorithm>
#include <bit>

#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Status checkName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") {
    return err(Errc::kInvalid, "name", "'" + std::string(name) + "'");
  }
  if (name.size() > kMaxNameLen) {
    return err(Errc::kNameTooLong, "name of", std::to_string(name.size()) + " bytes");
  }
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    return err(Errc::kInvalid, "name with '/' or NUL");
  }
  return Status();
}

Result<Inode*> directory(Txn& txn, InodeId id) {
  auto dir = txn.inode(id);
  if (!dir) return dir.error();
  if (!(*dir)->isDir()) return err(Errc::kNotDir, "inode", idStr(id));
  if ((*dir)->attr.nlink == 0) return err(Errc::kNotFound, "removed directory", idStr(id));
  return *dir;
}

Result<std::optional<Dentry>> findEntry(Txn& txn, InodeId parent, std::string_view name) {
  auto bytes = txn.get(keys::dentry(parent, name));
  if (!bytes) return bytes.error();
  if (!*bytes) return std::optional<Dentry>();
  auto dentry = decodeDentry(**bytes);
  if (!dentry) return dentry.error();
  return std::optional<Dentry>(*dentry);
}

uint64_t addEntry(Txn& txn, Inode& dir, std::string_view name, const Inode& child) {
  uint64_t cookie = dir.nextCookie++;
  putEntry(txn, dir.id(), name, child, cookie);
  return cookie;
}

void putEntry(Txn& txn, InodeId dir, std::string_view name, const Inode& child, uint64_t cookie) {
  txn.put(keys::dentry(dir, name), encode(Dentry{child.id(), child.type(), cookie}));
  txn.put(keys::readdir(dir, cookie), std::string(name));
}

void removeEntry(Txn& txn, InodeId dir, std::string_view name, uint64_t cookie) {
  txn.erase(keys::dentry(dir, name));
  txn.erase(keys::readdir(dir, cookie));
}

Result<bool> isEmptyDir(Txn& txn, InodeId dir) {
  auto first = txn.list(keys::dentries(dir), {}, 1);
  if (!first) return first.error();
  return first->empty();
}

Status dropLink(Txn& txn, Inode& inode, int64_t nowNs) {
  // A directory has exactly one name; its count is 2 + subdirectories only while it has that
  // name, and rmdir checked it is empty.
  if (inode.isDir()) {
    inode.attr.nlink = 0;
  } else if (inode.attr.nlink > 0) {
    --inode.attr.nlink;
  }
  inode.attr.ctimeNs = nowNs;
  if (inode.attr.nlink > 0) return Status();
  // POSIX: an unlinked file stays readable through descriptors already open; the last release
  // deletes it (ops/open.cc).
  if (inode.openSessions > 0) return Status();
  return deleteInode(txn, inode);
}

Status deleteInode(Txn& txn, Inode& inode) {
  // The counts spare a scan when there is nothing (the common case).
  if (inode.xattrCount > 0) {
    auto xattrs = txn.list(keys::xattrs(inode.id()));
    if (!xattrs) return xattrs.error();
    for (auto& [key, value] : *xattrs) txn.erase(key);
  }
  // Only regular files have chunks.
  if (inode.isReg() && inode.chunkCount > 0) {
    if (Status s = chunksToGarbage(txn, inode, 0); !s) return s;
  }
  txn.eraseInode(inode.id());
  return txn.addToCounter(keys::kInodeCount, -1);
}

Status checkDropLeases(Txn& txn, const Inode& inode, uint64_t first, uint64_t end,
                       SessionId requester, capnp::List<uint64_t>::Reader lapsed) {
  if (first >= end) return Status();
  auto chunks = txn.list(keys::chunks(inode.id()), keys::chunk(inode.id(), first));
  if (!chunks) return chunks.error();
  for (auto& [key, value] : *chunks) {
    if (key.size() != keys::kIdPrefixLen + 8) return corruption("chunk key", "wrong length");
    uint64_t index = keys::readU64(key, keys::kIdPrefixLen);
    if (index >= end) break;  // keys sort by index (big-endian)
    auto chunk = decodeChunk(index, value);
    if (!chunk) return chunk.error();
    SessionId holder = chunk->leaseSession;
    if (!holder || holder == requester) continue;
    bool gone = false;
    for (uint64_t s : lapsed) gone = gone || s == holder.value;
    if (gone) continue;
    return Error{Errc::kBusy, "chunk " + std::to_string(chunk->id.value) + " (index " +
                                  std::to_string(index) + ") is leased to session " +
                                  std::to_string(holder.value)};
  }
  return Status();
}

Status chunksToGarbage(Txn& txn, Inode& inode, uint64_t first, uint64_t end) {
  if (first >= end) return Status();
  auto chunks = txn.list(keys::chunks(inode.id()), keys::chunk(inode.id(), first));
  if (!chunks) return chunks.error();
  // Keys sort by index (big-endian): those at `end` and past are a suffix of the list.
  while (!chunks->empty()) {
    const std::string& last = chunks->back().first;
    if (last.size() == keys::kIdPrefixLen + 8 && keys::readU64(last, keys::kIdPrefixLen) < end) {
      break;
    }
    if (last.size() != keys::kIdPrefixLen + 8) return corruption("chunk key", "wrong length");
    chunks->pop_back();
  }
  for (auto& [key, value] : *chunks) {
    if (key.size() != keys::kIdPrefixLen + 8) return corruption("chunk key", "wrong length");
    auto chunk = decodeChunk(keys::readU64(key, keys::kIdPrefixLen), value);
    if (!chunk) return chunk.error();
    txn.erase(key);
    if (chunk->leaseSession) txn.erase(keys::lease(chunk->leaseSession, inode.id(), chunk->index));
    addWrittenMiB(inode, -int64_t(std::popcount(chunk->written)));
    if (chunk->shared) {
      // Another file still refers to it (a clone): its shards stay.
      auto inUse = unshare(txn, chunk->id, inode.id(), chunk->index);
      if (!inUse) return inUse.error();
      if (*inUse) continue;
    }
    // Each server is asked once per chunk, whatever number of its shards it holds; 0 marks a
    // shard that was never placed.
    // A record may exist already: servers that held shards repair moved away.
    for (ServerId s : chunk->servers) {
      if (Status st = addGarbage(txn, *chunk, s); !st) return st;
    }
  }
  uint64_t n = chunks->size();
  if (n == 0) return Status();
  inode.chunkCount = inode.chunkCount > n ? inode.chunkCount - n : 0;
  return txn.addToCounter(keys::kChunkCount, -int64_t(n));
}

Status addGarbage(Txn& txn, const ChunkDesc& chunk, ServerId server) {
  if (!server) return Status();
  std::string key = keys::garbage(chunk.id);
  auto bytes = txn.get(key);
  if (!bytes) return bytes.error();
  if (*bytes) {
    auto garbage = decodeGarbage(chunk.id, **bytes);
    if (!garbage) return garbage.error();
    if (std::find(garbage->pending.begin(), garbage->pending.end(), server) !=
        garbage->pending.end()) {
      return Status();
    }
    garbage->pending.push_back(server);
    txn.put(key, encode(*garbage));
    return Status();
  }
  txn.put(key, encode(GarbageOut{chunk, {server}}));
  return txn.addToCounter(keys::kGarbageCount, 1);
}

}  // namespace tessera::meta::ops
