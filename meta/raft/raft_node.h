// meta/raft/raft_node.h — runs the pure RaftCore on the meta server's event loop: ticks it from
// a kj::Timer, carries its messages to the other meta servers over Cap'n Proto
// (MetaService.raftStep), makes each Ready durable in the FileStorage (fsync on a worker
// thread, one per Ready: group commit) before sending anything, and applies committed entries
// to the Namespace in log order.
//
// Clients of the node (the MetaService) propose serialized proto::Op commands and get the
// result of applying them on this node; reads wait for readBarrier() (ReadIndex: the leader
// confirms it still leads, then waits until it applied everything committed before the read).
// A proposal whose leader loses leadership before it commits fails with kNotLeader; it may still
// commit later, which is why clients retry under the same RequestId (exactly-once).
//
// A new leader serves proposals only once it applied every entry of its log up to its own
// first entry (leaderReady()): then the state machine holds every id any earlier leader handed
// out, and the service can continue above them.
//
// Snapshots. The state machine is durable on its own (LevelDB, index of the last applied entry
// in it), so a snapshot is "the store as of applied index X". Compaction: once
// snapshotEntries + snapshotKeepEntries entries were applied past the log's snapshot, the node
// syncs the store and records a snapshot at applied - snapshotKeepEntries in the log, which
// then drops (and deletes the segments of) the entries it covers. A follower that needs
// compacted entries gets the store instead: the leader streams a consistent LevelDB snapshot in
// pieces (raftSnapshot, meta/ns/snapshot.h), named by its own applied index; the follower
// stages it beside its store, swaps it in once it is complete and checked, and only then steps
// the snapshot message into its core. A follower whose store already is at or past the
// snapshot steps the message without the data.
//
// Restart: the store's applied index A may be ahead of the log's commit (commits are synced
// lazily) and is at or past the log's snapshot. Entries at or below A are never applied again,
// entries past it come from the log or the leader.
//
// Not thread-safe: lives on the meta server's event loop.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <kj/async-io.h>
#include <kj/timer.h>

#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"
#include "fs/worker.h"
#include "meta/ns/namespace.h"
#include "meta/ns/snapshot.h"
#include "meta/raft/file_storage.h"
#include "meta/raft/raft_core.h"

namespace tessera::meta::raft {

struct NodeConfig {
  RaftConfig raft;               // id, election/heartbeat ticks, limits
  uint64_t tickMs = 100;         // one logical tick
  uint64_t seed = 0;             // election timeouts
  uint64_t connectTimeoutMs = 2000;
  uint64_t callTimeoutMs = 5000;
  // Where Raft traffic to a member goes when it is not the member's address (a separate
  // replication network, a tunnel; the partition tests' link proxies). Leader hints to clients
  // always name the member's own address.
  std::map<NodeId, std::string> routes;
  // Compaction (see above); 0 snapshotEntries: never compact.
  uint64_t snapshotEntries = 10000;
  uint64_t snapshotKeepEntries = 1000;
  // Snapshot streaming: bytes per raftSnapshot call, and how long one may take (the last one
  // installs).
  size_t snapshotPieceBytes = 1 << 20;
  uint64_t snapshotCallTimeoutMs = 30000;
};

class RaftNode {
 public:
  // `addresses`: where every member listens (this node's own too), from flags and the
  // namespace's member records. All references must outlive the node.
  RaftNode(const NodeConfig& config, FileStorage& storage, Namespace& ns, kj::Timer& timer,
           kj::Network& network, std::map<NodeId, std::string> addresses);
  ~RaftNode();

  // Ticks and processes until the returned promise is dropped.
  kj::Promise<void> run();

  // Proposes a serialized proto::Op (flat array of words). Resolves with its result as applied
  // here once committed; kNotLeader (with the leader's address as hint) if this node does not
  // lead, is not ready, or lost leadership before the entry committed.
  kj::Promise<Result<Applied>> propose(kj::Array<capnp::word> op);
  // Resolves when a read started now may be served from this node's Namespace.
  kj::Promise<Status> readBarrier();
  // Membership, on the leader: records the member's address in the state machine, then
  // proposes the configuration change; resolves once it is applied.
  kj::Promise<Status> addMember(NodeId id, std::string address);
  kj::Promise<Status> removeMember(NodeId id);
  Status transferLeadership(NodeId to);

  // Messages from a peer (MetaService.raftStep). Snapshot messages are dropped: they come only
  // with their data, through receiveSnapshot().
  void receive(std::vector<Message> messages);
  // One piece of a snapshot from the leader `from` in `term` (MetaService.raftSnapshot; the
  // format is meta/ns/snapshot.h). Resolves with true once this node has the snapshot's state
  // (the last piece installed it, or the store already was there), false if more pieces are
  // welcome. Errors: kStale for a leader of an older term; kInvalid for a piece that does not
  // follow the one before (the leader starts over); kCorruption for a piece that fails its
  // checks; kBusy while the previous piece is being written. Nothing of a refused piece is
  // applied.
  struct SnapshotPiece {
    NodeId from;
    Term term;
    SnapshotMeta meta;
    uint64_t offset = 0;
    std::string data;
    uint32_t crc = 0;
    bool done = false;
    uint64_t total = 0;
  };
  kj::Promise<Result<bool>> receiveSnapshot(SnapshotPiece piece);

