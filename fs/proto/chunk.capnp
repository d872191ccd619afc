# fs/proto/chunk.capnp — the chunk server's data RPC. Every offset and length is a multiple of
# 4 KiB (one checksummed block); `crcs` carries one CRC32C per block, computed by the writer and
# verified by the server before it stores anything, and by the reader after it reads.
@0xde0125fa71f72a4b;
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tessera::proto");
using Common = import "common.capnp";

struct ShardRef {
  chunk @0 :UInt64;
  shard @1 :UInt8;
}

interface ChunkService {
  # Store `data` at `offset` of the shard. With `sync`, the reply comes after fdatasync.
  # `epoch`: of the writer's lease on the chunk (DESIGN.md rule 3); a write, truncate or create
  # with an epoch older than the newest this server has seen for the chunk is refused with
  # error stale, and a newer one is made durable here before the write is done.
  # `intent`: what to do if the shard is not here (ShardIntent).
  write @0 (chunk :UInt64, shard :UInt8, layout :Common.Layout, offset :UInt64, data :Data,
            crcs :List(UInt32), sync :Bool, epoch :UInt64, intent :ShardIntent)
      -> (error :Common.Error);
  # Read `length` bytes; beyond the end of the shard reads zeros. notFound if the shard does not
  # exist here; corruption if a stored block fails its CRC; lost if a block is marked lost
  # (its content is known nowhere) and, unless `raw`, no record of this server's chunk log
  # holds it. Blocks with an unapplied record in
  # this server's chunk log (logAppend) read as the newest record, unless `raw`: the stored
  # bytes, which the stripe's parity agrees with. With `lostAsStored` (and `raw`), a block marked
  # lost (fs/lost_block.h) reads as the pattern it holds, with its CRC, instead of failing: for
  # a writer that encodes parity over the stored bytes.
  read @1 (chunk :UInt64, shard :UInt8, offset :UInt64, length :UInt32, raw :Bool,
           lostAsStored :Bool)
      -> (error :Common.Error, data :Data, crcs :List(UInt32));
  # Make every listed shard durable (fdatasync).
  sync @2 (shards :List(ShardRef)) -> (error :Common.Error);
  # Cut the shard to `length` bytes (a multiple of 4 KiB); notFound if absent.
  truncate @3 (chunk :UInt64, shard :UInt8, length :UInt64, epoch :UInt64)
      -> (error :Common.Error);
  # Create an empty shard if it does not exist, so that a later read of an untouched range
  # returns zeros rather than notFound.
  create @4 (chunk :UInt64, shard :UInt8, layout :Common.Layout, epoch :UInt64)
      -> (error :Common.Error);
  # Delete every shard of the listed chunks held here. Absent shards are not an error.
  remove @5 (chunks :List(UInt64)) -> (error :Common.Error);
  # A new lease holder fences the chunk: from the reply on, this server refuses writes to the
  # chunk with an older epoch, also after a restart (the epoch is on disk before the reply).
  # `logRecords`: how many records of the chunk this server's log holds (the new holder applies
  # them: logFetch).
  fence @6 (chunk :UInt64, epoch :UInt64) -> (error :Common.Error, logRecords :UInt32);
  # Rebuild shard `shard` of `chunk` here from the other shards (repair, on the meta leader's
  # order). `sources[i]` is "HOST:PORT" of the chunk server holding shard i, "" if shard i is
  # unusable (lost, stale, damaged, or the one being rebuilt). The server reads the rows
  # [0, length) it needs from healthy sources (CRCs checked, a failing source replaced by
  # another), decodes the shard (a plain copy for replica layouts), stores it locally in place
  # of any shard of `chunk` it held, and fdatasyncs before replying. `length`: a multiple of
  # 4 KiB, at most the shard size of the layout. busy if the server runs as many rebuilds as
  # it allows; unavailable if fewer than k sources could be read. `bytes`: bytes rebuilt.
  rebuild @7 (chunk :UInt64, shard :UInt8, layout :Common.Layout, sources :List(Text),
              length :UInt64) -> (error :Common.Error, bytes :UInt64);

