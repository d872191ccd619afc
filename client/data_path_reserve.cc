// client/data_path_reserve.cc — DataPath::reserve: disk space for a range of a chunk on every
// shard server, before anything is written there (fallocate mode 0 of a file).
//
// What it promises. Each server answers only after the shard file holds blocks for its part
// (and for the CRC table entries of those blocks) and has synced that (the reserve call,
// chunk/shard_file.h), so a later write anywhere inside the range — a direct one on the data
// shards and parity rows it touches, or the apply of logged small writes to the same blocks —
// finds its blocks allocated. What lies outside the shard files is not covered: the write log
// of small ec writes lives on each server's first disk, and a shard a write misses becomes
// stale and is rebuilt elsewhere by repair, stored sparse there (the rebuild skips all-zero
// pieces), without this reservation.
//
// Servers that cannot be asked (down, timed out, the shard missing there) are skipped: their
// shard is not reserved, the chunk is degraded already, and the first write that misses such a
// shard marks it stale, so repair rebuilds it rather than a write failing for lack of space. A
// server without room answers noSpace after giving back what the call took (the whole call
// then fails with kNoSpace and the caller drops what it placed for it). Reserving changes no
// byte, so a reservation cut short by a crash or a timeout leaves every stripe as it was.
#include <bit>

#include "client/data_path.h"
#include "fs/log.h"
#include "fs/rpc.h"
#include "fs/wire.h"

namespace tessera::client {

kj::Promise<Status> DataPath::reserveShard(const ChunkDesc& chunk, int shard, Extent range) {
  ServerId server = chunk.servers[shard];
  uint64_t chunkId = chunk.id.value, epoch = chunk.epoch;
  return servers_.get(server).then(
      [this, server, chunkId, epoch, shard,
       range](Result<proto::ChunkService::Client> service) -> kj::Promise<Status> {
        if (!service) return Status(service.error());
        auto req = service->reserveRequest();
        req.setChunk(chunkId);
        req.setShard(uint8_t(shard));
        req.setOffset(range.lo);
        req.setLength(range.hi - range.lo);
        req.setEpoch(epoch);
        return withTimeout(timer_, ioTimeoutMs_, req.send())
            .then([](capnp::Response<proto::ChunkService::ReserveResults> r) {
                    return fromWire(r.getError());
                  },
                  [this, server, used = *service](kj::Exception&& e) mutable -> Status {
                    // A server from before this call: it is fine, it just cannot reserve.
                    if (e.getType() == kj::Exception::Type::UNIMPLEMENTED) {
                      return Error{Errc::kNotSupported, "reserve: the chunk server is older"};
                    }
                    servers_.failed(server, used, e);
                    return errorFromException(e, "reserve on chunk server");
                  });
      });
}

kj::Promise<Result<DataPath::Reserved>> DataPath::reserve(const ChunkDesc& chunk, uint64_t off,
                                                          uint64_t len, bool create) {
  KJ_REQUIRE(off + len <= kChunkSize, off, len);
  struct Outcome {
    bool created = true;
    Status status;
  };
  std::vector<Extent> extents = shardExtents(chunk.layout, off, len);
  kj::Vector<kj::Promise<Outcome>> calls;
  std::vector<int> shards;
  for (int j = 0; j < chunk.layout.shards(); ++j) {
    if (chunk.stale(j)) continue;  // missed writes: rebuilt whole later, not written meanwhile
    // An empty write creates the shard (see FreshChunk), as createShards does.
    kj::Promise<Status> created =
        create ? writeShard(chunk, j, 0, kj::ArrayPtr<const kj::byte>(), false, true)
               : kj::Promise<Status>(Status());
    calls.add(created.then([this, chunk, j, range = extents[j]](Status c) -> kj::Promise<Outcome> {
      if (!c) return Outcome{false, c};
      if (range.empty()) return Outcome{true, Status()};
      return reserveShard(chunk, j, range).then([](Status s) { return Outcome{true, s}; });
    }));
    shards.push_back(j);
  }
  return kj::joinPromises(calls.releaseAsArray())
      .then([id = chunk.id, layout = chunk.layout, stale = chunk.staleShards, create,
             shards = kj::mv(shards)](kj::Array<Outcome> outcomes) -> Result<Reserved> {
        Reserved r;
        std::optional<Error> noSpace, first;
        for (size_t i = 0; i < outcomes.size(); ++i) {
          if (outcomes[i].status) continue;
          const Error& e = outcomes[i].status.error();
          // Fenced: another writer holds the lease now. Invalid: a bug, not a lost server.
          if (e.code == Errc::kStale || e.code == Errc::kInvalid) return e;
          if (e.code == Errc::kNoSpace) {
            if (!noSpace) noSpace = e;
            continue;
          }
          if (!outcomes[i].created) r.missed |= 1u << shards[i];
          r.unreserved |= 1u << shards[i];
          if (!first) first = e;
        }
        std::string chunkName = "chunk " + std::to_string(id.value);
        if (noSpace) return Error{Errc::kNoSpace, chunkName + ": " + noSpace->detail};
        int tolerable = layout.isEc() ? layout.m : layout.shards() - 1;
        if (create && std::popcount(r.missed | stale) > tolerable) {
          return Error{Errc::kUnavailable, chunkName + ": " +
                                               std::to_string(std::popcount(r.missed | stale)) +
                                               " of " + std::to_string(layout.shards()) +
                                               " shards could not be created (" +
                                               first->toString() + ")"};
        }
        if (r.unreserved) {
          log::warn(chunkName.c_str(), ": no space reserved on shards (mask ", r.unreserved,
                    "): ", first->toString().c_str());
        }
        return r;
      });
}

}  // namespace tessera::client
