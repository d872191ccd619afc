// client/data_path_apply.cc — the write log's applier: records into the stripes.
//
// A batch of records becomes, per chunk server, one vectored read (readV) of the stored (raw)
// data blocks of the rows it touches that no record of the batch covers, and one vectored,
// synced write (writeV) of the records' data blocks and of those rows' parity, re-encoded — the
// parity servers' first, then, once all of those are on disk, the data servers'. A few round
// trips per batch whatever its size, where a read-modify-write per record took k + m of them
// per record, and one fdatasync per server per batch. Parity first means data never runs ahead
// of parity, in any row, at any instant: what lets a lost data block of a row a crash left half
// written be decoded (fs/row_agreement.h).
//
// Re-encoding the rows from what is stored keeps an apply idempotent (the argument is at the top
// of data_path_log.cc): applying the same records again reads the blocks it wrote, writes the
// same bytes and the same parity. A batch that cannot read every data block it needs (a data
// shard is stale, or its server fails to answer) falls back to one read-modify-write per record
// (writeEc, parity first as well), whose reads rebuild what they cannot get; nothing was written
// by then.
#include <kj/debug.h>

#include <algorithm>
#include <set>
#include <unistd.h>

#include "client/data_path.h"
#include "fs/checksum.h"
#include "fs/log.h"
#include "fs/rpc.h"
#include "fs/wire.h"

