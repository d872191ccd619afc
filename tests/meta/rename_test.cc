// rename with POSIX semantics and renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE.
#include "meta/ns/keys.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;
constexpr uint32_t kNoReplace = proto::RENAME_FLAG_NO_REPLACE;
constexpr uint32_t kExchange = proto::RENAME_FLAG_EXCHANGE;

uint64_t cookieOf(NsFixture& f, InodeId dir, std::string_view name) {
  auto page = f.ns().readdir(dir, 0, 10000, false);
  REQUIRE(page.ok());
  for (auto& e : page->entries) {
    if (e.name == name) return e.cookie;
  }
  FAIL("no entry ", std::string(name));
  return 0;
}

}  // namespace

TEST_CASE("rename: within a directory the entry gets its new name and keeps its readdir place") {
  auto f = eachStore();
  f->createOk(kRoot, "a");
  InodeId b = f->createOk(kRoot, "b");
  f->createOk(kRoot, "c");
  uint64_t cookie = cookieOf(*f, kRoot, "b");

  REQUIRE(f->rename(kRoot, "b", kRoot, "z").ok());
  CHECK(f->lookupCode(kRoot, "b") == Errc::kNotFound);
  CHECK(f->ns().lookup(kRoot, "z")->inode == b);
  CHECK(f->names(kRoot) == std::vector<std::string>{"a", "z", "c"});
  CHECK(cookieOf(*f, kRoot, "z") == cookie);
  CHECK(f->attr(b).ctimeNs == f->clock);
  CHECK(f->attr(kRoot).mtimeNs == f->clock);
}

TEST_CASE("rename: across directories the entry moves to the end of its new directory") {
  auto f = eachStore();
  InodeId from = f->mkdirOk(kRoot, "from");
  InodeId to = f->mkdirOk(kRoot, "to");
  InodeId file = f->createOk(from, "file");
  f->createOk(to, "x");
  f->createOk(to, "y");
  uint64_t yCookie = cookieOf(*f, to, "y");

  REQUIRE(f->rename(from, "file", to, "moved").ok());
  CHECK(f->names(from).empty());
  CHECK(f->names(to) == std::vector<std::string>{"x", "y", "moved"});
  CHECK(cookieOf(*f, to, "moved") > yCookie);
  CHECK(f->ns().lookup(to, "moved")->inode == file);
  CHECK(f->attr(from).mtimeNs == f->clock);
  CHECK(f->attr(to).mtimeNs == f->clock);
  // A file moving changes no link count.
  CHECK(f->attr(from).nlink == 2);
  CHECK(f->attr(to).nlink == 2);
  CHECK(f->attr(file).nlink == 1);
}

TEST_CASE("rename: a directory moving keeps both parents' link counts and its '..' right") {
  auto f = eachStore();
  InodeId a = f->mkdirOk(kRoot, "a");
  InodeId b = f->mkdirOk(kRoot, "b");
  InodeId sub = f->mkdirOk(a, "sub");
  CHECK(f->attr(a).nlink == 3);
  CHECK(f->attr(b).nlink == 2);

  REQUIRE(f->rename(a, "sub", b, "sub2").ok());
  CHECK(f->attr(a).nlink == 2);
  CHECK(f->attr(b).nlink == 3);
  CHECK(f->attr(kRoot).nlink == 4);
  auto page = f->ns().readdir(sub, 0, 10, false);
  REQUIRE(page.ok());
  REQUIRE(page->entries.size() == 2);
  CHECK(page->entries[1].name == "..");
  CHECK(page->entries[1].attr.inode == b);
  // The moved directory can be removed from its new place, which takes the link back.
  REQUIRE(f->rmdir(b, "sub2").ok());
  CHECK(f->attr(b).nlink == 2);
}

