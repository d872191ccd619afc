// meta/meta_service.h — the metadata server's RPC face (proto::MetaService). Mutations become
// proto::Op commands carrying the time, every new id and the client's RequestId, proposed to
// the Raft group (meta/raft/raft_node.h) and answered with what applying them gave once
// committed. Reads wait for a ReadIndex round and read the local Namespace. Only the leader
// serves; the others answer notLeader with the leader's address. The leader also keeps the
// soft state that is not replicated: which chunk servers are up and how full they are (from
// heartbeats); a new leader starts it afresh from the server registry.
// Not thread-safe: owned by the meta server's event loop.
#pragma once
#include <list>
#include <map>
#include <set>
#include <random>
#include <string>

#include <capnp/message.h>
#include <kj/async.h>
#include <kj/timer.h>

#include "fs/proto/meta.capnp.h"
#include "fs/wire.h"
#include "meta/ns/namespace.h"
#include "meta/placement.h"
#include "meta/raft/raft_node.h"
#include "meta/repair.h"
#include "meta/scrub_tracker.h"
#include "meta/watch_queue.h"

namespace tessera::meta {

struct MetaConfig {
  std::string address;                    // ours, for status
  Layout rootPolicy = Layout::ec(4, 2);   // of a new cluster's root
  std::string newClusterId;               // if this server formats a new cluster
  uint64_t serverTimeoutMs = 5000;        // a chunk server without heartbeat this long is down
  uint64_t sessionTimeoutMs = 60'000;     // a mount's session silent this long expires
  uint64_t leaseTimeoutMs = 10'000;       // a write lease of a session silent this long moves
  uint64_t seed = 0;                      // placement randomness
  uint64_t repairGraceMs = 600'000;       // a chunk server down this long has its shards rebuilt
  PlacementMode placement = PlacementMode::kStrict;  // --placement strict|degraded
  // How long a recalled write lease is refused to new grants while its chunk moves
  // (meta/lease_recall.h); then the writer gets it back and the move is tried later.
  uint64_t recallHoldMs = 5'000;
  // A mount's watcher (coherence) that does not answer an invalidation this long is dropped (a
  // mount answers at once; one that does not is stopped or cut off, and until this runs out a
  // mount that reconnected meanwhile may not hear that the batch was lost).
  uint64_t watcherTimeoutMs = 3'000;
};

class MetaService final : public proto::MetaService::Server {
 public:
  // `ns`, `raft` and `timer` must outlive the service. An uninitialized `ns` is formatted
  // (through the log) by the first leader.
  MetaService(Namespace& ns, raft::RaftNode& raft, kj::Timer& timer, const MetaConfig& config);

  // Runs the liveness sweep until the returned promise is dropped.
  kj::Promise<void> run();
  // Turns on self-healing (meta/repair.h): the leader's sweep then orders lost shards rebuilt
  // through `network`, which must outlive the service. Without it fsck still reports.
  void enableRepair(kj::Network& network);

 protected:
  kj::Promise<void> openSession(OpenSessionContext context) override;
  kj::Promise<void> lookup(LookupContext context) override;
  kj::Promise<void> getattr(GetattrContext context) override;
  kj::Promise<void> setattr(SetattrContext context) override;
  kj::Promise<void> mknod(MknodContext context) override;
  kj::Promise<void> link(LinkContext context) override;
  kj::Promise<void> unlink(UnlinkContext context) override;
  kj::Promise<void> rename(RenameContext context) override;
  kj::Promise<void> readlink(ReadlinkContext context) override;
  kj::Promise<void> readdir(ReaddirContext context) override;
  kj::Promise<void> open(OpenContext context) override;
  kj::Promise<void> release(ReleaseContext context) override;
  kj::Promise<void> statfs(StatfsContext context) override;
  kj::Promise<void> setxattr(SetxattrContext context) override;
  kj::Promise<void> getxattr(GetxattrContext context) override;
  kj::Promise<void> listxattr(ListxattrContext context) override;
  kj::Promise<void> removexattr(RemovexattrContext context) override;
  kj::Promise<void> fsync(FsyncContext context) override;
  kj::Promise<void> getChunks(GetChunksContext context) override;
  kj::Promise<void> allocChunk(AllocChunkContext context) override;
  kj::Promise<void> commitWrite(CommitWriteContext context) override;
  kj::Promise<void> punchChunks(PunchChunksContext context) override;
  kj::Promise<void> servers(ServersContext context) override;
  kj::Promise<void> registerServer(RegisterServerContext context) override;
  kj::Promise<void> heartbeat(HeartbeatContext context) override;
  kj::Promise<void> status(StatusContext context) override;
  kj::Promise<void> raftStep(RaftStepContext context) override;
  kj::Promise<void> raftSnapshot(RaftSnapshotContext context) override;
  kj::Promise<void> addMember(AddMemberContext context) override;
  kj::Promise<void> removeMember(RemoveMemberContext context) override;
  kj::Promise<void> transferLeader(TransferLeaderContext context) override;
  kj::Promise<void> keepAlive(KeepAliveContext context) override;
  kj::Promise<void> acquireLease(AcquireLeaseContext context) override;
  kj::Promise<void> releaseLeases(ReleaseLeasesContext context) override;
  kj::Promise<void> markStale(MarkStaleContext context) override;
  kj::Promise<void> reportDamaged(ReportDamagedContext context) override;
  kj::Promise<void> fsck(FsckContext context) override;
  kj::Promise<void> reportInventory(ReportInventoryContext context) override;
  kj::Promise<void> drainServer(DrainServerContext context) override;
  kj::Promise<void> removeServer(RemoveServerContext context) override;
  kj::Promise<void> scrub(ScrubContext context) override;
  kj::Promise<void> rebalance(RebalanceContext context) override;
  kj::Promise<void> setLock(SetLockContext context) override;
  kj::Promise<void> getLock(GetLockContext context) override;
  kj::Promise<void> releaseLocks(ReleaseLocksContext context) override;
  kj::Promise<void> cancelLockWait(CancelLockWaitContext context) override;
  kj::Promise<void> watch(WatchContext context) override;
  kj::Promise<void> clone(CloneContext context) override;

