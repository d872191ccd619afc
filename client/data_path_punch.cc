// client/data_path_punch.cc — DataPath::punch: zeroing a range of a chunk and freeing the space
// of its whole stripes (fallocate PUNCH_HOLE, what a guest's discard becomes).
//
// Why this keeps DESIGN.md's rules. The caller holds the chunk's write lease, and each punch
// RPC carries its epoch: a chunk server refuses it once the lease moved on (rule 3). The
// bytes around the whole stripes are written as zeros by write(), with all its guarantees. The
// whole stripes are punched on every shard under the RangeLock of their rows, so none of this
// client's read-modify-writes of those rows interleaves; the parity of all-zero data is zero,
// so a punched row is a consistent stripe whose CRCs (zeros' table entries) check out. Before
// any of that, this client's write log of the chunk is applied and trimmed (drainLog): a
// record logged before the punch would otherwise be applied after it and bring old bytes back
// into the hole (records of an earlier lease holder were applied and trimmed when this client
// took the lease: recoverLog). A write logged after the punch started is newer than it and
// may land over it, as it would after a punch that had finished.
//
// A crash in the middle (no write hole, rule 2): a chunk server punches its shard file whole
// or answers an error (a half-punched file reads kCorruption in the blocks whose CRCs and data
// disagree: a missing shard, read around and repaired); the client marks every shard it could
// not punch stale before it returns, so nobody reads it. If the client itself dies between the
// punches of different shards, some cells of a row are zero and others old, and the parity is
// zero or old: the lease then lapses and the next holder re-syncs the chunk (ChunkDesc::resync:
// parity re-encoded from the data shards) before its first write, as after a full-stripe write
// cut short — every row then decodes to exactly what its data shards hold, each cell either
// its old content or zeros. A discard that never returned may leave such a mix; it never
// leaves a row that decodes to bytes nobody wrote.
#include <algorithm>
#include <cstring>

#include "client/data_path.h"
#include "fs/log.h"
#include "fs/rpc.h"
#include "fs/wire.h"

namespace tessera::client {

kj::Promise<Status> DataPath::punchShard(const ChunkDesc& chunk, int shard, Extent rows) {
  ServerId server = chunk.servers[shard];
  uint64_t chunkId = chunk.id.value, epoch = chunk.epoch;
  return servers_.get(server).then(
      [this, server, chunkId, epoch, shard,
       rows](Result<proto::ChunkService::Client> service) -> kj::Promise<Status> {
        if (!service) return Status(service.error());
        auto req = service->punchRequest();
        req.setChunk(chunkId);
        req.setShard(uint8_t(shard));
        req.setOffset(rows.lo);
        req.setLength(rows.hi - rows.lo);
        req.setEpoch(epoch);
        return withTimeout(timer_, ioTimeoutMs_, req.send())
            .then(
                [](capnp::Response<proto::ChunkService::PunchResults> r) {
                  auto st = fromWire(r.getError());
                  // A shard never created holds nothing to free.
                  if (!st && st.error().code == Errc::kNotFound) return Status();
                  return st;
                },
                [this, server, used = *service](kj::Exception&& e) mutable -> Status {
                  servers_.failed(server, used, e);
                  return errorFromException(e, "punch shard");
                });
      });
}

kj::Promise<Result<uint32_t>> DataPath::punch(const ChunkDesc& chunk, uint64_t off, uint64_t len,
                                              std::shared_ptr<FreshChunk> fresh, InodeId inode) {
  if (len == 0) return Result<uint32_t>(0u);
  KJ_REQUIRE(off + len <= kChunkSize, off, len);
  struct State {
    ChunkDesc chunk;
    PunchPlan plan;
    std::shared_ptr<FreshChunk> fresh;
    InodeId inode;
    kj::Array<kj::byte> zeros;
    uint32_t missed = 0;
    RangeLock::Guard guard;
  };
  auto st = kj::heap<State>();
  auto& s = *st;
  s.chunk = chunk;
  s.plan = punchPlan(chunk.layout, off, len);
  s.fresh = kj::mv(fresh);
  s.inode = inode;
  uint64_t edge = std::max(s.plan.head.hi - s.plan.head.lo, s.plan.tail.hi - s.plan.tail.lo);
  s.zeros = kj::heapArray<kj::byte>(edge);
  memset(s.zeros.begin(), 0, s.zeros.size());
  // Zeros over one edge, like any write; `s.chunk` learns the shards it missed.
  auto zeroEdge = [this, &s](Extent e) -> kj::Promise<Status> {
    if (e.empty()) return Status();
    return write(s.chunk, e.lo, s.zeros.slice(0, e.hi - e.lo), false, s.fresh, s.inode)
        .then([&s](Result<uint32_t> missed) -> Status {
          if (!missed) return missed.error();
          s.missed |= *missed;
          s.chunk.staleShards |= *missed;
          return Status();
        });
  };
  kj::Promise<Status> drained =
      logs_.count(chunk.id.value) ? drainLog(chunk.id) : kj::Promise<Status>(Status());
  return drained
      .then([zeroEdge, &s](Status d) -> kj::Promise<Status> {
        if (!d) return d;
        return zeroEdge(s.plan.head);
      })
      .then([zeroEdge, &s](Status h) -> kj::Promise<Status> {
        if (!h) return h;
        return zeroEdge(s.plan.tail);
      })
      .then([this, &s](Status edges) -> kj::Promise<Result<uint32_t>> {
        if (!edges) return Result<uint32_t>(edges.error());
        if (s.plan.rows.empty()) return Result<uint32_t>(s.missed);
        return rows_.lock(s.chunk.id.value, s.plan.rows.lo, s.plan.rows.hi)
            .then([this, &s](RangeLock::Guard guard) {
              s.guard = kj::mv(guard);
              kj::Vector<kj::Promise<Status>> punches;
              std::vector<int> shards;
              for (int j = 0; j < s.chunk.layout.shards(); ++j) {
                if (s.chunk.stale(j)) continue;  // missed earlier writes: rebuilt whole later
                punches.add(punchShard(s.chunk, j, s.plan.rows));
                shards.push_back(j);
              }
              return joinShardWrites(s.chunk, punches.releaseAsArray(), kj::mv(shards));
            })
            .then([&s](Result<uint32_t> r) -> Result<uint32_t> {
              s.guard.release();
              if (!r) return r;
              return *r | s.missed;
            });
      })
      .attach(kj::mv(st));
}

kj::Promise<Result<uint32_t>> DataPath::createShards(const ChunkDesc& chunk) {
  kj::Vector<kj::Promise<Status>> creates;
  std::vector<int> shards;
  for (int j = 0; j < chunk.layout.shards(); ++j) {
    if (chunk.stale(j)) continue;
    // An empty write creates the shard (see FreshChunk).
    creates.add(writeShard(chunk, j, 0, kj::ArrayPtr<const kj::byte>(), false, true));
    shards.push_back(j);
  }
  return joinShardWrites(chunk, creates.releaseAsArray(), kj::mv(shards));
}

}  // namespace tessera::client