TEST_CASE("rename: refuses to move a directory into itself or its own subtree") {
  auto f = eachStore();
  InodeId a = f->mkdirOk(kRoot, "a");
  InodeId b = f->mkdirOk(a, "b");
  InodeId c = f->mkdirOk(b, "c");
  auto before = f->dump();
  CHECK(f->rename(kRoot, "a", a, "x").code() == Errc::kInvalid);
  CHECK(f->rename(kRoot, "a", c, "x").code() == Errc::kInvalid);
  CHECK(f->rename(a, "b", c, "x").code() == Errc::kInvalid);
  CHECK(f->rename(kRoot, "a", c, "x", kExchange).code() == Errc::kNotFound);
  f->createOk(c, "x");
  before = f->dump();
  CHECK(f->rename(kRoot, "a", c, "x", kExchange).code() == Errc::kInvalid);
  CHECK(f->rename(c, "x", kRoot, "a", kExchange).code() == Errc::kInvalid);
  CHECK(f->dump() == before);
  // Moving up is fine.
  REQUIRE(f->rename(b, "c", kRoot, "c").ok());
  CHECK(f->attr(kRoot).nlink == 4);
  CHECK(f->attr(b).nlink == 2);
}

TEST_CASE("rename: onto an existing file replaces it, and the old file goes unless open") {
  auto f = eachStore();
  InodeId src = f->createOk(kRoot, "src");
  InodeId old = f->createOk(kRoot, "old");
  InodeId kept = f->createOk(kRoot, "kept");
  InodeId openOld = f->createOk(kRoot, "open-old", /*session=*/4);
  REQUIRE(f->allocChunk(old, 0, 31).ok());
  uint64_t inodes = f->ns().inodeCount();

  REQUIRE(f->rename(kRoot, "src", kRoot, "old").ok());
  CHECK(f->ns().lookup(kRoot, "old")->inode == src);
  CHECK(f->lookupCode(kRoot, "src") == Errc::kNotFound);
  CHECK(f->ns().getattr(old).code() == Errc::kNotFound);
  CHECK(f->ns().inodeCount() == inodes - 1);
  REQUIRE(f->ns().garbage(10).size() == 1);
  CHECK(f->ns().garbage(10)[0].chunk.id == ChunkId(31));
  CHECK(f->names(kRoot) == std::vector<std::string>{"old", "kept", "open-old"});

  REQUIRE(f->rename(kRoot, "kept", kRoot, "open-old").ok());
  CHECK(f->ns().lookup(kRoot, "open-old")->inode == kept);
  CHECK(f->attr(openOld).nlink == 0);
  REQUIRE(f->release(4, openOld).ok());
  CHECK(f->ns().getattr(openOld).code() == Errc::kNotFound);
}

TEST_CASE("rename: onto a hard link of the same file succeeds and changes nothing") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "a");
  REQUIRE(f->link(file, kRoot, "b").ok());
  auto before = f->dump();
  CHECK(f->rename(kRoot, "a", kRoot, "b").ok());
  CHECK(f->rename(kRoot, "a", kRoot, "a").ok());
  CHECK(f->rename(kRoot, "a", kRoot, "b", kExchange).ok());
  CHECK(f->dump() == before);
  CHECK(f->attr(file).nlink == 2);
}

TEST_CASE("rename: directories replace only empty directories, and types must match") {
  auto f = eachStore();
  InodeId d1 = f->mkdirOk(kRoot, "d1");
  InodeId empty = f->mkdirOk(kRoot, "empty");
  InodeId full = f->mkdirOk(kRoot, "full");
  f->createOk(full, "x");
  f->createOk(kRoot, "file");

  CHECK(f->rename(kRoot, "d1", kRoot, "full").code() == Errc::kNotEmpty);
  CHECK(f->rename(kRoot, "d1", kRoot, "file").code() == Errc::kNotDir);
  CHECK(f->rename(kRoot, "file", kRoot, "empty").code() == Errc::kIsDir);
  // Onto an ancestor: the ancestor is never empty.
  CHECK(f->rename(full, "x", kRoot, "full").code() == Errc::kIsDir);

  CHECK(f->attr(kRoot).nlink == 5);
  REQUIRE(f->rename(kRoot, "d1", kRoot, "empty").ok());
  CHECK(f->ns().getattr(empty).code() == Errc::kNotFound);
  CHECK(f->ns().lookup(kRoot, "empty")->inode == d1);
  CHECK(f->attr(kRoot).nlink == 4);

  // Across directories, onto an empty directory: the target parent's count stays.
  InodeId sub = f->mkdirOk(full, "sub");
  REQUIRE(f->rename(kRoot, "empty", full, "sub").ok());
  CHECK(f->ns().getattr(sub).code() == Errc::kNotFound);
  CHECK(f->attr(full).nlink == 3);
  CHECK(f->attr(kRoot).nlink == 3);
}

