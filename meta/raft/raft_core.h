// meta/raft/raft_core.h — Raft as a pure state machine (the etcd/raft shape). It does no I/O:
// no sockets, files, clocks, threads or global randomness. Time is tick(); messages come in
// through step(); the work it wants done comes back as a Ready. The same core runs in
// tessera-meta (meta/raft/raft_node) and in the deterministic simulation (tests/sim).
//
// Features: elections with pre-vote and randomized timeouts (drawn from the Rng passed in);
// check-quorum (a leader that has not heard from a majority within an election timeout steps
// down, and followers that heard from a leader within one ignore vote requests: removed or
// partitioned servers cannot disrupt); log replication with batching (maxMsgEntries /
// maxMsgBytes per append) and pipelining (up to maxInflight appends in flight per follower,
// probing one at a time after a rejection, with fast backup by term); commitment only of
// current-term entries by counting replicas (§5.4.2); snapshots sent to followers whose next
// entries are compacted; membership change one voter at a time, in force as soon as the entry
// is appended (dissertation §4.1), one pending at a time and only after the leader committed
// an entry of its own term; leadership transfer with TimeoutNow; linearizable reads with
// ReadIndex (dissertation §6.4), from the leader or through a follower.
//
// Safety invariants the core keeps (and tests/sim checks after every step): at most one leader
// per term; a leader never overwrites or deletes entries in its log; two logs with an entry of
// the same index and term agree up to it; committed entries are never overwritten and are in
// every later leader's log; the commit index never moves back.
//
// How a node drives it (single-threaded, on the meta event loop):
//
//   tick() every tick (e.g. 100 ms); step() for every message from a peer;
//   propose()/proposeConfChange()/readIndex()/transferLeadership() for clients and admins.
//   while (core.hasReady()) {
//     Ready rd = core.ready();
//     // 1. PERSIST BEFORE SEND: install rd.snapshot (its data was streamed to us before we
//     //    stepped the kSnap message), append rd.entries (overwriting any suffix from their
//     //    first index on), write rd.hardState — in that order — and fsync if rd.mustSync.
//     //    Then update the RaftStorage view to match. A vote, a term or an acknowledged entry
//     //    that is sent before it is durable can be forgotten by a crash, and Raft's safety
//     //    argument no longer holds.
//     // 2. Send rd.messages. For a kSnap message, stream the snapshot it names
//     //    (msg.snapshot, the one RaftStorage::snapshot() had) to the peer, then deliver the
//     //    message to the peer's core; report the outcome with reportSnapshot().
//     // 3. Apply rd.committedEntries in order; a kConfChange entry needs nothing from the
//     //    state machine (the core already switched configuration) but the node may start or
//     //    stop connections. Serve each rd.readStates[i] once applied >= its index.
//     core.advance(rd);
//   }
//
// At most one Ready is outstanding: hasReady() is false from ready() until advance(). tick(),
// step() and the request calls may run in between (while an fsync is in progress); what they
// produce comes in the next Ready. Proposals made between two Readies travel in one append
// per follower and are persisted with one fsync.
//
// Compaction: the node snapshots its state machine at some applied index i, gets the meta
// from snapshotMeta(i), stores meta and data durably, and then drops log entries up to i from
// storage. The core only reads RaftStorage, so it notices on its own.
//
// Membership: every initial member starts from a storage whose snapshot().conf (at index 0)
// lists them all. A member added later starts from an empty storage and configuration (so it
// never campaigns) and learns the configuration from the log — each kConfChange entry carries
// the whole new configuration (ConfEntry) — or from a snapshot. A removed member stops
// campaigning once its log has its removal; the node shuts it down once that is committed.
//
// Requests that are lost (a leader change, a dropped message) are never answered: the node
// times them out and retries. Ready::softState tells it when the leader changed.
//
// TODO(perf): a leader could send appends while its own fsync runs (Raft §10.2.1); this
// contract persists first for simplicity.
#pragma once
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "meta/raft/entry_log.h"
#include "meta/raft/progress.h"
#include "meta/raft/storage.h"
#include "meta/raft/types.h"

