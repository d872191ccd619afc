// The namespace's basic operations: init, mknod, lookup, link, unlink/rmdir, open/release and
// orphans, restarts, id marks, and damaged records. Every case runs in memory and on disk.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <leveldb/db.h>

#include "meta/ns/keys.h"
#include "meta/ns/records.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;

// The number of keys of one kind in the store.
size_t countKeys(NsFixture& f, char kind) {
  size_t n = 0;
  for (auto& [key, value] : f.dump()) n += key[0] == kind;
  return n;
}

// Overwrites one record with raw bytes, as a damaged disk would.
void poke(NsFixture& f, const std::string& key, const std::string& value) {
  f.withRawDb([&](leveldb::DB& db) { REQUIRE(db.Put(leveldb::WriteOptions(), key, value).ok()); });
}

}  // namespace

TEST_CASE("namespace: init creates the root directory and the cluster id, once") {
  NsFixture f(eachStoreKind());
  CHECK_FALSE(f.ns().initialized());
  CHECK(f.ns().clusterId() == "");
  CHECK(f.ns().getattr(kRoot).code() == Errc::kNotFound);

  REQUIRE(f.init(Layout::replica(3), "cluster-a").ok());
  int64_t initTime = f.clock;
  CHECK(f.ns().initialized());
  CHECK(f.ns().clusterId() == "cluster-a");
  Attr root = f.attr(kRoot);
  CHECK(root.inode == kRoot);
  CHECK(root.mode == (S_IFDIR | 0755));
  CHECK(root.nlink == 2);
  CHECK(root.uid == 0);
  CHECK(root.gid == 0);
  CHECK(root.size == 4096);
  CHECK(root.atimeNs == initTime);
  CHECK(root.mtimeNs == initTime);
  CHECK(root.ctimeNs == initTime);
  CHECK(f.ns().policy(kRoot).value() == Layout::replica(3));
  CHECK(f.ns().inodeCount() == 1);
  CHECK(f.ns().idMarks().inode == 1);

  CHECK(f.init().code() == Errc::kExists);
  CHECK(f.ns().clusterId() == "cluster-a");
}

TEST_CASE("namespace: init refuses an empty cluster id and an impossible root policy") {
  NsFixture f(eachStoreKind());
  CHECK(f.init(Layout::ec(4, 2), "").code() == Errc::kInvalid);
  CHECK(f.init(Layout{Layout::Kind::kEc, 0, 2}, "c").code() == Errc::kInvalid);
  CHECK(f.init(Layout{Layout::Kind::kReplica, 1, 9}, "c").code() == Errc::kInvalid);
  CHECK_FALSE(f.ns().initialized());
  CHECK(f.dump().empty());
}

TEST_CASE("namespace: mknod creates each kind of inode from the S_IFMT bits of its mode") {
  auto f = eachStore();
  struct Kind {
    const char* name;
    uint32_t mode;
    uint32_t type;
  };
  for (Kind k : {Kind{"plain", 0644, S_IFREG}, Kind{"file", S_IFREG | 04755, S_IFREG},
                 Kind{"fifo", S_IFIFO | 0600, S_IFIFO}, Kind{"sock", S_IFSOCK | 0700, S_IFSOCK},
                 Kind{"chr", S_IFCHR | 0620, S_IFCHR}, Kind{"blk", S_IFBLK | 0660, S_IFBLK}}) {
    CAPTURE(k.name);
    auto r = f->mknod(kRoot, k.name, k.mode, 0, {}, /*rdev=*/0x0801);
    REQUIRE(r.ok());
    CHECK(r->mode == (k.type | (k.mode & 07777)));
    CHECK(r->nlink == 1);
    CHECK(r->uid == 1000);
    CHECK(r->gid == 100);
    CHECK(r->size == 0);
    CHECK(r->rdev == ((k.type == S_IFCHR || k.type == S_IFBLK) ? 0x0801u : 0u));
    CHECK(r->mtimeNs == f->clock);
    auto found = f->ns().lookup(kRoot, k.name);
    REQUIRE(found.ok());
    CHECK(found->inode == r->inode);
    CHECK(found->mode == r->mode);
  }

  auto link = f->symlink(kRoot, "link", "../some/where");
  REQUIRE(link.ok());
  CHECK(link->mode == (S_IFLNK | 0777));
  CHECK(link->size == 13);
  CHECK(f->ns().readlink(link->inode).value() == "../some/where");

  Attr rootBefore = f->attr(kRoot);
  auto dir = f->mkdir(kRoot, "dir", 0750);
  REQUIRE(dir.ok());
  CHECK(dir->mode == (S_IFDIR | 0750));
  CHECK(dir->nlink == 2);
  CHECK(dir->size == 4096);
  Attr root = f->attr(kRoot);
  CHECK(root.nlink == rootBefore.nlink + 1);
  CHECK(root.mtimeNs == f->clock);
  CHECK(root.ctimeNs == f->clock);
  CHECK(f->ns().inodeCount() == 9);
}

