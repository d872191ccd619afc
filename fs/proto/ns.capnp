# fs/proto/ns.capnp — the namespace state machine: the commands it applies (Op) and the records
# it keeps in LevelDB. An Op is complete: the proposer puts the time and every new id into it, so
# applying it reads nothing but the store and gives the same result on every replica.
@0x984ae9d3fd65ae61;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tessera::proto");
using Common = import "common.capnp";

struct Op {
  nowNs @0 :Int64;
  # Who asked, for exactly-once application (fs/proto/common.capnp RequestId); session 0 for
  # ops the meta server makes itself.
  session @52 :UInt64;
  seq @53 :UInt64;
  ackedBelow @54 :UInt64;
  union {
    init :group {             # format an empty store: root directory and cluster id
      clusterId @1 :Text;
      rootPolicy @2 :Common.Layout;
    }
    mknod :group {
      parent @3 :UInt64;
      name @4 :Text;
      mode @5 :UInt32;
      rdev @6 :UInt32;
      uid @7 :UInt32;
      gid @8 :UInt32;
      target @9 :Text;
      newInode @10 :UInt64;
      session @11 :UInt64;    # != 0: also open the new file for this session
    }
    link :group {
      inode @12 :UInt64;
      newParent @13 :UInt64;
      newName @14 :Text;
    }
    unlink :group {
      parent @15 :UInt64;
      name @16 :Text;
      dir @17 :Bool;          # rmdir
    }
    rename :group {
      parent @18 :UInt64;
      name @19 :Text;
      newParent @20 :UInt64;
      newName @21 :Text;
      flags @22 :UInt32;
    }
    setattr :group {
      inode @23 :UInt64;
      valid @24 :UInt32;
      mode @25 :UInt32;
      uid @26 :UInt32;
      gid @27 :UInt32;
      size @28 :UInt64;
      atimeNs @29 :Int64;
      mtimeNs @30 :Int64;
      # A truncate drops the chunks past the new end. One leased to another session is refused
      # (busy: the leader recalls the lease first) unless its holder is listed here, which the
      # leader does for a holder silent past the lease timeout.
      lapsed @114 :List(UInt64);
    }
    setxattr :group {
      inode @31 :UInt64;
      name @32 :Text;
      value @33 :Data;
      flags @34 :UInt32;
    }
    removexattr :group {
      inode @35 :UInt64;
      name @36 :Text;
    }
    open :group {
      session @37 :UInt64;
      inode @38 :UInt64;
    }
    release :group {
      session @39 :UInt64;
      inode @40 :UInt64;
    }
    allocChunk :group {
      inode @41 :UInt64;
      chunk @42 :Common.ChunkDesc;   # id, layout and servers chosen by the proposer
      # != 0: also grant this session the write lease (a new grant raises the epoch); refused
      # (busy) while another session holds it, unless that session is `replace`, which the
      # leader found silent past the lease timeout.
      leaseSession @60 :UInt64;
      replace @61 :UInt64;
    }
    commitWrite :group {
      inode @43 :UInt64;
      size @44 :UInt64;
      mtimeNs @45 :Int64;
      # MiBs written (`usageSet`) and punched (`usageClear`) in chunk `usageChunks[i]` since
      # the last commit (ChunkDesc.written); chunks that no longer exist are skipped.
      usageChunks @111 :List(UInt64);
      usageSet @112 :List(UInt64);
      usageClear @113 :List(UInt64);
    }
    openSession :group {
      session @46 :UInt64;
      host @47 :Text;
      mountpoint @48 :Text;
    }
    registerServer :group {
      server @49 :ServerRecord;
      # The proposer gave `server.id` to a server that asked for a new id. If a record already
      # carries `server.token`, that record is the server's: it is updated instead and its id is
      # the answer (Applied::server), so retries and leader changes never make a second id.
      newId @81 :Bool;
    }
    removed :group {                # a chunk server deleted these garbage chunks' shards
      server @50 :UInt64;
      chunks @51 :List(UInt64);
    }
    setMember :group {              # where a meta server of the Raft group listens
      member @55 :UInt64;
      address @56 :Text;
      remove @57 :Bool;
    }
    releaseLeases :group {          # the session gives up its leases on chunks of the inode
      session @62 :UInt64;
      inode @63 :UInt64;
      indexes @64 :List(UInt64);    # empty: every chunk of the inode
      epochs @80 :List(UInt64);     # if not empty, one per index: drop only at that epoch
    }
    markStale :group {              # the lease holder could not write these shards
      inode @65 :UInt64;
      index @66 :UInt64;
      epoch @67 :UInt64;
      shards @68 :UInt32;
      resynced @69 :Bool;           # and it re-synced the chunk: clear its resync flag
    }
    expireSession :group {          # the leader found the session silent past its timeout
      session @58 :UInt64;
      # Silent since before this (the leader's view); a session whose record shows activity at
      # or after it is alive after all and is kept.
      silentSinceNs @59 :Int64;
    }
    replaceShard :group {           # repair rebuilt a shard elsewhere: switch to it, if unchanged
      inode @70 :UInt64;
      index @71 :UInt64;
      chunk @72 :UInt64;
      shard @73 :UInt8;
      # The chunk's epoch and servers when the copy started: the switch happens only if they
      # are still these and no write lease is held (a lease grant bumps the epoch).
      epoch @74 :UInt64;
      servers @75 :List(UInt64);
      target @76 :UInt64;           # holds the rebuilt shard; not one of `servers`
    }
    setServerState :group {         # tessera drain / remove of a chunk server
      server @77 :UInt64;
      draining @78 :Bool;
      # Forget the server; refused (notEmpty) while any chunk or garbage record names it.
      remove @79 :Bool;
    }
    # A POSIX/OFD record lock or a flock lock (meta/ns/lock_table.h) set, changed or dropped
    # (type unlock) by lock owner `owner` of `session`, taken through the session's open handle
    # `handle`. Conflicting: error wouldBlock, nothing changes.
    setLock :group {
      session @82 :UInt64;
      inode @83 :UInt64;
      owner @84 :UInt64;
      handle @85 :UInt64;
      flock @86 :Bool;
      type @87 :UInt8;              # 0 unlock, 1 read (shared), 2 write (exclusive)
      start @88 :UInt64;
      end @89 :UInt64;              # inclusive; kLockToEnd: to the end of any file
      pid @90 :UInt32;
    }
    # Drops the locks of `session` on `inode` that match: taken by `owner` (0: any owner) and
    # through `handle` (0: any handle); `posixOnly` leaves flock locks alone (a close: flush).
    releaseLocks :group {
      session @91 :UInt64;
      inode @92 :UInt64;
      owner @93 :UInt64;
      handle @94 :UInt64;
      posixOnly @95 :Bool;
    }
    punchChunks :group {            # fallocate PUNCH_HOLE of whole chunks
      inode @96 :UInt64;
      first @97 :UInt64;
      count @98 :UInt64;            # chunks first <= index < first + count go to garbage
      lapsed @115 :List(UInt64);    # as setattr's
    }
    # Copy-on-write clone (meta/ns/ops/clone.cc): the chunks of `dst` with dstFirst <= index <
    # dstFirst + count go (as a punch's do), and every chunk `src` has at srcFirst + i becomes
    # shared with `dst` at dstFirst + i. Refused (busy) while a chunk of the source range is
    # leased or needs a re-sync, or one of the destination range is leased to another session.
    # The size of `dst` becomes `size` if `exactSize`, else grows to `size` if smaller.
    cloneChunks :group {
      src @99 :UInt64;
      dst @100 :UInt64;
      srcFirst @101 :UInt64;
      dstFirst @102 :UInt64;
      count @103 :UInt64;
      size @104 :UInt64;
      exactSize @105 :Bool;
      session @106 :UInt64;         # who asks: its own leases in the destination range go
      sizeOfSrc @116 :Bool;         # the size of `dst` becomes the source's (a whole-file clone)
    }
    # The leader copied the shards of shared chunk `old` (each on its own server) to chunk
    # `chunk.id`: the file's chunk at `index` becomes that private copy, if it is still `old`.
    cowChunk :group {
      inode @107 :UInt64;
      index @108 :UInt64;
      old @109 :UInt64;
      chunk @110 :Common.ChunkDesc;
    }
  }
}

