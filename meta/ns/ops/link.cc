// link: another name for an existing file.
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> link(Txn& txn, proto::Op::Reader op) {
  auto args = op.getLink();
  std::string name = toStd(args.getNewName());
  if (Status s = checkName(name); !s) return s.error();
  InodeId id(args.getInode());
  auto inode = txn.inode(id);
  if (!inode) return inode.error();
  if ((*inode)->isDir()) return err(Errc::kNotPermitted, "link: a directory", idStr(id));
  // An orphan (unlinked but open) cannot get a name back: linkat(2) says ENOENT.
  if ((*inode)->attr.nlink == 0) return err(Errc::kNotFound, "link: unlinked inode", idStr(id));
  if ((*inode)->attr.nlink >= kMaxLinks) return err(Errc::kTooManyLinks, "link:", idStr(id));

  InodeId parentId(args.getNewParent());
  auto parent = directory(txn, parentId);
  if (!parent) return parent.error();
  auto existing = findEntry(txn, parentId, name);
  if (!existing) return existing.error();
  if (*existing) return err(Errc::kExists, "link:", name);
  // A new name changes the file too (its link count and ctime).
  if (Status s = checkWritable(**parent, "link: into"); !s) return s.error();
  if (Status s = checkWritable(**inode, "link: of"); !s) return s.error();

  int64_t now = op.getNowNs();
  addEntry(txn, **parent, name, **inode);
  (*parent)->attr.mtimeNs = (*parent)->attr.ctimeNs = now;
  ++(*inode)->attr.nlink;
  (*inode)->attr.ctimeNs = now;
  return Applied{attrOf(**inode), std::nullopt};
}

}  // namespace tessera::meta::ops