TEST_CASE(
    "namespace: mknod refuses bad names, bad parents, taken names and bad ids, changing nothing") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  auto before = f->dump();

  CHECK(f->create(kRoot, "").code() == Errc::kInvalid);
  CHECK(f->create(kRoot, ".").code() == Errc::kInvalid);
  CHECK(f->create(kRoot, "..").code() == Errc::kInvalid);
  CHECK(f->create(kRoot, "a/b").code() == Errc::kInvalid);
  CHECK(f->create(kRoot, std::string("a\0b", 3)).code() == Errc::kInvalid);
  CHECK(f->create(kRoot, std::string(256, 'n')).code() == Errc::kNameTooLong);
  CHECK(f->create(InodeId(999), "x").code() == Errc::kNotFound);
  CHECK(f->create(file, "x").code() == Errc::kNotDir);
  CHECK(f->create(kRoot, "file").code() == Errc::kExists);
  CHECK(f->mkdir(kRoot, "file").code() == Errc::kExists);
  CHECK(f->mknod(kRoot, "odd", 0110000 | 0644).code() == Errc::kInvalid);
  CHECK(f->symlink(kRoot, "empty", "").code() == Errc::kInvalid);
  CHECK(f->symlink(kRoot, "long", std::string(4097, 't')).code() == Errc::kNameTooLong);
  f->nextInode = 0;
  CHECK(f->create(kRoot, "zero").code() == Errc::kInvalid);
  f->nextInode = file.value;
  CHECK(f->create(kRoot, "reused").code() == Errc::kInvalid);
  CHECK(f->dump() == before);

  f->nextInode = 100;
  CHECK(f->create(kRoot, std::string(255, 'n')).ok());
}

TEST_CASE("namespace: lookup finds entries and refuses what the kernel never sends") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(dir, "file");
  auto found = f->ns().lookup(dir, "file");
  REQUIRE(found.ok());
  CHECK(found->inode == file);
  CHECK(f->lookupCode(dir, "nope") == Errc::kNotFound);
  CHECK(f->lookupCode(file, "x") == Errc::kNotDir);
  CHECK(f->lookupCode(InodeId(999), "x") == Errc::kNotFound);
  CHECK(f->lookupCode(dir, std::string(256, 'n')) == Errc::kNameTooLong);
  CHECK(f->lookupCode(dir, ".") == Errc::kInvalid);
  CHECK(f->lookupCode(dir, "..") == Errc::kInvalid);
  CHECK(f->lookupCode(dir, "") == Errc::kInvalid);
}

TEST_CASE("namespace: getattr and readlink report missing inodes and non-symlinks") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  CHECK(f->ns().getattr(InodeId(999)).code() == Errc::kNotFound);
  CHECK(f->ns().readlink(file).code() == Errc::kInvalid);
  CHECK(f->ns().readlink(kRoot).code() == Errc::kInvalid);
  CHECK(f->ns().readlink(InodeId(999)).code() == Errc::kNotFound);
}

