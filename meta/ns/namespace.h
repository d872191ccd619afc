// meta/ns/namespace.h — the namespace state machine: inodes, directory entries, xattrs, chunk
// maps, open files, sessions, the chunk-server registry and the garbage list, in one LevelDB.
//
// Mutations arrive as proto::Op (fs/proto/ns.capnp) and go through apply(), which is
// deterministic: what it writes and returns depends only on the store and the op (the proposer
// put the time and every new id into the op). Each apply is one LevelDB WriteBatch, so a crash
// leaves an op wholly applied or not at all. This is the shape Raft needs: the same ops applied
// in the same order give the same store on every replica.
//
// Reads (getattr, lookup, readdir, ...) read the store directly.
//
// Writes are not fsync'ed one by one (each reaches the OS with write(2), so a killed process
// loses nothing); sync() makes everything so far durable against power loss.
//
// Permissions are not checked here: mounts run with default_permissions, so the kernel checks
// them against the attributes we return before it sends a request.
//
// Not thread-safe: owned by the meta server's event loop.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/proto/ns.capnp.h"
#include "fs/result.h"
#include "fs/types.h"
#include "meta/ns/lock_table.h"

namespace leveldb {
class DB;
class Env;
}  // namespace leveldb

namespace tessera::meta {

// What an applied op hands back. Which fields are set depends on the op:
//   init: nothing; mknod, link, setattr, open, commitWrite: attr of the inode;
//   allocChunk: chunk (the existing one if the index was already allocated).
//   expireSession: nothing; kNotFound if the session is gone already (expiry is idempotent),
//   kBusy if its record shows activity after the time the op says it was silent since.
struct Applied {
  Attr attr;
  std::optional<ChunkDesc> chunk;
  // allocChunk: this op placed the chunk, so no shard of it exists yet. Kept in the stored
  // reply, so a retried request that was applied before gets the same answer.
  bool created = false;
  // registerServer: the id the server has (another than proposed when its token already had one).
  ServerId server{};
};

struct DirEntryOut {
  std::string name;
  uint64_t cookie = 0;
  Attr attr;  // with plus: full attributes; else only inode and the S_IFMT bits of mode
};

struct DirPage {
  std::vector<DirEntryOut> entries;
  bool eof = false;
};

struct ServerRecordOut {
  ServerId id;
  std::string address, site, rack, host;
  bool draining = false;
  std::string token;  // identity of its data directory (fs/types.h); empty in old records
};

struct GarbageOut {
  ChunkDesc chunk;
  std::vector<ServerId> pending;  // servers that still hold shards of it
};

// High-water marks of ids handed out so far, so a proposer never reuses one.
struct IdMarks {
  uint64_t inode = 0, chunk = 0, session = 0, server = 0;
};

class Namespace {
 public:
  // Opens or creates the store at `path`. `env` nullptr means leveldb::Env::Default(); tests pass
  // an in-memory env. kIo with LevelDB's message if it cannot be opened.
  static Result<std::unique_ptr<Namespace>> open(const std::string& path,
                                                 leveldb::Env* env = nullptr);
  ~Namespace();

  // True once an init op was applied.
  bool initialized();
  std::string clusterId();

  // Applies one op. Errors are values (kNotFound, kExists, ...) and leave the store unchanged
  // (but for the answer a tracked request keeps); kCorruption if a record the op needs is
  // damaged, kInvalid if the op's bytes do not parse. `logIndex` != 0: the op is Raft log entry
  // `logIndex`, recorded as applied in the same batch, whatever the outcome.
  Result<Applied> apply(proto::Op::Reader op, uint64_t logIndex = 0);
  // Records that log entry `logIndex` was applied without an op (a leader's no-op, a
  // configuration change).
  Status markApplied(uint64_t logIndex);
  // The last log entry applied; 0 before any.
  uint64_t appliedIndex();

  struct Member {
    uint64_t id;
    std::string address;
  };
  // The meta servers of the Raft group whose addresses were recorded (setMember ops).
  std::vector<Member> members();

  Result<Attr> getattr(InodeId inode);
  Result<Attr> lookup(InodeId parent, std::string_view name);
  Result<std::string> readlink(InodeId inode);
  // Entries with cookie > `cookie`, at most `max` (kInvalid if 0), in cookie order; "." (cookie 1)
  // and ".." (cookie 2) first. A cookie stays valid while entries are added and removed.
  Result<DirPage> readdir(InodeId dir, uint64_t cookie, uint32_t max, bool plus);
  Result<std::string> getxattr(InodeId inode, std::string_view name);
  Result<std::vector<std::string>> listxattr(InodeId inode);
  // Chunks with first <= index < first + count that exist, in index order.
  Result<std::vector<ChunkDesc>> chunks(InodeId inode, uint64_t first, uint64_t count);
  // The first lock on `inode` (flock locks, or fcntl/OFD ones) that conflicts with `want`
  // (meta/ns/lock_table.h); nullopt if `want` could be taken now.
  Result<std::optional<HeldLock>> lockConflict(InodeId inode, bool flock, const HeldLock& want);
  // The layout new chunks of this file (or new children of this directory) get.
  Result<Layout> policy(InodeId inode);

  // --- repair (meta/ns/chunk_scan.cc) ---
  struct ChunkEntry {
    InodeId inode;
    uint64_t fileSize = 0;
    ChunkDesc chunk;
  };
  // Every chunk of every file in (inode, index) order, from (inode, index) on, at most `max`
  // (a damaged record is logged and left out).
  std::vector<ChunkEntry> scanChunks(InodeId inode, uint64_t index, size_t max);
  // The garbage record of one chunk, nullopt if none.
  std::optional<GarbageOut> garbageOf(ChunkId chunk);

  std::vector<ServerRecordOut> servers();
  std::vector<GarbageOut> garbage(size_t max);
  IdMarks idMarks();
  uint64_t inodeCount();
  uint64_t chunkCount();

  // Everything applied so far is on disk when this returns ok.
  Status sync();

  // --- Raft snapshots (meta/ns/snapshot.h; code in snapshot.cc) ---
  // Replaces the whole store by the staging store a SnapshotWriter finished. Crash-safe: a
  // crash at any point leaves a directory that open() turns into either the old store or the
  // new one. The store is closed and reopened meanwhile; no SnapshotReader may be alive.
  // kNotFound if there is no finished staging store; kIo if the switch fails (the store may
  // then be closed: the caller must stop, and the next open() completes the switch).
  Status installSnapshot();
  // Removes a staging store, finished or not, without installing it.
  void discardSnapshot();

  // --- sessions (expiry: ops/session.cc; liveness is the leader's, meta_service.cc) ---
  // Every session that has a record, in id order (an expired one has none).
  std::vector<SessionId> sessions();
  Result<bool> hasSession(SessionId id);

 private:
  friend class SnapshotReader;
  friend class SnapshotWriter;
  struct Impl;
  explicit Namespace(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::meta
