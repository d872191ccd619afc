// tests/sim/sim.h — a deterministic simulation of a Raft group built from RaftCore: N nodes,
// a network that drops, duplicates, delays, reorders and partitions messages (and heals), a
// disk per node that loses unsynced writes when the node crashes, crashes and restarts,
// membership changes, leadership transfers and log compaction, and clients running put, get
// (ReadIndex, on leaders and followers) and compare-and-swap on a small key-value store, with
// retries. Everything is driven by one seeded generator: a seed replays a run exactly.
//
// After every tick an invariant checker asserts election safety (one leader per term), log
// matching, leader completeness, state-machine safety (no two nodes apply different entries,
// or reach different states, at one index), that commit indexes never move back, and that no
// acknowledged write is lost. At the end the faults stop, the cluster must converge, and the
// clients' history must be linearizable.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "meta/raft/raft_core.h"
#include "tests/sim/kv.h"
#include "tests/sim/linearizability.h"

namespace tessera::meta::raft::sim {

struct Options {
  int nodes = 3;
  int ticks = 1200;        // with faults
  int settleTicks = 1500;  // at most, to converge once the faults stop
  int electionTick = 10;
  int heartbeatTick = 1;    // each seed uses this or one more
  bool checkQuorum = true;  // without it a deposed leader keeps leading: ReadIndex must cope
  double dropRate = 0.05;
  double dupRate = 0.02;
  int maxDelay = 3;  // ticks; messages take 1..maxDelay, so they reorder
  // Mean ticks between events (0: never).
  int partitionEvery = 250;
  int crashEvery = 300;
  int compactEvery = 80;
  int membershipEvery = 0;
  int transferEvery = 0;
  int minVoters = 3;
  int maxVoters = 5;
  int clients = 3;
  int opsPerClient = 12;
  int keys = 2;
};

// Replays with TESSERA_SIM_SEED; `pinned` are seeds that once failed, run first.
std::vector<uint64_t> seeds(size_t defaultRuns, const std::vector<uint64_t>& pinned);

class Cluster {
 public:
  Cluster(const Options& options, uint64_t seed);
  ~Cluster();

  // Runs the faulty phase, then heals and converges, then checks the history. Stops at the
  // first violation.
  void run();

  const std::vector<std::string>& violations() const { return violations_; }
  // A hash of every event (deliveries, faults, client calls and returns): equal for two runs
  // of one seed.
  uint64_t traceHash() const { return traceHash_; }
  uint64_t traceEvents() const { return traceEvents_; }
  // Counts for the test log: elections, crashes, snapshots sent, ops completed, ...
  std::string summary() const;

 private:
  struct Node;
  struct Client;
  struct InFlight;
  struct Committed {
    Term term;
    Term inTerm;
  };

  void tick();
  void faults();
  void deliver();
  void send(Node& from, Message m);
  void processReadies();
  void startReady(Node& n);
  void completeReady(Node& n);
  void apply(Node& n, const Entry& e);
  void serveReads(Node& n);
  void clientsAct(bool allowNew);
  void attempt(Client& c);
  void respond(int client, uint64_t seq, int64_t result);
  void crash(Node& n);
  void restart(Node& n);
  Node& addNode(NodeId id, ConfState conf);
  Node* leader();
  bool partitioned(NodeId a, NodeId b) const;
  bool converged();
  void checkInvariants();
  void checkReadyEntries(Node& n, const Ready& rd);
  void checkLeaderHas(Node& n, LogIndex index, const Committed& c);
  void finalChecks();
  void violation(std::string what);
  void trace(const char* what, std::initializer_list<uint64_t> fields);
  uint64_t below(uint64_t n);
  bool chance(double p);
  bool every(int mean) { return mean > 0 && below(uint64_t(mean)) == 0; }

  Options options_;
  uint64_t seed_;
  Rng rng_;
  int64_t now_ = 0;
  uint64_t clock_ = 0;  // logical time of client calls and returns
  bool faulty_ = true;
  std::map<NodeId, std::unique_ptr<Node>> nodes_;
  uint64_t nextNodeId_ = 1;
  std::map<NodeId, int> group_;                 // partition group; 0 for everyone when healed
  std::set<std::pair<NodeId, NodeId>> oneWay_;  // (from, to) links that lose everything
  std::vector<InFlight> network_;
  uint64_t sendSeq_ = 0;
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<KvOp> history_;
  uint64_t nextRequestId_ = 1;

  // What the checker has seen.
  std::map<Term, NodeId> leaderOfTerm_;
  // Every committed entry seen: its term, and the lowest term in which a node was seen to
  // hold it committed (it was committed in that term or earlier).
  std::map<LogIndex, Committed> committed_;
  std::vector<LogIndex> newlyCommitted_;  // this tick
  struct Seen {
    uint64_t dataHash;
    Term prevTerm;
  };
  std::map<std::pair<LogIndex, Term>, Seen> entries_;      // log matching
  std::map<LogIndex, std::pair<Term, uint64_t>> applied_;  // index -> (term, data hash)
  std::map<LogIndex, uint64_t> stateAt_;                   // index -> state hash after it
  std::map<LogIndex, Term> acked_;                         // writes answered to a client

  std::vector<std::string> violations_;
  uint64_t traceHash_ = 14695981039346656037ull;
  uint64_t traceEvents_ = 0;
  bool verbose_ = false;
  // Drawn from the seed: how the cores batch and pipeline.
  size_t maxMsgEntries_ = 8;
  size_t maxInflight_ = 4;
  int heartbeatTick_ = 2;
  std::map<std::string, uint64_t> stats_;
};

}  // namespace tessera::meta::raft::sim