TEST_CASE("namespace: link adds a name and raises nlink — directories and taken names are refused") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(kRoot, "file");
  auto linked = f->link(file, dir, "again");
  REQUIRE(linked.ok());
  CHECK(linked->inode == file);
  CHECK(linked->nlink == 2);
  CHECK(linked->ctimeNs == f->clock);
  CHECK(f->attr(dir).mtimeNs == f->clock);
  CHECK(f->ns().lookup(dir, "again")->inode == file);
  CHECK(f->ns().inodeCount() == 3);

  CHECK(f->link(dir, kRoot, "dirlink").code() == Errc::kNotPermitted);
  CHECK(f->link(InodeId(999), kRoot, "x").code() == Errc::kNotFound);
  CHECK(f->link(file, InodeId(999), "x").code() == Errc::kNotFound);
  CHECK(f->link(file, file, "x").code() == Errc::kNotDir);
  CHECK(f->link(file, kRoot, "dir").code() == Errc::kExists);
  CHECK(f->link(file, kRoot, "a/b").code() == Errc::kInvalid);
  CHECK(f->link(file, kRoot, std::string(256, 'n')).code() == Errc::kNameTooLong);
}

TEST_CASE("namespace: link and mkdir stop at the link limit with kTooManyLinks") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  InodeId dir = f->mkdirOk(kRoot, "dir");
  // Reaching 65000 links one op at a time would take long; write the count into the records.
  for (InodeId id : {file, dir}) {
    f->withRawDb([&](leveldb::DB& db) {
      std::string bytes;
      REQUIRE(db.Get(leveldb::ReadOptions(), meta::keys::inode(id), &bytes).ok());
      auto inode = meta::decodeInode(id, bytes);
      REQUIRE(inode.ok());
      inode->attr.nlink = meta::kMaxLinks;
      REQUIRE(db.Put(leveldb::WriteOptions(), meta::keys::inode(id), meta::encode(*inode)).ok());
    });
  }
  CHECK(f->link(file, kRoot, "one-more").code() == Errc::kTooManyLinks);
  CHECK(f->mkdir(dir, "sub").code() == Errc::kTooManyLinks);
  CHECK(f->create(dir, "a-file-is-fine").ok());
}

TEST_CASE("namespace: unlink removes a name and the last one deletes the file with its xattrs") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(dir, "file");
  REQUIRE(f->link(file, kRoot, "other").ok());
  REQUIRE(f->setxattr(file, "user.a", "1").ok());
  REQUIRE(f->allocChunk(file, 0, 10).ok());

  REQUIRE(f->unlink(dir, "file").ok());
  CHECK(f->lookupCode(dir, "file") == Errc::kNotFound);
  CHECK(f->attr(file).nlink == 1);
  CHECK(f->attr(file).ctimeNs == f->clock);
  CHECK(f->attr(dir).mtimeNs == f->clock);

  REQUIRE(f->unlink(kRoot, "other").ok());
  CHECK(f->ns().getattr(file).code() == Errc::kNotFound);
  CHECK(f->ns().inodeCount() == 2);
  CHECK(f->ns().chunkCount() == 0);
  CHECK(countKeys(*f, meta::keys::kXattr) == 0);
  CHECK(countKeys(*f, meta::keys::kChunk) == 0);
  auto garbage = f->ns().garbage(10);
  REQUIRE(garbage.size() == 1);
  CHECK(garbage[0].chunk.id == ChunkId(10));

  CHECK(f->unlink(dir, "file").code() == Errc::kNotFound);
  CHECK(f->unlink(kRoot, "dir").code() == Errc::kIsDir);
  CHECK(f->unlink(InodeId(999), "x").code() == Errc::kNotFound);
  InodeId plain = f->createOk(kRoot, "plain");
  CHECK(f->unlink(plain, "x").code() == Errc::kNotDir);
  CHECK(f->unlink(kRoot, "a/b").code() == Errc::kInvalid);
}

TEST_CASE("namespace: rmdir removes only empty directories") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  f->mkdirOk(dir, "sub");
  f->createOk(kRoot, "file");
  CHECK(f->attr(kRoot).nlink == 3);
  CHECK(f->attr(dir).nlink == 3);

  CHECK(f->rmdir(kRoot, "file").code() == Errc::kNotDir);
  CHECK(f->rmdir(kRoot, "dir").code() == Errc::kNotEmpty);
  CHECK(f->rmdir(dir, ".").code() == Errc::kInvalid);
  CHECK(f->rmdir(kRoot, "nope").code() == Errc::kNotFound);

  REQUIRE(f->rmdir(dir, "sub").ok());
  CHECK(f->attr(dir).nlink == 2);
  REQUIRE(f->rmdir(kRoot, "dir").ok());
  CHECK(f->attr(kRoot).nlink == 2);
  CHECK(f->ns().getattr(dir).code() == Errc::kNotFound);
  CHECK(f->ns().inodeCount() == 2);
}

