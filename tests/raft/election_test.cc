// Leader election (Raft paper §5.2, §5.4.1), each test quoting the rule it checks.
#include <algorithm>
#include <random>

#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;

namespace {

// A follower at `t` whose log has entries of the given terms.
Node followerWithLog(uint64_t id, std::initializer_list<uint64_t> terms, uint64_t t,
                     Options o = {}) {
  MemoryStorage s(voters({1, 2, 3}));
  REQUIRE(s.append(logOfTerms(terms)).ok());
  s.setHardState(HardState{term(t), NodeId(), LogIndex()});
  return Node(id, std::move(s), o);
}

Message voteRequest(uint64_t from, uint64_t to, uint64_t t, uint64_t lastIndex, uint64_t lastTerm) {
  Message m = msg(MessageType::kVote, from, to, t);
  m.index = idx(lastIndex);
  m.logTerm = term(lastTerm);
  return m;
}

}  // namespace

TEST_CASE("raft election: when servers start up, they begin as followers") {
  Node n(1, voters({1, 2, 3}));
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == term(0));
  CHECK(n->leader() == NodeId());
}

TEST_CASE("raft election: a follower that hears nothing for an election timeout campaigns") {
  // §5.2: "To begin an election, a follower increments its current term and transitions to
  // candidate state. It then votes for itself and issues RequestVote RPCs in parallel to each
  // of the other servers in the cluster."
  Node n(1, voters({1, 2, 3}));
  for (int i = 0; i < 2 * 10; ++i) n->tick();
  CHECK(n->role() == Role::kCandidate);
  CHECK(n->term() == term(1));
  CHECK(n->vote() == nid(1));
  auto votes = ofType(n.flush(), MessageType::kVote);
  REQUIRE(votes.size() == 2);
  CHECK(votes[0].to == nid(2));
  CHECK(votes[1].to == nid(3));
  for (const Message& m : votes) {
    CHECK(m.term == term(1));
    CHECK(m.index == idx(0));
    CHECK(m.logTerm == term(0));
  }
}

TEST_CASE("raft election: a follower that keeps hearing from its leader never campaigns") {
  // §5.2: "A server remains in follower state as long as it receives valid RPCs from a leader
  // or candidate."
  Node n(1, voters({1, 2, 3}));
  for (int i = 0; i < 100; ++i) {
    n->tick();
    Message hb = msg(MessageType::kHeartbeat, 2, 1, 1);
    REQUIRE(n->step(hb).ok());
  }
  CHECK(n->role() == Role::kFollower);
  CHECK(n->leader() == nid(2));
}

TEST_CASE("raft election: election timeouts are randomized between electionTick and twice that") {
  // §5.2: "Raft uses randomized election timeouts to ensure that split votes are rare".
  std::set<int> seen;
  for (uint64_t seed = 1; seed <= 100; ++seed) {
    Node n(1, voters({1, 2, 3}), Options{}, seed);
    int ticks = 0;
    while (n->role() == Role::kFollower) {
      n->tick();
      REQUIRE(++ticks < 20);
    }
    CHECK(ticks >= 10);
    seen.insert(ticks);
  }
  CHECK(seen.size() > 5);
}

TEST_CASE("raft election: a candidate with votes from a majority leads and asserts authority") {
  // §5.2: "A candidate wins an election if it receives votes from a majority of the servers in
  // the full cluster for the same term." "Once a candidate wins an election, it becomes
  // leader. It then sends heartbeat messages to all of the other servers".
  Node n(1, voters({1, 2, 3, 4, 5}));
  n->campaign();
  n.flush();
  Message yes = msg(MessageType::kVoteResp, 2, 1, 1);
  REQUIRE(n->step(yes).ok());
  CHECK(n->role() == Role::kCandidate);  // 2 of 5
  yes.from = nid(3);
  REQUIRE(n->step(yes).ok());
  CHECK(n->role() == Role::kLeader);  // 3 of 5
  auto apps = ofType(n.flush(), MessageType::kApp);
  CHECK(apps.size() == 4);
}

TEST_CASE("raft election: a candidate that a majority rejects returns to follower") {
  Node n(1, voters({1, 2, 3}));
  n->campaign();
  Message no = msg(MessageType::kVoteResp, 2, 1, 1);
  no.reject = true;
  REQUIRE(n->step(no).ok());
  CHECK(n->role() == Role::kCandidate);
  no.from = nid(3);
  REQUIRE(n->step(no).ok());
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == term(1));
}

TEST_CASE("raft election: each server votes for at most one candidate in a term") {
  // §5.2: "Each server will vote for at most one candidate in a given term, on a
  // first-come-first-served basis".
  Node n(1, voters({1, 2, 3}));
  REQUIRE(n->step(voteRequest(2, 1, 1, 0, 0)).ok());
  REQUIRE(n->step(voteRequest(3, 1, 1, 0, 0)).ok());
  REQUIRE(n->step(voteRequest(2, 1, 1, 0, 0)).ok());  // a retry from the one we voted for
  auto resps = ofType(n.flush(), MessageType::kVoteResp);
  REQUIRE(resps.size() == 3);
  CHECK(!resps[0].reject);
  CHECK(resps[1].reject);
  CHECK(!resps[2].reject);
  CHECK(n->vote() == nid(2));
}

