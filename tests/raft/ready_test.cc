// The Ready hand-off: what the node must persist before it sends, and how a Ready that is
// being persisted coexists with new input.
#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;

TEST_CASE("raft ready: a vote comes with the response that grants it, and must be synced") {
  // If the response went out and the vote were lost in a crash, the server could vote twice
  // in one term.
  Node n(1, voters({1, 2, 3}));
  Message vote = msg(MessageType::kVote, 2, 1, 1);
  REQUIRE(n->step(vote).ok());
  Ready rd = n->ready();
  REQUIRE(rd.hardState.has_value());
  CHECK(*rd.hardState == HardState{term(1), nid(2), idx(0)});
  CHECK(rd.mustSync);
  REQUIRE(rd.messages.size() == 1);
  CHECK(rd.messages[0].type == MessageType::kVoteResp);
  n->advance(rd);
}

TEST_CASE("raft ready: entries come with the response that acknowledges them, and must be synced") {
  Node n(1, voters({1, 2, 3}));
  Message app = msg(MessageType::kApp, 2, 1, 1);
  app.entries = {entry(1, 1, "a"), entry(2, 1, "b")};
  REQUIRE(n->step(app).ok());
  Ready rd = n->ready();
  CHECK(rd.entries.size() == 2);
  CHECK(rd.mustSync);
  REQUIRE(rd.messages.size() == 1);
  CHECK(rd.messages[0].type == MessageType::kAppResp);
  CHECK(rd.messages[0].index == idx(2));
  n->advance(rd);
}

TEST_CASE("raft ready: a commit index alone needs no sync") {
  Node n(1, voters({1, 2, 3}));
  Message app = msg(MessageType::kApp, 2, 1, 1);
  app.entries = {entry(1, 1, "a")};
  REQUIRE(n->step(app).ok());
  n.flush();
  Message hb = msg(MessageType::kHeartbeat, 2, 1, 1);
  hb.commit = idx(1);
  REQUIRE(n->step(hb).ok());
  Ready rd = n->ready();
  REQUIRE(rd.hardState.has_value());
  CHECK(rd.hardState->commit == idx(1));
  CHECK(!rd.mustSync);
  CHECK(rd.committedEntries.size() == 1);
  n->advance(rd);
}

TEST_CASE("raft ready: one Ready at a time, and what happens meanwhile comes in the next") {
  Node n(1, voters({1, 2, 3}));
  REQUIRE(n->step(msg(MessageType::kHeartbeat, 2, 1, 1)).ok());
  REQUIRE(n->hasReady());
  Ready first = n->ready();
  CHECK(!n->hasReady());
  // While the node persists `first`, another message arrives.
  Message app = msg(MessageType::kApp, 2, 1, 1);
  app.entries = {entry(1, 1, "a")};
  REQUIRE(n->step(app).ok());
  CHECK(!n->hasReady());
  n->advance(first);
  REQUIRE(n->hasReady());
  Ready second = n->ready();
  CHECK(second.entries.size() == 1);
  CHECK(second.messages.size() == 1);
  n->advance(second);
}

TEST_CASE("raft ready: entries overwritten while being persisted come again in the next Ready") {
  Node n(1, voters({1, 2, 3}));
  Message app = msg(MessageType::kApp, 2, 1, 1);
  app.entries = {entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")};
  REQUIRE(n->step(app).ok());
  Ready first = n->ready();
  // A leader of term 2 replaces entries 2 and 3 while the first Ready is on its way to disk.
  Message other = msg(MessageType::kApp, 3, 1, 2);
  other.index = idx(1);
  other.logTerm = term(1);
  other.entries = {entry(2, 2, "B")};
  REQUIRE(n->step(other).ok());
  REQUIRE(n.storage.append(first.entries).ok());
  n.storage.setHardState(*first.hardState);
  n->advance(first);
  Ready second = n->ready();
  REQUIRE(second.entries.size() == 1);
  CHECK(second.entries[0] == entry(2, 2, "B"));
  REQUIRE(n.storage.append(second.entries).ok());
  n->advance(second);
  CHECK(n.storage.lastIndex() == idx(2));
  CHECK(*n.storage.term(idx(2)) == term(2));
  CHECK(n->lastIndex() == idx(2));
}

TEST_CASE("raft ready: a leader's proposal is persisted by the Ready that sends it") {
  Cluster c(3);
  c.elect(1);
  REQUIRE(c.core(1).propose("a").ok());
  Ready rd = c.core(1).ready();
  REQUIRE(rd.entries.size() == 1);
  CHECK(rd.mustSync);
  for (const Message& m : rd.messages) {
    if (m.type == MessageType::kApp) CHECK(m.entries.back().index <= rd.entries.back().index);
  }
  c.core(1).advance(rd);
}

TEST_CASE("raft ready: leader changes are reported as soft state") {
  Cluster c(3);
  c.elect(1);
  bool sawLeader = false;
  for (const Ready& rd : c.node(2).readies) {
    if (rd.softState && rd.softState->leader == nid(1)) sawLeader = true;
  }
  CHECK(sawLeader);
}
