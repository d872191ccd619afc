# fs/proto/meta.capnp — the metadata service's RPC: namespace operations for mounts, registration
# and heartbeats for chunk servers, and status for the admin command. Every reply carries an
# `error`; its code is `ok` when the call succeeded.
@0xa24a52c50501ced9;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tessera::proto");
using Common = import "common.capnp";
using Raft = import "raft.capnp";
using ShardRef = import "chunk.capnp".ShardRef;
using Chunk = import "chunk.capnp";

# Which fields of a setattr request are meaningful (bit flags).
const setMode :UInt32 = 1;
const setUid :UInt32 = 2;
const setGid :UInt32 = 4;
const setSize :UInt32 = 8;
const setAtime :UInt32 = 16;
const setMtime :UInt32 = 32;
const setAtimeNow :UInt32 = 64;
const setMtimeNow :UInt32 = 128;
const setCtime :UInt32 = 256;

# rename flags, as in renameat2(2).
const renameFlagNoReplace :UInt32 = 1;
const renameFlagExchange :UInt32 = 2;

# setxattr flags, as in setxattr(2).
const xattrCreate :UInt32 = 1;
const xattrReplace :UInt32 = 2;

struct ServerInfo {
  id @0 :UInt64;
  address @1 :Text;
  site @2 :Text;
  rack @3 :Text;
  host @4 :Text;
  up @5 :Bool;
  capacityBytes @6 :UInt64;
  usedBytes @7 :UInt64;     # by shard files on the server's disks
  freeBytes @8 :UInt64;     # what the file system still allows us to write
  shards @9 :UInt64;
  lastHeartbeatMs @10 :UInt64;  # age of the last heartbeat
  draining @11 :Bool;           # tessera drain: its shards are moving off
  placedShards @12 :UInt64;     # shards the chunk map places here (the leader's last pass)
  scrub @13 :ScrubProgress;     # its `damaged` is left empty here
  damagedShards @14 :UInt64;    # shards on it that the scrubber found damaged
  disks @15 :List(DiskInfo);    # as in the server's last heartbeat
  noNewShards @16 :Bool;        # the server said no disk of it takes new shards
  logRecords @17 :UInt64;       # write-log records it holds (chunk/chunk_log.h): not yet applied
  logBytes @18 :UInt64;         # and their data bytes, as in its last heartbeat
}

# Shard repair on the meta leader (meta/repair.h). Counts of chunks are those of its last whole
# pass over the chunk map (`passed` false until one finished since it leads).
struct RepairStatus {
  passed @0 :Bool;
  healthy @1 :UInt64;
  degraded @2 :UInt64;    # some shards missing, still readable
  lost @3 :UInt64;        # more shards missing than the layout can lose
  misplaced @4 :UInt64;   # placement rules broken (shards share a server, or a failure domain)
  queued @5 :UInt64;      # chunks with shards to rebuild now, waiting for the throttle
  running @6 :UInt64;     # rebuilds ordered and not finished
  done @7 :UInt64;        # shards rebuilt and switched to since this server leads
  failed @8 :UInt64;
  bytesRebuilt @9 :UInt64;
  orphans @10 :UInt64;    # orphan chunks ordered deleted from chunk servers
}

# One chunk that fsck found wanting.
struct ChunkReport {
  inode @0 :UInt64;
  chunk @1 :Common.ChunkDesc;
  health @2 :Text;        # "healthy", "degraded" or "lost"
  misplaced @3 :Bool;
  detail @4 :Text;        # which shards, and why
  lostBlocks @5 :UInt64;  # blocks marked lost on its shards' current servers (LostShard)
}

# A shard holding blocks marked lost (chunk/shard_file.h markLost), as its server counts them
# (ScrubProgress.lostBlocks).
struct LostShard {
  chunk @0 :UInt64;
  shard @1 :UInt8;
  blocks @2 :UInt64;
}

# A shard a chunk server's scrubber (chunk/scrubber.h) found damaged: the shard offsets of its
# bad blocks, or no offsets when the whole shard is unreadable (a damaged header).
struct DamagedShard {
  chunk @0 :UInt64;
  shard @1 :UInt8;
  server @2 :UInt64;            # 0 in a heartbeat: the sender
  blocks @3 :List(UInt64);
}