TEST_CASE("namespace: a file unlinked while open lives on as an orphan until its last release") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file", /*session=*/1);
  REQUIRE(f->open(1, file).ok());
  REQUIRE(f->open(2, file).ok());
  // Shards 0 and 2 share server 5: the server is asked once.
  REQUIRE(f->allocChunk(file, 0, 20, Layout::ec(2, 1), std::vector<uint64_t>{5, 6, 5}).ok());
  REQUIRE(f->allocChunk(file, 3, 21, Layout::replica(2)).ok());
  REQUIRE(f->commitWrite(file, 3 * kChunkSize + 10, 5).ok());

  REQUIRE(f->unlink(kRoot, "file").ok());
  CHECK(f->lookupCode(kRoot, "file") == Errc::kNotFound);
  Attr orphan = f->attr(file);
  CHECK(orphan.nlink == 0);
  CHECK(orphan.size == 3 * kChunkSize + 10);
  CHECK(f->ns().chunks(file, 0, 10)->size() == 2);
  CHECK(f->names(kRoot).empty());
  CHECK(f->ns().garbage(10).empty());

  f->reopen();  // an orphan is state like any other
  REQUIRE(f->release(1, file).ok());
  REQUIRE(f->release(1, file).ok());
  CHECK(f->attr(file).nlink == 0);
  CHECK(f->ns().inodeCount() == 2);
  REQUIRE(f->release(2, file).ok());
  CHECK(f->ns().getattr(file).code() == Errc::kNotFound);
  CHECK(f->ns().inodeCount() == 1);
  CHECK(f->ns().chunkCount() == 0);

  auto garbage = f->ns().garbage(10);
  REQUIRE(garbage.size() == 2);
  CHECK(garbage[0].chunk.id == ChunkId(20));
  CHECK(garbage[0].pending == std::vector<ServerId>{ServerId(5), ServerId(6)});
  CHECK(garbage[1].chunk.id == ChunkId(21));
  CHECK(garbage[1].chunk.index == 3);
  CHECK(garbage[1].pending == std::vector<ServerId>{ServerId(1), ServerId(2)});
  CHECK(f->release(2, file).code() == Errc::kNotFound);
}

TEST_CASE("namespace: release of a linked file keeps it — open counts handles per session") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  auto opened = f->open(3, file);
  REQUIRE(opened.ok());
  CHECK(opened->inode == file);
  REQUIRE(f->release(3, file).ok());
  CHECK(f->attr(file).nlink == 1);
  CHECK(f->release(3, file).code() == Errc::kNotFound);
  CHECK(f->open(3, InodeId(999)).code() == Errc::kNotFound);
  CHECK(f->open(0, file).code() == Errc::kInvalid);
  CHECK(countKeys(*f, meta::keys::kOpen) == 0);
}

TEST_CASE("namespace: data survives closing and reopening the store") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(dir, "file");
  REQUIRE(f->symlink(dir, "sym", "file").ok());
  REQUIRE(f->setxattr(file, "user.k", "v").ok());
  REQUIRE(f->allocChunk(file, 1, 7).ok());
  REQUIRE(f->commitWrite(file, kChunkSize + 100, 42).ok());
  REQUIRE(f->registerServer(3, "10.0.0.3:7000").ok());
  REQUIRE(f->ns().sync().ok());
  auto before = f->dump();

  f->reopen();
  CHECK(f->dump() == before);
  CHECK(f->ns().initialized());
  CHECK(f->ns().clusterId() == "test-cluster");
  CHECK(f->ns().lookup(dir, "file")->inode == file);
  CHECK(f->attr(file).size == kChunkSize + 100);
  CHECK(f->attr(file).mtimeNs == 42);
  CHECK(f->ns().getxattr(file, "user.k").value() == "v");
  CHECK(f->ns().chunks(file, 0, 2)->at(0).id == ChunkId(7));
  CHECK(f->names(dir) == std::vector<std::string>{"file", "sym"});
  CHECK(f->ns().servers().size() == 1);
  CHECK(f->ns().inodeCount() == 4);
  CHECK(f->ns().chunkCount() == 1);
}