TEST_CASE("rename: RENAME_NOREPLACE refuses an existing target and moves onto a free name") {
  auto f = eachStore();
  InodeId a = f->createOk(kRoot, "a");
  f->createOk(kRoot, "b");
  CHECK(f->rename(kRoot, "a", kRoot, "b", kNoReplace).code() == Errc::kExists);
  CHECK(f->rename(kRoot, "a", kRoot, "a", kNoReplace).code() == Errc::kExists);
  REQUIRE(f->rename(kRoot, "a", kRoot, "c", kNoReplace).ok());
  CHECK(f->ns().lookup(kRoot, "c")->inode == a);
}

TEST_CASE("rename: RENAME_EXCHANGE swaps two entries and fixes parents and link counts") {
  auto f = eachStore();
  InodeId left = f->mkdirOk(kRoot, "left");
  InodeId right = f->mkdirOk(kRoot, "right");
  InodeId dir = f->mkdirOk(left, "dir");
  InodeId file = f->createOk(right, "file");
  uint64_t dirCookie = cookieOf(*f, left, "dir");
  uint64_t fileCookie = cookieOf(*f, right, "file");

  REQUIRE(f->rename(left, "dir", right, "file", kExchange).ok());
  CHECK(f->ns().lookup(left, "dir")->inode == file);
  CHECK(f->ns().lookup(left, "dir")->mode == (S_IFREG | 0644));
  CHECK(f->ns().lookup(right, "file")->inode == dir);
  CHECK(f->attr(left).nlink == 2);
  CHECK(f->attr(right).nlink == 3);
  CHECK(f->ns().readdir(dir, 1, 1, false)->entries.at(0).attr.inode == right);
  // The names keep their places; what they name changed.
  CHECK(cookieOf(*f, left, "dir") == dirCookie);
  CHECK(cookieOf(*f, right, "file") == fileCookie);
  auto page = f->ns().readdir(right, 2, 10, false);
  REQUIRE(page->entries.size() == 1);
  CHECK(page->entries[0].attr.inode == dir);
  CHECK(page->entries[0].attr.mode == S_IFDIR);
  CHECK(f->attr(file).ctimeNs == f->clock);
  CHECK(f->attr(dir).ctimeNs == f->clock);

  // Two directories swapping: counts unchanged, both ".." fixed.
  InodeId other = f->mkdirOk(left, "other");
  REQUIRE(f->rename(left, "other", right, "file", kExchange).ok());
  CHECK(f->attr(left).nlink == 3);
  CHECK(f->attr(right).nlink == 3);
  CHECK(f->ns().readdir(other, 1, 1, false)->entries.at(0).attr.inode == right);
  CHECK(f->ns().readdir(dir, 1, 1, false)->entries.at(0).attr.inode == left);

  CHECK(f->rename(left, "dir", right, "missing", kExchange).code() == Errc::kNotFound);
}

TEST_CASE("rename: refuses bad flags, bad names, missing sources and non-directory parents") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  InodeId dir = f->mkdirOk(kRoot, "dir");
  auto before = f->dump();
  CHECK(f->rename(kRoot, "file", kRoot, "x", kNoReplace | kExchange).code() == Errc::kInvalid);
  CHECK(f->rename(kRoot, "file", kRoot, "x", 4).code() == Errc::kInvalid);
  CHECK(f->rename(kRoot, "nope", kRoot, "x").code() == Errc::kNotFound);
  CHECK(f->rename(InodeId(999), "file", kRoot, "x").code() == Errc::kNotFound);
  CHECK(f->rename(kRoot, "file", InodeId(999), "x").code() == Errc::kNotFound);
  CHECK(f->rename(kRoot, "file", file, "x").code() == Errc::kNotDir);
  CHECK(f->rename(file, "x", dir, "x").code() == Errc::kNotDir);
  CHECK(f->rename(kRoot, ".", dir, "x").code() == Errc::kInvalid);
  CHECK(f->rename(kRoot, "file", dir, "..").code() == Errc::kInvalid);
  CHECK(f->rename(kRoot, "file", dir, "a/b").code() == Errc::kInvalid);
  CHECK(f->rename(kRoot, "file", dir, std::string(256, 'n')).code() == Errc::kNameTooLong);
  CHECK(f->dump() == before);
}
