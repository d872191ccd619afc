#include "chunk/chunk_service.h"
#include "chunk/shard_copy.h"

#include <capnp/orphan.h>
#include <kj/vector.h>

#include <map>
#include <set>
#include <unordered_set>

#include "fs/checksum.h"
#include "fs/log.h"
#include "fs/lost_block.h"
#include "fs/rpc.h"
#include "fs/wire.h"

namespace tessera::chunk {
namespace {

Status invalid(std::string what) { return Error{Errc::kInvalid, std::move(what)}; }

// A shard named on the wire: a real chunk id and an index any layout could have.
Result<ShardKey> shardKey(uint64_t chunk, uint8_t shard) {
  if (chunk == 0) return Error{Errc::kInvalid, "chunk id 0"};
  if (shard >= kMaxShards) {
    return Error{Errc::kInvalid, "shard index " + std::to_string(shard) + " out of range"};
  }
  return ShardKey{ChunkId(chunk), shard};
}

// The layout of a write or create, and that `key` is one of its shards.
Result<Layout> shardLayout(ShardKey key, proto::Layout::Reader wire) {
  auto layout = fromWire(wire);
  if (!layout) return layout;
  if (key.shard >= layout->shards()) {
    return Error{Errc::kInvalid,
                 "shard " + key.toString() + " is not part of " + layout->toString()};
  }
  return layout;
}

// What a write or a log append carries: blocks of one shard at an offset, with their CRCs,
// checked for shape (the CRCs themselves are checked where the blocks are stored).
struct Blocks {
  ShardKey key;
  Layout layout;
  kj::Array<uint32_t> crcs;
};
template <typename Params>
Result<Blocks> blocksOf(Params p) {
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return key.error();
  auto layout = shardLayout(*key, p.getLayout());
  if (!layout) return layout.error();
  auto data = p.getData();
  if (auto s = checkRange(p.getOffset(), data.size()); !s) return s.error();
  auto wire = p.getCrcs();
  if (wire.size() != data.size() / kBlockSize) {
    return Error{Errc::kInvalid, std::to_string(wire.size()) + " CRCs for " +
                                     std::to_string(data.size() / kBlockSize) + " blocks"};
  }
  auto crcs = kj::heapArray<uint32_t>(wire.size());
  for (size_t i = 0; i < crcs.size(); ++i) crcs[i] = wire[i];
  return Blocks{*key, *layout, kj::mv(crcs)};
}

kj::Promise<Status> joinStatusList(kj::Array<kj::Promise<Status>> all) {
  return kj::joinPromises(kj::mv(all)).then([](kj::Array<Status> done) {
    for (auto& d : done) {
      if (!d) return d;
    }
    return Status();
  });
}

template <typename Context>
kj::Promise<void> reply(Context& context, const Status& s) {
  setError(context.getResults(), s);
  return kj::READY_NOW;
}

// Answers a read or readV with `s` and, unless it failed, the verified bytes and their CRCs.
template <typename Results>
void answerRead(Results results, const Status& s, capnp::Orphan<capnp::Data> data,
                kj::ArrayPtr<const uint32_t> crcs) {
  setError(results, s);
  // The client reads around the block; the operator should still hear of a rotting disk.
  if (s.code() == Errc::kCorruption || s.code() == Errc::kLost) log::warn(s.error().detail.c_str());
  if (!s) return;
  results.adoptData(kj::mv(data));
  auto list = results.initCrcs(crcs.size());
  for (size_t i = 0; i < crcs.size(); ++i) list.set(i, crcs[i]);
}

// What a write does when its shard is not here. A value this server does not know (from a
// newer writer) creates nothing.
NewShard newShardOf(proto::ShardIntent intent) {
  switch (intent) {
    case proto::ShardIntent::LEGACY:
      return NewShard::kLegacy;
    case proto::ShardIntent::EXISTING:
      return NewShard::kRefuse;
    case proto::ShardIntent::CREATE:
      return NewShard::kCreate;
  }
  return NewShard::kRefuse;
}

}  // namespace

ChunkServiceImpl::ChunkServiceImpl(DiskSet& disks, DiskLogs& logs, Rebuilder* rebuilder)
    : disk_(disks), logs_(logs), rebuilder_(rebuilder) {}

kj::Promise<void> ChunkServiceImpl::write(WriteContext context) {
  auto p = context.getParams();
  auto b = blocksOf(p);
  if (!b) return reply(context, b.error());
  auto key = &b->key;
  auto layout = &b->layout;
  auto data = p.getData();
  auto crcs = kj::mv(b->crcs);
  // `data` points into the request, which lives until this call's promise is done.
  return logs_.admit(key->chunk, p.getEpoch())
      .then([this, key = *key, layout = *layout, offset = p.getOffset(), data,
             crcs = kj::mv(crcs), sync = p.getSync(),
             ifAbsent = newShardOf(p.getIntent())](Status admitted) mutable {
        if (!admitted) return kj::Promise<Status>(admitted);
        return disk_.write(key, layout, offset, data, kj::mv(crcs), sync, ifAbsent);
      })
      .then([context, key = *key](Status s) mutable {
        if (s.code() == Errc::kCorruption) {
          log::warn("refused a write to shard ", key.toString().c_str(), ": ",
                    s.error().detail.c_str());
        }
        setError(context.getResults(), s);
      });
}

kj::Promise<void> ChunkServiceImpl::read(ReadContext context) {
  auto p = context.getParams();
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  uint64_t length = p.getLength();
  if (auto s = checkRange(p.getOffset(), length); !s) return reply(context, s);
  if (length > kMaxReadBytes) {
    return reply(context, invalid("read of " + std::to_string(length) + " bytes (at most " +
                                  std::to_string(kMaxReadBytes) + ")"));
  }
  // Read straight into the reply message; only a verified buffer is adopted into it. A failed
  // read's orphan is zeroed when it is dropped.
  auto results = context.getResults();
  auto data = capnp::Orphanage::getForMessageContaining(results).newOrphan<capnp::Data>(length);
  auto crcs = kj::heapArray<uint32_t>(length / kBlockSize);
  auto out = data.get();
  auto promise = disk_.read(*key, p.getOffset(), out, crcs, p.getRaw() && p.getLostAsStored());
  if (!p.getRaw() && logs_.count(key->chunk) > 0) {
    promise = promise.then([this, key = *key, offset = p.getOffset(), out, crcs = crcs.asPtr()](
                               Status s) { return overlayLog(key, offset, out, crcs, s); });
  }
  return promise.then([context, data = kj::mv(data), crcs = kj::mv(crcs)](Status s) mutable {
    answerRead(context.getResults(), s, kj::mv(data), crcs);
  });
}

kj::Promise<Status> ChunkServiceImpl::overlayLog(ShardKey key, uint64_t offset,
                                                 kj::ArrayPtr<kj::byte> out,
                                                 kj::ArrayPtr<uint32_t> crcs, Status s) {
  if (s.code() != Errc::kLost || logs_.count(key.chunk) == 0) {
    return overlayRead(key, offset, out, crcs, s);
  }
  // A record may hold a lost block's content (a dead writer's, not applied yet): read the
  // blocks as stored, and what still holds the lost pattern under the records is lost.
  return disk_.read(key, offset, out, crcs, true)
      .then([this, key, offset, out, crcs](Status s) mutable -> Status {
        if (!s) return s;
        std::vector<uint64_t> pattern;
        for (uint64_t at = 0; at < out.size(); at += kBlockSize) {
          if (isLostBlock(out.begin() + at)) pattern.push_back(offset + at);
        }
        s = overlayRead(key, offset, out, crcs, s);
        for (uint64_t at : pattern) {
          if (logs_.records(key.chunk, key.shard, at, at + kBlockSize).empty()) {
            memset(out.begin(), 0, out.size());
            return Error{Errc::kLost, "shard " + key.toString() + ": block " +
                                          std::to_string(at / kBlockSize) + " (offset " +
                                          std::to_string(at) + ") is lost and in no record"};
          }
        }
        return s;
      });
}

Status ChunkServiceImpl::overlayRead(ShardKey key, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                                     kj::ArrayPtr<uint32_t> crcs, Status s) {
  // Unapplied log records are newer than the stored blocks (checked after the read: a record
  // appended while it ran is newer still). A shard this server does not hold reads as zeros
  // under the records of it.
  if ((s || s.code() == Errc::kNotFound) && logs_.count(key.chunk) > 0) {
    if (!s) {
      memset(out.begin(), 0, out.size());
      for (auto& c : crcs) c = zeroBlockCrc();
    }
    logs_.overlay(key.chunk, key.shard, offset, out, crcs);
    if (!s && !logs_.records(key.chunk, key.shard, offset, offset + crcs.size() * kBlockSize).empty()) {
      s = Status();
    }
  }
  return s;
}

kj::Promise<void> ChunkServiceImpl::readV(ReadVContext context) {
  auto p = context.getParams();
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  auto wire = p.getRanges();
  if (wire.size() > kMaxVectorParts) {
    return reply(context, invalid(std::to_string(wire.size()) + " ranges (at most " +
                                  std::to_string(kMaxVectorParts) + ")"));
  }
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // (offset, length)
  uint64_t total = 0;
  for (auto r : wire) {
    if (auto s = checkRange(r.getOffset(), r.getLength()); !s) return reply(context, s);
    total += r.getLength();
    if (total > kMaxReadBytes) {
      return reply(context, invalid("read of more than " + std::to_string(kMaxReadBytes) + " bytes"));
    }
    ranges.emplace_back(r.getOffset(), r.getLength());
  }
  auto results = context.getResults();
  auto data = capnp::Orphanage::getForMessageContaining(results).newOrphan<capnp::Data>(total);
  auto crcs = kj::heapArray<uint32_t>(total / kBlockSize);
  kj::Vector<kj::Promise<Status>> reads;
  uint64_t at = 0;
  bool lostAsStored = p.getRaw() && p.getLostAsStored();
  bool overlay = !p.getRaw() && logs_.count(key->chunk) > 0;
  for (auto [offset, length] : ranges) {
    auto out = data.get().slice(at, at + length);
    auto outCrcs = crcs.slice(at / kBlockSize, (at + length) / kBlockSize);
    auto read = disk_.read(*key, offset, out, outCrcs, lostAsStored);
    if (overlay) {
      read = read.then([this, key = *key, offset = offset, out, outCrcs](Status s) {
        return overlayLog(key, offset, out, outCrcs, s);
      });
    }
    reads.add(kj::mv(read));
    at += length;
  }
  return kj::joinPromises(reads.releaseAsArray())
      .then([context, data = kj::mv(data), crcs = kj::mv(crcs)](kj::Array<Status> done) mutable {
        Status s;
        for (auto& r : done) {
          if (!r && s) s = r;
        }
        answerRead(context.getResults(), s, kj::mv(data), crcs);
      });
}

kj::Promise<void> ChunkServiceImpl::writeV(WriteVContext context) {
  auto p = context.getParams();
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  auto layout = shardLayout(*key, p.getLayout());
  if (!layout) return reply(context, layout.error());
  auto wire = p.getPieces();
  if (wire.size() > kMaxVectorParts) {
    return reply(context, invalid(std::to_string(wire.size()) + " pieces (at most " +
                                  std::to_string(kMaxVectorParts) + ")"));
  }
  // Every piece is checked, CRCs included, before any is stored.
  struct Piece {
    uint64_t offset;
    kj::ArrayPtr<const kj::byte> data;  // into the request, alive until the reply
    kj::Array<uint32_t> crcs;
  };
  std::vector<Piece> pieces;
  for (auto w : wire) {
    auto data = w.getData();
    if (data.size() == 0) return reply(context, invalid("empty piece"));
    if (auto s = checkRange(w.getOffset(), data.size()); !s) return reply(context, s);
    auto list = w.getCrcs();
    auto crcs = kj::heapArray<uint32_t>(list.size());
    for (size_t i = 0; i < crcs.size(); ++i) crcs[i] = list[i];
    if (auto s = verifyBlocks(w.getOffset(), data, crcs); !s) {
      log::warn("refused a write to shard ", key->toString().c_str(), ": ",
                s.error().detail.c_str());
      return reply(context, s);
    }
    pieces.push_back(Piece{w.getOffset(), data, kj::mv(crcs)});
  }
  return logs_.admit(key->chunk, p.getEpoch())
      .then([this, key = *key, layout = *layout, pieces = kj::mv(pieces), sync = p.getSync(),
             ifAbsent = newShardOf(p.getIntent())](Status admitted) mutable
                -> kj::Promise<Status> {
        if (!admitted) return admitted;
        kj::Vector<kj::Promise<Status>> writes;
        for (auto& piece : pieces) {
          writes.add(disk_.write(key, layout, piece.offset, piece.data, kj::mv(piece.crcs), false,
                                 ifAbsent));
        }
        return joinStatusList(writes.releaseAsArray()).then([this, key, sync](Status s) {
          if (!s || !sync) return kj::Promise<Status>(s);
          return disk_.sync(kj::heapArray<ShardKey>({key}));
        });
      })
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> ChunkServiceImpl::sync(SyncContext context) {
  auto refs = context.getParams().getShards();
  if (refs.size() > kMaxSyncShards) {
    return reply(context, invalid("sync of " + std::to_string(refs.size()) + " shards (at most " +
                                  std::to_string(kMaxSyncShards) + ")"));
  }
  kj::Vector<ShardKey> keys(refs.size());
  std::unordered_set<ShardKey> seen;
  for (auto ref : refs) {
    auto key = shardKey(ref.getChunk(), ref.getShard());
    if (!key) return reply(context, key.error());
    if (seen.insert(*key).second) keys.add(*key);
  }
  return disk_.sync(keys.releaseAsArray()).then([context](Status s) mutable {
    setError(context.getResults(), s);
  });
}

kj::Promise<void> ChunkServiceImpl::truncate(TruncateContext context) {
  auto p = context.getParams();
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  if (auto s = checkRange(0, p.getLength()); !s) return reply(context, s);
  return logs_.admit(key->chunk, p.getEpoch())
      .then([this, key = *key, length = p.getLength()](Status admitted) {
        if (!admitted) return kj::Promise<Status>(admitted);
        return disk_.truncate(key, length);
      })
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> ChunkServiceImpl::punch(PunchContext context) {
  auto p = context.getParams();
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  if (auto s = checkRange(p.getOffset(), p.getLength()); !s) return reply(context, s);
  return logs_.admit(key->chunk, p.getEpoch())
      .then([this, key = *key, offset = p.getOffset(), length = p.getLength()](Status admitted) {
        if (!admitted) return kj::Promise<Status>(admitted);
        return disk_.punch(key, offset, length);
      })
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> ChunkServiceImpl::reserve(ReserveContext context) {
  auto p = context.getParams();
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  // Whole blocks within 64 MiB here; within what a shard of its layout holds on the disk's
  // worker, which knows the layout from the shard file.
  if (auto s = checkRange(p.getOffset(), p.getLength()); !s) return reply(context, s);
  return logs_.admit(key->chunk, p.getEpoch())
      .then([this, key = *key, offset = p.getOffset(),
             length = p.getLength()](Status admitted) -> kj::Promise<Result<uint64_t>> {
        if (!admitted) return Result<uint64_t>(admitted.error());
        return disk_.reserve(key, offset, length);
      })
      .then([context, key = *key](Result<uint64_t> r) mutable {
        auto results = context.getResults();
        if (!r) {
          if (r.code() == Errc::kNoSpace) {
            log::warn("no room to reserve a range of shard ", key.toString().c_str(), ": ",
                      r.error().detail.c_str());
          }
          return setError(results, Status(r.error()));
        }
        setError(results, Status());
        results.setBytes(*r);
      });
}

kj::Promise<void> ChunkServiceImpl::copy(CopyContext context) {
  auto p = context.getParams();
  auto from = shardKey(p.getFrom(), p.getShard());
  if (!from) return reply(context, from.error());
  auto to = shardKey(p.getTo(), p.getShard());
  if (!to) return reply(context, to.error());
  auto layout = shardLayout(*to, p.getLayout());
  if (!layout) return reply(context, layout.error());
  // Unapplied records are part of the chunk's content that the stored blocks lack: the copy
  // would miss them. The meta service copies only chunks no writer holds (their logs drained).
  if (logs_.count(from->chunk) > 0) {
    return reply(context, Status(Error{Errc::kBusy, "chunk " + std::to_string(from->chunk.value) +
                                                        " has unapplied log records"}));
  }
  return copyShard(disk_, *from, *to, *layout, p.getLength())
      .then([context](Result<uint64_t> r) mutable {
        auto results = context.getResults();
        if (!r) return setError(results, Status(r.error()));
        setError(results, Status());
        results.setBytes(*r);
      });
}

kj::Promise<void> ChunkServiceImpl::create(CreateContext context) {
  auto p = context.getParams();
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  auto layout = shardLayout(*key, p.getLayout());
  if (!layout) return reply(context, layout.error());
  return logs_.admit(key->chunk, p.getEpoch())
      .then([this, key = *key, layout = *layout](Status admitted) {
        if (!admitted) return kj::Promise<Status>(admitted);
        return disk_.create(key, layout);
      })
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> ChunkServiceImpl::remove(RemoveContext context) {
  auto ids = context.getParams().getChunks();
  if (ids.size() > kMaxRemoveChunks) {
    return reply(context, invalid("remove of " + std::to_string(ids.size()) + " chunks (at most " +
                                  std::to_string(kMaxRemoveChunks) + ")"));
  }
  auto chunks = kj::heapArrayBuilder<ChunkId>(ids.size());
  for (uint64_t id : ids) {
    if (id == 0) return reply(context, invalid("chunk id 0"));
    chunks.add(ChunkId(id));
  }
  auto list = chunks.finish();
  kj::Vector<kj::Promise<Status>> drops;
  for (auto id : list) {
    if (logs_.count(id) > 0) drops.add(logs_.drop(id));
  }
  return disk_.remove(kj::mv(list))
      .then([drops = drops.releaseAsArray()](Status s) mutable -> kj::Promise<Status> {
        return kj::joinPromises(kj::mv(drops)).then([s](kj::Array<Status> dropped) {
          for (auto& d : dropped) {
            if (!d) return d;
          }
          return s;
        });
      })
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> ChunkServiceImpl::fence(FenceContext context) {
  auto p = context.getParams();
  if (p.getChunk() == 0) return reply(context, invalid("chunk id 0"));
  ChunkId chunk(p.getChunk());
  return logs_.raise(chunk, p.getEpoch()).then([this, context, chunk](Status s) mutable {
    auto results = context.getResults();
    setError(results, s);
    if (s) results.setLogRecords(uint32_t(logs_.count(chunk)));
  });
}

kj::Promise<void> ChunkServiceImpl::rebuild(RebuildContext context) {
  auto p = context.getParams();
  if (rebuilder_ == nullptr) {
    return reply(context, Status(Error{Errc::kNotSupported, "this server does not rebuild"}));
  }
  auto key = shardKey(p.getChunk(), p.getShard());
  if (!key) return reply(context, key.error());
  auto layout = shardLayout(*key, p.getLayout());
  if (!layout) return reply(context, layout.error());
  if (p.getSources().size() > kMaxShards) return reply(context, invalid("too many sources"));
  std::vector<std::string> sources;
  for (auto text : p.getSources()) {
    if (text.size() > 300) return reply(context, invalid("source address too long"));
    sources.emplace_back(text.cStr());
  }
  auto addresses = sources;
  return rebuilder_->rebuild(*key, *layout, std::move(sources), p.getLength())
      .then([this, key = *key, layout = *layout, addresses = kj::mv(addresses)](
                Result<uint64_t> r) mutable -> kj::Promise<Result<uint64_t>> {
        if (!r) return kj::mv(r);
        // The rebuilt shard is the stored stripe; the chunk's write log goes with it. A shard
        // is rebuilt only while no writer holds the chunk, so the records the healthy servers
        // keep are a dead writer's, which the next writer applies: this server takes their
        // copies (the one it replaces may have held some), in place of any it kept itself —
        // those belong to the copy it replaced, whose server missed writes or trims.
        return takeLogRecords(key, layout, kj::mv(addresses))
            .then([r = kj::mv(r)](Status s) mutable -> Result<uint64_t> {
              if (!s) return s.error();
              return kj::mv(r);
            });
      })
      .then([this, context, key = *key](Result<uint64_t> r) mutable {
        rebuilder_->settleLost(key, r.ok());
        auto results = context.getResults();
        setError(results, r);
        if (r) results.setBytes(*r);
      });
}

kj::Promise<Status> ChunkServiceImpl::takeLogRecords(ShardKey key, Layout layout,
                                                     std::vector<std::string> sources) {
  ChunkId chunk = key.chunk;
  using Key = std::pair<uint64_t, uint64_t>;
  struct State {
    std::map<Key, ChunkLog::Record> merged;
    int asked = 0, answered = 0;
  };
  auto st = kj::heap<State>();
  auto& s = *st;
  // Pages through one source's records of the chunk.
  struct Pager {
    static kj::Promise<Status> page(ChunkServiceImpl& self, proto::ChunkService::Client peer,
                                    ChunkId chunk, Key after, State& s) {
      auto req = peer.logFetchRequest();
      req.setChunk(chunk.value);
      req.setShard(255);
      req.setOffset(0);
      req.setLength(kChunkSize);
      req.setMaxBytes(kMaxLogFetchBytes / 2);
      req.setAfterEpoch(after.first);
      req.setAfterSeq(after.second);
      auto& rb = *self.rebuilder_;
      return withTimeout(rb.timer(), rb.callTimeoutMs(), req.send())
          .then([&self, peer, chunk, &s](capnp::Response<proto::ChunkService::LogFetchResults> r)
                    mutable -> kj::Promise<Status> {
            if (auto e = fromWire(r.getError()); !e) return e;
            Key last{0, 0};
            for (auto w : r.getRecords()) {
              ChunkLog::Record rec;
              rec.chunk = chunk;
              rec.shard = w.getShard();
              rec.epoch = w.getEpoch();
              rec.seq = w.getSeq();
              rec.offset = w.getOffset();
              rec.data = kj::heapArray<kj::byte>(w.getData());
              rec.crcs = kj::heapArray<uint32_t>(w.getCrcs().size());
              for (size_t i = 0; i < rec.crcs.size(); ++i) rec.crcs[i] = w.getCrcs()[i];
              last = {rec.epoch, rec.seq};
              // Checked here (CRCs, ranges) before it is kept, as any append.
              if (auto ok = verifyBlocks(rec.offset, rec.data, rec.crcs); !ok) return ok;
              if (auto ok = checkRange(rec.offset, rec.data.size()); !ok) return ok;
              s.merged.emplace(last, kj::mv(rec));
            }
            if (!r.getMore() || last == Key{0, 0}) return Status();
            return page(self, peer, chunk, last, s);
          });
    }
  };
  auto addresses = sources;
  kj::Vector<kj::Promise<void>> fetches;
  for (auto& address : sources) {
    if (address.empty()) continue;
    s.asked++;
    fetches.add(rebuilder_->peers().get(address).then(
        [this, chunk, &s](Result<proto::ChunkService::Client> peer) -> kj::Promise<void> {
          kj::Promise<Status> p = peer ? Pager::page(*this, *peer, chunk, {0, 0}, s)
                                       : kj::Promise<Status>(Status(peer.error()));
          return p.then([&s](Status r) { s.answered += r ? 1 : 0; },
                        [](kj::Exception&&) {});
        }));
  }
  return kj::joinPromises(fetches.releaseAsArray())
      .then([this, key, layout, addresses = kj::mv(addresses), &s]() mutable
                -> kj::Promise<Status> {
        // With any source silent a record could be missing here: keep none then, rather than
        // a subset (reads of this shard would miss the rest).
        if (s.answered < s.asked) {
          return Status(Error{Errc::kUnavailable, "chunk " + std::to_string(key.chunk.value) +
                                                      ": its write log could be read from " +
                                                      std::to_string(s.answered) + " of " +
                                                      std::to_string(s.asked) + " sources"});
        }
        // The rebuilt data shard's blocks in rows the records touch and none of its own
        // records covers: decoded again (a dead writer may have left those rows half applied).
        std::map<uint64_t, Rebuilder::LoggedRow> rows;
        std::set<uint64_t> covered;
        for (auto& [k, rec] : s.merged) {
          for (uint64_t at = rec.offset; at < rec.offset + rec.data.size(); at += kBlockSize) {
            if (rec.shard == key.shard) {
              covered.insert(at);
              continue;
            }
            auto& row = rows[at];
            row.offset = at;
            row.records.push_back(
                RowRecord{int(rec.shard), rec.data.begin() + (at - rec.offset)});
          }
        }
        std::vector<Rebuilder::LoggedRow> redo;
        for (auto& [at, row] : rows) {
          if (!covered.count(at)) redo.push_back(std::move(row));
        }
        rebuilder_->coveredByLog(key, covered);
        return rebuilder_->redecodeLoggedRows(key, layout, kj::mv(addresses), std::move(redo))
            .then([this, key](Status r) -> kj::Promise<Status> {
              if (!r) return r;
              return logs_.drop(key.chunk);
            })
            .then([this, &s](Status d) -> kj::Promise<Status> {
          if (!d) return d;
          kj::Vector<kj::Promise<Status>> appends;
          for (auto& [key, rec] : s.merged) appends.add(logs_.append(kj::mv(rec)));
          if (!s.merged.empty()) {
            log::info("took ", s.merged.size(), " write-log records of the rebuilt chunk");
          }
          return joinStatusList(appends.releaseAsArray());
        });
      })
      .attach(kj::mv(st));
}

kj::Promise<void> ChunkServiceImpl::logAppend(LogAppendContext context) {
  auto p = context.getParams();
  if (p.getData().size() == 0) return reply(context, invalid("empty log record"));
  auto b = blocksOf(p);
  if (!b) return reply(context, b.error());
  auto key = &b->key;
  ChunkLog::Record r;
  r.chunk = key->chunk;
  r.shard = key->shard;
  r.epoch = p.getEpoch();
  r.seq = p.getSeq();
  r.offset = p.getOffset();
  r.data = kj::heapArray<kj::byte>(p.getData());
  r.crcs = kj::mv(b->crcs);
  return logs_.admit(key->chunk, r.epoch)
      .then([this, r = kj::mv(r)](Status admitted) mutable {
        if (!admitted) return kj::Promise<Status>(admitted);
        return logs_.append(kj::mv(r));
      })
      .then([this, context, key = *key](Status s) mutable {
        if (s.code() == Errc::kCorruption) {
          log::warn("refused a log record of shard ", key.toString().c_str(), ": ",
                    s.error().detail.c_str());
        }
        if (s.code() == Errc::kBusy) {
          // The writer asks again; the operator hears of it once a second at most.
          auto now = std::chrono::steady_clock::now();
          if (now - lastLogFullWarning_ >= std::chrono::seconds(1)) {
            lastLogFullWarning_ = now;
            log::warn("refused a log record of shard ", key.toString().c_str(), ": ",
                      s.error().detail.c_str(), " (writers wait and ask again)");
          }
        }
        setError(context.getResults(), s);
      });
}

kj::Promise<void> ChunkServiceImpl::logTrim(LogTrimContext context) {
  auto p = context.getParams();
  if (p.getChunk() == 0) return reply(context, invalid("chunk id 0"));
  ChunkId chunk(p.getChunk());
  return logs_.admit(chunk, p.getEpoch())
      .then([this, chunk, epoch = p.getEpoch(), seq = p.getSeq()](Status admitted) {
        if (!admitted) return kj::Promise<Status>(admitted);
        return logs_.trim(chunk, epoch, seq);
      })
      .then([context](Status s) mutable { setError(context.getResults(), s); });
}

kj::Promise<void> ChunkServiceImpl::logFetch(LogFetchContext context) {
  auto p = context.getParams();
  if (p.getChunk() == 0) return reply(context, invalid("chunk id 0"));
  int shard = p.getShard() == 255 ? -1 : int(p.getShard());
  if (shard >= int(kMaxShards)) return reply(context, invalid("shard index out of range"));
  uint64_t lo = std::min<uint64_t>(p.getOffset(), kChunkSize);
  uint64_t hi = std::min<uint64_t>(lo + std::min<uint64_t>(p.getLength(), kChunkSize), kChunkSize);
  uint64_t maxBytes = std::min<uint64_t>(p.getMaxBytes(), kMaxLogFetchBytes);
  auto after = std::make_pair(p.getAfterEpoch(), p.getAfterSeq());
  std::vector<const ChunkLog::Record*> picked;
  bool more = false;
  uint64_t bytes = 0;
  for (auto* r : logs_.records(ChunkId(p.getChunk()), shard, lo, hi)) {
    if (std::make_pair(r->epoch, r->seq) <= after) continue;
    if (!picked.empty() && bytes + r->data.size() > maxBytes) {
      more = true;
      break;
    }
    bytes += r->data.size();
    picked.push_back(r);
  }
  auto results = context.getResults();
  setError(results, Status());
  results.setMore(more);
  auto list = results.initRecords(picked.size());
  for (size_t i = 0; i < picked.size(); ++i) {
    const auto& r = *picked[i];
    auto w = list[i];
    w.setShard(r.shard);
    w.setEpoch(r.epoch);
    w.setSeq(r.seq);
    w.setOffset(r.offset);
    w.setData(r.data);
    auto crcs = w.initCrcs(r.crcs.size());
    for (size_t j = 0; j < r.crcs.size(); ++j) crcs.set(j, r.crcs[j]);
  }
  return kj::READY_NOW;
}

}  // namespace tessera::chunk