TEST_CASE("namespace: id high-water marks survive a restart and never go down") {
  auto f = eachStore();
  f->nextInode = 50;
  InodeId file = f->createOk(kRoot, "file");
  REQUIRE(f->allocChunk(file, 0, 77).ok());
  REQUIRE(f->openSession(9, "host", "/mnt").ok());
  REQUIRE(f->registerServer(12, "a:1").ok());
  f->nextInode = 20;
  f->createOk(kRoot, "lower");
  REQUIRE(f->allocChunk(file, 1, 30).ok());
  REQUIRE(f->openSession(4, "host", "/mnt").ok());
  REQUIRE(f->registerServer(2, "b:1").ok());
  // A failed op does not move them either.
  f->nextInode = 500;
  CHECK(f->create(kRoot, "file").code() == Errc::kExists);

  f->reopen();
  meta::IdMarks marks = f->ns().idMarks();
  CHECK(marks.inode == 50);
  CHECK(marks.chunk == 77);
  CHECK(marks.session == 9);
  CHECK(marks.server == 12);
}

TEST_CASE("namespace: a damaged inode record reads as kCorruption, never a crash") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(dir, "file");
  InodeId other = f->createOk(dir, "other");
  std::string good;
  f->withRawDb([&](leveldb::DB& db) {
    REQUIRE(db.Get(leveldb::ReadOptions(), meta::keys::inode(file), &good).ok());
  });
  std::string otherBytes = meta::encode(meta::Inode{f->attr(other), {}, {}, 0, {}, 0});
  std::string dentryBytes = meta::encode(meta::Dentry{file, S_IFREG, 3});

  const std::pair<const char*, std::string> damages[] = {
      {"empty", ""},
      {"odd length", "abc"},
      {"huge segment count", std::string(8, '\xff')},
      {"half a record", good.substr(0, good.size() / 2 / 8 * 8)},
      {"zeros", std::string(good.size(), '\0')},
      {"another inode's record", otherBytes},
      {"a directory entry", dentryBytes},
  };
  for (const auto& [what, bytes] : damages) {
    CAPTURE(what);
    poke(*f, meta::keys::inode(file), bytes);
    CHECK(f->ns().getattr(file).code() == Errc::kCorruption);
    CHECK(f->ns().lookup(dir, "file").code() == Errc::kCorruption);
    CHECK(f->ns().readdir(dir, 0, 10, /*plus=*/true).code() == Errc::kCorruption);
    CHECK(f->setattr(file, {.valid = proto::SET_MODE, .mode = 0600}).code() == Errc::kCorruption);
    CHECK(f->unlink(dir, "file").code() == Errc::kCorruption);
    CHECK(f->open(1, file).code() == Errc::kCorruption);
    // The rest of the store still works.
    CHECK(f->ns().readdir(dir, 0, 10, /*plus=*/false).ok());
    CHECK(f->attr(other).inode == other);
  }
}

TEST_CASE("namespace: damaged entries, chunks and counters read as kCorruption") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  REQUIRE(f->allocChunk(file, 0, 5).ok());
  REQUIRE(f->commitWrite(file, 100, 1).ok());

  poke(*f, meta::keys::chunk(file, 0), std::string(16, '\x7f'));
  CHECK(f->ns().chunks(file, 0, 1).code() == Errc::kCorruption);
  CHECK(f->allocChunk(file, 0, 6).code() == Errc::kCorruption);
  CHECK(f->setattr(file, {.valid = proto::SET_SIZE, .size = 0}).code() == Errc::kCorruption);

  poke(*f, meta::keys::dentry(kRootInode, "file"), "garbage!");
  CHECK(f->lookupCode(kRoot, "file") == Errc::kCorruption);
  CHECK(f->ns().readdir(kRoot, 0, 10, false).code() == Errc::kCorruption);
  CHECK(f->unlink(kRoot, "file").code() == Errc::kCorruption);

  poke(*f, meta::keys::counter(meta::keys::kInodeMark), "short");
  CHECK(f->create(kRoot, "new").code() == Errc::kCorruption);
  CHECK(f->ns().idMarks().inode == 0);  // logged; the proposer must not trust it

  poke(*f, meta::keys::server(ServerId(4)), "bad server record");
  CHECK(f->ns().servers().empty());
}