TEST_CASE("raft election: a vote survives a restart") {
  // The vote is in the hard state the node persisted before replying: after a crash the
  // server still refuses a second candidate in the same term.
  Node n(1, voters({1, 2, 3}));
  REQUIRE(n->step(voteRequest(2, 1, 1, 0, 0)).ok());
  n.flush();
  n.restart();
  REQUIRE(n->step(voteRequest(3, 1, 1, 0, 0)).ok());
  auto resps = ofType(n.flush(), MessageType::kVoteResp);
  REQUIRE(resps.size() == 1);
  CHECK(resps[0].reject);
}

TEST_CASE("raft election: a voter denies its vote to a candidate whose log is less up-to-date") {
  // §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the
  // candidate." "If the logs have last entries with different terms, then the log with the
  // later term is more up-to-date. If the logs end with the same term, then whichever log is
  // longer is more up-to-date."
  struct Case {
    uint64_t lastIndex, lastTerm;
    bool granted;
  };
  // The voter's log ends at index 3, term 2.
  Case cases[] = {
      {2, 2, false},  // same last term, shorter
      {3, 2, true},   // same last term, same length
      {4, 2, true},   // same last term, longer
      {1, 3, true},   // later last term, however short
      {5, 1, false},  // earlier last term, however long
  };
  for (const Case& c : cases) {
    CAPTURE(c.lastIndex);
    CAPTURE(c.lastTerm);
    Node n = followerWithLog(1, {1, 1, 2}, 2);
    REQUIRE(n->step(voteRequest(2, 1, 3, c.lastIndex, c.lastTerm)).ok());
    auto resps = ofType(n.flush(), MessageType::kVoteResp);
    REQUIRE(resps.size() == 1);
    CHECK(resps[0].reject == !c.granted);
    CHECK(n->term() == term(3));  // the term is adopted either way
  }
}

TEST_CASE("raft election: a candidate that hears from a leader of its term becomes follower") {
  // §5.2: "If the leader's term (included in its RPC) is at least as large as the candidate's
  // current term, then the candidate recognizes the leader as legitimate and returns to
  // follower state. If the term in the RPC is smaller than the candidate's current term, then
  // the candidate rejects the RPC and continues in candidate state."
  Node n(1, voters({1, 2, 3}));
  n->campaign();
  n->campaign();  // term 2
  REQUIRE(n->term() == term(2));
  REQUIRE(n->step(msg(MessageType::kApp, 2, 1, 1)).ok());
  CHECK(n->role() == Role::kCandidate);
  REQUIRE(n->step(msg(MessageType::kApp, 3, 1, 2)).ok());
  CHECK(n->role() == Role::kFollower);
  CHECK(n->leader() == nid(3));
  CHECK(n->term() == term(2));
}

TEST_CASE("raft election: any server that sees a higher term adopts it and becomes follower") {
  // §5.1: "If one server's current term is smaller than the other's, then it updates its
  // current term to the larger value. If a candidate or leader discovers that its term is out
  // of date, it immediately reverts to follower state."
  for (Role role : {Role::kFollower, Role::kCandidate, Role::kLeader}) {
    for (MessageType type : {MessageType::kApp, MessageType::kHeartbeat, MessageType::kVote,
                             MessageType::kAppResp, MessageType::kVoteResp}) {
      CAPTURE(roleName(role));
      CAPTURE(messageTypeName(type));
      Cluster c(3);
      if (role == Role::kCandidate) c.core(1).campaign();
      if (role == Role::kLeader) c.elect(1);
      REQUIRE(c.core(1).role() == role);
      REQUIRE(c.core(1).step(msg(type, 2, 1, 7)).ok());
      CHECK(c.core(1).term() == term(7));
      CHECK(c.core(1).role() == Role::kFollower);
      bool fromLeader = type == MessageType::kApp || type == MessageType::kHeartbeat;
      CHECK(c.core(1).leader() == (fromLeader ? nid(2) : NodeId()));
    }
  }
}

TEST_CASE("raft election: requests with a stale term are rejected") {
  // §5.1: "If a server receives a request with a stale term number, it rejects the request."
  Node n = followerWithLog(1, {1, 2}, 3);
  Message app = msg(MessageType::kApp, 2, 1, 2);
  app.index = idx(2);
  app.logTerm = term(2);
  app.entries = {entry(3, 2, "stale")};
  REQUIRE(n->step(app).ok());
  REQUIRE(n->step(voteRequest(2, 1, 2, 9, 2)).ok());
  auto out = n.flush();
  CHECK(ofType(out, MessageType::kVoteResp).empty());
  CHECK(n->lastIndex() == idx(2));
  CHECK(n->term() == term(3));
  CHECK(n->vote() == NodeId());
}

TEST_CASE("raft election: at most one leader is elected in a given term") {
  // Figure 3, Election Safety: "at most one leader can be elected in a given term." Two
  // candidates in the same term, votes delivered in random orders.
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    Cluster c(5);
    c.core(1).campaign();
    c.core(2).campaign();
    REQUIRE(c.core(1).term() == c.core(2).term());
    c.collect();
    while (!c.pending_.empty()) {
      std::vector<Message> batch = std::move(c.pending_);
      c.pending_.clear();
      std::shuffle(batch.begin(), batch.end(), rng);
      for (Message& m : batch) c.deliver(std::move(m));
      c.collect();
    }
    int leadersInTerm1 = 0;
    for (uint64_t id = 1; id <= 5; ++id) {
      if (c.core(id).role() == Role::kLeader && c.core(id).term() == term(1)) ++leadersInTerm1;
    }
    CHECK(leadersInTerm1 <= 1);
  }
}
