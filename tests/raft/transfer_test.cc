// Leadership transfer (Raft dissertation §3.10).
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

}  // namespace

TEST_CASE("raft transfer: an up-to-date target campaigns at once and wins") {
  // Dissertation §3.10: "The prior leader sends a TimeoutNow request to the target server.
  // This request has the same effect as the target server's election timer firing: the
  // target server starts a new election (incrementing its term and becoming a candidate)."
  Cluster c(3, stable());
  c.elect(1);
  c.propose(1, "a");
  REQUIRE(c.core(1).transferLeadership(nid(2)).ok());
  c.settle();
  CHECK(c.core(2).role() == Role::kLeader);
  CHECK(c.core(2).term() == term(2));
  CHECK(c.core(1).role() == Role::kFollower);
  CHECK(c.core(1).leader() == nid(2));
}

TEST_CASE("raft transfer: the leader first brings the target's log up to date") {
  // Dissertation §3.10: "The prior leader ... transfers its log entries to the target
  // server" before TimeoutNow, or the target could not win.
  Cluster c(3, stable());
  c.elect(1);
  c.isolate(3);
  c.propose(1, "x");
  c.heal();
  REQUIRE(c.core(1).transferLeadership(nid(3)).ok());
  c.settle();
  CHECK(c.core(3).role() == Role::kLeader);
  CHECK(c.core(3).lastIndex() >= idx(2));
  CHECK(*c.core(3).termAt(idx(2)) == term(1));
}

TEST_CASE("raft transfer: proposals are refused while a transfer is in progress") {
  // Dissertation §3.10: "the prior leader stops accepting new client requests".
  Cluster c(3, stable());
  c.elect(1);
  c.isolate(3);
  REQUIRE(c.core(1).transferLeadership(nid(3)).ok());
  c.settle();
  CHECK(c.core(1).propose("x").code() == tessera::Errc::kBusy);
  CHECK(c.core(1).status().leadTransferee == nid(3));
}

TEST_CASE("raft transfer: a transfer that does not finish within an election timeout is aborted") {
  // Dissertation §3.10: "If the transfer does not complete within about an election timeout,
  // the prior leader aborts the transfer and resumes accepting client requests."
  Cluster c(3, stable());
  c.elect(1);
  c.isolate(3);
  REQUIRE(c.core(1).transferLeadership(nid(3)).ok());
  for (int i = 0; i < 10; ++i) {
    c.tick(1);
    c.tick(2);
    c.settle();
  }
  CHECK(c.core(1).role() == Role::kLeader);
  CHECK(c.core(1).propose("x").ok());
}

TEST_CASE("raft transfer: a follower passes the request to the leader") {
  Cluster c(3, stable());
  c.elect(1);
  REQUIRE(c.core(2).transferLeadership(nid(3)).ok());
  c.settle();
  CHECK(c.core(3).role() == Role::kLeader);
  CHECK(c.core(2).transferLeadership(nid(9)).code() == tessera::Errc::kNotFound);
  Node alone(1, voters({1, 2, 3}));
  CHECK(alone->transferLeadership(nid(2)).code() == tessera::Errc::kNotLeader);
}
