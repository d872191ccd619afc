// setxattr and removexattr, including the virtual "tessera.policy" and "tessera.readonly".
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

// "1" or "0", as setfattr passes it (a C string's NUL or a newline tolerated, as for policies).
Result<bool> parseFlag(std::string_view text) {
  while (!text.empty() && (text.back() == '\0' || text.back() == '\n')) text.remove_suffix(1);
  if (text == "1") return true;
  if (text == "0") return false;
  return err(Errc::kInvalid, "tessera.readonly takes \"1\" or \"0\"");
}

// kBusy while a session holds a write lease on a chunk of the file. A lease holder writes to
// the chunk servers without asking us again, so a file frozen under it could still change; it
// gives the lease back when it closes the file or stops writing for a while, and the caller
// tries again then.
Status noWriteLeases(Txn& txn, const Inode& inode) {
  if (!inode.isReg() || inode.chunkCount == 0) return Status();
  Status found;
  auto each = [&](std::string_view key, std::string_view value) {
    if (key.size() != keys::kIdPrefixLen + 8) {
      found = corruption("chunk key", "wrong length");
      return false;
    }
    auto chunk = decodeChunk(keys::readU64(key, keys::kIdPrefixLen), value);
    if (!chunk) {
      found = chunk.error();
    } else if (chunk->leaseSession) {
      found = err(Errc::kBusy, "freeze: a write lease on chunk " + std::to_string(chunk->index) +
                                   " is held by session",
                  std::to_string(chunk->leaseSession.value));
    }
    return found.ok();
  };
  Status s = txn.scan(keys::chunks(inode.id()), {}, each);
  if (!s) return s;
  return found;
}

// Sets or clears Inode::frozen: the one change a frozen inode takes. The attribute "exists"
// while the inode is frozen, which is what XATTR_CREATE and XATTR_REPLACE test.
Status setFrozen(Txn& txn, Inode& inode, std::string_view value, uint32_t flags) {
  auto frozen = parseFlag(value);
  if (!frozen) return frozen.error();
  if ((flags & proto::XATTR_CREATE) && inode.frozen) {
    return err(Errc::kExists, "setxattr:", kReadOnlyXattr);
  }
  if ((flags & proto::XATTR_REPLACE) && !inode.frozen) {
    return err(Errc::kNoData, "setxattr:", kReadOnlyXattr);
  }
  if (*frozen && !inode.frozen) {
    if (Status s = noWriteLeases(txn, inode); !s) return s;
  }
  inode.frozen = *frozen;
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

  if (name == kReadOnlyXattr) {
    if (Status s = setFrozen(txn, **inode, toStd(value), flags); !s) return s.error();
    (*inode)->attr.ctimeNs = op.getNowNs();
    return Applied{attrOf(**inode), std::nullopt};
  }
  if (Status s = checkWritable(**inode, "setxattr:"); !s) return s.error();
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
  if (name == kReadOnlyXattr) {
    if (!(*inode)->frozen) return err(Errc::kNoData, "removexattr:", name);
    (*inode)->frozen = false;
    (*inode)->attr.ctimeNs = op.getNowNs();
    return Applied{attrOf(**inode), std::nullopt};
  }
  if (Status s = checkWritable(**inode, "removexattr:"); !s) return s.error();
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