  # The per-chunk write log of DESIGN.md rule 2 (chunk/chunk_log.h). Appends whole blocks of
  # shard `shard` at `offset` as record (epoch, seq) of the chunk, durably (fdatasync, group
  # commit) before replying. Refused like a write when the epoch is fenced (stale); busy when
  # the log holds too much unapplied data.
  logAppend @8 (chunk :UInt64, shard :UInt8, layout :Common.Layout, offset :UInt64, data :Data,
                crcs :List(UInt32), epoch :UInt64, seq :UInt64) -> (error :Common.Error);
  # Drops the chunk's records up to (epoch, seq) inclusive (applied to the stripes), durably.
  logTrim @9 (chunk :UInt64, epoch :UInt64, seq :UInt64) -> (error :Common.Error);
  # The chunk's records after (afterEpoch, afterSeq) of shard `shard` (255: every shard)
  # overlapping shard range [offset, offset + length), in (epoch, seq) order, at most
  # `maxBytes` of data (but at least one record); `more` if some were left out (ask again
  # after the last one returned).
  logFetch @10 (chunk :UInt64, shard :UInt8, offset :UInt64, length :UInt64, maxBytes :UInt32,
                afterEpoch :UInt64, afterSeq :UInt64)
      -> (error :Common.Error, records :List(LogRecord), more :Bool);
  # Several ranges of one shard in one round trip (the write log's applier): `data` holds the
  # ranges one after another, `crcs` their blocks'. Each range as `read` (`raw` and
  # `lostAsStored` likewise; a shard absent here is notFound); at most kMaxReadBytes in all.
  readV @11 (chunk :UInt64, shard :UInt8, ranges :List(Range), raw :Bool, lostAsStored :Bool)
      -> (error :Common.Error, data :Data, crcs :List(UInt32));
  # Stores every piece as `write` would (checked first, all of them: a malformed piece stores
  # nothing), then with `sync` fdatasyncs once.
  writeV @12 (chunk :UInt64, shard :UInt8, layout :Common.Layout, pieces :List(Piece),
              sync :Bool, epoch :UInt64, intent :ShardIntent) -> (error :Common.Error);
  # Frees shard range [offset, offset + length) (fallocate PUNCH_HOLE on the shard file): it
  # reads as zeros afterwards, with valid CRCs, and is durable (fdatasync) before the reply.
  # Fenced like a write (stale for an older epoch); notFound if the shard is not here.
  punch @13 (chunk :UInt64, shard :UInt8, offset :UInt64, length :UInt64, epoch :UInt64)
      -> (error :Common.Error);
  # Copies this server's shard `shard` of chunk `from` to the same shard of chunk `to`, here
  # (copy-on-write of a shared chunk, on the meta leader's order): shard range [0, length) is
  # read (CRCs checked), the blocks that are not all zeros are written (the copy stays sparse)
  # and the copy is fdatasync'ed before the reply. Whatever `to` held here before is replaced.
  # notFound if `from` has no such shard here; busy if the write log holds records of `from`
  # (not applied to the stripes yet); corruption if a block fails its CRC. `bytes`: written.
  copy @14 (from :UInt64, to :UInt64, shard :UInt8, layout :Common.Layout, length :UInt64)
      -> (error :Common.Error, bytes :UInt64);
  # Reserves disk space for shard range [offset, offset + length) (fallocate mode 0 of the
  # shard file's blocks and of their CRC table entries: chunk/shard_file.h), so that later
  # writes into the range cannot fail for lack of space; no byte changes (unwritten blocks still
  # read as zeros). Durable (fdatasync) before the reply. Fenced like a write (stale for an
  # older epoch); notFound if the shard is not here; invalid for a range that is not whole
  # blocks or reaches past what a shard of its layout holds; noSpace if the disk has no room
  # for all of it (what the call took is given back, and the disk counts as full, as after a
  # write that found no room); notSupported if the disk's file system cannot reserve space.
  # `bytes`: disk space the call took.
  reserve @15 (chunk :UInt64, shard :UInt8, offset :UInt64, length :UInt64, epoch :UInt64)
      -> (error :Common.Error, bytes :UInt64);
}
# What a write does when its shard is not on the server. A shard is created once, by the first
# write of the chunk's placer (or by repair and copies, on the server itself); any later write
# finds it, or finds it gone: a shard lost with its disk, even one the server no longer knows
# of (its directory was left out at start, or could not be opened), is never created anew,
# holding nothing but that write's blocks and zeros that read as valid.
enum ShardIntent {
  legacy @0;    # a writer from before this field: creates it, unless a data directory of the
                # server could not be opened at start (then the write fails: io)
  existing @1;  # notFound: the writer marks the shard stale, and repair rebuilds it whole
  create @2;    # the first write of a chunk the writer placed: creates the shard
}

struct Range {
  offset @0 :UInt64;
  length @1 :UInt32;
}
struct Piece {
  offset @0 :UInt64;
  data @1 :Data;
  crcs @2 :List(UInt32);
}

struct LogRecord {
  shard @0 :UInt8;
  epoch @1 :UInt64;
  seq @2 :UInt64;
  offset @3 :UInt64;
  data @4 :Data;
  crcs @5 :List(UInt32);
}
