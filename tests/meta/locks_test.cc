// Cluster-wide file locks: the rules (meta/ns/lock_table.h) as pure functions, then the ops
// that keep them in the store (meta/ns/ops/locks.cc) — conflicts, merging and splitting of one
// owner's locks, release by owner and by handle, and release with the last close and with the
// session's expiry.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "meta/ns/keys.h"
#include "meta/ns/lock_table.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::meta;
using namespace tessera::test;

namespace {

HeldLock lk(uint64_t session, uint64_t owner, uint64_t start, uint64_t end, LockType type) {
  HeldLock l;
  l.session = session;
  l.owner = owner;
  l.start = start;
  l.end = end;
  l.type = type;
  return l;
}

constexpr LockType R = LockType::kRead;
constexpr LockType W = LockType::kWrite;
constexpr LockType U = LockType::kUnlock;

std::string show(const std::vector<HeldLock>& v) {
  std::string s;
  for (auto& l : v) {
    s += "[" + std::to_string(l.start) + "," + std::to_string(l.end) + "]" +
         (l.type == R ? "R" : "W") + " ";
  }
  return s;
}

}  // namespace

TEST_CASE("lock table: read locks share, a write lock excludes, one owner never conflicts") {
  auto held = std::vector<HeldLock>{lk(1, 10, 100, 100, R)};
  CHECK_FALSE(findConflict(held, lk(2, 20, 100, 100, R)));      // QEMU: shared read locks
  CHECK(findConflict(held, lk(2, 20, 100, 100, W)));            // another owner's write
  CHECK(findConflict(held, lk(1, 11, 0, kLockToEnd, W)));       // same session, other owner
  CHECK_FALSE(findConflict(held, lk(1, 10, 100, 100, W)));      // its own: an upgrade
  CHECK_FALSE(findConflict(held, lk(2, 20, 101, 200, W)));      // next byte: no overlap
  CHECK_FALSE(findConflict(held, lk(2, 20, 0, kLockToEnd, U)));  // an unlock never conflicts
}

TEST_CASE("lock table: one owner's locks merge, split and change type as POSIX says") {
  std::vector<HeldLock> own;
  own = applyToOwn(own, lk(1, 1, 100, 100, R));
  own = applyToOwn(own, lk(1, 1, 101, 101, R));
  CHECK(show(own) == "[100,101]R ");  // adjacent, same type: one lock
  own = applyToOwn(own, lk(1, 1, 0, 9, W));
  own = applyToOwn(own, lk(1, 1, 10, 99, W));
  CHECK(show(own) == "[0,99]W [100,101]R ");  // adjacent, other type: stay apart
  own = applyToOwn(own, lk(1, 1, 50, 100, U));
  CHECK(show(own) == "[0,49]W [101,101]R ");  // an unlock cuts through both
  own = applyToOwn(own, lk(1, 1, 20, 29, R));
  CHECK(show(own) == "[0,19]W [20,29]R [30,49]W [101,101]R ");  // a downgrade splits
  own = applyToOwn(own, lk(1, 1, 0, kLockToEnd, W));
  CHECK(show(own) == "[0," + std::to_string(kLockToEnd) + "]W ");  // covers all: one lock
  own = applyToOwn(own, lk(1, 1, 0, kLockToEnd, U));
  CHECK(own.empty());
}

namespace {

constexpr uint64_t kA = 7, kB = 8;  // two sessions (mounts)

Result<Applied> setLock(NsFixture& f, uint64_t session, InodeId inode, uint64_t owner,
                        uint64_t handle, LockType type, uint64_t start, uint64_t end,
                        bool flock = false) {
  return f.apply([&](proto::Op::Builder op) {
    auto o = op.initSetLock();
    o.setSession(session);
    o.setInode(inode.value);
    o.setOwner(owner);
    o.setHandle(handle);
    o.setFlock(flock);
    o.setType(uint8_t(type));
    o.setStart(start);
    o.setEnd(end);
    o.setPid(1234);
  });
}

Result<Applied> releaseLocks(NsFixture& f, uint64_t session, InodeId inode, uint64_t owner,
                             uint64_t handle, bool posixOnly) {
  return f.apply([&](proto::Op::Builder op) {
    auto o = op.initReleaseLocks();
    o.setSession(session);
    o.setInode(inode.value);
    o.setOwner(owner);
    o.setHandle(handle);
    o.setPosixOnly(posixOnly);
  });
}

size_t lockCount(NsFixture& f) {
  size_t n = 0;
  for (auto& [key, value] : f.dump()) n += key[0] == keys::kLock;
  return n;
}

bool lockable(NsFixture& f, InodeId inode, LockType type, uint64_t start, uint64_t end,
          bool flock = false) {
  auto c = f.ns().lockConflict(inode, flock, lk(99, 99, start, end, type));
  REQUIRE(c.ok());
  return !c->has_value();
}

struct Scene {
  InodeId file;
};

Scene build(NsFixture& f) {
  REQUIRE(f.init().ok());
  REQUIRE(f.openSession(kA, "host-a", "/mnt").ok());
  REQUIRE(f.openSession(kB, "host-b", "/mnt").ok());
  Scene s;
  s.file = f.createOk(kRootInode, "disk.img", kA);
  REQUIRE(f.open(kB, s.file).ok());
  return s;
}

}  // namespace

