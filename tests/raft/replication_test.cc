// Log replication and commitment (Raft paper §5.3, §5.4.2), batching and pipelining.
#include "tests/raft/raft_fixture.h"

using namespace tessera::meta::raft;
using namespace tessera::meta::raft::test;

namespace {

std::vector<Term> termsOf(RaftCore& core) {
  std::vector<Term> out;
  for (LogIndex i = core.firstIndex(); i <= core.lastIndex(); i = i.next()) {
    auto t = core.termAt(i);
    REQUIRE(t.ok());
    out.push_back(*t);
  }
  return out;
}

Node nodeWithLog(uint64_t id, std::vector<Entry> log, uint64_t t, uint64_t commit,
                 ConfState conf = voters({1, 2, 3}), Options o = {}) {
  MemoryStorage s(std::move(conf));
  REQUIRE(s.append(log).ok());
  s.setHardState(HardState{term(t), NodeId(), idx(commit)});
  return Node(id, std::move(s), o);
}

Message append(uint64_t from, uint64_t to, uint64_t t, uint64_t prevIndex, uint64_t prevTerm,
               std::vector<Entry> entries, uint64_t commit = 0) {
  Message m = msg(MessageType::kApp, from, to, t);
  m.index = idx(prevIndex);
  m.logTerm = term(prevTerm);
  m.entries = std::move(entries);
  m.commit = idx(commit);
  return m;
}

}  // namespace

TEST_CASE("raft replication: an append names the index and term of the entry before its own") {
  // §5.3: "When sending an AppendEntries RPC, the leader includes the index and term of the
  // entry in its log that immediately precedes the new entries."
  Cluster c(3);
  c.elect(1);  // the no-op at index 1, term 1, committed
  REQUIRE(c.core(1).propose("a").ok());
  auto apps = ofType(c.node(1).flush(), MessageType::kApp);
  REQUIRE(apps.size() == 2);
  for (const Message& m : apps) {
    CHECK(m.index == idx(1));
    CHECK(m.logTerm == term(1));
    REQUIRE(m.entries.size() == 1);
    CHECK(m.entries[0] == entry(2, 1, "a"));
    CHECK(m.commit == idx(1));
  }
}

TEST_CASE("raft replication: an entry is committed once the leader stored it on a majority") {
  // §5.3: "A log entry is committed once the leader that created the entry has replicated it
  // on a majority of the servers".
  Cluster c(5);
  c.elect(1);
  c.cut(1, 3);
  c.cut(1, 4);
  c.cut(1, 5);
  LogIndex i = c.propose(1, "a");
  CHECK(c.core(1).commit() < i);  // on 2 of 5
  c.heal();
  c.cut(1, 4);
  c.cut(1, 5);
  c.tick(1);  // a heartbeat makes the leader resend what 3 lacks
  c.settle();
  CHECK(c.core(1).commit() == i);  // on 3 of 5
}

TEST_CASE("raft replication: followers learn the commit index and apply in log order") {
  // §5.3: "The leader keeps track of the highest index it knows to be committed, and it
  // includes that index in future AppendEntries RPCs (including heartbeats) so that the other
  // servers eventually find out. Once a follower learns that a log entry is committed, it
  // applies the entry to its local state machine (in log order)."
  Cluster c(3);
  c.elect(1);
  std::vector<std::string> want;
  for (int k = 0; k < 10; ++k) {
    want.push_back("op" + std::to_string(k));
    c.propose(1, want.back());
  }
  c.tick(1);
  c.settle();
  for (uint64_t id = 1; id <= 3; ++id) {
    CAPTURE(id);
    CHECK(c.node(id).applied == want);
    CHECK(c.core(id).commit() == idx(11));
  }
}

TEST_CASE("raft replication: a follower refuses entries whose previous entry it lacks") {
  // §5.3: "If the follower does not find an entry in its log with the same index and term,
  // then it refuses the new entries."
  struct Case {
    uint64_t prevIndex, prevTerm;
    bool accepted;
  };
  Case cases[] = {{2, 2, true}, {2, 1, false}, {3, 2, false}, {1, 1, true}, {0, 0, true}};
  for (const Case& k : cases) {
    CAPTURE(k.prevIndex);
    CAPTURE(k.prevTerm);
    Node n = nodeWithLog(1, logOfTerms({1, 2}), 2, 0);
    REQUIRE(n->step(append(2, 1, 2, k.prevIndex, k.prevTerm, {})).ok());
    auto resps = ofType(n.flush(), MessageType::kAppResp);
    REQUIRE(resps.size() == 1);
    CHECK(resps[0].reject == !k.accepted);
    if (!k.accepted) {
      CHECK(resps[0].index == idx(k.prevIndex));
      CHECK(resps[0].rejectHint <= idx(2));
    }
  }
}

