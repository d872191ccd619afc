// tests/raft/raft_fixture.h — plumbing for the Raft core's unit tests: a node that handles
// every Ready the way tessera-meta will (persist to a MemoryStorage, then send, then apply),
// and a cluster that delivers messages between nodes until nothing moves, with cut links.
#pragma once
#include <doctest/doctest.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "meta/raft/raft_core.h"
#include "meta/raft/storage.h"

namespace tessera::meta::raft::test {

inline NodeId nid(uint64_t v) { return NodeId(v); }
inline Term term(uint64_t v) { return Term(v); }
inline LogIndex idx(uint64_t v) { return LogIndex(v); }

inline ConfState voters(std::initializer_list<uint64_t> ids) {
  ConfState c;
  for (uint64_t id : ids) c.voters.push_back(NodeId(id));
  return c;
}

inline Entry entry(uint64_t index, uint64_t t, std::string data = "") {
  Entry e;
  e.index = LogIndex(index);
  e.term = Term(t);
  e.data = std::move(data);
  return e;
}

// A log with entries of the given terms at indexes 1, 2, ...
inline std::vector<Entry> logOfTerms(std::initializer_list<uint64_t> terms) {
  std::vector<Entry> out;
  uint64_t i = 1;
  for (uint64_t t : terms) out.push_back(entry(i++, t));
  return out;
}

struct Options {
  bool preVote = false;
  bool checkQuorum = false;
  int electionTick = 10;
  int heartbeatTick = 1;
  size_t maxMsgEntries = 256;
  size_t maxInflight = 64;
};

inline RaftConfig makeConfig(uint64_t id, const Options& o) {
  RaftConfig c;
  c.id = NodeId(id);
  c.electionTick = o.electionTick;
  c.heartbeatTick = o.heartbeatTick;
  c.preVote = o.preVote;
  c.checkQuorum = o.checkQuorum;
  c.maxMsgEntries = o.maxMsgEntries;
  c.maxInflight = o.maxInflight;
  return c;
}

// One server: a core over a MemoryStorage, and what it applied.
class Node {
 public:
  Node(uint64_t id, MemoryStorage storage, Options options = {}, uint64_t seed = 0)
      : id_(id), options_(options), storage(std::move(storage)), rng(seed ? seed : id) {
    start();
  }
  Node(uint64_t id, ConfState conf, Options options = {}, uint64_t seed = 0)
      : Node(id, MemoryStorage(std::move(conf)), options, seed) {}

  RaftCore& operator*() { return *core; }
  RaftCore* operator->() { return core.get(); }

  // A crash that loses nothing durable: a new core over the same storage.
  void restart() {
    applied.clear();
    start();
  }

  // Handles every Ready: persist, collect messages, apply, advance. Returns the messages.
  std::vector<Message> flush() {
    std::vector<Message> out;
    while (core->hasReady()) {
      Ready rd = core->ready();
      readies.push_back(rd);
      if (rd.snapshot) {
        auto it = inbox.find(rd.snapshot->index.value);
        REQUIRE_MESSAGE(it != inbox.end(), "snapshot data was not streamed first");
        REQUIRE(storage.applySnapshot(*rd.snapshot, it->second).ok());
        installedSnapshot = it->second;
        appliedIndex = rd.snapshot->index;
        inbox.erase(it);
      }
      REQUIRE(storage.append(rd.entries).ok());
      if (rd.hardState) storage.setHardState(*rd.hardState);
      for (Message& m : rd.messages) out.push_back(std::move(m));
      for (const Entry& e : rd.committedEntries) {
        REQUIRE(e.index == appliedIndex.next());
        appliedIndex = e.index;
        if (e.type == Entry::Type::kNormal && !e.data.empty()) applied.push_back(e.data);
      }
      for (const ReadState& r : rd.readStates) readStates.push_back(r);
      core->advance(rd);
    }
    return out;
  }

  // Snapshot the "state machine" at the applied index and compact the log up to it.
  void compact() {
    auto meta = core->snapshotMeta(core->applied());
    REQUIRE(meta.ok());
    REQUIRE(storage.compact(*meta, "state@" + std::to_string(meta->index.value)).ok());
  }

  uint64_t id_;
  Options options_;
  MemoryStorage storage;
  Rng rng;
  std::unique_ptr<RaftCore> core;
  std::vector<std::string> applied;
  LogIndex appliedIndex;
  std::vector<ReadState> readStates;
  std::vector<Ready> readies;
  std::map<uint64_t, std::string> inbox;  // snapshot data streamed to us, by index
  std::string installedSnapshot;

