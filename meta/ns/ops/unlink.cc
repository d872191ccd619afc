// unlink and rmdir: remove a name; the inode goes with its last name unless it is open.
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> unlink(Txn& txn, proto::Op::Reader op) {
  auto args = op.getUnlink();
  bool rmdir = args.getDir();
  const char* what = rmdir ? "rmdir:" : "unlink:";
  std::string name = toStd(args.getName());
  // What Linux answers for the names the kernel never sends us.
  if (name == ".") return err(rmdir ? Errc::kInvalid : Errc::kIsDir, what, name);
  if (name == "..") return err(rmdir ? Errc::kNotEmpty : Errc::kIsDir, what, name);
  if (Status s = checkName(name); !s) return s.error();

  InodeId parentId(args.getParent());
  auto parent = directory(txn, parentId);
  if (!parent) return parent.error();
  if (Status s = checkWritable(**parent, std::string(what) + " in"); !s) return s.error();
  auto entry = findEntry(txn, parentId, name);
  if (!entry) return entry.error();
  if (!*entry) return err(Errc::kNotFound, what, name);
  auto child = txn.inode((*entry)->inode);
  if (!child) {
    return child.code() == Errc::kNotFound
               ? corruption("directory entry " + name, "names a missing inode")
               : child.error();
  }
  // Even when it has other names: its link count would change.
  if (Status s = checkWritable(**child, what); !s) return s.error();
  if (rmdir) {
    if (!(*child)->isDir()) return err(Errc::kNotDir, what, name);
    auto empty = isEmptyDir(txn, (*child)->id());
    if (!empty) return empty.error();
    if (!*empty) return err(Errc::kNotEmpty, what, name);
  } else if ((*child)->isDir()) {
    return err(Errc::kIsDir, what, name);
  }

  int64_t now = op.getNowNs();
  removeEntry(txn, parentId, name, (*entry)->cookie);
  if (rmdir) --(*parent)->attr.nlink;  // the child's ".." is gone
  (*parent)->attr.mtimeNs = (*parent)->attr.ctimeNs = now;
  if (Status s = dropLink(txn, **child, now); !s) return s.error();
  return Applied{};
}

}  // namespace tessera::meta::ops