namespace tessera::meta::raft {

struct RaftConfig {
  NodeId id;
  // Election timeout in ticks: a follower campaigns after a random number of ticks in
  // [electionTick, 2 * electionTick) without hearing from a leader.
  int electionTick = 10;
  // A leader sends heartbeats every heartbeatTick ticks; must be < electionTick.
  int heartbeatTick = 1;
  bool preVote = true;
  bool checkQuorum = true;
  // One append carries at most this many entries and (beyond its first entry) bytes.
  size_t maxMsgEntries = 256;
  uint64_t maxMsgBytes = 1 << 20;
  // Appends in flight per follower in the replicate state.
  size_t maxInflight = 64;
  // One Ready carries at most this many bytes of committed entries (but at least one).
  uint64_t maxApplyBytes = 64 << 20;
  // Where a durable state machine already is at restart (0: the snapshot's index).
  LogIndex applied;

  // kInvalid for id 0, non-positive ticks, heartbeatTick >= electionTick, zero limits.
  Status validate() const;
};

struct PeerStatus {
  NodeId id;
  LogIndex match;
  LogIndex next;
  ProgressState state = ProgressState::kProbe;
  bool recentActive = false;
};

// For `tessera status`.
struct RaftStatus {
  NodeId id;
  Term term;
  NodeId vote;
  Role role = Role::kFollower;
  NodeId leader;
  LogIndex firstIndex;
  LogIndex lastIndex;
  LogIndex commit;
  LogIndex applied;
  ConfState conf;
  NodeId leadTransferee;
  std::vector<PeerStatus> peers;  // the leader's view of every voter, itself included
};

class RaftCore {
 public:
  // Restarts from what `storage` holds (a fresh storage starts a fresh node). `storage` and
  // `rng` must outlive the core. Throws RaftBug if config.validate() fails or storage is
  // inconsistent (commit past the last entry).
  RaftCore(const RaftConfig& config, const RaftStorage& storage, Rng& rng);

  // One logical clock tick: election timeouts, heartbeats, check-quorum.
  void tick();
  // A message from a peer (or a local kSnapStatus/kUnreachable). Messages from the past or
  // for other terms are handled as Raft says (mostly ignored). kInvalid if malformed (wrong
  // recipient, sender 0, entries not contiguous or with terms past the sender's): such a
  // message changes nothing.
  Status step(const Message& msg);

  // Appends `data` to the log if this node is the leader: the index it will have if
  // committed. It may still be lost to a leader change: it committed if a later Ready's
  // committedEntries has an entry at that index with the term() of the proposal. kNotLeader (detail
  // names the leader if known; see leader()); kBusy during a leadership transfer; kInvalid if
  // `data` is empty (empty entries are the no-ops new leaders append, which the node skips when
  // applying).
  Result<LogIndex> propose(std::string data);
  // Adds or removes one voter. The new configuration is used as soon as the entry is in the
  // log. kNotLeader; kBusy while another change is uncommitted, before the leader committed
  // an entry of its term, or during a transfer; kExists / kNotFound if the node already is /
  // is not a voter; kInvalid to remove the last voter.
  Result<LogIndex> proposeConfChange(const ConfChange& change);
  // Starts a linearizable read. A ReadState {index, requestId} comes in a later Ready once the
  // leader confirmed (with a heartbeat round) that it still leads; followers ask the leader.
  // kNotLeader if no leader is known. requestId must be unique on this node.
  Status readIndex(uint64_t requestId);
  // Asks the leader (forwarding if needed) to hand leadership to `target`, which campaigns as
  // soon as its log is complete. kNotLeader if no leader is known; kNotFound if `target` is
  // not a voter. Aborted if it does not happen within an election timeout.
  Status transferLeadership(NodeId target);
  // Starts an election now (tests, and a node that knows it is alone).
  void campaign();
  // From the node: `peer` could not be reached; a sent snapshot finished (or failed).
  void reportUnreachable(NodeId peer);
  void reportSnapshot(NodeId peer, bool ok);

  bool hasReady() const;
  Ready ready();
  // `done` is the Ready returned by the last ready(), fully handled.
  void advance(const Ready& done);

  // The meta of a snapshot of the state machine at `index`, for compaction.
  // kRange unless firstIndex() - 1 <= index <= applied(); kNotFound if its term is compacted.
  Result<SnapshotMeta> snapshotMeta(LogIndex index) const;