TEST_CASE("namespace: no single bit flip in an inode record crashes its decoder") {
  meta::Inode inode;
  inode.attr.inode = InodeId(7);
  inode.attr.mode = S_IFLNK | 0777;
  inode.attr.nlink = 1;
  inode.target = "a/target";
  inode.attr.size = inode.target.size();
  std::string good = meta::encode(inode);
  REQUIRE(meta::decodeInode(InodeId(7), good).ok());
  size_t failures = 0;
  for (size_t bit = 0; bit < good.size() * 8; ++bit) {
    std::string bad = good;
    bad[bit / 8] = char(bad[bit / 8] ^ (1 << (bit % 8)));
    auto r = meta::decodeInode(InodeId(7), bad);
    if (!r.ok()) {
      CHECK(r.code() == Errc::kCorruption);
      ++failures;
    }
  }
  // Most flips land in values (times, mode bits) and decode to something; enough do not.
  CHECK(failures > 0);
}

TEST_CASE("namespace: sync succeeds and leaves the store as it was") {
  auto f = eachStore();
  f->createOk(kRoot, "file");
  auto before = f->dump();
  REQUIRE(f->ns().sync().ok());
  CHECK(f->dump() == before);
}

TEST_CASE("namespace: an op with garbled bytes is refused or applied, never thrown") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  capnp::MallocMessageBuilder message;
  auto op = message.initRoot<proto::Op>();
  op.setNowNs(5);
  auto r = op.initRename();
  r.setParent(kRoot.value);
  r.setName("dir");
  r.setNewParent(kRoot.value);
  r.setNewName("renamed");
  auto words = capnp::messageToFlatArray(message);
  std::string good(reinterpret_cast<const char*>(words.asBytes().begin()), words.asBytes().size());

  int malformed = 0;
  // Word 0 is the segment table and word 1 the root pointer: the caller's reader checks those
  // before apply() sees the op.
  for (size_t word = 2; word < good.size() / 8; ++word) {
    for (uint64_t garbage : {~uint64_t(0), uint64_t(0x0000100000000001), uint64_t(0x7fffffff0)}) {
      CAPTURE(word);
      std::string bad = good;
      memcpy(&bad[word * 8], &garbage, 8);
      Result<meta::Applied> applied = Error{Errc::kIo, "not applied"};
      CHECK_NOTHROW(applied = f->applyBytes(bad));
      if (!applied.ok() && applied.error().detail.starts_with("malformed op")) {
        CHECK(applied.code() == Errc::kInvalid);
        ++malformed;
      }
    }
  }
  CHECK(malformed > 0);
  // Whatever the garbled ops did, the store still answers.
  CHECK(f->ns().readdir(kRoot, 0, 100, true).ok());
  (void)dir;
}

TEST_CASE("namespace: a directory removed while open takes no entries and goes on release") {
  auto f = eachStore();
  InodeId a = f->mkdirOk(kRoot, "a");
  InodeId b = f->mkdirOk(a, "b");
  REQUIRE(f->open(1, b).ok());
  REQUIRE(f->rmdir(a, "b").ok());
  REQUIRE(f->rmdir(kRoot, "a").ok());
  CHECK(f->attr(b).nlink == 0);
  CHECK(f->create(b, "x").code() == Errc::kNotFound);
  CHECK(f->mkdir(b, "x").code() == Errc::kNotFound);
  auto page = f->ns().readdir(b, 0, 10, /*plus=*/true);
  REQUIRE(page.ok());
  REQUIRE(page->entries.size() == 2);
  CHECK(page->entries[1].attr.inode == b);  // its parent is gone
  REQUIRE(f->release(1, b).ok());
  CHECK(f->ns().getattr(b).code() == Errc::kNotFound);
  CHECK(f->ns().inodeCount() == 1);
}
