// mknod: creates a file, directory, symlink, fifo, device or socket (and opens it for FUSE
// create).
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> mknod(Txn& txn, proto::Op::Reader op) {
  auto args = op.getMknod();
  std::string name = toStd(args.getName());
  if (Status s = checkName(name); !s) return s.error();
  uint32_t type = args.getMode() & S_IFMT;
  if (type == 0) type = S_IFREG;  // mknod(2): a zero type means a regular file
  if (!validType(type)) return err(Errc::kInvalid, "mknod: unknown file type");
  std::string target = toStd(args.getTarget());
  if (type == S_IFLNK) {
    if (target.empty() || target.find('\0') != std::string::npos) {
      return err(Errc::kInvalid, "symlink: empty target or NUL in it");
    }
    if (target.size() > kMaxSymlinkLen) return err(Errc::kNameTooLong, "symlink target");
  } else {
    target.clear();
  }

  InodeId parentId(args.getParent());
  auto parent = directory(txn, parentId);
  if (!parent) return parent.error();
  auto existing = findEntry(txn, parentId, name);
  if (!existing) return existing.error();
  if (*existing) return err(Errc::kExists, "mknod:", name);
  if (Status s = checkWritable(**parent, "mknod: in"); !s) return s.error();
  if (type == S_IFDIR && (*parent)->attr.nlink >= kMaxLinks) {
    return err(Errc::kTooManyLinks, "mkdir: parent has too many subdirectories");
  }
  InodeId id(args.getNewInode());
  if (!id) return err(Errc::kInvalid, "mknod: new inode 0");
  auto taken = txn.hasInode(id);
  if (!taken) return taken.error();
  if (*taken) return err(Errc::kInvalid, "mknod: inode in use", idStr(id));

  int64_t now = op.getNowNs();
  Inode child;
  child.attr.inode = id;
  child.attr.mode = type | (args.getMode() & 07777);
  child.attr.nlink = type == S_IFDIR ? 2 : 1;
  child.attr.uid = args.getUid();
  child.attr.gid = args.getGid();
  child.attr.rdev = (type == S_IFCHR || type == S_IFBLK) ? args.getRdev() : 0;
  child.attr.size = type == S_IFDIR ? kDirSize : target.size();
  child.attr.atimeNs = child.attr.mtimeNs = child.attr.ctimeNs = now;
  // New files and directories take the policy of the directory they are created in, so a
  // policy set on a directory governs its whole subtree from then on.
  child.policy = (*parent)->policy;
  child.target = std::move(target);
  child.usageTracked = true;
  if (type == S_IFDIR) {
    child.nextCookie = kFirstCookie;
    child.parent = parentId;
    ++(*parent)->attr.nlink;  // the child's ".."
  }
  SessionId session(args.getSession());
  if (session) child.openSessions = 1;
  Inode* created = txn.createInode(std::move(child));
  addEntry(txn, **parent, name, *created);
  (*parent)->attr.mtimeNs = (*parent)->attr.ctimeNs = now;

  if (session) {
    txn.put(keys::open(id, session), keys::u64Value(1));
    if (Status s = txn.raiseMark(keys::kSessionMark, session.value); !s) return s.error();
  }
  if (Status s = txn.addToCounter(keys::kInodeCount, 1); !s) return s.error();
  if (Status s = txn.raiseMark(keys::kInodeMark, id.value); !s) return s.error();
  return Applied{attrOf(*created), std::nullopt};
}

}  // namespace tessera::meta::ops
