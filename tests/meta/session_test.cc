// Session expiry (expireSession, meta/ns/ops/session.cc): a session that went silent is
// forgotten with everything it held — its open handles released exactly as release would, its
// stored replies dropped — deterministically, so every replica ends with the same store.
#include <doctest/doctest.h>

#include <string>

#include "meta/ns/keys.h"
#include "meta/ns/namespace.h"
#include "tests/meta/ns_fixture.h"

using namespace tessera;
using namespace tessera::test;

namespace {

const InodeId kRoot = kRootInode;
constexpr uint64_t kDead = 7;
constexpr uint64_t kAlive = 8;

size_t countKeys(NsFixture& f, char kind) {
  size_t n = 0;
  for (auto& [key, value] : f.dump()) n += key[0] == kind;
  return n;
}

Result<meta::Applied> expire(NsFixture& f, uint64_t session, int64_t silentSinceNs = 0) {
  return f.apply([&](proto::Op::Builder op) {
    auto e = op.initExpireSession();
    e.setSession(session);
    e.setSilentSinceNs(silentSinceNs);
  });
}

// An unlink as tracked request `seq` of `session`, so a reply is stored for it.
Status unlinkAs(NsFixture& f, uint64_t session, uint64_t seq, std::string name) {
  auto r = f.apply([&](proto::Op::Builder op) {
    op.setSession(session);
    op.setSeq(seq);
    op.setAckedBelow(1);
    auto u = op.initUnlink();
    u.setParent(kRoot.value);
    u.setName(name);
  });
  if (!r) return r.error();
  return Status();
}

// Two sessions; the dead one holds "orphan" (unlinked, with two chunks) twice and "kept"
// (linked) once; the live one holds "shared" which the dead one holds too.
struct Scene {
  InodeId orphan, kept, shared;
};

Scene build(NsFixture& f) {
  REQUIRE(f.openSession(kDead, "host-a", "/mnt").ok());
  REQUIRE(f.openSession(kAlive, "host-b", "/mnt").ok());
  Scene s;
  s.orphan = f.createOk(kRoot, "orphan", kDead);
  REQUIRE(f.open(kDead, s.orphan).ok());
  REQUIRE(f.allocChunk(s.orphan, 0, 20, Layout::replica(2), std::vector<uint64_t>{1, 2}).ok());
  REQUIRE(f.allocChunk(s.orphan, 1, 21, Layout::replica(2), std::vector<uint64_t>{2, 3}).ok());
  s.kept = f.createOk(kRoot, "kept", kDead);
  s.shared = f.createOk(kRoot, "shared", kAlive);
  REQUIRE(f.open(kDead, s.shared).ok());
  REQUIRE(unlinkAs(f, kDead, 1, "orphan").ok());
  REQUIRE(unlinkAs(f, kAlive, 1, "shared").ok());
  return s;
}

}  // namespace

TEST_CASE("sessions: expiry releases the session's opens as release would — its orphans go") {
  auto f = eachStore();
  Scene s = build(*f);
  CHECK(f->ns().inodeCount() == 4);
  CHECK(f->ns().garbage(10).empty());

  REQUIRE(expire(*f, kDead).ok());
  // The orphan whose only opener this was is gone, its chunks on the garbage list.
  CHECK(f->ns().getattr(s.orphan).code() == Errc::kNotFound);
  CHECK(f->ns().chunkCount() == 0);
  auto garbage = f->ns().garbage(10);
  REQUIRE(garbage.size() == 2);
  CHECK(garbage[0].chunk.id == ChunkId(20));
  CHECK(garbage[1].chunk.id == ChunkId(21));
  // A linked file stays; an orphan another session still holds stays.
  CHECK(f->attr(s.kept).nlink == 1);
  CHECK(f->attr(s.shared).nlink == 0);
  CHECK(f->ns().inodeCount() == 3);
  CHECK(f->ns().sessions() == std::vector<SessionId>{SessionId(kAlive)});

  // Only the live session's handle and reply are left; its release still deletes its orphan.
  CHECK(countKeys(*f, meta::keys::kOpen) == 1);
  CHECK(countKeys(*f, meta::keys::kReply) == 1);
  CHECK(countKeys(*f, meta::keys::kSession) == 1);
  REQUIRE(f->release(kAlive, s.shared).ok());
  CHECK(f->ns().getattr(s.shared).code() == Errc::kNotFound);
  CHECK(f->ns().inodeCount() == 2);
}

TEST_CASE("sessions: requests of an expired session are stale, its stored replies gone") {
  auto f = eachStore();
  build(*f);
  REQUIRE(expire(*f, kDead).ok());
  // The retry of an answered request no longer finds its reply; a new request is refused. Both
  // change nothing.
  CHECK(unlinkAs(*f, kDead, 1, "orphan").code() == Errc::kStale);
  CHECK(unlinkAs(*f, kDead, 2, "kept").code() == Errc::kStale);
  CHECK(f->lookupCode(kRoot, "kept") == Errc::kOk);
  CHECK(countKeys(*f, meta::keys::kReply) == 1);
  CHECK_FALSE(*f->ns().hasSession(SessionId(kDead)));
  CHECK(*f->ns().hasSession(SessionId(kAlive)));
}

TEST_CASE("sessions: expiry is idempotent — a second expire or an unknown session changes nothing") {
  auto f = eachStore();
  build(*f);
  REQUIRE(expire(*f, kDead).ok());
  auto before = f->dump();
  CHECK(expire(*f, kDead).code() == Errc::kNotFound);
  CHECK(expire(*f, 99).code() == Errc::kNotFound);
  CHECK(expire(*f, 0).code() == Errc::kInvalid);
  f->reopen();
  CHECK(f->dump() == before);
}

TEST_CASE("sessions: a session whose record shows activity after silentSince is kept") {
  auto f = eachStore();
  Scene s = build(*f);
  // The last request of kDead was applied at f->clock - something; claim silence from before.
  auto before = f->dump();
  CHECK(expire(*f, kDead, /*silentSinceNs=*/1'000'000).code() == Errc::kBusy);
  CHECK(f->dump() == before);
  CHECK(f->attr(s.orphan).nlink == 0);
  // Silent since after its last activity: it goes.
  REQUIRE(expire(*f, kDead, f->clock).ok());
  CHECK(f->ns().getattr(s.orphan).code() == Errc::kNotFound);
}

TEST_CASE("sessions: the same ops give the same store, byte for byte, on two replicas") {
  NsFixture a(StoreKind::kMemory), b(StoreKind::kDisk);
  for (NsFixture* f : {&a, &b}) {
    REQUIRE(f->init().ok());
    build(*f);
    REQUIRE(expire(*f, kDead).ok());
  }
  CHECK(a.dump() == b.dump());
}