TEST_CASE("raft replication: a follower replaces conflicting entries with the leader's") {
  // §5.3: "conflicting entries in follower logs will be overwritten with entries from the
  // leader's log." And an append the follower already has changes nothing.
  Node n = nodeWithLog(1, logOfTerms({1, 1, 2, 2}), 2, 1);
  REQUIRE(n->step(append(2, 1, 3, 2, 1, {entry(3, 3, "x")})).ok());
  n.flush();
  CHECK(n->lastIndex() == idx(3));
  CHECK(*n->termAt(idx(3)) == term(3));
  CHECK(n.storage.lastIndex() == idx(3));

  Node m = nodeWithLog(1, logOfTerms({1, 1, 1}), 1, 0);
  REQUIRE(m->step(append(2, 1, 1, 0, 0, {entry(1, 1)})).ok());
  auto resps = ofType(m.flush(), MessageType::kAppResp);
  CHECK(m->lastIndex() == idx(3));  // a delayed, shorter append truncates nothing
  REQUIRE(resps.size() == 1);
  CHECK(resps[0].index == idx(1));
}

TEST_CASE("raft replication: a follower commits only entries an append proved to match") {
  // The leader's commit index may be past what this append covers, and the follower's log
  // past it may hold entries of an old term that the leader does not have.
  Node n = nodeWithLog(1, logOfTerms({1, 1, 2, 2}), 2, 0);
  REQUIRE(n->step(append(2, 1, 3, 1, 1, {entry(2, 1)}, 4)).ok());
  n.flush();
  CHECK(n->commit() == idx(2));
  CHECK(n->lastIndex() == idx(4));  // kept: they may still turn out to match
}

TEST_CASE("raft replication: the leader brings every kind of diverging follower log to its own") {
  // §5.3, Figure 7: "In Raft, the leader handles inconsistencies by forcing the followers'
  // logs to duplicate its own." The leader's log and followers (a)-(f) from the figure.
  std::initializer_list<uint64_t> leader = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};
  struct Case {
    const char* name;
    std::initializer_list<uint64_t> log;
  };
  Case cases[] = {
      {"a: missing one entry", {1, 1, 1, 4, 4, 5, 5, 6, 6}},
      {"b: missing many", {1, 1, 1, 4}},
      {"c: one extra entry of the current term", {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6}},
      {"d: extra entries of a later term", {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7}},
      {"e: missing and extra", {1, 1, 1, 4, 4, 4, 4}},
      {"f: extra entries of old terms", {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3}},
  };
  for (const Case& k : cases) {
    CAPTURE(k.name);
    Cluster c(3);
    Node& lead = c.add(1, MemoryStorage(voters({1, 2, 3})));
    REQUIRE(lead.storage.append(logOfTerms(leader)).ok());
    lead.storage.setHardState(HardState{term(7), NodeId(), idx(0)});
    lead.restart();
    Node& follower = c.add(2, MemoryStorage(voters({1, 2, 3})));
    REQUIRE(follower.storage.append(logOfTerms(k.log)).ok());
    follower.storage.setHardState(HardState{term(7), NodeId(), idx(0)});
    follower.restart();
    c.isolate(3);
    // Server 3 (whose log is empty) grants its vote; (d) would refuse to.
    c.core(1).campaign();
    c.node(1).flush();
    REQUIRE(c.core(1).step(msg(MessageType::kVoteResp, 3, 1, 8)).ok());
    REQUIRE(c.core(1).role() == Role::kLeader);
    for (int i = 0; i < 20; ++i) {
      c.tick(1);
      c.settle();
    }
    CHECK(termsOf(c.core(2)) == termsOf(c.core(1)));
    CHECK(c.core(1).commit() == idx(11));
    CHECK(c.core(2).commit() == idx(11));
  }
}

TEST_CASE("raft replication: only entries of the leader's term are committed by counting") {
  // §5.4.2, Figure 8: "Raft never commits log entries from previous terms by counting
  // replicas. Only log entries from the leader's current term are committed by counting
  // replicas; once an entry from the current term has been committed in this way, then all
  // prior entries are committed indirectly because of the Log Matching Property."
  Node n = nodeWithLog(1, logOfTerms({1, 2}), 3, 1);
  n->campaign();  // term 4
  n.flush();
  REQUIRE(n->step(msg(MessageType::kVoteResp, 2, 1, 4)).ok());
  REQUIRE(n->role() == Role::kLeader);
  n.flush();  // the no-op at index 3, term 4
  Message ack = msg(MessageType::kAppResp, 2, 1, 4);
  ack.index = idx(2);  // server 2 now holds the term-2 entry: a majority has it
  REQUIRE(n->step(ack).ok());
  CHECK(n->commit() == idx(1));
  ack.index = idx(3);
  REQUIRE(n->step(ack).ok());
  CHECK(n->commit() == idx(3));
}