 private:
  struct ServerState {
    ServerRecordOut record;
    bool up = false;
    kj::TimePoint lastHeartbeat = kj::origin<kj::TimePoint>();
    uint64_t capacityBytes = 0, usedBytes = 0, freeBytes = 0, shards = 0;
    uint64_t fsid = 0;  // servers on one host with one fsid share a disk
    // Per-disk state from the last heartbeat (proto::DiskInfo), kept as sent.
    mutable kj::Own<capnp::MallocMessageBuilder> disks;  // mutable: capnp reads need a builder
    bool noNewShards = false;  // no disk of it takes new shards: place none there
    uint64_t logRecords = 0, logBytes = 0;  // its write log, as of the last heartbeat
    // Shards the server lost on failed disks, as it reported them to this leader; the repair
    // service rebuilds them elsewhere.
    std::set<std::pair<uint64_t, uint8_t>> lostShards;
  };

  int64_t nowNs() const;
  // A descriptor for a new chunk at `index` of `inode`: a fresh id, the inode's policy, servers
  // chosen among those up (meta/placement.h). Leader only.
  Result<ChunkDesc> newChunk(InodeId inode, uint64_t index);
  // True if `session`'s write leases may go to another session: it expired or has been silent
  // longer than the lease timeout (meta_leases.cc).
  bool leaseLapsed(SessionId session) const;
  // Leases another session asked for while `session` held them (acquireLease answered busy):
  // keepAlive asks the holder for them back, like recalls for moves (meta_leases.cc).
  struct WantedLease {
    SessionId holder;
    uint64_t epoch = 0;
    kj::TimePoint since = kj::origin<kj::TimePoint>();
  };
  void addWantedLeases(SessionId session, std::vector<RecalledLease>& out);
  // Before a truncate or punch drops the chunks of `inode` with first <= index < end: kBusy if
  // another live session holds the lease of one (it is asked for it back, as for
  // acquireLease; the caller asks again); the holders silent past the lease timeout go into
  // `lapsed`, for the op to drop their leases along (meta_leases.cc).
  Status leasesForDrop(InodeId inode, uint64_t first, uint64_t end, SessionId session,
                       std::vector<uint64_t>& lapsed);
  // Gives the file's chunk at chunk.index, shared with other files, a private copy (a new
  // chunk id, each shard copied by its own server) before a lease is granted on it
  // (meta_clone.cc). Ok also when the chunk was replaced or became private meanwhile: the
  // caller reads the chunk map again. One copy at a time per (inode, index).
  kj::Promise<Status> copyOnWrite(InodeId inode, const ChunkDesc& chunk);
  void sweep();
  // This node now leads and has applied its whole log: continue ids above the ones any earlier
  // leader handed out, and learn the chunk servers afresh.
  void becameLeader();
  // Runs `read` once a linearizable read may be served here, else answers notLeader.
  template <typename Context, typename F>
  kj::Promise<void> readThen(Context context, F&& read) {
    return raft_.readBarrier().then(
        [context, read = kj::fwd<F>(read)](Status s) mutable {
          if (!s) return toWire(s.error(), context.getResults().initError());
          read(context);
        });
  }
  void fillServerInfo(const ServerState& s, proto::ServerInfo::Builder b);
  // Takes the per-disk state, noNewShards and lost shards of a heartbeat.
  void noteDisks(ServerId id, ServerState& s, proto::MetaService::HeartbeatParams::Reader p);

