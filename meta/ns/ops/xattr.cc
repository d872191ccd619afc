// setxattr and removexattr, including the virtual "tessera.policy".
#include "fs/proto/meta.capnp.h"
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Status checkXattrName(std::string_view name) {
  if (name.empty() || name.find('\0') != std::string_view::npos) {
    return err(Errc::kInvalid, "xattr name empty or with NUL");
  }
  if (name.size() > kMaxNameLen) return err(Errc::kRange, "xattr name too long");
  return Status();
}

namespace {

// Sets the layout new chunks get. A file's chunks keep the layout they were created with, so
// changing the policy of a file with chunks would leave it mixed: refused with kBusy.
Status setPolicy(Inode& inode, std::string_view text) {
  // setfattr and most scripts pass the text bare, but tolerate a C string's NUL or a newline.
  while (!text.empty() && (text.back() == '\0' || text.back() == '\n')) text.remove_suffix(1);
  auto layout = Layout::parse(text);
  if (!layout) return layout.error();
  if (inode.isReg()) {
    if (inode.chunkCount > 0) return err(Errc::kBusy, "policy of a file with data");
  } else if (!inode.isDir()) {
    return err(Errc::kInvalid, "policy of a special file");
  }
  inode.policy = *layout;
  return Status();
}

}  // namespace

Result<Applied> setxattr(Txn& txn, proto::Op::Reader op) {
  auto args = op.getSetxattr();
  std::string name = toStd(args.getName());
  auto value = args.getValue();
  uint32_t flags = args.getFlags();
  constexpr uint32_t kKnown = proto::XATTR_CREATE | proto::XATTR_REPLACE;
  if ((flags & ~kKnown) != 0 || flags == kKnown) return err(Errc::kInvalid, "setxattr: flags");
  if (Status s = checkXattrName(name); !s) return s.error();
  if (value.size() > kMaxXattrValue) return err(Errc::kTooBig, "xattr value");
  InodeId id(args.getInode());
  auto inode = txn.inode(id);
  if (!inode) return inode.error();

  if (name == kPolicyXattr) {
    // The policy always exists, so it can be replaced but never created.
    if (flags & proto::XATTR_CREATE) return err(Errc::kExists, "setxattr:", name);
    if (Status s = setPolicy(**inode, toStd(value)); !s) return s.error();
  } else {
    std::string key = keys::xattr(id, name);
    auto old = txn.get(key);
    if (!old) return old.error();
    if ((flags & proto::XATTR_CREATE) && *old) return err(Errc::kExists, "setxattr:", name);
    if ((flags & proto::XATTR_REPLACE) && !*old) return err(Errc::kNoData, "setxattr:", name);
    if (!*old) (*inode)->xattrCount++;
    txn.put(key, toStd(value));
  }
  (*inode)->attr.ctimeNs = op.getNowNs();
  return Applied{attrOf(**inode), std::nullopt};
}

Result<Applied> removexattr(Txn& txn, proto::Op::Reader op) {
  auto args = op.getRemovexattr();
  std::string name = toStd(args.getName());
  if (Status s = checkXattrName(name); !s) return s.error();
  InodeId id(args.getInode());
  auto inode = txn.inode(id);
  if (!inode) return inode.error();
  if (name == kPolicyXattr) return err(Errc::kNotSupported, "removexattr:", name);
  std::string key = keys::xattr(id, name);
  auto old = txn.get(key);
  if (!old) return old.error();
  if (!*old) return err(Errc::kNoData, "removexattr:", name);
  txn.erase(key);
  if ((*inode)->xattrCount > 0) (*inode)->xattrCount--;
  (*inode)->attr.ctimeNs = op.getNowNs();
  return Applied{attrOf(**inode), std::nullopt};
}

}  // namespace tessera::meta::ops