# --- records in LevelDB (keys in meta/ns/keys.h) ---

struct InodeRecord {
  attr @0 :Common.Attr;
  policy @1 :Common.Layout;   # layout of new chunks (files) or of new children (directories)
  target @2 :Text;            # symlink target
  nextCookie @3 :UInt64;      # directories: readdir cookie of the next entry added
  parent @4 :UInt64;          # directories: the one directory that holds this one
  chunkCount @5 :UInt64;      # regular files: chunk records that exist
  # Counts of the inode's open-handle and xattr records, so that deleting an inode needs no
  # scan (a LevelDB scan of a key range full of deleted keys walks every tombstone).
  openSessions @6 :UInt64;
  xattrCount @7 :UInt64;
  # Set and cleared only through the virtual xattr tessera.readonly (meta/ns/ops/xattr.cc);
  # while set, every op that would change the inode, its entries (directories) or its chunks
  # (files) fails with readOnly. Not kept in `attr`: attrOf() copies it into Attr.readOnly.
  frozen @8 :Bool;
  # Regular files: MiBs written in all its chunks (the bits of ChunkDesc.written), which is what
  # st_blocks counts when `usageTracked`; files from before it count whole chunks.
  writtenMiB @9 :UInt64;
  usageTracked @10 :Bool;
}

struct DentryRecord {
  inode @0 :UInt64;
  type @1 :UInt32;            # S_IFMT bits of the child's mode
  cookie @2 :UInt64;
}

struct ServerRecord {
  id @0 :UInt64;
  address @1 :Text;
  site @2 :Text;
  rack @3 :Text;
  host @4 :Text;
  draining @5 :Bool;            # tessera drain: its shards move off, nothing new goes there
  token @6 :Text;               # the identity token of its data directory; empty in old records
}

# A chunk of a deleted file (or of a truncated tail) whose shards are still on servers.
struct GarbageRecord {
  chunk @0 :Common.ChunkDesc;
  pending @1 :List(UInt64);     # servers that have not yet confirmed deletion
}

# A mount's session, as opened by openSession.
struct SessionRecord {
  id @0 :UInt64;
  host @1 :Text;
  mountpoint @2 :Text;
  openedNs @3 :Int64;
  lastActiveNs @4 :Int64;   # time of its last request
  lowestReply @5 :UInt64;   # replies kept for seqs >= this (those below were acknowledged)
}

# A lock (key: meta/ns/keys.h 'L'); its start, owner, session and kind are in the key.
struct LockRecord {
  end @0 :UInt64;
  type @1 :UInt8;             # 1 read, 2 write
  pid @2 :UInt32;
  handle @3 :UInt64;          # the session's open handle it was taken through
}

# The answer a request got the first time it was applied, kept until the client acknowledges
# it, so a retry gets the same answer instead of a second application.
struct StoredReply {
  error @0 :Common.Error;
  attr @1 :Common.Attr;
  hasChunk @2 :Bool;
  chunk @3 :Common.ChunkDesc;
  created @4 :Bool;           # allocChunk placed the chunk (Applied::created)
}