  bool isLeader() const { return core_->role() == Role::kLeader; }
  bool leaderReady() const { return isLeader() && leaderReady_; }
  NodeId id() const { return core_->id(); }
  NodeId leader() const { return core_->leader(); }
  std::string addressOf(NodeId id) const;
  // An Error kNotLeader naming the leader's address if known.
  Error notLeader() const;
  RaftStatus status() const { return core_->status(); }
  // The last entry the state machine applied.
  uint64_t appliedIndex() const { return applied_; }
  // Snapshots sent and installed since start, for tests and status.
  uint64_t snapshotsSent() const { return snapshotsSent_; }
  uint64_t snapshotsInstalled() const { return snapshotsInstalled_; }

  // Called when this node became leader and applied its log up to its own first entry, and
  // when it stops leading.
  std::function<void()> onLeaderReady;
  std::function<void()> onLeadershipLost;

 private:
  struct Pending {
    Term term;
    kj::Own<kj::PromiseFulfiller<Result<Applied>>> fulfiller;
  };
  struct Peer {
    std::string address;
    kj::Own<Connection> connection;
    kj::Maybe<proto::MetaService::Client> service;
    bool connecting = false;
    std::vector<Message> queue;  // waiting for the connection
  };

  // A snapshot stream to one follower.
  struct Outbound {
    std::unique_ptr<SnapshotReader> reader;
    SnapshotMeta meta;
    Term term;
    kj::Promise<void> task = nullptr;
  };
  // The snapshot being received.
  struct Inbound {
    uint64_t seq = 0;
    NodeId from;
    Term term;
    SnapshotMeta meta;
    std::unique_ptr<SnapshotWriter> writer;
    bool busy = false;  // a piece is being written on the snapshot thread
  };
  struct BusyGuard;
  // A received, checked snapshot waiting for the Ready pipeline to be idle.
  struct PendingInstall {
    NodeId from;
    Term term;
    SnapshotMeta meta;
    kj::Own<kj::PromiseFulfiller<Result<bool>>> fulfiller;
  };

  void kick();
  kj::Promise<void> handleReady();
  // After a Ready: compacts the log if enough was applied; resolves when done.
  kj::Promise<void> maybeCompact();
  void startSnapshot(NodeId to);
  kj::Promise<void> sendSnapshotPiece(NodeId to);
  void endSnapshot(NodeId to, bool ok, const std::string& why);
  void cancelSnapshots();
  void install(PendingInstall p);
  void stepSnapshot(NodeId from, Term term, const SnapshotMeta& meta);
  void apply(const std::vector<Entry>& committed);
  void send(std::vector<Message> messages);
  void flush(NodeId to);
  void connect(NodeId to);
  void peerFailed(NodeId to);
  void failPending(const Error& error);
  void startReadRound();
  void serveReads();
  kj::Promise<void> tick();

  NodeConfig config_;
  FileStorage& storage_;
  Namespace& ns_;
  kj::Timer& timer_;
  kj::Network& network_;
  Rng rng_;
  std::unique_ptr<RaftCore> core_;
  WorkerThread disk_;
  std::map<NodeId, Peer> peers_;
  std::map<NodeId, std::string> addresses_;
  std::map<LogIndex, Pending> pending_;  // proposals by log index
  uint64_t applied_ = 0;  // the state machine's, which may be ahead of the core's
  bool processing_ = false;
  std::map<NodeId, std::unique_ptr<Outbound>> outbound_;
  std::unique_ptr<Inbound> inbound_;
  uint64_t inboundSeq_ = 0;
  std::optional<PendingInstall> pendingInstall_;
  // Writes received snapshot pieces. Declared after inbound_ so it is joined before the
  // writer it may be using goes away.
  WorkerThread snapDisk_;
  uint64_t snapshotsSent_ = 0;
  uint64_t snapshotsInstalled_ = 0;
  bool leaderReady_ = false;
  Term leaderTerm_;
  // ReadIndex: reads wait for the round that started after them.
  uint64_t nextReadId_ = 1;
  uint64_t roundId_ = 0;                     // the round in flight, 0 if none
  std::vector<kj::Own<kj::PromiseFulfiller<Status>>> waitingForRound_;  // joined after it started
  std::vector<kj::Own<kj::PromiseFulfiller<Status>>> inRound_;          // covered by roundId_
  std::multimap<uint64_t, kj::Own<kj::PromiseFulfiller<Status>>> waitingForApply_;
  std::map<LogIndex, kj::Own<kj::PromiseFulfiller<Status>>> confWaiters_;
  struct ErrorHandler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } errorHandler_;
  kj::TaskSet tasks_;
};

}  // namespace tessera::meta::raft
