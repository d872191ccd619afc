# fs/proto/common.capnp — types every Tessera component shares on the wire and on disk.
@0x9c8bad833e3207e9;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tessera::proto");

# The one error vocabulary of Tessera. fs/result.h mirrors it as tessera::Errc (same ordinals,
# checked by static_assert); the FUSE adapter maps it to errno.
enum Errc {
  ok @0;
  notFound @1;      # ENOENT
  exists @2;        # EEXIST
  notEmpty @3;      # ENOTEMPTY
  notDir @4;        # ENOTDIR
  isDir @5;         # EISDIR
  nameTooLong @6;   # ENAMETOOLONG
  invalid @7;       # EINVAL
  access @8;        # EACCES
  notPermitted @9;  # EPERM
  noSpace @10;      # ENOSPC
  io @11;           # EIO
  corruption @12;   # a checksum mismatch; EIO if it cannot be read around
  noData @13;       # ENODATA (no such xattr)
  range @14;        # ERANGE
  tooManyLinks @15; # EMLINK
  crossDevice @16;  # EXDEV
  notSupported @17; # EOPNOTSUPP
  stale @18;        # ESTALE
  unavailable @19;  # not enough servers reachable; EIO
  tooBig @20;       # EFBIG
  busy @21;         # EBUSY
  timedOut @22;     # ETIMEDOUT
  notLeader @23;    # ask another meta server
  wrongCluster @24; # a peer belongs to another cluster
  wouldBlock @25;   # EAGAIN: a conflicting lock is held
  interrupted @26;  # EINTR: a blocking wait was interrupted by a signal
  readOnly @27;     # EROFS: the inode is frozen (tessera.readonly), e.g. part of a snapshot
  lost @28;         # a block whose content is known nowhere (marked lost by a rebuild); EIO
}

struct Error {
  code @0 :Errc;
  detail @1 :Text;
  # With notLeader: HOST:PORT of the meta server that leads, when the answering one knows it.
  leaderHint @2 :Text;
}

# POSIX attributes of one inode. Times are nanoseconds since the Unix epoch.
struct Attr {
  inode @0 :UInt64;
  mode @1 :UInt32;      # S_IFMT type bits and permission bits
  nlink @2 :UInt32;
  uid @3 :UInt32;
  gid @4 :UInt32;
  rdev @5 :UInt32;
  size @6 :UInt64;
  blocks @7 :UInt64;    # 512-byte units
  atimeNs @8 :Int64;
  mtimeNs @9 :Int64;
  ctimeNs @10 :Int64;
  # Frozen (the virtual xattr tessera.readonly): nothing about the inode may change but that
  # flag. Mounts refuse opens for writing with EROFS instead of failing at the first write.
  readOnly @11 :Bool;
}

# How a chunk is spread over servers. ec: k data shards striped in 64 KiB cells plus m parity
# shards. replica: k = 1 and m = n - 1, every shard a full copy.
struct Layout {
  kind @0 :Kind;
  k @1 :UInt8;
  m @2 :UInt8;
  enum Kind {
    ec @0;
    replica @1;
  }
}

# One 64 MiB chunk of a file: where its k + m shards live. servers[i] holds shard i.
struct ChunkDesc {
  index @0 :UInt64;     # chunk number within the file (file offset / 64 MiB)
  id @1 :UInt64;        # cluster-unique, never reused
  version @2 :UInt64;
  layout @3 :Layout;
  servers @4 :List(UInt64);
  # Write lease (DESIGN.md rule 3): the epoch of the last lease granted on this chunk (it only
  # grows; chunk servers refuse writes with an older one) and the session holding it (0: none).
  epoch @5 :UInt64;
  leaseSession @6 :UInt64;
  # Bit i set: shard i missed writes (its server was unreachable) and must be rebuilt before it
  # is read again.
  staleShards @7 :UInt32;
  # The last lease holder let go without a clean release (it died, or its lease was taken over):
  # it may have left rows half written. The next holder re-syncs them before it writes.
  resync @8 :Bool;
  # The chunk is shared by more than one file (a clone, meta/ns/ops/clone.cc): no lease is
  # granted on it; the first writer of any of the files gets a private copy first.
  shared @9 :Bool;
  # Bit i set: MiB i of the chunk has been written (or reserved by fallocate) and not punched
  # since; what `st_blocks` counts (meta/ns/records.cc attrOf).
  written @10 :UInt64;
}

# Names one mutating request of a client session, so that the state machine applies it once
# however often it is retried (Raft dissertation §6.3). Seqs count up from 1 per session;
# `ackedBelow` says the client has every reply for seqs below it, which may be forgotten.
struct RequestId {
  session @0 :UInt64;
  seq @1 :UInt64;
  ackedBelow @2 :UInt64;
}

struct DirEntry {
  name @0 :Text;
  cookie @1 :UInt64;    # pass back to readdir to continue after this entry
  attr @2 :Attr;        # only inode and the S_IFMT bits of mode are set unless readdirplus
}