# A chunk server's scrub progress, sent in every heartbeat.
struct ScrubProgress {
  running @0 :Bool;             # a pass is under way
  bytesThisPass @1 :UInt64;     # scrubbed so far in this pass (or the last, when idle)
  passBytes @2 :UInt64;         # shard data to scrub in this pass (or the last)
  passes @3 :UInt64;            # full passes finished since the server started
  lastPassEndMs @4 :UInt64;     # wall clock (ms since the epoch) of the last finished pass, 0: none
  badBlocks @5 :UInt64;         # bad blocks found since the server started
  request @6 :UInt64;           # the last scrub-now request (heartbeat reply) it acted on
  damaged @7 :List(DamagedShard);  # reports not acknowledged yet (a successful reply acks them)
  # Blocks marked lost (chunk/shard_file.h markLost: a rebuild found their rows holding a mix of
  # two writes, so their content is known nowhere; reads of them fail until they are written
  # again): as many as the last finished pass found, plus those rebuilds marked since.
  lostBlocks @8 :UInt64;
  # The shards that hold them, by chunk and shard: at most kMaxLostShards (1,000) of them.
  lostShards @9 :List(LostShard);
}

# One data directory of a chunk server. `full`: takes no new shards (free space below the
# reserve, or ENOSPC); `failed`: an I/O error or its directory is gone; no I/O reaches it and its
# shards are lost there.
enum DiskState {
  ok @0;
  full @1;
  failed @2;
}

struct DiskInfo {
  path @0 :Text;
  state @1 :DiskState;
  reason @2 :Text;          # why full or failed
  capacityBytes @3 :UInt64;
  usedBytes @4 :UInt64;
  freeBytes @5 :UInt64;
  shards @6 :UInt64;        # held; on a failed disk: lost
}

# A write lease the meta leader wants back (a move of the chunk waits for it): the holder finishes
# its writes to the chunk, syncs them and releases the lease (releaseLeases with this epoch).
struct LeaseRef {
  inode @0 :UInt64;
  index @1 :UInt64;
  epoch @2 :UInt64;
}

# tessera rebalance on the meta leader (meta/rebalance_plan.h): moves planned to bring every live
# chunk server's disk usage within `bandPct` points of the cluster mean, executed by the repair
# service (rebuild, then the replaceShard compare-and-set) under its throttle.
struct RebalanceStatus {
  active @0 :Bool;          # moves queued or running
  bandPct @1 :Float64;
  planned @2 :UInt64;       # moves of the last plan
  queued @3 :UInt64;        # not started yet (or waiting for a lease, a retry)
  running @4 :UInt64;
  done @5 :UInt64;          # switched
  failed @6 :UInt64;        # given up (the chunk changed, no longer placeable, retries spent)
  bytesPlanned @7 :UInt64;
  bytesMoved @8 :UInt64;
}

struct PlannedMove {
  inode @0 :UInt64;
  index @1 :UInt64;
  chunk @2 :UInt64;
  shard @3 :UInt8;
  from @4 :UInt64;
  to @5 :UInt64;
  bytes @6 :UInt64;         # estimated shard size
}

# A live chunk server's disk usage as the planner saw it, and as the plan would leave it.
struct ServerUsage {
  id @0 :UInt64;
  capacityBytes @1 :UInt64;
  usedBytes @2 :UInt64;
  afterBytes @3 :UInt64;
}

struct StatFs {
  totalBytes @0 :UInt64;    # usable capacity under the root's policy
  freeBytes @1 :UInt64;
  files @2 :UInt64;         # inodes in use
}

# A directory entry, for invalidations (Watcher).
struct EntryRef {
  parent @0 :UInt64;
  name @1 :Text;
}

# A mount's callback for coherence (meta/watch_queue.h): the meta leader calls it after another
# session changed what the mount may cache. One call at a time per watcher; what queues
# meanwhile goes in the next. The mount drops its cached attributes and data of `inodes` and
# its cached `entries` (parent inode, name); with `all`, everything it caches (the leader's
# queue for it overflowed). The mount answers at once (it does the dropping later); a call that
# fails or times out drops the watcher: the mount learns it at its next watch (`continued`).
interface Watcher {
  invalidate @0 (inodes :List(UInt64), entries :List(EntryRef), all :Bool) -> ();
}