  NodeId id() const { return config_.id; }
  Term term() const { return term_; }
  NodeId vote() const { return vote_; }
  Role role() const { return role_; }
  NodeId leader() const { return leader_; }
  LogIndex commit() const { return log_.committed(); }
  LogIndex applied() const { return log_.applied(); }
  LogIndex firstIndex() const { return log_.firstIndex(); }
  LogIndex lastIndex() const { return log_.lastIndex(); }
  // The term of the entry at `index`, including entries not yet durable.
  Result<Term> termAt(LogIndex index) const { return log_.term(index); }
  // The configuration in force: the latest in the log.
  const ConfState& conf() const { return confs_.rbegin()->second; }
  RaftStatus status() const;

 private:
  enum class CampaignType { kPreElection, kElection, kTransfer };
  struct PendingRead {
    NodeId from;
    uint64_t requestId;
    LogIndex index;
    uint64_t round;
  };

  // Roles.
  void becomeFollower(Term term, NodeId leader);
  void becomePreCandidate();
  void becomeCandidate();
  void becomeLeader();
  void reset(Term term);
  void resetRandomizedElectionTimeout();
  bool promotable() const;
  void campaignAs(CampaignType type);
  // Records a vote; returns +1 if the election is won, -1 if lost, 0 if undecided.
  int poll(NodeId from, bool granted);

  // Messages.
  Status validate(const Message& msg) const;
  void stepFollower(const Message& msg);
  void stepCandidate(const Message& msg);
  void stepLeader(const Message& msg);
  void handleVote(const Message& msg);
  void handleAppend(const Message& msg);
  void handleHeartbeat(const Message& msg);
  void handleSnapshot(const Message& msg);
  void handleAppendResponse(const Message& msg, Progress& pr);
  void handleHeartbeatResponse(const Message& msg, Progress& pr);
  void send(Message msg);

  // Replication (leader).
  void appendEntries(std::vector<Entry> entries);
  bool maybeSendAppend(NodeId to, bool sendIfEmpty);
  // Sends what `to` needs (an empty append if nothing), then fills the pipeline.
  void sendAppend(NodeId to);
  void bcastAppend();
  void bcastHeartbeat(uint64_t round);
  bool maybeCommit();
  void onCommitAdvanced();
  bool committedEntryInCurrentTerm() const;
  bool quorumActive() const;
  // The largest value that a majority of voters have reached, given each voter's value.
  template <typename F>
  uint64_t quorumValue(F valueOf) const;
  void sendTimeoutNow(NodeId to);
  void abortLeaderTransfer() { leadTransferee_ = NodeId(); }

  // Reads.
  void handleReadRequest(NodeId from, uint64_t requestId);
  void releaseReads();
  void answerRead(NodeId from, uint64_t requestId, LogIndex index);

  // Configuration.
  // Before `appended` goes into the log: tracks the configurations it carries (and forgets
  // those of the entries it replaces). True if the configuration in force may have changed.
  bool recordConfChanges(const std::vector<Entry>& appended);
  void onConfChanged();
  void pruneConfHistory();

  RaftConfig config_;
  Rng& rng_;
  EntryLog log_;

  Term term_;
  NodeId vote_;
  NodeId leader_;
  Role role_ = Role::kFollower;
  // The configuration as of each configuration entry still in the log (or in the snapshot
  // it starts after, at that snapshot's index); the last one is in force.
  std::map<LogIndex, ConfState> confs_;

  int electionElapsed_ = 0;
  int heartbeatElapsed_ = 0;
  int randomizedElectionTimeout_ = 0;
  std::map<NodeId, bool> votes_;         // candidates: who answered, and how
  std::map<NodeId, Progress> progress_;  // leaders: every voter, and itself
  NodeId leadTransferee_;
  bool appendPending_ = false;         // leaders: proposals not yet broadcast
  bool readBroadcastPending_ = false;  // leaders: a read round not yet broadcast

  uint64_t readRound_ = 0;                      // leaders: the last heartbeat round started
  std::deque<PendingRead> pendingReads_;        // leaders: waiting for their round's quorum
  std::vector<PendingRead> readsBeforeCommit_;  // leaders: waiting for a current-term commit
  std::vector<ReadState> readStates_;

  std::vector<Message> msgs_;
  HardState prevHardState_;
  SoftState prevSoftState_;
  bool readyOutstanding_ = false;
};

}  // namespace tessera::meta::raft
