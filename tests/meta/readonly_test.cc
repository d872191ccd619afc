// Frozen inodes: the virtual xattr "tessera.readonly" that `tessera snapshot` sets on every node
// of a snapshot. Every op that would change a frozen inode fails with kReadOnly and changes
// nothing; setting or clearing the flag is the one change such an inode takes.
#include "fs/wire.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;
constexpr uint32_t kCreate = proto::XATTR_CREATE;
constexpr uint32_t kReplace = proto::XATTR_REPLACE;
constexpr uint32_t kExchange = proto::RENAME_FLAG_EXCHANGE;

Status freeze(NsFixture& f, InodeId inode) { return f.setxattr(inode, "tessera.readonly", "1"); }
Status unfreeze(NsFixture& f, InodeId inode) { return f.removexattr(inode, "tessera.readonly"); }

Result<meta::Applied> punch(NsFixture& f, InodeId inode, uint64_t first, uint64_t count) {
  return f.apply([&](proto::Op::Builder op) {
    auto p = op.initPunchChunks();
    p.setInode(inode.value);
    p.setFirst(first);
    p.setCount(count);
  });
}

// allocChunk as acquireLease proposes it: the chunk, and its write lease for `session`.
Result<meta::Applied> allocLeased(NsFixture& f, InodeId inode, uint64_t index, uint64_t chunkId,
                                  uint64_t session) {
  return f.apply([&](proto::Op::Builder op) {
    auto a = op.initAllocChunk();
    a.setInode(inode.value);
    ChunkDesc chunk;
    chunk.index = index;
    chunk.id = ChunkId(chunkId);
    chunk.version = 1;
    chunk.layout = Layout::ec(4, 2);
    for (uint64_t s = 1; s <= 6; ++s) chunk.servers.push_back(ServerId(s));
    toWire(chunk, a.initChunk());
    a.setLeaseSession(session);
  });
}

Result<meta::Applied> releaseLeases(NsFixture& f, uint64_t session, InodeId inode) {
  return f.apply([&](proto::Op::Builder op) {
    auto r = op.initReleaseLeases();
    r.setSession(session);
    r.setInode(inode.value);
  });
}

}  // namespace

TEST_CASE(
    "readonly: tessera.readonly freezes an inode, reads back as 1, survives a restart and "
    "is cleared by removing it or by 0") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  CHECK(f->ns().getxattr(file, "tessera.readonly").code() == Errc::kNoData);
  CHECK_FALSE(f->attr(file).readOnly);
  CHECK(f->setxattr(file, "tessera.readonly", "1", kReplace).code() == Errc::kNoData);
  CHECK(f->setxattr(file, "tessera.readonly", "yes").code() == Errc::kInvalid);
  CHECK(f->setxattr(file, "tessera.readonly", "").code() == Errc::kInvalid);
  CHECK_FALSE(f->attr(file).readOnly);

  REQUIRE(f->setxattr(file, "tessera.readonly", "1\n", kCreate).ok());
  CHECK(f->attr(file).ctimeNs == f->clock);
  CHECK(f->attr(file).readOnly);
  CHECK(f->ns().getxattr(file, "tessera.readonly").value() == "1");
  CHECK(f->ns().lookup(kRoot, "file")->readOnly);
  CHECK(f->setxattr(file, "tessera.readonly", "1", kCreate).code() == Errc::kExists);
  // Setting it again is allowed (a retried snapshot freezes what it froze before).
  REQUIRE(freeze(*f, file).ok());
  // Never listed, so `cp -a` of a snapshot makes writable copies.
  CHECK(f->ns().listxattr(file).value().empty());
  f->reopen();
  CHECK(f->attr(file).readOnly);
  auto page = f->ns().readdir(kRoot, 0, 10, /*plus=*/true);
  REQUIRE(page.ok());
  REQUIRE(page->entries.size() == 3);
  CHECK(page->entries[2].attr.readOnly);

  REQUIRE(unfreeze(*f, file).ok());
  CHECK_FALSE(f->attr(file).readOnly);
  CHECK(f->ns().getxattr(file, "tessera.readonly").code() == Errc::kNoData);
  CHECK(unfreeze(*f, file).code() == Errc::kNoData);
  REQUIRE(freeze(*f, file).ok());
  REQUIRE(f->setxattr(file, "tessera.readonly", "0", kReplace).ok());
  CHECK_FALSE(f->attr(file).readOnly);
  REQUIRE(f->setxattr(file, "tessera.readonly", "0").ok());  // clearing twice is no error
  CHECK_FALSE(f->attr(file).readOnly);
}

