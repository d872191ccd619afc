// Exactly-once application (Raft dissertation §6.3): "The solution is for clients to assign
// unique serial numbers to every command. Then, the state machine tracks the latest serial
// number processed for each client, along with the associated response."
#include <doctest/doctest.h>

#include "meta/ns/namespace.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

constexpr uint64_t kSession = 7;

struct Fixture : NsFixture {
  explicit Fixture(StoreKind kind) : NsFixture(kind) {
    REQUIRE(init().ok());
    auto r = apply([](proto::Op::Builder op) {
      auto s = op.initOpenSession();
      s.setSession(kSession);
      s.setHost("host");
      s.setMountpoint("/mnt");
    });
    REQUIRE(r.ok());
  }

  // mknod of a regular file as request `seq` of the session, always with the same inode id
  // (the proposer would put the same op in the log again on a retry).
  Result<Attr> createAs(uint64_t seq, std::string name, uint64_t ackedBelow = 1) {
    auto r = apply([&](proto::Op::Builder op) {
      op.setSession(kSession);
      op.setSeq(seq);
      op.setAckedBelow(ackedBelow);
      auto m = op.initMknod();
      m.setParent(kRootInode.value);
      m.setName(name);
      m.setMode(S_IFREG | 0644);
      m.setNewInode(100 + seq);
    });
    if (!r) return r.error();
    return r->attr;
  }

  Status unlinkAs(uint64_t seq, std::string name, uint64_t session = kSession) {
    auto r = apply([&](proto::Op::Builder op) {
      op.setSession(session);
      op.setSeq(seq);
      op.setAckedBelow(1);
      auto u = op.initUnlink();
      u.setParent(kRootInode.value);
      u.setName(name);
    });
    if (!r) return r.error();
    return Status();
  }
};

}  // namespace

TEST_CASE("exactly once: a retried create answers as the first time instead of EEXIST") {
  Fixture f(eachStoreKind());
  auto first = f.createAs(1, "a");
  REQUIRE(first.ok());
  auto again = f.createAs(1, "a");
  REQUIRE(again.ok());
  CHECK(again->inode == first->inode);
  // A different request with the same name is a new request: EEXIST.
  CHECK(f.createAs(2, "a").code() == Errc::kExists);
}

TEST_CASE("exactly once: a retried unlink succeeds again instead of ENOENT") {
  Fixture f(eachStoreKind());
  REQUIRE(f.createAs(1, "gone").ok());
  REQUIRE(f.unlinkAs(2, "gone").ok());
  CHECK(f.unlinkAs(2, "gone").ok());
  CHECK(f.unlinkAs(3, "gone").code() == Errc::kNotFound);
}

TEST_CASE("exactly once: the first answer is kept also when it was an error") {
  Fixture f(eachStoreKind());
  CHECK(f.unlinkAs(1, "missing").code() == Errc::kNotFound);
  REQUIRE(f.createAs(2, "missing").ok());
  // Request 1 failed; retried now that the name exists, it still answers as it did and
  // removes nothing.
  CHECK(f.unlinkAs(1, "missing").code() == Errc::kNotFound);
  CHECK(f.ns().lookup(kRootInode, "missing").ok());
}

TEST_CASE("exactly once: acknowledged replies are forgotten and their requests refused") {
  Fixture f(eachStoreKind());
  REQUIRE(f.createAs(1, "one").ok());
  REQUIRE(f.createAs(2, "two").ok());
  REQUIRE(f.createAs(3, "three", /*ackedBelow=*/3).ok());
  auto dump = f.dump();
  size_t replies = 0;
  for (auto& [k, v] : dump) replies += k[0] == 'q';
  CHECK(replies == 1);
  CHECK(f.createAs(1, "one").code() == Errc::kStale);
}

TEST_CASE("exactly once: a request of an unknown session is stale") {
  Fixture f(eachStoreKind());
  CHECK(f.unlinkAs(1, "x", /*session=*/99).code() == Errc::kStale);
}
