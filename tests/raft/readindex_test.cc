// Linearizable reads with ReadIndex (Raft dissertation §6.4; paper §8).
#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;

TEST_CASE("raft read index: the leader answers only after a majority acknowledged a heartbeat") {
  // Dissertation §6.4: "The leader needs to make sure it hasn't been superseded by a newer
  // leader of which it is unaware. It issues a new round of heartbeats and waits for their
  // acknowledgments from a majority of the cluster."
  Cluster c(3);
  c.elect(1);
  LogIndex i = c.propose(1, "a");
  c.isolate(1);
  REQUIRE(c.core(1).readIndex(7).ok());
  c.settle();
  CHECK(c.node(1).readStates.empty());
  c.heal();
  c.cut(1, 3);
  c.tick(1);  // the next heartbeat round carries the read; server 2 makes a majority
  c.settle();
  REQUIRE(c.node(1).readStates.size() == 1);
  CHECK(c.node(1).readStates[0] == ReadState{i, 7});
}

TEST_CASE("raft read index: a new leader waits until it committed an entry of its term") {
  // Dissertation §6.4: "If the leader has not yet marked an entry from its current term
  // committed, it waits until it has done so."
  Node n(1, voters({1, 2, 3}));
  n->campaign();
  n.flush();
  REQUIRE(n->step(msg(MessageType::kVoteResp, 2, 1, 1)).ok());
  n.flush();
  REQUIRE(n->readIndex(5).ok());
  CHECK(ofType(n.flush(), MessageType::kHeartbeat).empty());
  Message ack = msg(MessageType::kAppResp, 2, 1, 1);
  ack.index = idx(1);
  REQUIRE(n->step(ack).ok());  // the no-op commits
  auto beats = ofType(n.flush(), MessageType::kHeartbeat);
  REQUIRE(beats.size() == 2);
  CHECK(n.readStates.empty());
  Message resp = msg(MessageType::kHeartbeatResp, 2, 1, 1);
  resp.context = beats[0].context;
  REQUIRE(n->step(resp).ok());
  n.flush();
  REQUIRE(n.readStates.size() == 1);
  CHECK(n.readStates[0] == ReadState{idx(1), 5});
}

TEST_CASE("raft read index: a follower learns the read index from the leader") {
  // Dissertation §6.4: the follower "issues a request to the leader just to learn the current
  // readIndex"; it then serves the read once it has applied that far.
  Cluster c(3);
  c.elect(1);
  LogIndex i = c.propose(1, "a");
  REQUIRE(c.core(2).readIndex(9).ok());
  c.settle();
  c.tick(1);
  c.settle();
  REQUIRE(c.node(2).readStates.size() == 1);
  CHECK(c.node(2).readStates[0] == ReadState{i, 9});
  CHECK(c.core(2).applied() >= i);
}

TEST_CASE("raft read index: a server that knows no leader refuses reads") {
  Node n(1, voters({1, 2, 3}));
  CHECK(n->readIndex(1).code() == tessera::Errc::kNotLeader);
}

TEST_CASE("raft read index: a deposed leader never answers") {
  Cluster c(3);
  c.elect(1);
  c.isolate(1);
  REQUIRE(c.core(1).readIndex(3).ok());
  c.elect(2);
  REQUIRE(c.core(2).role() == Role::kLeader);
  c.heal();
  c.tick(1);
  c.settle();
  c.tick(2);
  c.settle();
  CHECK(c.core(1).role() == Role::kFollower);
  CHECK(c.node(1).readStates.empty());
}

TEST_CASE("raft read index: a group of one answers at once") {
  Cluster c(1);
  c.elect(1);
  REQUIRE(c.core(1).readIndex(4).ok());
  c.settle();
  REQUIRE(c.node(1).readStates.size() == 1);
  CHECK(c.node(1).readStates[0] == ReadState{idx(1), 4});
}

TEST_CASE("raft read index: reads made together share one heartbeat round") {
  Cluster c(3);
  c.elect(1);
  for (uint64_t id = 1; id <= 5; ++id) REQUIRE(c.core(1).readIndex(id).ok());
  auto beats = ofType(c.node(1).flush(), MessageType::kHeartbeat);
  CHECK(beats.size() == 2);
  c.pending_ = beats;
  c.settle();
  CHECK(c.node(1).readStates.size() == 5);
}
