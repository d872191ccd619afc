// meta/ns/records.h — the namespace's records as C++ values, and their Cap'n Proto encodings
// (fs/proto/ns.capnp). Decoders trust nothing: bytes that do not parse, or parse into a value
// that breaks an invariant (a key/value id mismatch, an unknown file type, a layout out of
// bounds), give kCorruption instead of a value.
#pragma once
#include <sys/stat.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "fs/result.h"
#include "fs/types.h"
#include "meta/ns/lock_table.h"
#include "meta/ns/namespace.h"

namespace tessera::meta {

// Most hard links one inode may have (EMLINK beyond); also bounds a directory's subdirectories.
constexpr uint32_t kMaxLinks = 65000;
// Longest symlink target (PATH_MAX).
constexpr size_t kMaxSymlinkLen = 4096;
// Size a directory reports.
constexpr uint64_t kDirSize = 4096;
// Readdir cookies of "." and ".."; real entries start at kFirstCookie.
constexpr uint64_t kDotCookie = 1;
constexpr uint64_t kDotDotCookie = 2;
constexpr uint64_t kFirstCookie = 3;

struct Inode {
  Attr attr;  // `blocks` is not stored; attrOf() computes it
  Layout policy;
  std::string target;       // symlinks
  uint64_t nextCookie = 0;  // directories
  InodeId parent;           // directories
  uint64_t chunkCount = 0;  // regular files
  uint64_t openSessions = 0;  // open-handle records ('o' keys) of this inode
  uint64_t xattrCount = 0;    // xattr records ('x' keys) of this inode
  // tessera.readonly (ops/xattr.cc): ops that would change the inode refuse with kReadOnly.
  bool frozen = false;
  // Regular files: MiBs written (ChunkDesc.written bits of all its chunks); counted by
  // st_blocks when usageTracked (files created before it count whole chunks).
  uint64_t writtenMiB = 0;
  bool usageTracked = false;

  InodeId id() const { return attr.inode; }
  uint32_t type() const { return attr.mode & S_IFMT; }
  bool isDir() const { return type() == S_IFDIR; }
  bool isReg() const { return type() == S_IFREG; }
};

struct Dentry {
  InodeId inode;
  uint32_t type = 0;  // S_IFMT bits of the child
  uint64_t cookie = 0;
};

struct SessionRec {
  SessionId id;
  std::string host, mountpoint;
  int64_t openedNs = 0;
  int64_t lastActiveNs = 0;
  uint64_t lowestReply = 1;
};

// True for the seven S_IFMT values POSIX knows.
bool validType(uint32_t type);

// The attributes a caller sees: the stored ones plus `blocks` and `readOnly`.
Attr attrOf(const Inode& inode);

std::string encode(const Inode& inode);
std::string encode(const Dentry& dentry);
std::string encode(const ChunkDesc& chunk);
std::string encode(const ServerRecordOut& server);
std::string encode(const GarbageOut& garbage);
std::string encode(const SessionRec& session);
Result<SessionRec> decodeSession(SessionId id, std::string_view bytes);
// A request's first answer (an error or what it applied), kept for its retries.
std::string encodeReply(const Result<Applied>& reply);
// The outer Result fails (kCorruption) if the bytes are not a reply we stored.
Result<Result<Applied>> decodeReply(std::string_view bytes);

// Each takes the id its key names and checks the value agrees.
Result<Inode> decodeInode(InodeId id, std::string_view bytes);
Result<Dentry> decodeDentry(std::string_view bytes);
Result<ChunkDesc> decodeChunk(uint64_t index, std::string_view bytes);
Result<ServerRecordOut> decodeServer(ServerId id, std::string_view bytes);
Result<GarbageOut> decodeGarbage(ChunkId id, std::string_view bytes);
Result<uint64_t> decodeU64(std::string_view bytes);
// A lock record: its key ('L', keys.h) holds session, owner and start, the value the rest.
// kCorruption for a key of the wrong length, a bad value or a type that is not read or write.
std::string encodeLock(const HeldLock& lock);
Result<HeldLock> decodeLock(std::string_view key, std::string_view value);

// Cap'n Proto text as a std::string (the length is the message's, not strlen's).
inline std::string toStd(capnp::Text::Reader text) {
  return std::string(text.begin(), text.size());
}
inline std::string toStd(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

// A kCorruption error naming the record.
Error corruption(std::string_view what, std::string_view why);

}  // namespace tessera::meta