TEST_CASE(
    "readonly: a frozen directory refuses every change of its entries and itself, and "
    "changes nothing") {
  auto f = eachStore();
  InodeId dir = f->mkdirOk(kRoot, "dir");
  InodeId file = f->createOk(dir, "file");
  InodeId sub = f->mkdirOk(dir, "sub");
  InodeId empty = f->mkdirOk(kRoot, "empty");
  InodeId other = f->mkdirOk(kRoot, "other");
  InodeId outside = f->createOk(other, "outside");
  REQUIRE(f->setxattr(dir, "user.k", "v").ok());
  REQUIRE(freeze(*f, dir).ok());
  REQUIRE(freeze(*f, empty).ok());
  auto before = f->dump();

  // Names into it.
  CHECK(f->create(dir, "new").code() == Errc::kReadOnly);
  CHECK(f->create(dir, "new", /*session=*/7).code() == Errc::kReadOnly);
  CHECK(f->mkdir(dir, "new").code() == Errc::kReadOnly);
  CHECK(f->symlink(dir, "new", "file").code() == Errc::kReadOnly);
  CHECK(f->mknod(dir, "fifo", S_IFIFO | 0600).code() == Errc::kReadOnly);
  CHECK(f->link(outside, dir, "new").code() == Errc::kReadOnly);
  CHECK(f->rename(other, "outside", dir, "new").code() == Errc::kReadOnly);
  // Names out of it, or changed in it.
  CHECK(f->unlink(dir, "file").code() == Errc::kReadOnly);
  CHECK(f->unlink(dir, "missing").code() == Errc::kReadOnly);
  CHECK(f->rmdir(dir, "sub").code() == Errc::kReadOnly);
  CHECK(f->rename(dir, "file", other, "moved").code() == Errc::kReadOnly);
  CHECK(f->rename(dir, "file", dir, "renamed").code() == Errc::kReadOnly);
  CHECK(f->rename(dir, "sub", kRoot, "sub").code() == Errc::kReadOnly);
  CHECK(f->rename(other, "outside", dir, "file").code() == Errc::kReadOnly);
  CHECK(f->rename(other, "outside", dir, "file", kExchange).code() == Errc::kReadOnly);
  // The directory itself: its attributes, its xattrs, its own name.
  CHECK(f->setattr(dir, {.valid = proto::SET_MODE, .mode = 0700}).code() == Errc::kReadOnly);
  CHECK(f->setattr(dir, {.valid = proto::SET_UID | proto::SET_GID, .uid = 5, .gid = 5}).code() ==
        Errc::kReadOnly);
  CHECK(f->setattr(dir, {.valid = proto::SET_MTIME_NOW}).code() == Errc::kReadOnly);
  CHECK(f->setxattr(dir, "user.k", "w").code() == Errc::kReadOnly);
  CHECK(f->setxattr(dir, "user.new", "w").code() == Errc::kReadOnly);
  CHECK(f->removexattr(dir, "user.k").code() == Errc::kReadOnly);
  CHECK(f->setxattr(dir, "tessera.policy", "replica(2)").code() == Errc::kReadOnly);
  CHECK(f->rmdir(kRoot, "empty").code() == Errc::kReadOnly);
  CHECK(f->rename(kRoot, "dir", other, "dir").code() == Errc::kReadOnly);
  CHECK(f->rename(kRoot, "other", kRoot, "empty").code() == Errc::kReadOnly);
  CHECK(f->dump() == before);
  CHECK(f->names(dir) == std::vector<std::string>{"file", "sub"});
  CHECK(f->ns().getxattr(dir, "user.k").value() == "v");

  // Freezing is per inode: what the directory holds is not frozen with it.
  CHECK(f->setattr(file, {.valid = proto::SET_MODE, .mode = 0600}).ok());
  CHECK(f->create(sub, "inner").ok());

  REQUIRE(unfreeze(*f, dir).ok());
  REQUIRE(unfreeze(*f, empty).ok());
  CHECK(f->create(dir, "new").ok());
  CHECK(f->rename(dir, "file", other, "moved").ok());
  CHECK(f->unlink(dir, "new").ok());
  CHECK(f->setattr(dir, {.valid = proto::SET_MODE, .mode = 0700}).ok());
  CHECK(f->setxattr(dir, "user.k", "w").ok());
  CHECK(f->rmdir(kRoot, "empty").ok());
  CHECK(f->rename(kRoot, "dir", other, "dir").ok());
  CHECK(f->names(other) == std::vector<std::string>{"outside", "moved", "dir"});
}

