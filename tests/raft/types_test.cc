// Values, MemoryStorage and input validation.
#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;
using tessera::Errc;

TEST_CASE("raft types: a configuration entry survives encoding, and garbage is refused") {
  ConfEntry e{ConfChange{ConfChange::Op::kRemoveVoter, NodeId(0x0102030405060708)},
              voters({1, 2, 0x0102030405060709})};
  auto back = ConfEntry::decode(e.encode());
  REQUIRE(back.ok());
  CHECK(*back == e);
  CHECK(ConfEntry::decode("").code() == Errc::kInvalid);
  std::string bad = e.encode();
  bad[0] = 7;  // no such op
  CHECK(ConfEntry::decode(bad).code() == Errc::kInvalid);
  CHECK(ConfEntry::decode(e.encode() + "x").code() == Errc::kInvalid);
  ConfEntry unsorted{e.change, voters({2, 1})};
  CHECK(ConfEntry::decode(unsorted.encode()).code() == Errc::kInvalid);
  ConfEntry empty{e.change, {}};
  CHECK(ConfEntry::decode(empty.encode()).code() == Errc::kInvalid);
}

TEST_CASE("raft types: a config with impossible timing is refused") {
  RaftConfig c;
  CHECK(c.validate().code() == Errc::kInvalid);  // id 0
  c.id = NodeId(1);
  CHECK(c.validate().ok());
  c.heartbeatTick = c.electionTick;
  CHECK(c.validate().code() == Errc::kInvalid);
}

TEST_CASE("raft storage: appends overwrite the suffix they start in") {
  MemoryStorage s;
  REQUIRE(s.append(logOfTerms({1, 1, 1})).ok());
  REQUIRE(s.append({entry(2, 2)}).ok());
  CHECK(s.lastIndex() == idx(2));
  CHECK(*s.term(idx(2)) == term(2));
  CHECK(s.append({entry(5, 2)}).code() == Errc::kInvalid);  // a gap
  CHECK(s.term(idx(3)).code() == Errc::kRange);
}

TEST_CASE("raft storage: compaction keeps the snapshot's term and drops the entries before") {
  MemoryStorage s(voters({1}));
  REQUIRE(s.append(logOfTerms({1, 1, 2, 2})).ok());
  REQUIRE(s.compact(SnapshotMeta{idx(3), term(2), voters({1})}, "data").ok());
  CHECK(s.snapshot().index == idx(3));
  CHECK(s.snapshotData() == "data");
  CHECK(*s.term(idx(3)) == term(2));
  CHECK(s.term(idx(2)).code() == Errc::kNotFound);
  CHECK(s.entries(idx(3), idx(5), 100).code() == Errc::kNotFound);
  auto e = s.entries(idx(4), idx(5), 100);
  REQUIRE(e.ok());
  CHECK(e->size() == 1);
  CHECK(s.compact(SnapshotMeta{idx(2), term(1), {}}, "").code() == Errc::kStale);
  CHECK(s.compact(SnapshotMeta{idx(4), term(1), {}}, "").code() == Errc::kInvalid);
}

TEST_CASE("raft storage: entries stop at the byte limit but return at least one") {
  MemoryStorage s;
  REQUIRE(s.append({entry(1, 1, "aaaa"), entry(2, 1, "bbbb"), entry(3, 1, "cccc")}).ok());
  CHECK(s.entries(idx(1), idx(4), 1)->size() == 1);
  CHECK(s.entries(idx(1), idx(4), 8)->size() == 2);
  CHECK(s.entries(idx(1), idx(4), 100)->size() == 3);
}

TEST_CASE("raft storage: installing a snapshot replaces the log and raises the commit") {
  MemoryStorage s;
  REQUIRE(s.append(logOfTerms({1, 1})).ok());
  REQUIRE(s.applySnapshot(SnapshotMeta{idx(9), term(3), voters({1, 2})}, "x").ok());
  CHECK(s.lastIndex() == idx(9));
  CHECK(s.hardState().commit == idx(9));
  CHECK(s.applySnapshot(SnapshotMeta{idx(9), term(3), {}}, "x").code() == Errc::kStale);
}

TEST_CASE("raft step: malformed messages are refused and change nothing") {
  Node n(1, voters({1, 2, 3}));
  Message wrongRecipient = msg(MessageType::kHeartbeat, 2, 3, 5);
  CHECK(n->step(wrongRecipient).code() == Errc::kInvalid);
  Message noSender = msg(MessageType::kHeartbeat, 0, 1, 5);
  CHECK(n->step(noSender).code() == Errc::kInvalid);
  Message gap = msg(MessageType::kApp, 2, 1, 5);
  gap.entries = {entry(2, 5)};  // should start at index 1
  CHECK(n->step(gap).code() == Errc::kInvalid);
  Message future = msg(MessageType::kApp, 2, 1, 5);
  future.entries = {entry(1, 6)};  // a term past the sender's
  CHECK(n->step(future).code() == Errc::kInvalid);
  Message noSnap = msg(MessageType::kSnap, 2, 1, 5);
  CHECK(n->step(noSnap).code() == Errc::kInvalid);
  Message unknown = msg(static_cast<MessageType>(99), 2, 1, 5);
  CHECK(n->step(unknown).code() == Errc::kInvalid);
  CHECK(n->term() == term(0));
  CHECK(!n->hasReady());
}

TEST_CASE("raft status: the leader reports every voter's progress") {
  Cluster c(3);
  c.elect(1);
  LogIndex i = c.propose(1, "a");
  RaftStatus st = c.core(1).status();
  CHECK(st.role == Role::kLeader);
  CHECK(st.commit == i);
  REQUIRE(st.peers.size() == 3);
  for (const PeerStatus& p : st.peers) {
    CHECK(p.match == i);
    CHECK(p.next == i.next());
  }
  CHECK(c.core(2).status().peers.empty());
}