TEST_CASE("locks: another session's conflicting lock is refused, and stays out after it went") {
  NsFixture f(eachStoreKind());
  Scene s = build(f);
  // QEMU's image locking: shared 1-byte read locks, a write lock where it writes.
  REQUIRE(setLock(f, kA, s.file, 1, 1, R, 100, 100).ok());
  REQUIRE(setLock(f, kA, s.file, 1, 1, R, 201, 201).ok());
  CHECK(setLock(f, kB, s.file, 2, 5, R, 100, 100).ok());
  auto refused = setLock(f, kB, s.file, 2, 5, W, 201, 201);
  CHECK(refused.code() == Errc::kWouldBlock);
  CHECK_FALSE(lockable(f, s.file, W, 201, 201));
  CHECK(lockable(f, s.file, W, 300, 400));
  // fcntl and flock locks live apart, as on Linux.
  CHECK(setLock(f, kB, s.file, 2, 5, W, 0, kLockToEnd, true).ok());
  CHECK(setLock(f, kA, s.file, 1, 1, R, 0, kLockToEnd, true).code() == Errc::kWouldBlock);
  // The store survives a restart with them.
  f.reopen();
  CHECK(setLock(f, kB, s.file, 2, 5, W, 201, 201).code() == Errc::kWouldBlock);
  REQUIRE(setLock(f, kA, s.file, 1, 1, U, 0, kLockToEnd).ok());
  CHECK(setLock(f, kB, s.file, 2, 5, W, 201, 201).ok());
}

TEST_CASE("locks: dropped by owner (close), by handle (last close of an OFD), with the session") {
  NsFixture f(eachStoreKind());
  Scene s = build(f);
  REQUIRE(setLock(f, kA, s.file, /*owner*/ 1, /*handle*/ 10, W, 0, 9).ok());   // fcntl
  REQUIRE(setLock(f, kA, s.file, /*owner*/ 2, /*handle*/ 11, W, 10, 19).ok());  // OFD
  REQUIRE(setLock(f, kA, s.file, /*owner*/ 2, /*handle*/ 11, W, 0, kLockToEnd, true).ok());
  CHECK(lockCount(f) == 3);
  // A process's close: its fcntl locks go, not the OFD's, not the flock.
  REQUIRE(releaseLocks(f, kA, s.file, 1, 0, true).ok());
  CHECK(lockable(f, s.file, W, 0, 9));
  CHECK_FALSE(lockable(f, s.file, W, 10, 19));
  // Another session cannot drop them.
  REQUIRE(releaseLocks(f, kB, s.file, 0, 0, false).ok());
  CHECK(lockCount(f) == 2);
  // The last close of the open file description (handle 11) drops both of its kinds.
  REQUIRE(releaseLocks(f, kA, s.file, 0, 11, false).ok());
  CHECK(lockCount(f) == 0);

  SUBCASE("the session's last handle of the file") {
    REQUIRE(setLock(f, kA, s.file, 3, 12, R, 100, 100).ok());
    REQUIRE(f.release(kA, s.file).ok());
    CHECK(lockCount(f) == 0);
  }
  SUBCASE("the session's expiry") {
    REQUIRE(setLock(f, kA, s.file, 3, 12, W, 100, 100).ok());
    REQUIRE(setLock(f, kB, s.file, 4, 13, R, 200, 200).ok());
    REQUIRE(f.apply([&](proto::Op::Builder op) {
                 op.initExpireSession().setSession(kA);
               }).ok());
    CHECK(lockCount(f) == 1);
    CHECK(lockable(f, s.file, W, 100, 100));
    // And an expired session cannot lock again.
    CHECK(setLock(f, kA, s.file, 3, 12, W, 100, 100).code() == Errc::kStale);
  }
}

TEST_CASE("locks: bad requests are refused and change nothing") {
  NsFixture f(eachStoreKind());
  Scene s = build(f);
  CHECK(setLock(f, kA, s.file, 1, 1, LockType(3), 0, 1).code() == Errc::kInvalid);
  CHECK(setLock(f, kA, s.file, 1, 1, W, 10, 9).code() == Errc::kInvalid);
  CHECK(setLock(f, kA, s.file, 1, 1, W, 0, kLockToEnd + 1).code() == Errc::kInvalid);
  CHECK(setLock(f, kA, InodeId(999), 1, 1, W, 0, 1).code() == Errc::kNotFound);
  CHECK(setLock(f, kA, kRootInode, 1, 1, W, 0, 1).code() == Errc::kInvalid);  // a directory
  CHECK(setLock(f, 0, s.file, 1, 1, W, 0, 1).code() == Errc::kInvalid);
  CHECK(lockCount(f) == 0);
}
