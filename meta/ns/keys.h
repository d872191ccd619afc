// meta/ns/keys.h — how the namespace lays its records out in LevelDB.
//
// Every key starts with one byte naming the record kind; ids follow as big-endian u64 so that
// LevelDB's bytewise order is numeric order and a prefix scan visits one inode's records in
// order. Values are Cap'n Proto flat messages (fs/proto/ns.capnp) unless noted.
//
//   'i' inode                        → InodeRecord
//   'd' parent  name                 → DentryRecord (child inode, S_IFMT type, readdir cookie)
//   'r' parent  cookie               → name, raw bytes: the readdir index. Cookies are handed out
//                                      from the directory's nextCookie and never reused, so a
//                                      reader that continues "after cookie c" neither skips nor
//                                      repeats entries while others are added or removed.
//   'x' inode   name                 → xattr value, raw bytes
//   'k' inode   index                → ChunkDesc (the chunk of the file at index * 64 MiB)
//   'o' inode   session              → open-handle count, u64 big-endian
//   's' session                      → SessionRecord
//   'q' session seq                  → StoredReply: the first answer to a request, until acked
//   'v' server                       → ServerRecord
//   'g' chunk                        → GarbageRecord
//   'l' session inode index          → "": the session holds the write lease of that chunk (the
//                                      chunk record names it too); expiry and close find a
//                                      session's leases here without a scan of every chunk
//   'L' inode kind session owner start → LockRecord: a lock (kind 'p' fcntl/OFD, 'f' flock), so
//                                      one scan of 'L' inode kind finds every lock that could
//                                      conflict with a new one (meta/ns/lock_table.h)
//   'R' chunk inode index            → "": a file that refers to a shared chunk (ChunkDesc.shared:
//                                      a clone). Every file of a shared chunk has one, so a
//                                      scan of 'R' chunk finds them all; a chunk left in one
//                                      file is private again and has none.
//   'm' member                       → address of a meta server, raw text
//   'c' counter                      → u64 big-endian (kClusterId: raw text; kInitialized: "")
//
// A dentry and its readdir index entry are always written and removed in the same WriteBatch, so
// a crash never leaves one without the other (each apply is one batch). Nothing else spans
// records except the counters, which the same batch updates.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

#include "fs/types.h"

namespace tessera::meta::keys {

enum Kind : char {
  kInode = 'i',
  kDentry = 'd',
  kReaddir = 'r',
  kXattr = 'x',
  kChunk = 'k',
  kOpen = 'o',
  kSession = 's',
  kReply = 'q',
  kServer = 'v',
  kGarbage = 'g',
  kLease = 'l',
  kMember = 'm',
  kLock = 'L',
  kRef = 'R',
  kCounter = 'c',
};

// The second byte of a counter key.
enum Counter : char {
  kInodeMark = 'I',    // highest inode id ever used
  kChunkMark = 'K',    // highest chunk id ever used
  kSessionMark = 'S',  // highest session id ever used
  kServerMark = 'V',   // highest server id ever used
  kInodeCount = 'n',   // inodes that exist (orphans included)
  kChunkCount = 'm',   // chunk records that exist
  kGarbageCount = 'g', // garbage records that exist
  kApplied = 'A',      // the Raft log index of the last op applied
  kClusterId = 'C',
  kInitialized = 'Z',
};

inline void appendU64(std::string& s, uint64_t v) {
  char bytes[8];
  for (int i = 7; i >= 0; --i, v >>= 8) bytes[i] = char(v & 0xff);
  s.append(bytes, 8);
}

// Reads the big-endian u64 at `s[pos]`; the caller checked the length.
inline uint64_t readU64(std::string_view s, size_t pos = 0) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | uint8_t(s[pos + i]);
  return v;
}

inline std::string u64Value(uint64_t v) {
  std::string s;
  appendU64(s, v);
  return s;
}

inline std::string prefix(Kind kind, uint64_t id) {
  std::string s;
  s.reserve(1 + 8);
  s.push_back(char(kind));
  appendU64(s, id);
  return s;
}

