// rename, with renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE: one atomic step, as POSIX
// wants, because it is one WriteBatch.
#include "fs/proto/meta.capnp.h"
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {
namespace {

constexpr uint32_t kNoReplace = proto::RENAME_FLAG_NO_REPLACE;
constexpr uint32_t kExchange = proto::RENAME_FLAG_EXCHANGE;

// A directory chain longer than this can only be a loop of corrupt parent pointers.
constexpr int kMaxDepth = 1 << 20;

// kInvalid if `dir` is `from` or one of its ancestors: moving `dir` under `from` would cut the
// subtree off from the root and make a cycle.
Status notAncestor(Txn& txn, InodeId dir, InodeId from) {
  InodeId at = from;
  for (int depth = 0; depth < kMaxDepth; ++depth) {
    if (at == dir) return err(Errc::kInvalid, "rename: a directory into its own subtree");
    if (at == kRootInode) return Status();
    auto inode = txn.inode(at);
    if (!inode) {
      return inode.code() == Errc::kNotFound
                 ? corruption("parent of a directory", "missing inode " + idStr(at))
                 : inode.error();
    }
    at = (*inode)->parent;
  }
  return corruption("directory parents", "loop above inode " + idStr(from));
}

Result<Inode*> entryInode(Txn& txn, const Dentry& entry) {
  auto inode = txn.inode(entry.inode);
  if (!inode && inode.code() == Errc::kNotFound) {
    return corruption("directory entry", "names missing inode " + idStr(entry.inode));
  }
  return inode;
}

void touch(Inode& dir, int64_t now) { dir.attr.mtimeNs = dir.attr.ctimeNs = now; }

}  // namespace

Result<Applied> rename(Txn& txn, proto::Op::Reader op) {
  auto args = op.getRename();
  uint32_t flags = args.getFlags();
  constexpr uint32_t kKnown = kNoReplace | kExchange;
  if ((flags & ~kKnown) != 0 || flags == kKnown) return err(Errc::kInvalid, "rename: flags");
  bool noReplace = flags & kNoReplace;
  bool exchange = flags & kExchange;
  std::string name = toStd(args.getName()), newName = toStd(args.getNewName());
  if (Status s = checkName(name); !s) return s.error();
  if (Status s = checkName(newName); !s) return s.error();

  InodeId parentId(args.getParent()), newParentId(args.getNewParent());
  bool sameDir = parentId == newParentId;
  auto parentOr = directory(txn, parentId);
  if (!parentOr) return parentOr.error();
  auto newParentOr = directory(txn, newParentId);
  if (!newParentOr) return newParentOr.error();
  // The same object when sameDir: the Txn caches inodes.
  Inode& parent = **parentOr;
  Inode& newParent = **newParentOr;
  if (Status s = checkWritable(parent, "rename: from"); !s) return s.error();
  if (Status s = checkWritable(newParent, "rename: into"); !s) return s.error();

  auto src = findEntry(txn, parentId, name);
  if (!src) return src.error();
  if (!*src) return err(Errc::kNotFound, "rename:", name);
  auto dst = findEntry(txn, newParentId, newName);
  if (!dst) return dst.error();
  if (exchange && !*dst) return err(Errc::kNotFound, "rename exchange:", newName);
  if (noReplace && *dst) return err(Errc::kExists, "rename:", newName);
  // Two names of one file: POSIX says rename does nothing and succeeds.
  if (*dst && (*dst)->inode == (*src)->inode) return Applied{};

  auto srcOr = entryInode(txn, **src);
  if (!srcOr) return srcOr.error();
  Inode& moved = **srcOr;
  Inode* replaced = nullptr;
  if (*dst) {
    auto dstOr = entryInode(txn, **dst);
    if (!dstOr) return dstOr.error();
    replaced = *dstOr;
  }
  // The moved inode changes (ctime, and ".." for a directory); the replaced one loses a name.
  if (Status s = checkWritable(moved, "rename:"); !s) return s.error();
  if (replaced) {
    if (Status s = checkWritable(*replaced, "rename onto"); !s) return s.error();
  }

  if (!sameDir && moved.isDir()) {
    if (Status s = notAncestor(txn, moved.id(), newParentId); !s) return s.error();
  }
  int64_t now = op.getNowNs();

  if (exchange) {
    if (!sameDir && replaced->isDir()) {
      if (Status s = notAncestor(txn, replaced->id(), parentId); !s) return s.error();
    }
    // Each name keeps its place in its directory's readdir order; only what it names changes.
    if (!sameDir && moved.isDir() != replaced->isDir()) {
      Inode& gains = moved.isDir() ? newParent : parent;
      Inode& loses = moved.isDir() ? parent : newParent;
      if (gains.attr.nlink >= kMaxLinks) return err(Errc::kTooManyLinks, "rename exchange");
      ++gains.attr.nlink;
      --loses.attr.nlink;
    }
    putEntry(txn, parentId, name, *replaced, (*src)->cookie);
    putEntry(txn, newParentId, newName, moved, (*dst)->cookie);
    if (!sameDir && moved.isDir()) moved.parent = newParentId;
    if (!sameDir && replaced->isDir()) replaced->parent = parentId;
    moved.attr.ctimeNs = replaced->attr.ctimeNs = now;
    touch(parent, now);
    touch(newParent, now);
    return Applied{};
  }

  if (replaced) {
    if (moved.isDir() && !replaced->isDir()) return err(Errc::kNotDir, "rename onto", newName);
    if (!moved.isDir() && replaced->isDir()) return err(Errc::kIsDir, "rename onto", newName);
    if (replaced->isDir()) {
      auto empty = isEmptyDir(txn, replaced->id());
      if (!empty) return empty.error();
      if (!*empty) return err(Errc::kNotEmpty, "rename onto", newName);
    }
  }
  bool dirChangesParent = moved.isDir() && !sameDir;
  if (dirChangesParent && !(replaced && replaced->isDir()) && newParent.attr.nlink >= kMaxLinks) {
    return err(Errc::kTooManyLinks, "rename into", idStr(newParentId));
  }

  removeEntry(txn, parentId, name, (*src)->cookie);
  if (replaced) {
    // The entry itself is overwritten below; its place in readdir order goes.
    txn.erase(keys::readdir(newParentId, (*dst)->cookie));
    if (replaced->isDir()) --newParent.attr.nlink;
    if (Status s = dropLink(txn, *replaced, now); !s) return s.error();
  }
  if (sameDir) {
    // Keep the entry's cookie: were a renamed entry moved to the end of readdir order, a
    // program renaming every entry while it reads the directory would never finish.
    putEntry(txn, newParentId, newName, moved, (*src)->cookie);
  } else {
    addEntry(txn, newParent, newName, moved);
  }
  if (dirChangesParent) {
    --parent.attr.nlink;
    ++newParent.attr.nlink;
    moved.parent = newParentId;
  }
  moved.attr.ctimeNs = now;
  touch(parent, now);
  touch(newParent, now);
  return Applied{};
}

}  // namespace tessera::meta::ops