TEST_CASE(
    "readonly: a frozen file refuses attribute, xattr, name and data changes until it is "
    "unfrozen") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  REQUIRE(f->allocChunk(file, 0, 10).ok());
  REQUIRE(f->commitWrite(file, 1000, 5).ok());
  REQUIRE(f->link(file, kRoot, "second").ok());
  REQUIRE(f->setxattr(file, "user.k", "v").ok());
  InodeId victim = f->createOk(kRoot, "victim");
  REQUIRE(freeze(*f, file).ok());
  auto before = f->dump();

  CHECK(f->setattr(file, {.valid = proto::SET_MODE, .mode = 0444}).code() == Errc::kReadOnly);
  CHECK(f->setattr(file, {.valid = proto::SET_UID, .uid = 5}).code() == Errc::kReadOnly);
  CHECK(f->setattr(file, {.valid = proto::SET_GID, .gid = 5}).code() == Errc::kReadOnly);
  CHECK(f->setattr(file, {.valid = proto::SET_SIZE, .size = 0}).code() == Errc::kReadOnly);
  CHECK(f->setattr(file, {.valid = proto::SET_ATIME | proto::SET_MTIME, .atimeNs = 1, .mtimeNs = 1})
            .code() == Errc::kReadOnly);
  CHECK(f->setxattr(file, "user.k", "w").code() == Errc::kReadOnly);
  CHECK(f->setxattr(file, "user.new", "w").code() == Errc::kReadOnly);
  CHECK(f->removexattr(file, "user.k").code() == Errc::kReadOnly);
  CHECK(f->setxattr(file, "tessera.policy", "replica(2)").code() == Errc::kReadOnly);
  // Its names: a new one, and either of the two it has (it has more, but its count would change).
  CHECK(f->link(file, kRoot, "third").code() == Errc::kReadOnly);
  CHECK(f->unlink(kRoot, "file").code() == Errc::kReadOnly);
  CHECK(f->unlink(kRoot, "second").code() == Errc::kReadOnly);
  CHECK(f->rename(kRoot, "file", kRoot, "renamed").code() == Errc::kReadOnly);
  CHECK(f->rename(kRoot, "victim", kRoot, "file").code() == Errc::kReadOnly);
  CHECK(f->rename(kRoot, "victim", kRoot, "file", kExchange).code() == Errc::kReadOnly);
  // Its data: the write lease, the size a write commits, a punched hole.
  CHECK(f->allocChunk(file, 1, 11).code() == Errc::kReadOnly);
  CHECK(allocLeased(*f, file, 0, 12, /*session=*/7).code() == Errc::kReadOnly);
  CHECK(f->commitWrite(file, 2000, 6).code() == Errc::kReadOnly);
  CHECK(punch(*f, file, 0, 1).code() == Errc::kReadOnly);
  CHECK(f->dump() == before);

  // Reading it is no change: opened and released, its xattrs and chunks read.
  REQUIRE(f->open(7, file).ok());
  REQUIRE(f->release(7, file).ok());
  CHECK(f->ns().getxattr(file, "user.k").value() == "v");
  CHECK(f->ns().chunks(file, 0, 10)->size() == 1);
  CHECK(f->attr(file).size == 1000);
  CHECK(f->attr(file).nlink == 2);
  CHECK(f->setattr(victim, {.valid = proto::SET_MODE, .mode = 0600}).ok());

  REQUIRE(unfreeze(*f, file).ok());
  CHECK(f->setattr(file, {.valid = proto::SET_MODE, .mode = 0444}).ok());
  CHECK(f->setxattr(file, "user.k", "w").ok());
  CHECK(f->allocChunk(file, 1, 11).ok());
  CHECK(f->commitWrite(file, 2000, 6).ok());
  CHECK(punch(*f, file, 1, 1).ok());
  CHECK(f->setattr(file, {.valid = proto::SET_SIZE, .size = 10}).ok());
  CHECK(f->rename(kRoot, "file", kRoot, "renamed").ok());
  CHECK(f->unlink(kRoot, "second").ok());
  CHECK(f->unlink(kRoot, "renamed").ok());
  CHECK(f->lookupCode(kRoot, "renamed") == Errc::kNotFound);
}

TEST_CASE("readonly: a file is not frozen while a session holds a write lease on it") {
  auto f = eachStore();
  InodeId file = f->createOk(kRoot, "file");
  REQUIRE(allocLeased(*f, file, 0, 10, /*session=*/7).ok());
  REQUIRE(f->allocChunk(file, 1, 11).ok());  // no lease: fallocate
  auto before = f->dump();
  // The holder writes to the chunk servers without asking again: frozen now, the file could
  // still change.
  CHECK(freeze(*f, file).code() == Errc::kBusy);
  CHECK(f->dump() == before);
  CHECK_FALSE(f->attr(file).readOnly);
  REQUIRE(releaseLeases(*f, 7, file).ok());
  REQUIRE(freeze(*f, file).ok());
  CHECK(allocLeased(*f, file, 0, 10, 7).code() == Errc::kReadOnly);
  CHECK(f->ns().chunks(file, 0, 1)->at(0).leaseSession == SessionId());
}