inline std::string withU64(Kind kind, uint64_t a, uint64_t b) {
  std::string s;
  s.reserve(1 + 8 + 8);
  s.push_back(char(kind));
  appendU64(s, a);
  appendU64(s, b);
  return s;
}

inline std::string withName(Kind kind, uint64_t id, std::string_view name) {
  std::string s;
  s.reserve(1 + 8 + name.size());
  s.push_back(char(kind));
  appendU64(s, id);
  s.append(name);
  return s;
}

inline std::string inode(InodeId id) { return prefix(kInode, id.value); }
inline std::string dentry(InodeId parent, std::string_view name) {
  return withName(kDentry, parent.value, name);
}
inline std::string dentries(InodeId parent) { return prefix(kDentry, parent.value); }
inline std::string readdir(InodeId dir, uint64_t cookie) {
  return withU64(kReaddir, dir.value, cookie);
}
inline std::string readdirs(InodeId dir) { return prefix(kReaddir, dir.value); }
inline std::string xattr(InodeId id, std::string_view name) {
  return withName(kXattr, id.value, name);
}
inline std::string xattrs(InodeId id) { return prefix(kXattr, id.value); }
inline std::string chunk(InodeId id, uint64_t index) { return withU64(kChunk, id.value, index); }
inline std::string chunks(InodeId id) { return prefix(kChunk, id.value); }
inline std::string open(InodeId id, SessionId session) {
  return withU64(kOpen, id.value, session.value);
}
inline std::string opens(InodeId id) { return prefix(kOpen, id.value); }
inline std::string session(SessionId id) { return prefix(kSession, id.value); }
inline std::string reply(SessionId id, uint64_t seq) {
  std::string s = prefix(kReply, id.value);
  appendU64(s, seq);
  return s;
}
inline std::string server(ServerId id) { return prefix(kServer, id.value); }
inline std::string servers() { return std::string(1, char(kServer)); }
inline std::string garbage(ChunkId id) { return prefix(kGarbage, id.value); }
inline std::string garbages() { return std::string(1, char(kGarbage)); }
inline std::string lease(SessionId session, InodeId inode, uint64_t index) {
  std::string s = withU64(kLease, session.value, inode.value);
  appendU64(s, index);
  return s;
}
inline std::string leases(SessionId session) { return prefix(kLease, session.value); }
inline std::string leases(SessionId session, InodeId inode) {
  return withU64(kLease, session.value, inode.value);
}
// Lock kinds: fcntl record and OFD locks share one space (they conflict with each other);
// flock locks have their own.
constexpr char kPosixLocks = 'p';
constexpr char kFlockLocks = 'f';
inline std::string locks(InodeId inode) { return prefix(kLock, inode.value); }
inline std::string locks(InodeId inode, char kind) {
  std::string s = prefix(kLock, inode.value);
  s.push_back(kind);
  return s;
}
inline std::string lock(InodeId inode, char kind, uint64_t session, uint64_t owner,
                        uint64_t start) {
  std::string s = locks(inode, kind);
  appendU64(s, session);
  appendU64(s, owner);
  appendU64(s, start);
  return s;
}
// 'L' + inode + kind + session + owner + start.
constexpr size_t kLockKeyLen = 1 + 8 + 1 + 8 + 8 + 8;

inline std::string ref(ChunkId chunk, InodeId inode, uint64_t index) {
  std::string s = withU64(kRef, chunk.value, inode.value);
  appendU64(s, index);
  return s;
}
inline std::string refs(ChunkId chunk) { return prefix(kRef, chunk.value); }
constexpr size_t kRefKeyLen = 1 + 8 + 8 + 8;

inline std::string member(uint64_t id) { return prefix(kMember, id); }
inline std::string members() { return std::string(1, char(kMember)); }
inline std::string counter(Counter c) { return std::string{char(kCounter), char(c)}; }

// Length of the kind byte plus one id: where the name or second id of a key starts.
constexpr size_t kIdPrefixLen = 9;

}  // namespace tessera::meta::keys