# Mutating calls carry `req`: retried with the same RequestId, a call is applied once and
# answered with the reply of its first application (a session that expired: error stale).
interface MetaService {
  # --- mounts ---
  # `timeoutMs`: a session that makes no call for this long expires (its open files are
  # released, its requests answered stale); keepAlive is the call an idle mount makes.
  openSession @0 (host :Text, mountpoint :Text)
      -> (error :Common.Error, session :UInt64, timeoutMs :UInt64);
  lookup @1 (parent :UInt64, name :Text) -> (error :Common.Error, attr :Common.Attr);
  getattr @2 (inode :UInt64) -> (error :Common.Error, attr :Common.Attr);
  setattr @3 (inode :UInt64, valid :UInt32, mode :UInt32, uid :UInt32, gid :UInt32,
              size :UInt64, atimeNs :Int64, mtimeNs :Int64, req :Common.RequestId)
      -> (error :Common.Error, attr :Common.Attr);
  # Creates any kind of inode: S_IFREG, S_IFDIR, S_IFLNK (with target), fifos, devices, sockets.
  # With session != 0 the new file is also opened for that session (FUSE create).
  mknod @4 (parent :UInt64, name :Text, mode :UInt32, rdev :UInt32, uid :UInt32, gid :UInt32,
            target :Text, session :UInt64, req :Common.RequestId)
      -> (error :Common.Error, attr :Common.Attr);
  link @5 (inode :UInt64, newParent :UInt64, newName :Text, req :Common.RequestId)
      -> (error :Common.Error, attr :Common.Attr);
  unlink @6 (parent :UInt64, name :Text, dir :Bool, req :Common.RequestId)
      -> (error :Common.Error);
  rename @7 (parent :UInt64, name :Text, newParent :UInt64, newName :Text, flags :UInt32,
             req :Common.RequestId) -> (error :Common.Error);
  readlink @8 (inode :UInt64) -> (error :Common.Error, target :Text);
  # Entries after `cookie` (0 = from the start), at most `max`; `plus` fills full attributes.
  readdir @9 (inode :UInt64, cookie :UInt64, max :UInt32, plus :Bool)
      -> (error :Common.Error, entries :List(Common.DirEntry), eof :Bool);
  open @10 (session :UInt64, inode :UInt64, req :Common.RequestId)
      -> (error :Common.Error, attr :Common.Attr);
  release @11 (session :UInt64, inode :UInt64, req :Common.RequestId) -> (error :Common.Error);
  statfs @12 () -> (error :Common.Error, stat :StatFs);
  setxattr @13 (inode :UInt64, name :Text, value :Data, flags :UInt32, req :Common.RequestId)
      -> (error :Common.Error);
  getxattr @14 (inode :UInt64, name :Text) -> (error :Common.Error, value :Data);
  listxattr @15 (inode :UInt64) -> (error :Common.Error, names :List(Text));
  removexattr @16 (inode :UInt64, name :Text, req :Common.RequestId) -> (error :Common.Error);
  # Make every metadata change so far durable on the meta server's disk.
  fsync @17 () -> (error :Common.Error);

  # --- data placement ---
  # Chunk descriptors of `inode` with first <= index < first + count that exist; count is
  # capped at kMaxGetChunks (fs/types.h).
  getChunks @18 (inode :UInt64, first :UInt64, count :UInt64)
      -> (error :Common.Error, chunks :List(Common.ChunkDesc));
  # The chunk at `index`, placing it on servers if it does not exist yet. `created`: this call
  # placed it, so no shard of it exists yet and every byte of it reads as zero.
  allocChunk @19 (inode :UInt64, index :UInt64, req :Common.RequestId)
      -> (error :Common.Error, chunk :Common.ChunkDesc, created :Bool);
  # Data up to `size` was written: grow the file to `size` if smaller and set mtime.
  # With the MiBs of chunks written and punched since the last commit (ns.capnp commitWrite);
  # at most kMaxUsageChunks chunks.
  commitWrite @20 (inode :UInt64, size :UInt64, mtimeNs :Int64, req :Common.RequestId,
                   usageChunks :List(UInt64), usageSet :List(UInt64), usageClear :List(UInt64))
      -> (error :Common.Error, attr :Common.Attr);
  # Addresses of chunk servers by id.
  servers @21 (ids :List(UInt64)) -> (error :Common.Error, servers :List(ServerInfo));

