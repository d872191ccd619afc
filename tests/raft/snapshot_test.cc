// Snapshots and log compaction (Raft paper §7).
#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;

namespace {

Message snapMessage(uint64_t from, uint64_t to, uint64_t t, uint64_t index, uint64_t snapTerm) {
  Message m = msg(MessageType::kSnap, from, to, t);
  m.snapshot = SnapshotMeta{idx(index), term(snapTerm), voters({1, 2, 3})};
  return m;
}

Node followerWithLog(std::initializer_list<uint64_t> terms, uint64_t t, uint64_t commit) {
  MemoryStorage s(voters({1, 2, 3}));
  REQUIRE(s.append(logOfTerms(terms)).ok());
  s.setHardState(HardState{term(t), NodeId(), idx(commit)});
  return Node(1, std::move(s));
}

}  // namespace

TEST_CASE("raft snapshot: a follower whose next entries are compacted is sent a snapshot") {
  // §7: "the leader must occasionally send snapshots to followers that lag behind."
  Cluster c(3);
  c.elect(1);
  c.isolate(3);
  for (int k = 0; k < 5; ++k) c.propose(1, "op" + std::to_string(k));
  c.node(1).compact();
  REQUIRE(c.core(1).firstIndex() == idx(7));
  c.heal();
  c.tick(1);
  c.settle();
  CHECK(c.node(3).installedSnapshot == "state@6");
  CHECK(c.node(3).storage.snapshot().index == idx(6));
  CHECK(c.core(3).commit() == idx(6));
  CHECK(c.core(3).applied() == idx(6));
  // And it follows on from there with ordinary appends.
  c.propose(1, "next");
  c.tick(1);
  c.settle();
  CHECK(c.node(3).applied == std::vector<std::string>{"next"});
  CHECK(c.core(3).commit() == idx(7));
}

TEST_CASE("raft snapshot: a snapshot with new information replaces the follower's whole log") {
  // §7: "Usually the snapshot will contain new information not already in the recipient's
  // log. In this case, the follower discards its entire log; it is all superseded by the
  // snapshot and may possibly have uncommitted entries that conflict with the snapshot."
  Node n = followerWithLog({1, 1, 2, 2}, 2, 1);
  n.inbox[5] = "state@5";
  REQUIRE(n->step(snapMessage(2, 1, 3, 5, 3)).ok());
  auto out = n.flush();
  REQUIRE(n.readies.size() >= 1);
  REQUIRE(n.readies[0].snapshot.has_value());
  CHECK(n.readies[0].mustSync);
  CHECK(n.readies[0].committedEntries.empty());
  CHECK(n.storage.snapshot().index == idx(5));
  CHECK(n.storage.lastIndex() == idx(5));
  CHECK(n->firstIndex() == idx(6));
  CHECK(n->commit() == idx(5));
  CHECK(n->applied() == idx(5));
  auto resps = ofType(out, MessageType::kAppResp);
  REQUIRE(resps.size() == 1);
  CHECK(resps[0].index == idx(5));
  CHECK(!resps[0].reject);
}

TEST_CASE(
    "raft snapshot: a snapshot of a prefix of the follower's log keeps the entries after it") {
  // §7: "If instead the follower receives a snapshot that describes a prefix of its log (due
  // to retransmission or by mistake), then log entries covered by the snapshot are deleted
  // but entries following the snapshot are still valid and must be retained."
  Node n = followerWithLog({1, 1, 1, 1, 1}, 1, 1);
  REQUIRE(n->step(snapMessage(2, 1, 1, 3, 1)).ok());
  n.flush();
  for (const Ready& rd : n.readies) CHECK(!rd.snapshot);
  CHECK(n->lastIndex() == idx(5));
  CHECK(n->commit() == idx(3));
}

TEST_CASE("raft snapshot: a snapshot older than the commit index is ignored") {
  Node n = followerWithLog({1, 1, 1, 1, 1}, 1, 4);
  REQUIRE(n->step(snapMessage(2, 1, 1, 3, 1)).ok());
  auto resps = ofType(n.flush(), MessageType::kAppResp);
  REQUIRE(resps.size() == 1);
  CHECK(resps[0].index == idx(4));
  CHECK(n->lastIndex() == idx(5));
}

TEST_CASE("raft snapshot: the leader sends nothing else until the snapshot is reported") {
  Cluster c(3);
  c.elect(1);
  c.isolate(3);
  for (int k = 0; k < 3; ++k) c.propose(1, "op");
  c.node(1).compact();
  c.heal();
  c.dropType(MessageType::kSnap);  // the stream fails: reported as such
  c.tick(1);
  c.settle();
  auto st = c.core(1).status();
  CHECK(st.peers[2].state == ProgressState::kProbe);
  CHECK(st.peers[2].next == idx(2));  // starts over from what 3 is known to have
  c.allowType(MessageType::kSnap);
  // Deliver the snapshot but hold the follower's answer: the leader waits, paused.
  c.dropType(MessageType::kAppResp);
  c.tick(1);
  c.settle();
  st = c.core(1).status();
  CHECK(st.peers[2].state == ProgressState::kProbe);
  CHECK(st.peers[2].next == idx(5));  // after the snapshot
  c.allowType(MessageType::kAppResp);
  c.tick(1);
  c.settle();
  st = c.core(1).status();
  CHECK(st.peers[2].state == ProgressState::kReplicate);
  CHECK(st.peers[2].match == idx(4));
}

TEST_CASE("raft snapshot: a node restarts from its snapshot and the log after it") {
  Cluster c(3);
  c.elect(1);
  for (int k = 0; k < 4; ++k) c.propose(1, "op" + std::to_string(k));
  c.tick(1);
  c.settle();
  Node& n = c.node(2);
  n.compact();  // at 5
  c.propose(1, "op4");
  c.tick(1);
  c.settle();
  LogIndex commit = n->commit();
  n.restart();
  CHECK(n->firstIndex() == idx(6));
  CHECK(n->commit() == commit);
  CHECK(n->conf() == voters({1, 2, 3}));
  n.flush();
  // Only what came after the snapshot is applied again.
  CHECK(n.applied == std::vector<std::string>{"op4"});
}