TEST_CASE("raft replication: Figure 8 - an old entry on a majority is not yet committed") {
  // §5.4.2, Figure 8, played out on five servers: "a log entry is stored on a majority of
  // servers, yet could still be overwritten by a future leader." Appends carry one entry, so
  // the term-1 entry can reach a majority without the new leader's own entry.
  Options o;
  o.maxMsgEntries = 1;
  Cluster c(5, o);
  c.elect(1);
  // (a) S1 leads term 1 and puts "x" at index 2 on S1 and S2 only.
  for (uint64_t peer : {3, 4, 5}) c.cut(1, peer);
  LogIndex x = c.propose(1, "x");
  REQUIRE(x == idx(2));
  // (b) S1 is gone; S5 is elected for term 2 by S3, S4 and itself, and appends at index 2 —
  // but nobody else hears of that entry.
  c.isolate(1);
  c.dropType(MessageType::kApp);
  c.elect(5);
  REQUIRE(c.core(5).role() == Role::kLeader);
  REQUIRE(*c.core(5).termAt(x) == term(2));
  c.allowType(MessageType::kApp);
  // (c) S5 is gone; S1 restarts, is elected for term 3 and copies "x" to S3 (and S4): "x"
  // is now on a majority. Its own term-3 entry reaches only S2.
  c.heal();
  c.isolate(5);
  c.node(1).restart();
  // (Appends that S3 and S4 would refuse still go through, so S1 learns what they lack.)
  c.dropIf = [&c](const Message& m) {
    return m.type == MessageType::kApp && (m.to == nid(3) || m.to == nid(4)) &&
           !m.entries.empty() && m.entries.back().index > idx(2) &&
           c.core(m.to.value).lastIndex() >= idx(2);
  };
  for (int i = 0; i < 3 && c.core(1).role() != Role::kLeader; ++i) c.elect(1);
  REQUIRE(c.core(1).role() == Role::kLeader);
  REQUIRE(c.core(1).term() == term(3));
  c.tick(1);
  c.settle();
  REQUIRE(*c.core(3).termAt(x) == term(1));
  REQUIRE(*c.core(4).termAt(x) == term(1));
  CHECK(c.core(1).commit() < x);  // on a majority, but not of the current term
  // (d) S1 is gone again; S5 can still win (its last term, 2, beats S3's and S4's 1) and
  // overwrites index 2 everywhere. Had S1 committed "x", that would have lost it.
  c.dropIf = nullptr;
  c.heal();
  c.isolate(1);
  c.node(5).restart();
  for (int i = 0; i < 3 && c.core(5).role() != Role::kLeader; ++i) c.elect(5);
  REQUIRE(c.core(5).role() == Role::kLeader);
  c.tick(5);
  c.settle();
  for (uint64_t id = 2; id <= 5; ++id) {
    CAPTURE(id);
    CHECK(*c.core(id).termAt(x) == term(2));
    CHECK(c.core(id).commit() >= x);
  }
  for (uint64_t id = 1; id <= 5; ++id) {
    CAPTURE(id);
    CHECK(std::find(c.node(id).applied.begin(), c.node(id).applied.end(), "x") ==
          c.node(id).applied.end());
  }
}

TEST_CASE("raft replication: a leader never overwrites or deletes entries in its log") {
  // Figure 3, Leader Append-Only: "a leader never overwrites or deletes entries in its log; it
  // only appends new entries."
  Cluster c(3);
  c.elect(1);
  c.propose(1, "a");
  auto before = termsOf(c.core(1));
  // A stale leader's conflicting append, and rejections, change nothing on the leader.
  REQUIRE(c.core(1).step(append(2, 1, 0, 0, 0, {entry(1, 0)})).ok());
  Message reject = msg(MessageType::kAppResp, 2, 1, 1);
  reject.reject = true;
  reject.index = idx(2);
  REQUIRE(c.core(1).step(reject).ok());
  c.settle();
  CHECK(termsOf(c.core(1)) == before);
  c.propose(1, "b");
  auto after = termsOf(c.core(1));
  REQUIRE(after.size() == before.size() + 1);
  CHECK(std::equal(before.begin(), before.end(), after.begin()));
}