  # --- chunk servers ---
  # id 0 asks for a new id. clusterId empty on a server's first start.
  # fsid names the file system of the server's disk (0: do not share its capacity with others).
  # token: the random identity of the server's data directory (kMinServerTokenLen to
  # kMaxServerTokenLen printable characters; empty from old servers). A server that asks for a
  # new id with a token the cluster knows gets that token's id again (a retried first
  # registration); a token of another server is refused.
  registerServer @22 (id :UInt64, clusterId :Text, address :Text, site :Text, rack :Text,
                      host :Text, capacityBytes :UInt64, usedBytes :UInt64, freeBytes :UInt64,
                      shards :UInt64, fsid :UInt64, token :Text)
      -> (error :Common.Error, id :UInt64, clusterId :Text);
  # `removed` lists chunks whose shards the server deleted since its last heartbeat, as ordered
  # by an earlier reply; `remove` lists chunks whose shards it must delete now.
  # `disks`: each data directory's state (the totals count only the disks that have not
  # failed). `noNewShards`: no disk takes new shards (each failed or full, or one could not be
  # opened at start): place none there.
  # `lost`: shards that were on disks that failed, sent again to each leader the server
  # registers with (at most 10,000 a heartbeat, the rest in later ones). `logRecords` and
  # `logBytes`: what the server's write log holds now, for `tessera status`.
  heartbeat @23 (id :UInt64, capacityBytes :UInt64, usedBytes :UInt64, freeBytes :UInt64,
                 shards :UInt64, removed :List(UInt64), fsid :UInt64, scrub :ScrubProgress,
                 disks :List(DiskInfo), noNewShards :Bool, lost :List(Chunk.ShardRef),
                 logRecords :UInt64, logBytes :UInt64)
      -> (error :Common.Error, remove :List(UInt64), scrubNow :UInt64);
  # `scrubNow`: if not 0 and not the `scrub.request` the server sent, start a scrub pass now
  # and send this value as `scrub.request` from then on.

  # --- admin ---
  status @24 () -> (error :Common.Error, clusterId :Text, address :Text, uptimeMs :UInt64,
                    inodes :UInt64, chunks :UInt64, servers :List(ServerInfo), stat :StatFs,
                    raft :Raft.RaftInfo, repair :RepairStatus,
                    damaged :List(DamagedShard), rebalance :RebalanceStatus);

  # --- the meta cluster (Raft) ---
  # Messages from another meta server's Raft core. The reply only says they arrived.
  raftStep @25 (messages :List(Raft.RaftMessage)) -> ();
  # One piece of the state-machine snapshot `meta` that the leader `from` (in `term`) sends to
  # a member whose log is behind its compacted log; `done` on the last piece, which installs
  # it. `data` is whole records (meta/ns/snapshot.h) starting at byte `offset` of the stream,
  # `crc` its crc32c; `total` (with `done`) the size of the whole stream. A piece that does not
  # check out is refused with an error and nothing of it is applied; the leader starts over
  # later. `complete`: the member has the snapshot's state now (installed, or it was already
  # there): send no more pieces.
  raftSnapshot @26 (from :UInt64, meta :Raft.RaftSnapshotMeta, offset :UInt64, data :Data,
                    done :Bool, term :UInt64, crc :UInt32, total :UInt64)
      -> (error :Common.Error, complete :Bool);
  # Admin, on the leader: add a member (started with --join) or remove one, one at a time;
  # hand leadership to `id` (0: any other member).
  addMember @27 (id :UInt64, address :Text) -> (error :Common.Error);
  removeMember @28 (id :UInt64) -> (error :Common.Error);
  transferLeader @29 (id :UInt64) -> (error :Common.Error);

