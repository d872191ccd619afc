// Membership changes, one server at a time (Raft dissertation §4.1, §4.2).
#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;

namespace {

ConfChange add(uint64_t id) { return ConfChange{ConfChange::Op::kAddVoter, NodeId(id)}; }
ConfChange remove(uint64_t id) { return ConfChange{ConfChange::Op::kRemoveVoter, NodeId(id)}; }

void run(Cluster& c, int n) {
  for (int i = 0; i < n; ++i) {
    c.tickAll();
    c.settle();
  }
}

}  // namespace

TEST_CASE("raft membership: a configuration is in force as soon as it is in the log") {
  // Dissertation §4.1: "a server always uses the latest configuration in its log, regardless
  // of whether the entry is committed."
  Cluster c(3);
  c.elect(1);
  c.isolate(2);
  c.isolate(3);
  auto index = c.core(1).proposeConfChange(add(4));
  REQUIRE(index.ok());
  CHECK(c.core(1).conf() == voters({1, 2, 3, 4}));
  CHECK(c.core(1).commit() < *index);
  // The leader replicates to the new member at once, though the change cannot commit yet.
  c.add(4, MemoryStorage());
  c.tick(1);
  c.settle();
  CHECK(c.core(4).conf() == voters({1, 2, 3, 4}));
  CHECK(c.core(1).commit() < *index);
}

TEST_CASE("raft membership: only one change may be pending, and not before the leader commits") {
  // Dissertation §4.1: "Raft restricts the types of changes that are allowed: only one server
  // can be added or removed from the cluster at a time." A new leader must first commit an
  // entry of its own term (the fix to the single-server change bug).
  Node n(1, voters({1, 2, 3}));
  n->campaign();
  n.flush();
  REQUIRE(n->step(msg(MessageType::kVoteResp, 2, 1, 1)).ok());
  REQUIRE(n->role() == Role::kLeader);
  CHECK(n->proposeConfChange(add(4)).code() == tessera::Errc::kBusy);
  Message ack = msg(MessageType::kAppResp, 2, 1, 1);
  ack.index = idx(1);
  REQUIRE(n->step(ack).ok());  // the no-op commits
  auto first = n->proposeConfChange(add(4));
  REQUIRE(first.ok());
  CHECK(n->proposeConfChange(add(5)).code() == tessera::Errc::kBusy);
  ack.index = *first;
  REQUIRE(n->step(ack).ok());
  ack.from = nid(3);
  REQUIRE(n->step(ack).ok());  // 3 of 4 voters: committed
  REQUIRE(n->commit() == *first);
  CHECK(n->proposeConfChange(add(5)).ok());
}

TEST_CASE("raft membership: invalid changes are refused") {
  Cluster c(1);
  c.elect(1);
  CHECK(c.core(1).proposeConfChange(add(1)).code() == tessera::Errc::kExists);
  CHECK(c.core(1).proposeConfChange(remove(7)).code() == tessera::Errc::kNotFound);
  CHECK(c.core(1).proposeConfChange(remove(1)).code() == tessera::Errc::kInvalid);
  CHECK(c.core(1).proposeConfChange(add(0)).code() == tessera::Errc::kInvalid);
}

TEST_CASE("raft membership: an added server catches up and then counts toward the quorum") {
  Cluster c(3);
  c.elect(1);
  c.propose(1, "a");
  c.add(4, MemoryStorage());  // joins with an empty log and no configuration
  CHECK(c.core(4).conf().voters.empty());
  auto index = c.core(1).proposeConfChange(add(4));
  REQUIRE(index.ok());
  c.settle();
  c.tick(1);
  c.settle();
  CHECK(c.core(1).commit() >= *index);
  CHECK(c.core(4).conf() == voters({1, 2, 3, 4}));
  CHECK(c.node(4).applied == std::vector<std::string>{"a"});
  // Four voters: two servers are no longer enough.
  c.isolate(3);
  c.isolate(4);
  auto lost = c.core(1).propose("b");
  REQUIRE(lost.ok());
  c.settle();
  CHECK(c.core(1).commit() < *lost);
}

TEST_CASE("raft membership: removing a server shrinks the quorum") {
  Cluster c(4);
  c.elect(1);
  auto index = c.core(1).proposeConfChange(remove(4));
  REQUIRE(index.ok());
  c.settle();
  REQUIRE(c.core(1).commit() >= *index);
  CHECK(c.core(2).conf() == voters({1, 2, 3}));
  c.isolate(3);
  c.isolate(4);
  LogIndex i = c.propose(1, "with two of three");
  CHECK(c.core(1).commit() == i);
}

TEST_CASE("raft membership: a leader that removes itself steps down once that is committed") {
  // Dissertation §4.2.2: the leader "steps down once the C_new entry is committed".
  Options o;
  o.checkQuorum = true;
  o.preVote = true;
  Cluster c(3, o);
  c.elect(1);
  auto index = c.core(1).proposeConfChange(remove(1));
  REQUIRE(index.ok());
  CHECK(c.core(1).role() == Role::kLeader);  // leads until the change is committed
  c.settle();
  CHECK(c.core(1).role() == Role::kFollower);
  // It handed over to an up-to-date voter, which was elected at once.
  std::vector<uint64_t> leaders = c.leaders();
  REQUIRE(leaders.size() == 1);
  CHECK(leaders[0] != 1);
  run(c, 50);
  CHECK(c.core(1).role() == Role::kFollower);  // no longer a voter: never campaigns
  CHECK(c.core(leaders[0]).conf() == voters({2, 3}));
  c.propose(leaders[0], "after");
  CHECK(c.node(leaders[0]).applied == std::vector<std::string>{"after"});
}

TEST_CASE("raft membership: a configuration entry that is overwritten no longer counts") {
  Node n(1, voters({1, 2, 3}));
  Message app = msg(MessageType::kApp, 2, 1, 1);
  Entry cc = entry(1, 1, ConfEntry{add(4), voters({1, 2, 3, 4})}.encode());
  cc.type = Entry::Type::kConfChange;
  app.entries = {cc};
  REQUIRE(n->step(app).ok());
  CHECK(n->conf() == voters({1, 2, 3, 4}));
  // A leader of term 2 never had it.
  Message other = msg(MessageType::kApp, 3, 1, 2);
  other.entries = {entry(1, 2)};
  REQUIRE(n->step(other).ok());
  CHECK(n->conf() == voters({1, 2, 3}));
}

TEST_CASE("raft membership: a configuration survives a restart") {
  Cluster c(3);
  c.elect(1);
  c.add(4, MemoryStorage());
  REQUIRE(c.core(1).proposeConfChange(add(4)).ok());
  c.settle();
  c.node(2).restart();
  CHECK(c.core(2).conf() == voters({1, 2, 3, 4}));
  c.node(4).restart();
  CHECK(c.core(4).conf() == voters({1, 2, 3, 4}));
}

TEST_CASE("raft membership: a removed server cannot disrupt the remaining cluster") {
  // Dissertation §4.2.3: removed servers "will not receive heartbeats, so they will time out
  // and start new elections" — which pre-vote and leases make harmless.
  Options o;
  o.checkQuorum = true;
  o.preVote = true;
  Cluster c(3, o);
  c.elect(1);
  c.isolate(3);
  REQUIRE(c.core(1).proposeConfChange(remove(3)).ok());
  c.settle();  // committed by 1 and 2; 3 never hears of it
  REQUIRE(c.core(1).conf() == voters({1, 2}));
  Term before = c.core(1).term();
  c.heal();
  run(c, 100);
  CHECK(c.core(1).role() == Role::kLeader);
  CHECK(c.core(1).term() == before);
}
