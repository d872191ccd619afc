// readdir: ".", "..", cookie order, paging, and cookies that stay valid under change.
#include <set>

#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;

}  // namespace

TEST_CASE("readdir: lists '.', '..' and then the entries in the order they were added") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId c = f->createOk(dir, "c");
  InodeId a = f->mkdirOk(dir, "a");
  InodeId b = f->symlink(dir, "b", "c")->inode;

  auto page = f->ns().readdir(dir, 0, 100, false);
  REQUIRE(page.ok());
  CHECK(page->eof);
  REQUIRE(page->entries.size() == 5);
  const std::pair<const char*, InodeId> expected[] = {
      {".", dir}, {"..", kRoot}, {"c", c}, {"a", a}, {"b", b}};
  const uint32_t types[] = {S_IFDIR, S_IFDIR, S_IFREG, S_IFDIR, S_IFLNK};
  for (size_t i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(page->entries[i].name == expected[i].first);
    CHECK(page->entries[i].attr.inode == expected[i].second);
    CHECK(page->entries[i].attr.mode == types[i]);
    CHECK(page->entries[i].attr.nlink == 0);  // not filled without plus
    CHECK(page->entries[i].cookie == i + 1);
  }

  auto root = f->ns().readdir(kRoot, 0, 2, false);
  REQUIRE(root.ok());
  CHECK_FALSE(root->eof);
  CHECK(root->entries[1].name == "..");
  CHECK(root->entries[1].attr.inode == kRoot);  // the root is its own parent
}

TEST_CASE("readdir: plus fills every entry's full attributes") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(dir, "file");
  REQUIRE(f->commitWrite(file, 1000, 77).ok());
  auto page = f->ns().readdir(dir, 0, 10, true);
  REQUIRE(page.ok());
  REQUIRE(page->entries.size() == 3);
  CHECK(page->entries[0].attr.nlink == 2);
  CHECK(page->entries[1].attr.inode == kRoot);
  CHECK(page->entries[1].attr.nlink == 3);
  CHECK(page->entries[2].attr.mode == (S_IFREG | 0644));
  CHECK(page->entries[2].attr.size == 1000);
  CHECK(page->entries[2].attr.mtimeNs == 77);
  CHECK(page->entries[2].attr.uid == 1000);
}

TEST_CASE("readdir: pages end at max, eof only on the last one, and a cookie resumes after it") {
  auto f = eachStore();
  for (int i = 0; i < 5; ++i) f->createOk(kRoot, "f" + std::to_string(i));
  auto first = f->ns().readdir(kRoot, 0, 1, false);
  REQUIRE(first.ok());
  CHECK(first->entries.size() == 1);
  CHECK(first->entries[0].name == ".");
  CHECK_FALSE(first->eof);
  auto second = f->ns().readdir(kRoot, 1, 3, false);
  REQUIRE(second->entries.size() == 3);
  CHECK(second->entries[0].name == "..");
  CHECK(second->entries[2].name == "f1");
  CHECK_FALSE(second->eof);
  auto last = f->ns().readdir(kRoot, second->entries[2].cookie, 3, false);
  REQUIRE(last->entries.size() == 3);
  CHECK(last->entries[2].name == "f4");
  CHECK(last->eof);
  auto past = f->ns().readdir(kRoot, last->entries[2].cookie, 3, false);
  CHECK(past->entries.empty());
  CHECK(past->eof);
  CHECK(f->ns().readdir(kRoot, UINT64_MAX, 3, false)->eof);

  CHECK(f->ns().readdir(kRoot, 0, 0, false).code() == Errc::kInvalid);
  InodeId file = f->ns().lookup(kRoot, "f0")->inode;
  CHECK(f->ns().readdir(file, 0, 10, false).code() == Errc::kNotDir);
  CHECK(f->ns().readdir(InodeId(999), 0, 10, false).code() == Errc::kNotFound);
}

namespace {

// What `rm -rf` does: read a page, unlink what it returned, continue from the last cookie.
// 20,000 ops per store, so each store is its own test case to keep each one short.
void readdirWhileDeleting(StoreKind kind) {
  NsFixture f(kind);
  REQUIRE(f.init().ok());
  InodeId dir = f.mkdirOk(kRoot, "big");
  constexpr int kEntries = 10000;
  for (int i = 0; i < kEntries; ++i) f.createOk(dir, "entry-" + std::to_string(i));

  std::set<std::string> seen;
  uint64_t cookie = 2;  // after "." and ".."
  int pages = 0;
  while (true) {
    auto page = f.ns().readdir(dir, cookie, 100, false);
    REQUIRE(page.ok());
    REQUIRE(page->entries.size() <= 100);
    ++pages;
    for (auto& e : page->entries) {
      CHECK(seen.insert(e.name).second);
      REQUIRE(f.unlink(dir, e.name).ok());
      cookie = e.cookie;
    }
    if (page->eof) break;
  }
  CHECK(seen.size() == kEntries);
  CHECK(pages == kEntries / 100);
  CHECK(f.names(dir).empty());
  CHECK(f.rmdir(kRoot, "big").ok());
  CHECK(f.ns().inodeCount() == 1);
}

}  // namespace

TEST_CASE(
    "readdir: 10,000 entries read in pages of 100 while each read entry is deleted (in memory)") {
  readdirWhileDeleting(StoreKind::kMemory);
}

TEST_CASE(
    "readdir: 10,000 entries read in pages of 100 while each read entry is deleted (on disk)") {
  readdirWhileDeleting(StoreKind::kDisk);
}

TEST_CASE("readdir: a cookie stays valid while entries are added and removed around it") {
  auto f = eachStore();
  for (const char* n : {"a", "b", "c", "d"}) f->createOk(kRoot, n);
  auto page = f->ns().readdir(kRoot, 0, 4, false);  // ., .., a, b
  REQUIRE(page.ok());
  uint64_t cookie = page->entries.back().cookie;
  REQUIRE(page->entries.back().name == "b");

  REQUIRE(f->unlink(kRoot, "b").ok());  // the entry the cookie came from
  REQUIRE(f->unlink(kRoot, "a").ok());  // one already read
  REQUIRE(f->unlink(kRoot, "c").ok());  // one not read yet: gone, never returned
  f->createOk(kRoot, "e");              // added later: returned
  f->createOk(kRoot, "a");              // a name reused: a new entry, at the end

  auto rest = f->ns().readdir(kRoot, cookie, 100, false);
  REQUIRE(rest.ok());
  std::vector<std::string> names;
  for (auto& e : rest->entries) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"d", "e", "a"});
  CHECK(rest->eof);
}