  # --- mounts, continued ---
  # Keeps an idle session alive (any call carrying the session does too). Error stale if it
  # expired already: the mount must open a new one.
  # `recalled`: write leases of this session the leader wants back (LeaseRef): for a move, or
  # because another session asked for the chunk's lease (acquireLease answered it busy). A mount
  # that holds write leases calls keepAlive about every half second, busy or not, to hear them.
  keepAlive @30 (session :UInt64)
      -> (error :Common.Error, timeoutMs :UInt64, recalled :List(LeaseRef));

  # --- write leases (DESIGN.md rule 3) ---
  # A write lease for `session` on the chunk at `index` of `inode`, placing the chunk first if it
  # does not exist (`created`, as allocChunk). The chunk's `epoch` is the lease's: a new grant
  # raises it, so chunk servers refuse the writes of any earlier holder. Held by another live
  # session: error busy (retry later). A holder keeps its lease until it releases it, closes the
  # file, or stays silent for `leaseMs` (then another session may take it over). While a move of
  # the chunk (repair, drain, rebalance) is under way after a recall, busy too, for at most
  # tessera-meta --recall-hold.
  acquireLease @31 (session :UInt64, inode :UInt64, index :UInt64, req :Common.RequestId)
      -> (error :Common.Error, chunk :Common.ChunkDesc, created :Bool, leaseMs :UInt64);
  # Gives up the session's leases on these chunks of `inode` (none listed: all of them).
  # `epochs`, if given, one per index: a lease is dropped only if the chunk is still at that
  # epoch (a late release never drops a lease granted since).
  releaseLeases @32 (session :UInt64, inode :UInt64, indexes :List(UInt64),
                     req :Common.RequestId, epochs :List(UInt64)) -> (error :Common.Error);
  # The lease holder (`epoch`) could not write these shards (bit i: shard i) of the chunk:
  # they are stale until rebuilt, and nobody reads them. Error stale if the lease moved on.
  # With `resynced`, the holder also made every row consistent again (ChunkDesc.resync).
  markStale @33 (inode :UInt64, index :UInt64, epoch :UInt64, shards :UInt32,
                 req :Common.RequestId, resynced :Bool)
      -> (error :Common.Error, chunk :Common.ChunkDesc);
  # --- repair ---
  # A chunk server (its scrubber, or a reader) found `shards` on server `server` damaged: the
  # leader rebuilds them elsewhere like lost ones.
  reportDamaged @34 (server :UInt64, shards :List(ShardRef)) -> (error :Common.Error);
  # Every chunk's health now, on the leader: counts, and at most `max` chunks that are not
  # healthy or are misplaced.
  # `lostBlocks`: blocks marked lost on the chunk servers (ScrubProgress.lostBlocks, summed);
  # `lostBlockChunks`: the chunks with such blocks on their shards' current servers, which
  # `bad` lists too (ChunkReport.lostBlocks).
  fsck @35 (max :UInt32) -> (error :Common.Error, healthy :UInt64, degraded :UInt64,
                             lost :UInt64, misplaced :UInt64, bad :List(ChunkReport),
                             repair :RepairStatus, lostBlocks :UInt64, lostBlockChunks :UInt64);
  # One piece of a chunk server's inventory (chunk/inventory.h): `start` on the first piece of
  # a report, `done` on its last; the leader uses only complete reports.
  reportInventory @36 (server :UInt64, start :Bool, shards :List(ShardRef), done :Bool)
      -> (error :Common.Error);
  # Admin: start (or with draining false, stop) moving every shard off chunk server `server`;
  # it keeps serving reads meanwhile and gets no new shards.
  drainServer @37 (server :UInt64, draining :Bool) -> (error :Common.Error);
  # Admin: forget chunk server `server`; notEmpty while any chunk or garbage record names it.
  removeServer @38 (server :UInt64) -> (error :Common.Error);
  # --- admin, continued ---
  # Asks every chunk server that is up to start a scrub pass now (in its next heartbeat reply);
  # `servers`: how many were asked.
  scrub @39 () -> (error :Common.Error, servers :UInt32);
  # Admin, on the leader: plan moves that bring every live chunk server's usage within
  # `bandPct` (0: 10) points of the cluster mean, placement rules kept; unless `dryRun`, queue
  # them (replacing any earlier plan). `stop`: drop the queued moves (running ones finish).
  rebalance @40 (dryRun :Bool, bandPct :Float64, stop :Bool)
      -> (error :Common.Error, meanPct :Float64, balanced :Bool, moves :List(PlannedMove),
          usage :List(ServerUsage), status :RebalanceStatus);

