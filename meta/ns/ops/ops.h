// meta/ns/ops/ops.h — the namespace operations, one file each in meta/ns/ops/, and the steps
// they share. Each op checks everything before it writes anything it could regret, but the Txn
// makes that a courtesy, not a requirement: a failing op's Txn is dropped uncommitted.
//
// Every function reads `op` only through its own group of the union; the dispatcher in
// namespace.cc picked it by op.which().
#pragma once
#include <optional>
#include <string_view>

#include "fs/proto/ns.capnp.h"
#include "fs/result.h"
#include "meta/ns/namespace.h"
#include "meta/ns/txn.h"

namespace tessera::meta::ops {

Result<Applied> init(Txn& txn, proto::Op::Reader op);
Result<Applied> mknod(Txn& txn, proto::Op::Reader op);
Result<Applied> link(Txn& txn, proto::Op::Reader op);
Result<Applied> unlink(Txn& txn, proto::Op::Reader op);
Result<Applied> rename(Txn& txn, proto::Op::Reader op);
Result<Applied> setattr(Txn& txn, proto::Op::Reader op);
Result<Applied> setxattr(Txn& txn, proto::Op::Reader op);
Result<Applied> removexattr(Txn& txn, proto::Op::Reader op);
Result<Applied> open(Txn& txn, proto::Op::Reader op);
Result<Applied> release(Txn& txn, proto::Op::Reader op);
Result<Applied> allocChunk(Txn& txn, proto::Op::Reader op);
Result<Applied> commitWrite(Txn& txn, proto::Op::Reader op);
Result<Applied> openSession(Txn& txn, proto::Op::Reader op);
Result<Applied> registerServer(Txn& txn, proto::Op::Reader op);
Result<Applied> removed(Txn& txn, proto::Op::Reader op);
Result<Applied> setMember(Txn& txn, proto::Op::Reader op);
Result<Applied> expireSession(Txn& txn, proto::Op::Reader op);
Result<Applied> releaseLeases(Txn& txn, proto::Op::Reader op);
Result<Applied> markStale(Txn& txn, proto::Op::Reader op);
Result<Applied> replaceShard(Txn& txn, proto::Op::Reader op);
Result<Applied> setServerState(Txn& txn, proto::Op::Reader op);
Result<Applied> setLock(Txn& txn, proto::Op::Reader op);
Result<Applied> releaseLocks(Txn& txn, proto::Op::Reader op);
Result<Applied> punchChunks(Txn& txn, proto::Op::Reader op);
Result<Applied> cloneChunks(Txn& txn, proto::Op::Reader op);
Result<Applied> cowChunk(Txn& txn, proto::Op::Reader op);

// --- shared steps (common.cc) ---

// The virtual xattr that shows and sets an inode's storage policy ("ec(4,2)", "replica(3)").
constexpr std::string_view kPolicyXattr = "tessera.policy";
// The virtual xattr that freezes an inode (Inode::frozen): "1" sets it, "0" or removing the
// attribute clears it; read back as "1", or kNoData while not frozen (xattr.cc).
constexpr std::string_view kReadOnlyXattr = "tessera.readonly";
// kInvalid for an empty name or one with NUL; kRange past 255 bytes (xattr.cc).
Status checkXattrName(std::string_view name);

// kInvalid for "", ".", "..", or a name with '/' or NUL; kNameTooLong past 255 bytes.
Status checkName(std::string_view name);

// The directory `id`, alive (a removed directory kept only because it is open takes no new
// entries): kNotFound, kNotDir.
Result<Inode*> directory(Txn& txn, InodeId id);

// The entry `name` in `parent`, nullopt if there is none.
Result<std::optional<Dentry>> findEntry(Txn& txn, InodeId parent, std::string_view name);

// Adds `name` → `child` to `dir` with the directory's next readdir cookie and returns it.
// Does not touch link counts or times.
uint64_t addEntry(Txn& txn, Inode& dir, std::string_view name, const Inode& child);
// Writes `name` → `child` to `dir` under an existing cookie (the entry keeps its place).
void putEntry(Txn& txn, InodeId dir, std::string_view name, const Inode& child, uint64_t cookie);
// Removes the entry and its readdir index record.
void removeEntry(Txn& txn, InodeId dir, std::string_view name, uint64_t cookie);

// True if `dir` has no entries.
Result<bool> isEmptyDir(Txn& txn, InodeId dir);
// True if any session holds `inode` open.

// One name of `inode` went away (its entry is already removed): drops nlink by one (a
// directory's to 0), sets ctime, and deletes the inode unless a session still holds it open,
// in which case it lives on as an orphan until its last release.
Status dropLink(Txn& txn, Inode& inode, int64_t nowNs);
// Removes the open-handle record `key` (of `inode`, whatever its count) as its last release
// would: the inode counts one opener less and goes if that was the last of an unlinked one.
Status dropOpenHandle(Txn& txn, InodeId inode, const std::string& key);
// Deletes the inode with its xattrs and chunks; its chunks go to the garbage list.
Status deleteInode(Txn& txn, Inode& inode);
// Moves the chunks of `inode` with first <= index < end to the garbage list.
Status chunksToGarbage(Txn& txn, Inode& inode, uint64_t first, uint64_t end = UINT64_MAX);
// kBusy if a chunk of `inode` with first <= index < end is leased to a session other than
// `requester` and not in `lapsed`: dropping it would leave its holder writing into a chunk no
// file names (acknowledged writes lost). The leader recalls such a lease and the caller asks
// again.
Status checkDropLeases(Txn& txn, const Inode& inode, uint64_t first, uint64_t end,
                       SessionId requester, capnp::List<uint64_t>::Reader lapsed);

// Drops every write lease `session` holds on chunks of `inode` (every inode: `inode` 0), as the
// lease ops do (leases.cc). Not `clean` (the session expired): the chunks need a re-sync.
Status dropLeases(Txn& txn, SessionId session, InodeId inode, bool clean);
// Drops the locks (both kinds; `posixOnly`: fcntl/OFD only) of `session` on `inode` taken by
// `owner` (0: any) through `handle` (0: any) (locks.cc).
Status dropLocks(Txn& txn, SessionId session, InodeId inode, uint64_t owner, uint64_t handle,
                 bool posixOnly);
// Drops every lock of `session`, on every inode (its expiry).
Status dropSessionLocks(Txn& txn, SessionId session);
// Adds `server` to the servers that must delete their shards of `chunk` (the garbage record of
// the chunk, created if there is none). Server 0 is ignored.
Status addGarbage(Txn& txn, const ChunkDesc& chunk, ServerId server);

// The files (inode, index) that refer to shared chunk `chunk` (clone.cc).
Result<std::vector<std::pair<InodeId, uint64_t>>> chunkRefs(Txn& txn, ChunkId chunk);
// The file's record at (inode, index) no longer names shared chunk `chunk` (removed or
// replaced): drops its reference; a chunk left in one file becomes private there again. True
// if other files still refer to the chunk; false if none does (its shards are garbage).
Result<bool> unshare(Txn& txn, ChunkId chunk, InodeId inode, uint64_t index);

// Adds `delta` MiBs (ChunkDesc.written bits) to what the file counts as written; never below 0.
inline void addWrittenMiB(Inode& inode, int64_t delta) {
  if (delta < 0 && uint64_t(-delta) > inode.writtenMiB) {
    inode.writtenMiB = 0;
  } else {
    inode.writtenMiB = uint64_t(int64_t(inode.writtenMiB) + delta);
  }
}

// Error helpers that name the op and its argument.
inline Error err(Errc code, std::string_view what, std::string_view arg = {}) {
  std::string detail(what);
  if (!arg.empty()) detail.append(" ").append(arg);
  return Error{code, std::move(detail)};
}
inline std::string idStr(InodeId id) { return std::to_string(id.value); }

// kReadOnly if `inode` is frozen: op `what` would change it (its attributes, its entries if it
// is a directory, its chunks if it is a file). Every op that changes an inode asks this first;
// only tessera.readonly itself may change on a frozen inode.
inline Status checkWritable(const Inode& inode, std::string_view what) {
  if (!inode.frozen) return Status();
  return err(Errc::kReadOnly, what, "frozen inode " + idStr(inode.id()));
}

}  // namespace tessera::meta::ops