 private:
  void start() {
    core = std::make_unique<RaftCore>(makeConfig(id_, options_), storage, rng);
    appliedIndex = storage.snapshot().index;
  }
};

// Servers 1..n (or any ids) connected by a network that loses nothing unless told to.
class Cluster {
 public:
  explicit Cluster(int n, Options options = {}) {
    ConfState conf;
    for (int i = 1; i <= n; ++i) conf.voters.push_back(NodeId(i));
    for (int i = 1; i <= n; ++i) add(i, MemoryStorage(conf), options);
  }

  Node& add(uint64_t id, MemoryStorage storage, Options options = {}) {
    nodes_[id] = std::make_unique<Node>(id, std::move(storage), options);
    return *nodes_[id];
  }
  Node& node(uint64_t id) { return *nodes_.at(id); }
  RaftCore& core(uint64_t id) { return *nodes_.at(id)->core; }
  bool has(uint64_t id) const { return nodes_.count(id) != 0; }

  // Cuts every link to and from `id`.
  void isolate(uint64_t id) {
    for (auto& [other, n] : nodes_) {
      if (other != id) cut(id, other);
    }
  }
  void cut(uint64_t a, uint64_t b) {
    cut_.insert({a, b});
    cut_.insert({b, a});
  }
  void heal() { cut_.clear(); }
  // Drops every message of this type until heal().
  void dropType(MessageType type) { droppedTypes_.insert(type); }
  void allowType(MessageType type) { droppedTypes_.erase(type); }

  // Collects the messages every node has to send.
  void collect() {
    for (auto& [id, n] : nodes_) {
      for (Message& m : n->flush()) pending_.push_back(std::move(m));
    }
  }

  // Delivers messages (and the ones they cause) until none is left; at most `limit` rounds.
  void settle(int limit = 1000) {
    collect();
    for (int round = 0; round < limit && !pending_.empty(); ++round) {
      std::vector<Message> batch = std::move(pending_);
      pending_.clear();
      for (Message& m : batch) deliver(std::move(m));
      collect();
    }
  }

  void deliver(Message m) {
    uint64_t from = m.from.value, to = m.to.value;
    bool lost = !nodes_.count(to) || cut_.count({from, to}) || droppedTypes_.count(m.type) ||
                down_.count(to) || (dropIf && dropIf(m));
    if (m.type == MessageType::kSnap) {
      Node& sender = node(from);
      if (lost || sender.storage.snapshot().index != m.snapshot->index) {
        sender->reportSnapshot(m.to, false);
        return;
      }
      node(to).inbox[m.snapshot->index.value] = sender.storage.snapshotData();
      CHECK(node(to)->step(m).ok());
      sender->reportSnapshot(m.to, true);
      return;
    }
    if (lost) return;
    delivered.push_back(m);
    CHECK(node(to)->step(m).ok());
  }

  void tick(uint64_t id, int n = 1) {
    for (int i = 0; i < n; ++i) node(id)->tick();
  }
  void tickAll(int n = 1) {
    for (int i = 0; i < n; ++i) {
      for (auto& [id, node] : nodes_) {
        if (!down_.count(id)) (*node)->tick();
      }
    }
  }

  // Campaigns on `id` and delivers everything.
  void elect(uint64_t id) {
    core(id).campaign();
    settle();
  }

  // Proposes on `id` (which must lead) and delivers everything.
  LogIndex propose(uint64_t id, std::string data) {
    auto r = core(id).propose(std::move(data));
    REQUIRE(r.ok());
    settle();
    return *r;
  }

  // The ids of the nodes that think they lead.
  std::vector<uint64_t> leaders() {
    std::vector<uint64_t> out;
    for (auto& [id, n] : nodes_) {
      if ((*n)->role() == Role::kLeader) out.push_back(id);
    }
    return out;
  }

  void stop(uint64_t id) { down_.insert(id); }
  void start(uint64_t id) { down_.erase(id); }

  std::vector<Message> pending_;
  std::vector<Message> delivered;
  // Drops the messages it returns true for (until reset).
  std::function<bool(const Message&)> dropIf;

 private:
  std::map<uint64_t, std::unique_ptr<Node>> nodes_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
  std::set<MessageType> droppedTypes_;
  std::set<uint64_t> down_;
};

// The messages of one type in `msgs`.
inline std::vector<Message> ofType(const std::vector<Message>& msgs, MessageType type) {
  std::vector<Message> out;
  for (const Message& m : msgs) {
    if (m.type == type) out.push_back(m);
  }
  return out;
}

// A message from `from` to `to` with the sender's term.
inline Message msg(MessageType type, uint64_t from, uint64_t to, uint64_t t) {
  Message m;
  m.type = type;
  m.from = NodeId(from);
  m.to = NodeId(to);
  m.term = Term(t);
  return m;
}

}  // namespace tessera::meta::raft::test