  # --- locks (meta/ns/lock_table.h): fcntl record and OFD locks, flock ---
  # Sets (type 1 read, 2 write) or drops (type 0) a lock of `owner` of `session` on `inode`,
  # through the session's open handle `handle`. A conflicting lock of another owner: error
  # wouldBlock, unless `wait`: then the leader keeps the call until the lock is granted or about
  # `waitMs` passed (then wouldBlock: ask again). `req.seq` names the wait for cancelLockWait.
  setLock @41 (session :UInt64, inode :UInt64, lock :LockSpec, wait :Bool, waitMs :UInt32,
               req :Common.RequestId) -> (error :Common.Error);
  # The first lock of another owner that conflicts with `lock` (type 0 in `conflict`: none).
  getLock @42 (session :UInt64, inode :UInt64, lock :LockSpec)
      -> (error :Common.Error, conflict :LockSpec);
  # Drops locks of `session` on `inode`: of `owner` (0: any), taken through `handle` (0: any);
  # `posixOnly` keeps flock locks.
  releaseLocks @43 (session :UInt64, inode :UInt64, owner :UInt64, handle :UInt64,
                    posixOnly :Bool, req :Common.RequestId) -> (error :Common.Error);
  # Answers the waiting setLock of (session, seq) now with wouldBlock, if it still waits (a
  # signal interrupted the waiter). A grant already under way finishes: that call succeeds.
  cancelLockWait @44 (session :UInt64, seq :UInt64) -> (error :Common.Error);

  # --- mounts, coherence (meta/watch_queue.h) ---
  # Registers (or renews) `watcher` for `session` with the leader, replacing the one it had: the
  # leader then pushes invalidations for the changes other sessions make. Soft state of the
  # leader, lost with its leadership. `continued`: the session's watcher was registered with
  # this leader before and nothing queued for it was lost since (else the mount must drop all
  # it caches: changes may have gone unreported). A mount renews it often; one that has not had
  # a renewal answered within its lease (tessera-mount --watch-lease) stops trusting its caches.
  watch @45 (session :UInt64, watcher :Watcher)
      -> (error :Common.Error, continued :Bool);

  # --- data placement, continued ---
  # Drops the chunks of `inode` with first <= index < first + count (fallocate PUNCH_HOLE of
  # whole chunks): they read as holes, their shards go to garbage like a truncate's, the size
  # stays; mtime and ctime are set. count is capped at kMaxPunchChunks (fs/types.h).
  punchChunks @46 (inode :UInt64, first :UInt64, count :UInt64, req :Common.RequestId)
      -> (error :Common.Error, attr :Common.Attr);
  # Copy-on-write clone of chunks (FUSE copy_file_range, tessera clone): the chunks of `dst`
  # with dstFirst <= index < dstFirst + count are replaced by the chunks `src` has at
  # srcFirst + i, shared (no data is copied; the first write to either file copies the chunk it
  # writes). count is capped at kMaxCloneChunks (fs/types.h). The size of `dst` becomes `size`
  # (`exactSize`) or at least `size`. busy while a chunk of the range is leased to a writer: its
  # lease is recalled (the holder gives it back once its writes are synced), ask again; for a
  # few seconds meanwhile no other session gets a new lease on the source (so that a busy
  # writer cannot keep a clone waiting). With `sizeOfSrc` the size of `dst` becomes the
  # source's size as the clone applies (a whole file cloned at one point in time).
  clone @47 (session :UInt64, src :UInt64, dst :UInt64, srcFirst :UInt64, dstFirst :UInt64,
             count :UInt64, size :UInt64, exactSize :Bool, req :Common.RequestId,
             sizeOfSrc :Bool)
      -> (error :Common.Error, attr :Common.Attr);
}

struct LockSpec {
  owner @0 :UInt64;
  handle @1 :UInt64;
  flock @2 :Bool;
  type @3 :UInt8;     # 0 unlock / none, 1 read, 2 write
  start @4 :UInt64;
  end @5 :UInt64;     # inclusive
  pid @6 :UInt32;
}