TEST_CASE("raft replication: proposals made between two Readies travel in one append") {
  // Batching: many client operations per append and per fsync.
  Cluster c(3);
  c.elect(1);
  c.propose(1, "warm-up");  // followers are in the replicate state now
  for (const char* op : {"a", "b", "c"}) REQUIRE(c.core(1).propose(op).ok());
  auto out = c.node(1).flush();
  REQUIRE(c.node(1).readies.back().entries.size() == 3);
  CHECK(c.node(1).readies.back().mustSync);
  auto apps = ofType(out, MessageType::kApp);
  REQUIRE(apps.size() == 2);
  CHECK(apps[0].entries.size() == 3);
  CHECK(apps[1].entries.size() == 3);
}

TEST_CASE("raft replication: appends are pipelined up to maxInflight, then the leader waits") {
  Options o;
  o.maxInflight = 2;
  o.maxMsgEntries = 1;
  Cluster c(2, o);
  c.elect(1);
  c.propose(1, "warm-up");
  for (int k = 0; k < 5; ++k) REQUIRE(c.core(1).propose("op").ok());
  auto apps = ofType(c.node(1).flush(), MessageType::kApp);
  REQUIRE(apps.size() == 2);  // two in flight, one entry each, without waiting for answers
  CHECK(apps[0].entries[0].index == idx(3));
  CHECK(apps[1].entries[0].index == idx(4));
  // Each answer frees a slot.
  REQUIRE(c.core(2).step(apps[0]).ok());
  for (Message& m : c.node(2).flush()) REQUIRE(c.core(1).step(m).ok());
  apps = ofType(c.node(1).flush(), MessageType::kApp);
  REQUIRE(apps.size() == 1);
  CHECK(apps[0].entries[0].index == idx(5));
}

TEST_CASE("raft replication: until the logs are known to agree the leader probes one at a time") {
  // A new leader does not know where its followers' logs end: it sends one append and waits
  // for the answer before sending more.
  Node n(1, voters({1, 2, 3}));
  n->campaign();
  n.flush();
  REQUIRE(n->step(msg(MessageType::kVoteResp, 2, 1, 1)).ok());
  auto apps = ofType(n.flush(), MessageType::kApp);
  CHECK(apps.size() == 2);  // the no-op, one append per follower
  REQUIRE(n->propose("x").ok());
  REQUIRE(n->propose("y").ok());
  CHECK(ofType(n.flush(), MessageType::kApp).empty());  // both followers paused
  Message ack = msg(MessageType::kAppResp, 2, 1, 1);
  ack.index = idx(1);
  REQUIRE(n->step(ack).ok());
  apps = ofType(n.flush(), MessageType::kApp);
  REQUIRE(apps.size() == 1);
  CHECK(apps[0].to == nid(2));
  CHECK(apps[0].entries.size() == 2);
}

TEST_CASE("raft replication: a rejection with a hint skips a whole term at a time") {
  // The leader's log has 10 entries of term 1 and then term 3; the follower has 20 of term 2.
  // One rejection tells the leader where the terms diverge, instead of one per entry.
  std::vector<Entry> lead, follow;
  for (uint64_t i = 1; i <= 10; ++i) lead.push_back(entry(i, 1));
  for (uint64_t i = 11; i <= 30; ++i) lead.push_back(entry(i, 3));
  for (uint64_t i = 1; i <= 10; ++i) follow.push_back(entry(i, 1));
  for (uint64_t i = 11; i <= 30; ++i) follow.push_back(entry(i, 2));
  Node f = nodeWithLog(2, follow, 3, 0);
  REQUIRE(f->step(append(1, 2, 4, 30, 3, {})).ok());
  auto resps = ofType(f.flush(), MessageType::kAppResp);
  REQUIRE(resps.size() == 1);
  CHECK(resps[0].reject);
  CHECK(resps[0].rejectHint == idx(30));
  CHECK(resps[0].logTerm == term(2));
  // The leader finds its last entry with a term <= 2: index 10.
  Node l = nodeWithLog(1, lead, 3, 0);
  l->campaign();
  l.flush();
  REQUIRE(l->step(msg(MessageType::kVoteResp, 3, 1, 4)).ok());
  REQUIRE(l->role() == Role::kLeader);
  l.flush();
  Message reject = resps[0];
  reject.term = term(4);
  reject.index = idx(30);  // answering the probe after index 30
  REQUIRE(l->step(reject).ok());
  auto apps = ofType(l.flush(), MessageType::kApp);
  REQUIRE(apps.size() == 1);
  CHECK(apps[0].index == idx(10));
}