namespace tessera::client {

namespace {

// Chunk offset of shard offset `off` of data shard `shard`.
uint64_t chunkOffsetOf(const Layout& l, int shard, uint64_t off) {
  return off / kCellSize * (uint64_t(l.k) * kCellSize) + uint64_t(shard) * kCellSize +
         off % kCellSize;
}

// Sorted block numbers as runs of consecutive ones: [first, last + 1) in bytes.
std::vector<Extent> runsOf(const std::set<uint64_t>& blocks) {
  std::vector<Extent> runs;
  for (uint64_t b : blocks) {
    if (!runs.empty() && runs.back().hi == b * kBlockSize) {
      runs.back().hi += kBlockSize;
    } else {
      runs.push_back(Extent{b * kBlockSize, (b + 1) * kBlockSize});
    }
  }
  return runs;
}

}  // namespace

void DataPath::inRowOrder(std::vector<const LogRecord*>& records) {
  auto byShard = records;
  std::sort(byShard.begin(), byShard.end(), [](const LogRecord* a, const LogRecord* b) {
    return std::make_pair(a->shard, a->offset) < std::make_pair(b->shard, b->offset);
  });
  for (size_t i = 1; i < byShard.size(); ++i) {
    const LogRecord* a = byShard[i - 1];
    const LogRecord* b = byShard[i];
    if (a->shard == b->shard && a->offset + a->data.size() > b->offset) return;
  }
  std::stable_sort(records.begin(), records.end(),
                   [](const LogRecord* a, const LogRecord* b) { return a->offset < b->offset; });
}

kj::Promise<Result<uint32_t>> DataPath::applyRecords(const ChunkDesc& chunk,
                                                     std::vector<const LogRecord*> records) {
  // Batches of at most kApplyBatch bytes of records, one after the other; a shard one batch
  // missed is not written by the next. 128 KiB (32 records of 4 KiB): fio 4 KiB random writes
  // at iodepth 16 on ec(4,2) (200 ms apply delay, two runs each, 2026-11-26) made the same IOPS
  // with batches of 1 MiB (2,657-2,797) and of 128 KiB (2,689-2,876), but a p99 of 24.5-28.4 ms
  // against 16.4-20.3 ms (p99.9 41-53 against 24-29): a big batch holds its rows, and its
  // servers' disks, for longer. At 64 KiB the batches' own round trips and fdatasyncs cost
  // IOPS (2,313-2,357). More batches write more CRC table pages (tools/bench_ec_log: 8.1-8.2
  // disk bytes per client byte against 7.5); records in row order (inRowOrder) win most of
  // that back (7.7).
  constexpr uint64_t kApplyBatch = 128 << 10;
  struct State {
    ChunkDesc chunk;
    std::vector<std::vector<const LogRecord*>> batches;
    size_t next = 0;
    uint32_t missed = 0;
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  uint64_t bytes = kApplyBatch;
  for (auto* r : records) {
    if (bytes + r->data.size() > kApplyBatch) {
      st->batches.emplace_back();
      bytes = 0;
    }
    st->batches.back().push_back(r);
    bytes += r->data.size();
  }
  struct Loop {
    static kj::Promise<Result<uint32_t>> run(DataPath& dp, State& s) {
      if (s.next == s.batches.size()) return Result<uint32_t>(s.missed);
      auto& batch = s.batches[s.next++];
      return dp.applyBatch(s.chunk, kj::mv(batch))
          .then([&dp, &s](Result<uint32_t> missed) -> kj::Promise<Result<uint32_t>> {
            if (!missed) return kj::mv(missed);
            s.missed |= *missed;
            s.chunk.staleShards |= *missed;
            return run(dp, s);
          });
    }
  };
  auto& s = *st;
  return Loop::run(*this, s).attach(kj::mv(st));
}

kj::Promise<Result<uint32_t>> DataPath::applyBatch(const ChunkDesc& chunk,
                                                   std::vector<const LogRecord*> records) {
  struct State {
    ChunkDesc chunk;
    std::vector<const LogRecord*> records;
    std::vector<std::set<uint64_t>> covered;  // per data shard: blocks its records hold
    std::vector<uint64_t> rows;               // every block number the batch touches, sorted
    std::vector<Extent> runs;                 // the same as runs
    std::vector<kj::Array<kj::byte>> bufs;    // per shard: the blocks of `rows`, in order
    RangeLock::Guard guard;
  };
  auto st = kj::heap<State>();
  auto& s = *st;
  s.chunk = chunk;
  s.records = kj::mv(records);
  const Layout& l = s.chunk.layout;
  s.covered.resize(l.k);
  std::set<uint64_t> rows;
  for (auto* r : s.records) {
    for (uint64_t b = r->offset / kBlockSize; b < (r->offset + r->data.size()) / kBlockSize; ++b) {
      s.covered[r->shard].insert(b);
      rows.insert(b);
    }
  }
  s.rows.assign(rows.begin(), rows.end());
  s.runs = runsOf(rows);
  // A stale data shard whose stored blocks the batch needs: those must be rebuilt.
  for (int j = 0; j < l.k; ++j) {
    if (s.chunk.stale(j) && s.covered[j].size() < s.rows.size()) {
      return applyEach(s.chunk, kj::mv(s.records));
    }
  }
  // The rows, all in one lock request (one at a time could deadlock with a writer between).
  std::vector<RangeLock::Range> ranges;
  for (const Extent& e : s.runs) ranges.push_back(RangeLock::Range{e.lo, e.hi});
  return rows_.lock(s.chunk.id.value, kj::mv(ranges))
      .then([this, &s](RangeLock::Guard guard) -> kj::Promise<Result<uint32_t>> {
        s.guard = kj::mv(guard);
        const Layout& l = s.chunk.layout;
        s.bufs.resize(l.shards());
        for (auto& b : s.bufs) b = kj::heapArray<kj::byte>(s.rows.size() * kBlockSize);
        // Where block b sits in a shard's buffer.
        auto at = [&s](uint64_t b) {
          return uint64_t(std::lower_bound(s.rows.begin(), s.rows.end(), b) - s.rows.begin()) *
                 kBlockSize;
        };
        kj::Vector<kj::Promise<Status>> reads;
        for (int j = 0; j < l.k; ++j) {
          std::set<uint64_t> need;
          for (uint64_t b : s.rows) {
            if (!s.covered[j].count(b)) need.insert(b);
          }
          if (need.empty()) continue;
          std::vector<Want> wants;
          for (const Extent& e : runsOf(need)) {
            uint64_t pos = at(e.lo / kBlockSize);
            wants.push_back(Want{j, e.lo, s.bufs[j].slice(pos, pos + (e.hi - e.lo))});
          }
          // A block marked lost reads as the pattern it holds: the parity is encoded over it,
          // which keeps the rest of its row redundant (fs/lost_block.h). Its content is known
          // nowhere, so no parity could serve it anyway, and refusing it would leave the
          // records unapplied, the log undrained and the chunk's lease stuck.
          reads.add(readShardV(s.chunk, j, kj::mv(wants), true));
        }
        return kj::joinPromises(reads.releaseAsArray())
            .then([this, &s, at](kj::Array<Status> results) -> kj::Promise<Result<uint32_t>> {
              for (auto& r : results) {
                if (r) continue;
                if (r.code() == Errc::kStale) return Result<uint32_t>(r.error());
                log::debug("chunk ", s.chunk.id.value, ": batched apply could not read (",
                           r.error().toString().c_str(), "); one record at a time");
                s.guard.release();
                return applyEach(s.chunk, kj::mv(s.records));
              }
              const Layout& l = s.chunk.layout;
              // The records, oldest first, over the stored blocks.
              for (auto* r : s.records) {
                for (uint64_t done = 0; done < r->data.size(); done += kBlockSize) {
                  memcpy(s.bufs[r->shard].begin() + at((r->offset + done) / kBlockSize),
                         r->data.begin() + done, kBlockSize);
                }
              }
              for (const Extent& e : s.runs) {
                uint64_t pos = at(e.lo / kBlockSize);
                std::vector<const uint8_t*> in;
                std::vector<uint8_t*> parity;
                for (int j = 0; j < l.k; ++j) in.push_back(s.bufs[j].begin() + pos);
                for (int j = l.k; j < l.shards(); ++j) parity.push_back(s.bufs[j].begin() + pos);
                code(l).encode(in.data(), parity.data(), e.hi - e.lo);
              }
              // Parity first, every parity shard synced, then the data: data never runs ahead
              // of parity, which is what lets a lost block of a row this leaves half written
              // be decoded (fs/row_agreement.h).
              auto writeShards = [this, &s, at](bool parity) {
                const Layout& l = s.chunk.layout;
                kj::Vector<kj::Promise<Status>> writes;
                std::vector<int> shards;
                for (int j = parity ? l.k : 0; j < (parity ? l.shards() : l.k); ++j) {
                  if (s.chunk.stale(j)) continue;
                  std::vector<Extent> pieces = j < l.k ? runsOf(s.covered[j]) : s.runs;
                  if (pieces.empty()) continue;
                  std::vector<std::pair<uint64_t, kj::ArrayPtr<const kj::byte>>> parts;
                  for (const Extent& e : pieces) {
                    uint64_t pos = at(e.lo / kBlockSize);
                    parts.emplace_back(e.lo, s.bufs[j].slice(pos, pos + (e.hi - e.lo)));
                  }
                  writes.add(writeShardV(s.chunk, j, kj::mv(parts)));
                  shards.push_back(j);
                }
                return joinShardWrites(s.chunk, writes.releaseAsArray(), kj::mv(shards));
              };
              return writeShards(true).then(
                  [this, &s, writeShards](Result<uint32_t> parity) -> kj::Promise<Result<uint32_t>> {
                    if (!parity) return kj::mv(parity);
                    if (logConfig_.faultExitAfterParity) {
                      log::warn("chunk ", s.chunk.id.value,
                                ": exiting after an apply's parity (--fault-exit-after-parity)");
                      _exit(9);
                    }
                    s.chunk.staleShards |= *parity;
                    return writeShards(false).then([p = *parity](Result<uint32_t> data) {
                      if (!data) return data;
                      return Result<uint32_t>(*data | p);
                    });
                  });
            });
      })
      .attach(kj::mv(st));
}

kj::Promise<Result<uint32_t>> DataPath::applyEach(const ChunkDesc& chunk,
                                                  std::vector<const LogRecord*> records) {
  auto desc = kj::heap<ChunkDesc>(chunk);
  auto& c = *desc;
  const Layout& l = c.layout;
  kj::Vector<kj::Promise<Result<uint32_t>>> writes;
  uint32_t touched = 0;
  // In seq order: the row locks are granted in the order asked, so a later record of a block
  // lands after an earlier one.
  for (auto* r : records) {
    uint64_t at = chunkOffsetOf(l, r->shard, r->offset);
    // Eagerly: a member of a join runs its continuations only when all are ready, and this
    // one's ends by giving back the rows a later record's write waits for.
    writes.add(writeEc(c, at, r->data, false, nullptr, true).eagerlyEvaluate(nullptr));
    touched |= 1u << r->shard;
  }
  for (int j = l.k; j < l.shards(); ++j) touched |= 1u << j;
  return kj::joinPromises(writes.releaseAsArray())
      .then([this, &c, touched](kj::Array<Result<uint32_t>> results)
                -> kj::Promise<Result<uint32_t>> {
        uint32_t missed = 0;
        for (auto& r : results) {
          if (!r) return Result<uint32_t>(r.error());
          missed |= *r;
        }
        // Durable before any record is trimmed.
        std::map<uint64_t, std::vector<ShardKey>> byServer;
        std::map<uint64_t, std::vector<int>> shardsOf;
        for (int j = 0; j < c.layout.shards(); ++j) {
          if (!((touched >> j) & 1u) || c.stale(j) || ((missed >> j) & 1u)) continue;
          byServer[c.servers[j].value].push_back(ShardKey{c.id, j});
          shardsOf[c.servers[j].value].push_back(j);
        }
        kj::Vector<kj::Promise<Status>> syncs;
        std::vector<std::vector<int>> groups;
        for (auto& [server, keys] : byServer) {
          syncs.add(sync(ServerId(server), keys));
          groups.push_back(shardsOf[server]);
        }
        return kj::joinPromises(syncs.releaseAsArray())
            .then([missed, groups = kj::mv(groups), &c](kj::Array<Status> results) -> Result<uint32_t> {
              uint32_t m = missed;
              for (size_t i = 0; i < results.size(); ++i) {
                if (results[i]) continue;
                if (results[i].error().code == Errc::kStale) return results[i].error();
                for (int j : groups[i]) m |= 1u << j;
              }
              if (std::popcount(m | c.staleShards) > c.layout.m) {
                return Error{Errc::kUnavailable, "chunk " + std::to_string(c.id.value) +
                                                     ": applying its log missed too many shards"};
              }
              return m;
            });
      })
      .attach(kj::mv(desc));
}

kj::Promise<Status> DataPath::readShardV(const ChunkDesc& chunk, int shard, std::vector<Want> wants,
                                     bool lostAsStored) {
  ServerId server = chunk.servers[shard];
  uint64_t chunkId = chunk.id.value;
  return servers_.get(server).then([this, server, chunkId, shard, wants = kj::mv(wants),
                                    lostAsStored](Result<proto::ChunkService::Client> service) mutable
                                       -> kj::Promise<Status> {
    if (!service) return Status(service.error());
    auto req = service->readVRequest();
    req.setChunk(chunkId);
    req.setShard(uint8_t(shard));
    req.setRaw(true);
    req.setLostAsStored(lostAsStored);
    auto ranges = req.initRanges(wants.size());
    uint64_t total = 0;
    for (size_t i = 0; i < wants.size(); ++i) {
      ranges[i].setOffset(wants[i].lo);
      ranges[i].setLength(uint32_t(wants[i].dest.size()));
      total += wants[i].dest.size();
    }
    return withTimeout(timer_, ioTimeoutMs_, req.send())
        .then(
            [wants = kj::mv(wants), total, chunkId, shard](
                capnp::Response<proto::ChunkService::ReadVResults> r) mutable -> Status {
              if (auto st = fromWire(r.getError()); !st) return st;
              auto data = r.getData();
              if (data.size() != total) return Error{Errc::kCorruption, "malformed readV reply"};
              if (auto ok = checkBlockCrcs(data, r.getCrcs(),
                                           "chunk " + std::to_string(chunkId) + " shard " +
                                               std::to_string(shard));
                  !ok) {
                return ok;
              }
              uint64_t at = 0;
              for (auto& w : wants) {
                memcpy(w.dest.begin(), data.begin() + at, w.dest.size());
                at += w.dest.size();
              }
              return Status();
            },
            [this, server, used = *service](kj::Exception&& e) mutable -> Status {
              servers_.failed(server, used, e);
              return errorFromException(e, "read from chunk server");
            });
  });
}

kj::Promise<Status> DataPath::writeShardV(
    const ChunkDesc& chunk, int shard,
    std::vector<std::pair<uint64_t, kj::ArrayPtr<const kj::byte>>> parts) {
  ServerId server = chunk.servers[shard];
  uint64_t chunkId = chunk.id.value;
  uint64_t epoch = chunk.epoch;
  Layout layout = chunk.layout;
  return servers_.get(server).then([this, server, chunkId, epoch, layout, shard,
                                    parts = kj::mv(parts)](
                                       Result<proto::ChunkService::Client> service)
                                       -> kj::Promise<Status> {
    if (!service) return Status(service.error());
    auto req = service->writeVRequest();
    req.setChunk(chunkId);
    req.setShard(uint8_t(shard));
    toWire(layout, req.initLayout());
    req.setSync(true);
    req.setEpoch(epoch);
    // Log records are of chunks whose shards exist: a fresh chunk's first write is direct.
    req.setIntent(proto::ShardIntent::EXISTING);
    auto pieces = req.initPieces(parts.size());
    for (size_t i = 0; i < parts.size(); ++i) {
      auto [offset, data] = parts[i];
      pieces[i].setOffset(offset);
      pieces[i].setData(data);
      setBlockCrcs(pieces[i].initCrcs(uint32_t(data.size() / kBlockSize)), data);
    }
    return withTimeout(timer_, ioTimeoutMs_, req.send())
        .then([](capnp::Response<proto::ChunkService::WriteVResults> r) {
          return fromWire(r.getError());
        },
        [this, server, used = *service](kj::Exception&& e) mutable -> Status {
          servers_.failed(server, used, e);
          return errorFromException(e, "write to chunk server");
        });
  });
}

}  // namespace tessera::client
