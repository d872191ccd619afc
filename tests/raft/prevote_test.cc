// Pre-vote and check-quorum (Raft dissertation §9.6, §6.2, §4.2.3): servers that cannot win
// do not disrupt, and a leader that lost its majority stops leading.
#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;

namespace {

Options stable() {
  Options o;
  o.preVote = true;
  o.checkQuorum = true;
  return o;
}

// Ticks every node once and delivers everything, `n` times.
void run(Cluster& c, int n) {
  for (int i = 0; i < n; ++i) {
    c.tickAll();
    c.settle();
  }
}

}  // namespace

TEST_CASE("raft pre-vote: a candidate only starts a real election once a majority would vote") {
  // Dissertation §9.6: "a candidate would first ask other servers whether its log was
  // up-to-date enough to get their vote. Only if the candidate believed it could get votes
  // from a majority of the cluster would it increment its term and start a normal election."
  Node n(1, voters({1, 2, 3}), stable());
  n->campaign();
  CHECK(n->role() == Role::kPreCandidate);
  CHECK(n->term() == term(0));
  CHECK(n->vote() == NodeId());
  auto pre = ofType(n.flush(), MessageType::kPreVote);
  REQUIRE(pre.size() == 2);
  CHECK(pre[0].term == term(1));  // the term it would campaign in
  REQUIRE(n->step(msg(MessageType::kPreVoteResp, 2, 1, 1)).ok());
  CHECK(n->role() == Role::kCandidate);
  CHECK(n->term() == term(1));
  CHECK(ofType(n.flush(), MessageType::kVote).size() == 2);
}

TEST_CASE("raft pre-vote: granting a pre-vote changes neither the voter's term nor its vote") {
  MemoryStorage s(voters({1, 2, 3}));
  REQUIRE(s.append(logOfTerms({1, 1})).ok());
  s.setHardState(HardState{term(1), NodeId(), idx(0)});
  Node n(1, std::move(s), stable());
  Message pre = msg(MessageType::kPreVote, 2, 1, 2);
  pre.index = idx(2);
  pre.logTerm = term(1);
  REQUIRE(n->step(pre).ok());
  pre.from = nid(3);
  pre.index = idx(1);  // a shorter log: refused
  REQUIRE(n->step(pre).ok());
  auto resps = ofType(n.flush(), MessageType::kPreVoteResp);
  REQUIRE(resps.size() == 2);
  CHECK(!resps[0].reject);
  CHECK(resps[1].reject);
  CHECK(n->term() == term(1));
  CHECK(n->vote() == NodeId());
}

TEST_CASE("raft pre-vote: a server rejoining after a partition does not disrupt the leader") {
  Cluster c(3, stable());
  c.elect(1);
  REQUIRE(c.core(1).role() == Role::kLeader);
  Term before = c.core(1).term();
  c.isolate(3);
  run(c, 100);
  CHECK(c.core(3).term() == before);  // it never won a pre-vote, so never bumped its term
  c.heal();
  run(c, 50);
  CHECK(c.core(1).role() == Role::kLeader);
  CHECK(c.core(1).term() == before);
  CHECK(c.core(3).leader() == nid(1));
}

TEST_CASE("raft pre-vote: without it a rejoining server forces a new election") {
  // The contrast that shows why pre-vote exists: the isolated server's term grows while it
  // campaigns alone, and its return deposes the leader.
  Options o;
  Cluster c(3, o);
  c.elect(1);
  c.isolate(3);
  run(c, 100);
  CHECK(c.core(3).term() > c.core(1).term());
  c.heal();
  run(c, 50);
  CHECK(c.core(1).term() > term(1));
}

TEST_CASE("raft check-quorum: a follower that heard from a leader recently ignores votes") {
  // Dissertation §4.2.3: "if a server receives a RequestVote request within the minimum
  // election timeout of hearing from a current leader, it does not update its term or grant
  // its vote." A transfer's campaign (TimeoutNow) is exempt.
  Cluster c(3, stable());
  c.elect(1);
  Message vote = msg(MessageType::kVote, 3, 2, 5);
  vote.index = c.core(2).lastIndex();
  vote.logTerm = *c.core(2).termAt(vote.index);
  REQUIRE(c.core(2).step(vote).ok());
  CHECK(c.core(2).term() == term(1));
  CHECK(ofType(c.node(2).flush(), MessageType::kVoteResp).empty());
  vote.transfer = true;
  REQUIRE(c.core(2).step(vote).ok());
  CHECK(c.core(2).term() == term(5));
  auto resps = ofType(c.node(2).flush(), MessageType::kVoteResp);
  REQUIRE(resps.size() == 1);
  CHECK(!resps[0].reject);
}

TEST_CASE("raft check-quorum: a leader that cannot reach a majority steps down") {
  // Dissertation §6.2: "a leader steps down if an election timeout elapses without a
  // successful round of heartbeats to a majority of its cluster".
  Cluster c(3, stable());
  c.elect(1);
  run(c, 30);
  CHECK(c.core(1).role() == Role::kLeader);  // while it hears from a majority
  c.isolate(1);
  for (int i = 0; i < 2 * 10; ++i) {
    c.tick(1);
    c.settle();
  }
  CHECK(c.core(1).role() == Role::kFollower);
}

TEST_CASE("raft check-quorum: a leader in a minority commits nothing and the majority moves on") {
  Cluster c(5, stable());
  c.elect(1);
  c.propose(1, "before");
  for (uint64_t a : {1, 2}) {
    for (uint64_t b : {3, 4, 5}) c.cut(a, b);
  }
  auto stale = c.core(1).propose("lost");
  REQUIRE(stale.ok());
  run(c, 60);
  CHECK(c.core(1).commit() < *stale);
  CHECK(c.core(1).role() != Role::kLeader);  // check-quorum
  std::vector<uint64_t> leaders = c.leaders();
  REQUIRE(leaders.size() == 1);
  uint64_t newLeader = leaders[0];
  CHECK(newLeader >= 3);
  c.propose(newLeader, "after");
  c.heal();
  run(c, 30);
  for (uint64_t id = 1; id <= 5; ++id) {
    CAPTURE(id);
    CHECK(c.node(id).applied == std::vector<std::string>{"before", "after"});
  }
}
