// Extended attributes, and the virtual "tessera.policy" that shows and sets storage policies.
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;
constexpr uint32_t kCreate = proto::XATTR_CREATE;
constexpr uint32_t kReplace = proto::XATTR_REPLACE;

}  // namespace

TEST_CASE("xattr: set, get, list and remove, with binary values and ctime updates") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  std::string binary("\0\x01\xff value", 9);
  REQUIRE(f->setxattr(file, "user.b", binary).ok());
  CHECK(f->attr(file).ctimeNs == f->clock);
  REQUIRE(f->setxattr(file, "user.a", "").ok());
  REQUIRE(f->setxattr(file, "trusted.c", std::string(64 * 1024, 'v')).ok());
  CHECK(f->ns().getxattr(file, "user.b").value() == binary);
  CHECK(f->ns().getxattr(file, "user.a").value() == "");
  CHECK(f->ns().getxattr(file, "trusted.c")->size() == 64 * 1024);
  CHECK(f->ns().listxattr(file).value() ==
        std::vector<std::string>{"trusted.c", "user.a", "user.b"});

  REQUIRE(f->setxattr(file, "user.b", "new").ok());
  CHECK(f->ns().getxattr(file, "user.b").value() == "new");
  REQUIRE(f->removexattr(file, "user.b").ok());
  CHECK(f->attr(file).ctimeNs == f->clock);
  CHECK(f->ns().getxattr(file, "user.b").code() == Errc::kNoData);
  CHECK(f->removexattr(file, "user.b").code() == Errc::kNoData);
  CHECK(f->ns().listxattr(file).value() == std::vector<std::string>{"trusted.c", "user.a"});

  InodeId dir = f->mkdirOk(kRoot, "dir");
  REQUIRE(f->setxattr(dir, "user.on-dir", "x").ok());
  CHECK(f->ns().listxattr(dir).value() == std::vector<std::string>{"user.on-dir"});
  CHECK(f->ns().listxattr(kRoot).value().empty());
}

TEST_CASE("xattr: XATTR_CREATE needs a new name, XATTR_REPLACE an existing one") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  CHECK(f->setxattr(file, "user.k", "v", kReplace).code() == Errc::kNoData);
  REQUIRE(f->setxattr(file, "user.k", "v", kCreate).ok());
  CHECK(f->setxattr(file, "user.k", "w", kCreate).code() == Errc::kExists);
  REQUIRE(f->setxattr(file, "user.k", "w", kReplace).ok());
  CHECK(f->ns().getxattr(file, "user.k").value() == "w");
  CHECK(f->setxattr(file, "user.k", "x", kCreate | kReplace).code() == Errc::kInvalid);
  CHECK(f->setxattr(file, "user.k", "x", 8).code() == Errc::kInvalid);
}

TEST_CASE("xattr: refuses bad names, big values and missing inodes") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  auto before = f->dump();
  CHECK(f->setxattr(file, "", "v").code() == Errc::kInvalid);
  CHECK(f->setxattr(file, std::string(256, 'n'), "v").code() == Errc::kRange);
  CHECK(f->setxattr(file, "user.big", std::string(64 * 1024 + 1, 'v')).code() == Errc::kTooBig);
  CHECK(f->setxattr(InodeId(999), "user.k", "v").code() == Errc::kNotFound);
  CHECK(f->removexattr(file, "").code() == Errc::kInvalid);
  CHECK(f->removexattr(InodeId(999), "user.k").code() == Errc::kNotFound);
  CHECK(f->dump() == before);
  CHECK(f->ns().getxattr(file, "").code() == Errc::kInvalid);
  CHECK(f->ns().getxattr(file, std::string(256, 'n')).code() == Errc::kRange);
  CHECK(f->ns().getxattr(InodeId(999), "user.k").code() == Errc::kNotFound);
  CHECK(f->ns().listxattr(InodeId(999)).code() == Errc::kNotFound);
}

TEST_CASE("xattr: tessera.policy shows the inherited policy and sets it for later children") {
  auto f = eachStore();
  CHECK(f->ns().getxattr(kRoot, "tessera.policy").value() == "ec(4,2)");
  InodeId vms = f->mkdirOk(kRoot, "vms");
  InodeId before = f->createOk(vms, "before");
  REQUIRE(f->setxattr(vms, "tessera.policy", "replica(3)").ok());
  CHECK(f->attr(vms).ctimeNs == f->clock);
  CHECK(f->ns().getxattr(vms, "tessera.policy").value() == "replica(3)");
  CHECK(f->ns().policy(vms).value() == Layout::replica(3));

  InodeId after = f->createOk(vms, "after");
  InodeId nested = f->mkdirOk(vms, "nested");
  InodeId deep = f->createOk(nested, "deep");
  CHECK(f->ns().policy(before).value() == Layout::ec(4, 2));
  CHECK(f->ns().policy(after).value() == Layout::replica(3));
  CHECK(f->ns().policy(deep).value() == Layout::replica(3));
  CHECK(f->ns().getxattr(deep, "tessera.policy").value() == "replica(3)");

  // Spaces and a trailing newline (`echo ... | setfattr`) are tolerated.
  REQUIRE(f->setxattr(after, "tessera.policy", " ec( 8 , 3 )\n").ok());
  CHECK(f->ns().policy(after).value() == Layout::ec(8, 3));
  // Never listed, so copying xattrs does not copy policies.
  REQUIRE(f->setxattr(vms, "user.x", "1").ok());
  CHECK(f->ns().listxattr(vms).value() == std::vector<std::string>{"user.x"});
  CHECK(f->ns().policy(InodeId(999)).code() == Errc::kNotFound);
}

TEST_CASE("xattr: tessera.policy refuses bad text, files with data, special files and removal") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  InodeId link = f->symlink(kRoot, "link", "file")->inode;
  InodeId fifo = f->mknod(kRoot, "fifo", S_IFIFO | 0600)->inode;
  CHECK(f->setxattr(kRoot, "tessera.policy", "raid5").code() == Errc::kInvalid);
  CHECK(f->setxattr(kRoot, "tessera.policy", "ec(0,1)").code() == Errc::kInvalid);
  CHECK(f->setxattr(link, "tessera.policy", "replica(2)").code() == Errc::kInvalid);
  CHECK(f->setxattr(fifo, "tessera.policy", "replica(2)").code() == Errc::kInvalid);
  CHECK(f->setxattr(kRoot, "tessera.policy", "replica(2)", kCreate).code() == Errc::kExists);
  CHECK(f->removexattr(kRoot, "tessera.policy").code() == Errc::kNotSupported);
  CHECK(f->ns().getxattr(kRoot, "tessera.policy").value() == "ec(4,2)");

  REQUIRE(f->setxattr(file, "tessera.policy", "replica(2)", kReplace).ok());
  CHECK(f->ns().policy(file).value() == Layout::replica(2));
  REQUIRE(f->allocChunk(file, 0, 1, Layout::replica(2)).ok());
  CHECK(f->setxattr(file, "tessera.policy", "ec(4,2)").code() == Errc::kBusy);
  CHECK(f->ns().policy(file).value() == Layout::replica(2));
}