  // --- session liveness: soft state of the leader, like chunk-server liveness. Every request
  // that carries a session counts as contact, keepAlive too; nothing of it is replicated. A
  // session silent past config_.sessionTimeoutMs is expired through the log (expireSession).
  struct SessionState {
    kj::TimePoint lastContact = kj::origin<kj::TimePoint>();
    bool expiring = false;  // an expireSession op is under way
  };
  // Sets the op's RequestId and notes contact from its session.
  void noteRequest(proto::Op::Builder op, proto::RequestId::Reader req);
  void touch(SessionId session);
  // A new leader gives every session a full timeout from now: it cannot know when the old
  // leader last heard from them.
  void trackSessions();
  void expireSilentSessions();
  proto::StatFs::Builder fillStatFs(proto::StatFs::Builder b);

  // --- lock waits (meta_locks.cc): the leader's soft state, like session liveness ---
  struct LockWaiter {
    uint64_t id;
    SessionId session;
    uint64_t seq;  // of the setLock call that waits, for cancelLockWait
    bool flock;
    HeldLock want;
    kj::Own<kj::PromiseFulfiller<Status>> fulfiller;
    bool attempting = false;  // a setLock for it is in the log now
    bool giveUp = false;      // its time passed, or it was cancelled, during an attempt
  };
  // Keeps a conflicting setLock until granted or `waitMs` passed (then wouldBlock).
  kj::Promise<Status> waitForLock(InodeId inode, bool flock, const HeldLock& want, uint64_t seq,
                                  uint32_t waitMs);
  LockWaiter* findLockWaiter(InodeId inode, uint64_t id);
  // Answers a waiter; wouldBlock waits for an attempt in the log to end first.
  void finishLockWaiter(InodeId inode, uint64_t id, Status result);
  // Locks on `inode` were dropped: try its waiters again, one by one, in arrival order.
  void wakeLockWaiters(InodeId inode);
  void wakeAllLockWaiters();
  kj::Promise<void> retryLockWaiters(InodeId inode, std::vector<uint64_t> ids, size_t next);
  // --- coherence: invalidations pushed to the mounts' watchers (meta_watch.cc,
  // meta/watch_queue.h). Soft state of the leader, like session liveness.
  // After a change was applied: queue it for every watcher but `origin`'s and send soon (on a
  // later turn, so changes applied together go in one call per watcher). Leader only.
  void invalidate(SessionId origin, std::vector<InodeId> inodes,
                  std::vector<WatchQueue::Entry> entries = {});
  void scheduleWatchFlush();
  void flushWatchers();
  void dropWatchers();
  // --- repair (meta/repair.h) ---
  ServerMap serverMap();
  void fillRepairStatus(proto::RepairStatus::Builder b);
  void fillRebalanceStatus(proto::RebalanceStatus::Builder b);

  Namespace& ns_;
  raft::RaftNode& raft_;
  kj::Timer& timer_;
  MetaConfig config_;
  std::mt19937_64 rng_;
  IdMarks next_;  // last id handed out of each kind
  std::map<ServerId, ServerState> servers_;
  std::map<SessionId, SessionState> sessions_;
  std::map<std::pair<InodeId, uint64_t>, WantedLease> wantedLeases_;
  // Files a clone waits for (it found their chunks leased, and recalled them): until `until`
  // no session but the cloner gets a new write lease on them, so that a writer that never
  // pauses cannot keep the clone waiting (meta_clone.cc, acquireLease).
  struct CloneHold {
    SessionId cloner;
    kj::TimePoint until = kj::origin<kj::TimePoint>();
  };
  std::map<InodeId, CloneHold> cloneHolds_;
  std::map<InodeId, std::list<LockWaiter>> lockWaiters_;
  std::set<InodeId> lockWakes_, lockWakeAgain_;  // a retry pass runs; run another after it
  uint64_t lastLockWaiter_ = 0;
  ScrubTracker scrub_;  // scrub progress and damaged shards, from heartbeats
  uint64_t lastScrubRequest_ = 0;
  kj::TimePoint started_;
  // A new leader counts the chunk servers it knows as up until this time, or until they miss a
  // heartbeat after it: they need a moment to find it after an election.
  kj::TimePoint graceUntil_ = kj::origin<kj::TimePoint>();
  WatchQueue watchQueue_;
  std::map<SessionId, proto::Watcher::Client> watchers_;  // the capabilities watchQueue_ sends to
  bool watchFlush_ = false;  // a flushWatchers() is scheduled
  bool repairKick_ = false;  // an extra repair tick is scheduled (Repair::onSlotFree)
  kj::Own<ChunkPeers> chunkPeers_;  // copy-on-write orders; made by enableRepair
  std::map<std::pair<InodeId, uint64_t>, kj::ForkedPromise<Status>> cows_;
  struct ErrorHandler : kj::TaskSet::ErrorHandler {
    void taskFailed(kj::Exception&& e) override;
  } errorHandler_;
  kj::TaskSet tasks_{errorHandler_};
  // Last, so it goes first: its tasks refer to the Raft node and the store.
  kj::Own<Repair> repair_;
};

}  // namespace tessera::meta
