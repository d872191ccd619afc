#include "client/data_path.h"

#include <algorithm>
#include <bit>
#include <optional>
#include <cstring>
#include <set>
#include <unistd.h>

#include "client/stripe.h"
#include "fs/checksum.h"
#include "fs/log.h"
#include "fs/lost_block.h"
#include "fs/row_agreement.h"
#include "fs/rpc.h"
#include "fs/wire.h"

namespace tessera::client {

kj::Promise<Status> joinStatus(kj::Array<kj::Promise<Status>> all) {
  return kj::joinPromises(kj::mv(all)).then([](kj::Array<Status> results) {
    for (auto& r : results) {
      if (!r) return r;
    }
    return Status();
  });
}

bool FreshChunk::overlaps(int shard, uint64_t lo, uint64_t hi) const {
  if (size_t(shard) >= written.size()) return false;
  for (const Extent& e : written[shard]) {
    if (e.lo < hi && lo < e.hi) return true;
  }
  return false;
}

void FreshChunk::add(int shard, uint64_t lo, uint64_t hi) {
  if (size_t(shard) >= written.size()) written.resize(shard + 1);
  auto& list = written[shard];
  Extent merged{lo, hi};
  std::vector<Extent> out;
  for (const Extent& e : list) {
    if (e.hi < merged.lo || merged.hi < e.lo) {
      out.push_back(e);
    } else {
      merged = Extent{std::min(e.lo, merged.lo), std::max(e.hi, merged.hi)};
    }
  }
  out.push_back(merged);
  std::sort(out.begin(), out.end(), [](const Extent& a, const Extent& b) { return a.lo < b.lo; });
  list = std::move(out);
}

DataPath::DataPath(ChunkServers& servers, kj::Timer& timer, uint64_t ioTimeoutMs,
                   LogConfig logConfig)
    : servers_(servers), timer_(timer), ioTimeoutMs_(ioTimeoutMs), logConfig_(logConfig) {}

ErasureCode& DataPath::code(const Layout& layout) {
  auto& c = codes_[{layout.k, layout.m}];
  if (!c) c = std::make_unique<ErasureCode>(layout.k, layout.m);
  return *c;
}

// --- one shard -------------------------------------------------------------------------------

kj::Promise<Status> DataPath::readShard(const ChunkDesc& chunk, int shard, uint64_t lo,
                                        kj::ArrayPtr<kj::byte> dest, bool raw, bool lostAsStored) {
  KJ_REQUIRE(lo % kBlockSize == 0 && dest.size() % kBlockSize == 0, lo, dest.size());
  if (chunk.stale(shard)) {
    return Status(Error{Errc::kUnavailable, "chunk " + std::to_string(chunk.id.value) +
                                                " shard " + std::to_string(shard) +
                                                " is stale (missed writes)"});
  }
  ServerId server = chunk.servers[shard];
  uint64_t chunkId = chunk.id.value;
  return servers_.get(server).then([this, server, chunkId, shard, lo, dest, raw, lostAsStored](
                                       Result<proto::ChunkService::Client> service) mutable {
    if (!service) return kj::Promise<Status>(service.error());
    kj::Vector<kj::Promise<Status>> parts;
    for (uint64_t done = 0; done < dest.size(); done += kMaxTransfer) {
      uint64_t n = std::min<uint64_t>(kMaxTransfer, dest.size() - done);
      auto req = service->readRequest();
      req.setRaw(raw);
      req.setLostAsStored(lostAsStored);
      req.setChunk(chunkId);
      req.setShard(uint8_t(shard));
      req.setOffset(lo + done);
      req.setLength(uint32_t(n));
      auto piece = dest.slice(done, done + n);
      parts.add(withTimeout(timer_, ioTimeoutMs_, req.send())
                    .then(
                        [piece, chunkId, shard](capnp::Response<proto::ChunkService::ReadResults> r)
                            mutable -> Status {
                          auto st = fromWire(r.getError());
                          if (!st) return st;
                          auto data = r.getData();
                          if (data.size() != piece.size()) {
                            return Error{Errc::kCorruption, "malformed read reply"};
                          }
                          // The server checked these blocks against its stored CRCs; check them
                          // again here so damage on the way is caught too.
                          if (auto ok = checkBlockCrcs(data, r.getCrcs(),
                                                       "chunk " + std::to_string(chunkId) +
                                                           " shard " + std::to_string(shard));
                              !ok) {
                            return ok;
                          }
                          memcpy(piece.begin(), data.begin(), piece.size());
                          return Status();
                        },
                        [this, server, used = *service](kj::Exception&& e) mutable -> Status {
                          servers_.failed(server, used, e);
                          return errorFromException(e, "read from chunk server");
                        }));
    }
    return joinStatus(parts.releaseAsArray());
  });
}

kj::Promise<Status> DataPath::writeShard(const ChunkDesc& chunk, int shard, uint64_t lo,
                                         kj::ArrayPtr<const kj::byte> data, bool sync,
                                         bool create) {
  KJ_REQUIRE(lo % kBlockSize == 0 && data.size() % kBlockSize == 0, lo, data.size());
  ServerId server = chunk.servers[shard];
  uint64_t chunkId = chunk.id.value;
  uint64_t epoch = chunk.epoch;
  Layout layout = chunk.layout;
  return servers_.get(server).then([this, server, chunkId, epoch, layout, shard, lo, data, sync,
                                    create](Result<proto::ChunkService::Client> service) {
    if (!service) return kj::Promise<Status>(service.error());
    kj::Vector<kj::Promise<Status>> parts;
    // An empty write creates the shard (see FreshChunk): one request, no data.
    for (uint64_t done = 0; done < data.size() || (done == 0 && data.size() == 0);
         done += kMaxTransfer) {
      uint64_t n = std::min<uint64_t>(kMaxTransfer, data.size() - done);
      auto req = service->writeRequest();
      req.setChunk(chunkId);
      req.setShard(uint8_t(shard));
      toWire(layout, req.initLayout());
      req.setOffset(lo + done);
      req.setSync(sync);
      req.setEpoch(epoch);
      req.setIntent(create ? proto::ShardIntent::CREATE : proto::ShardIntent::EXISTING);
      auto piece = data.slice(done, done + n);
      req.setData(piece);
      setBlockCrcs(req.initCrcs(uint32_t(n / kBlockSize)), piece);
      parts.add(withTimeout(timer_, ioTimeoutMs_, req.send())
                    .then([](capnp::Response<proto::ChunkService::WriteResults> r) {
                      return fromWire(r.getError());
                    },
                    [this, server, used = *service](kj::Exception&& e) mutable -> Status {
                      servers_.failed(server, used, e);
                      return errorFromException(e, "write to chunk server");
                    }));
    }
    return joinStatus(parts.releaseAsArray());
  });
}

// --- ec reads --------------------------------------------------------------------------------

kj::Promise<Status> DataPath::readEc(const ChunkDesc& chunk, std::vector<Want> wants,
                                     bool rowsLocked, bool raw, std::vector<uint64_t>* torn) {
  auto chunkCopy = kj::heap<ChunkDesc>(chunk);
  auto& c = *chunkCopy;
  kj::Vector<kj::Promise<Status>> reads;
  // Raw readers encode parity over what they read: a lost block is read as its pattern
  // (fs/lost_block.h). A rebuild's sources below are not: they decode.
  for (auto& w : wants) reads.add(readShard(c, w.shard, w.lo, w.dest, raw, raw));
  return kj::joinPromises(reads.releaseAsArray())
      .then([this, &c, wants = kj::mv(wants), rowsLocked, raw, torn](kj::Array<Status> results) mutable
            -> kj::Promise<Status> {
        std::vector<Want> failed;
        std::set<int> missing;
        for (size_t i = 0; i < wants.size(); ++i) {
          // The shard's own server says a block is lost and that no record holds it: its
          // content is known nowhere, and a decode of its row would be garbage (a mix of two
          // writes) that no parity to spare may be left to catch.
          if (!raw && results[i].code() == Errc::kLost) return results[i];
          if (!results[i]) {
            log::debug("chunk ", c.id.value, " shard ", wants[i].shard, ": ",
                       results[i].error().toString().c_str(), "; rebuilding");
            failed.push_back(wants[i]);
            missing.insert(wants[i].shard);
          }
        }
        if (failed.empty()) return Status();
        uint64_t lo = UINT64_MAX, hi = 0;
        for (auto& w : failed) {
          lo = std::min(lo, w.lo);
          hi = std::max(hi, w.lo + w.dest.size());
        }
        std::vector<int> missingList(missing.begin(), missing.end());
        if (rowsLocked) {
          return rebuild(c, kj::mv(failed), kj::mv(missingList), raw, torn).then([](Status s) {
            return notBusy(s);
          });
        }
        KJ_REQUIRE(torn == nullptr, "torn rows are reported to callers that hold the rows");
        return rebuildLocked(c, kj::mv(failed), kj::mv(missingList), raw, lo, hi, 0);
      })
      .attach(kj::mv(chunkCopy));
}

Status DataPath::notBusy(Status s) {
  if (!s && s.code() == Errc::kBusy) return Error{Errc::kUnavailable, s.error().detail};
  return s;
}

// A rebuild decodes rows across shards: this client's own writes are kept out of them. Rows
// that an apply is changing under the rebuild (kBusy) are read again a little later, with the
// rows unlocked meanwhile (the apply may be this client's, waiting for them).
kj::Promise<Status> DataPath::rebuildLocked(const ChunkDesc& chunk, std::vector<Want> failed,
                                            std::vector<int> missing, bool raw, uint64_t lo,
                                            uint64_t hi, int attempt) {
  return rows_.lock(chunk.id.value, lo, hi)
      .then([this, &chunk, failed, missing, raw](RangeLock::Guard guard) mutable {
        return rebuild(chunk, kj::mv(failed), kj::mv(missing), raw).attach(kj::mv(guard));
      })
      .then([this, &chunk, failed, missing, raw, lo, hi, attempt](Status s) mutable
                -> kj::Promise<Status> {
        if (s || s.code() != Errc::kBusy) return s;
        if (attempt >= 50) return notBusy(s);  // 5 s
        log::debug("chunk ", chunk.id.value, ": ", s.error().detail.c_str(), "; reading again");
        return timer_.afterDelay(100 * kj::MILLISECONDS)
            .then([this, &chunk, failed = kj::mv(failed), missing = kj::mv(missing), raw, lo, hi,
                   attempt]() mutable {
              return rebuildLocked(chunk, kj::mv(failed), kj::mv(missing), raw, lo, hi,
                                   attempt + 1);
            });
      });
}

Status DataPath::decodeByAgreement(const Layout& l, const std::vector<int>& missing, uint64_t lo,
                                   std::vector<kj::Array<kj::byte>>& rows,
                                   const std::map<std::pair<uint64_t, uint64_t>, LogRecord>& recs,
                                   uint64_t ourEpoch) {
  auto isMissing = [&missing](int j) {
    return std::find(missing.begin(), missing.end(), j) != missing.end();
  };
  uint64_t hi = lo + rows[0].size();
  // Per block row the records in it, oldest first.
  std::map<uint64_t, std::vector<const LogRecord*>> touched;
  for (auto& [key, r] : recs) {
    uint64_t a = std::max(lo, r.offset), b = std::min(hi, r.offset + r.data.size());
    for (uint64_t at = alignDown(a, kBlockSize); at < b; at += kBlockSize) {
      touched[at].push_back(&r);
    }
  }
  for (auto& [at, inRow] : touched) {
    bool others = false;
    for (auto* r : inRow) others = others || r->epoch != ourEpoch;
    if (!others) continue;
    // The lost data blocks of the row that no record covers: decoded, not laid over.
    std::vector<int> lost;
    for (int j = 0; j < l.k; ++j) {
      if (!isMissing(j)) continue;
      bool covered = false;
      for (auto* r : inRow) covered = covered || r->shard == j;
      if (!covered) lost.push_back(j);
    }
    if (lost.empty()) continue;
    // What cannot be told now may be soon: a live writer applies and trims its records within
    // moments (kBusy: the caller reads again); a dead writer's wait for the next writer.
    if (lost.size() > 1) {
      return Error{Errc::kBusy, "two lost data blocks in a row with unapplied log records"};
    }
    std::vector<const uint8_t*> stored(l.shards(), nullptr);
    for (int j = 0; j < l.shards(); ++j) {
      if (!isMissing(j)) stored[j] = rows[j].begin() + (at - lo);
    }
    std::vector<RowRecord> rowRecords;
    for (auto* r : inRow) {
      if (r->shard >= l.k || isMissing(r->shard)) continue;
      rowRecords.push_back(RowRecord{r->shard, r->data.begin() + (at - r->offset)});
    }
    auto ok = agreeOnLostBlock(code(l), lost[0], stored, rowRecords,
                               rows[lost[0]].begin() + (at - lo));
    if (!ok) return Error{Errc::kBusy, ok.error().detail};
  }
  return Status();
}

// Reads rows [lo, hi) (the union of the failed Wants) from every shard not known missing, as
// stored (the parity agrees with the stored bytes, not with unapplied log records), rebuilds
// the missing ones and copies the rebuilt bytes into the failed Wants — for a reader (!raw)
// with the newest log records of the rebuilt data shards over them, fetched from the servers
// of the other shards (a record is on m + 1 of them).
kj::Promise<Status> DataPath::rebuild(const ChunkDesc& chunk, std::vector<Want> failed,
                                      std::vector<int> missingIn, bool raw,
                                      std::vector<uint64_t>* tornOut) {
  struct State {
    ChunkDesc chunk;
    std::vector<Want> failed;
    std::vector<int> missing;
    uint64_t lo = UINT64_MAX, hi = 0;
    std::vector<kj::Array<kj::byte>> rows;
    std::vector<int> asked;
    std::vector<uint64_t> torn;  // shard offsets of block rows whose parity disagrees
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  st->failed = kj::mv(failed);
  st->missing = kj::mv(missingIn);
  for (auto& w : st->failed) {
    st->lo = std::min(st->lo, w.lo);
    st->hi = std::max(st->hi, w.lo + w.dest.size());
  }
  const int n = chunk.layout.shards();
  st->rows.resize(n);
  kj::Vector<kj::Promise<Status>> reads;
  for (int s = 0; s < n; ++s) {
    st->rows[s] = kj::heapArray<kj::byte>(st->hi - st->lo);
    if (std::find(st->missing.begin(), st->missing.end(), s) != st->missing.end()) continue;
    st->asked.push_back(s);
    reads.add(readShard(st->chunk, s, st->lo, st->rows[s], true));
  }
  auto& ref = *st;
  return kj::joinPromises(reads.releaseAsArray())
      .then([this, &ref](kj::Array<Status> results) -> Status {
        auto& s = ref;
        Status firstError;
        for (size_t i = 0; i < results.size(); ++i) {
          if (!results[i]) {
            s.missing.push_back(s.asked[i]);
            if (firstError) firstError = results[i];
          }
        }
        const Layout& l = s.chunk.layout;
        if (int(s.missing.size()) > l.m) {
          return Error{Errc::kUnavailable,
                       "chunk " + std::to_string(s.chunk.id.value) + ": " +
                           std::to_string(s.missing.size()) + " of " +
                           std::to_string(l.shards()) + " shards unreadable (" +
                           (firstError ? std::string("missing") : firstError.error().toString()) + ")"};
        }
        std::vector<uint8_t*> ptrs;
        for (auto& r : s.rows) ptrs.push_back(r.begin());
        if (auto ok = code(l).reconstruct(ptrs.data(), s.missing, s.hi - s.lo); !ok) return ok;
        // A lost data block decoded from a row that holds a mix of two writes is garbage: a
        // large write that died between its data and its parity, or an apply or a large write
        // of another mount under way. A parity shard beyond the k the decode used tells.
        auto lost = [&s](int j) {
          return std::find(s.missing.begin(), s.missing.end(), j) != s.missing.end();
        };
        bool dataLost = false;
        for (int j = 0; j < l.k; ++j) dataLost = dataLost || lost(j);
        if (dataLost && int(s.missing.size()) < l.m) {  // a shard to spare
          std::vector<const uint8_t*> shards;
          for (int j = 0; j < l.shards(); ++j) {
            shards.push_back(j >= l.k && lost(j) ? nullptr : s.rows[j].begin());
          }
          for (uint64_t row : rowsDisagreeingWithParity(code(l), shards, s.hi - s.lo)) {
            s.torn.push_back(s.lo + row * kBlockSize);
          }
        }
        return Status();
      })
      .then([this, &ref, raw, tornOut](Status ok) -> kj::Promise<Status> {
        auto& s = ref;
        if (!ok) return ok;
        // The torn rows but those in `excused`, reported to the caller or failing the read.
        auto checkTorn = [&s, tornOut](const std::set<uint64_t>& excused) -> Status {
          std::vector<uint64_t> torn;
          for (uint64_t at : s.torn) {
            if (!excused.count(at)) torn.push_back(at);
          }
          if (torn.empty()) return Status();
          if (tornOut) {
            tornOut->insert(tornOut->end(), torn.begin(), torn.end());
            return Status();
          }
          return Error{Errc::kBusy,
                       "chunk " + std::to_string(s.chunk.id.value) + ": " +
                           std::to_string(torn.size()) + " block rows from shard offset " +
                           std::to_string(torn[0]) +
                           " disagree with their parity while a data shard is lost (a write "
                           "to them was interrupted, or is under way)"};
        };
        auto copyOut = [&s, raw]() -> Status {
          for (auto& w : s.failed) {
            if (raw || w.shard >= s.chunk.layout.k) continue;
            // A data block decoded to the lost pattern was marked lost, and parity was
            // encoded over it since (fs/lost_block.h): its content is known nowhere.
            for (uint64_t at = alignDown(w.lo, kBlockSize); at < w.lo + w.dest.size();
                 at += kBlockSize) {
              if (at < s.lo || at + kBlockSize > s.hi) continue;
              if (isLostBlock(s.rows[w.shard].begin() + (at - s.lo))) {
                return Status(Error{Errc::kUnavailable,
                                    "chunk " + std::to_string(s.chunk.id.value) + " shard " +
                                        std::to_string(w.shard) + ": the block at offset " +
                                        std::to_string(at) +
                                        " is lost (its content is known nowhere)"});
              }
            }
          }
          for (auto& w : s.failed) {
            memcpy(w.dest.begin(), s.rows[w.shard].begin() + (w.lo - s.lo), w.dest.size());
          }
          return Status();
        };
        uint32_t from = 0, dataMissing = 0;
        for (int j : s.asked) {
          if (std::find(s.missing.begin(), s.missing.end(), j) == s.missing.end()) from |= 1u << j;
        }
        for (auto& w : s.failed) {
          if (w.shard < s.chunk.layout.k) dataMissing |= 1u << w.shard;
        }
        if (raw || !logConfig_.enabled || dataMissing == 0) {
          if (auto t = checkTorn({}); !t) return t;
          return copyOut();
        }
        return fetchLog(s.chunk, from, -1, s.lo, s.hi)
            .then([this, &s, dataMissing, copyOut, checkTorn](
                      Result<std::map<std::pair<uint64_t, uint64_t>, LogRecord>> recs) -> Status {
              if (!recs) return recs.error();
              // Rows another writer's records touch may be half applied, parity ahead of data:
              // decodeByAgreement below answers for those.
              std::set<uint64_t> logged;
              uint64_t ours = loggingEpoch(s.chunk.id);
              for (auto& [key, r] : *recs) {
                if (r.epoch == ours) continue;
                uint64_t a = std::max(s.lo, r.offset), b = std::min(s.hi, r.offset + r.data.size());
                for (uint64_t at = alignDown(a, kBlockSize); at < b; at += kBlockSize) {
                  logged.insert(at);
                }
              }
              if (auto t = checkTorn(logged); !t) return t;
              // A row another writer's records touch may be half applied: decode its lost
              // blocks again, by agreement of the parity blocks (the stripe was read before the
              // records). Rows only this client's records touch are not: its applies hold the
              // rows locked, as this rebuild does.
              if (auto ok = decodeByAgreement(s.chunk.layout, s.missing, s.lo, s.rows, *recs,
                                              loggingEpoch(s.chunk.id));
                  !ok) {
                return ok;
              }
              for (auto& [key, r] : *recs) {
                if (!((dataMissing >> r.shard) & 1u)) continue;
                uint64_t lo = std::max(s.lo, r.offset), hi = std::min(s.hi, r.offset + r.data.size());
                if (lo >= hi) continue;
                memcpy(s.rows[r.shard].begin() + (lo - s.lo), r.data.begin() + (lo - r.offset),
                       hi - lo);
              }
              return copyOut();
            });
      })
      .attach(kj::mv(st));
}

// --- replicas --------------------------------------------------------------------------------

kj::Promise<Status> DataPath::readReplica(const ChunkDesc& chunk, uint64_t lo,
                                          kj::ArrayPtr<kj::byte> dest, int attempt) {
  int n = chunk.layout.shards();
  // Spread reads of different chunks and regions over the replicas.
  int shard = int((chunk.id.value + lo / kChunkSize + uint64_t(attempt)) % uint64_t(n));
  auto chunkCopy = kj::heap<ChunkDesc>(chunk);
  auto& c = *chunkCopy;
  return readShard(c, shard, lo, dest)
      .then([this, &c, lo, dest, attempt, n, shard](Status s) -> kj::Promise<Status> {
        if (s) return s;
        if (attempt + 1 >= n) {
          return Status(Error{Errc::kUnavailable, "chunk " + std::to_string(c.id.value) +
                                                      ": no replica readable (last: " +
                                                      s.error().toString() + ")"});
        }
        log::debug("chunk ", c.id.value, " replica ", shard, ": ", s.error().toString().c_str(),
                   "; trying another");
        return readReplica(c, lo, dest, attempt + 1);
      })
      .attach(kj::mv(chunkCopy));
}

// --- public ----------------------------------------------------------------------------------

kj::Promise<Status> DataPath::read(const ChunkDesc& chunk, uint64_t off,
                                   kj::ArrayPtr<kj::byte> out) {
  if (out.size() == 0) return Status();
  KJ_REQUIRE(off + out.size() <= kChunkSize, off, out.size());
  const Layout& l = chunk.layout;
  if (!l.isEc()) {
    uint64_t lo = alignDown(off, kBlockSize), hi = alignUp(off + out.size(), kBlockSize);
    if (lo == off && hi == off + out.size()) return readReplica(chunk, lo, out, 0);
    auto buf = kj::heapArray<kj::byte>(hi - lo);
    auto bufPtr = buf.asPtr();
    return readReplica(chunk, lo, bufPtr, 0)
        .then([bufPtr, out, skip = off - lo](Status s) mutable {
          if (s) memcpy(out.begin(), bufPtr.begin() + skip, out.size());
          return s;
        })
        .attach(kj::mv(buf));
  }
  // One aligned buffer per data shard touched; scatter into `out` afterwards.
  auto extents = dataExtents(l, off, out.size());
  struct Buffers {
    std::vector<kj::Array<kj::byte>> bufs;
    std::vector<uint64_t> base;
  };
  auto b = kj::heap<Buffers>();
  b->bufs.resize(l.k);
  b->base.resize(l.k);
  std::vector<Want> wants;
  for (int j = 0; j < l.k; ++j) {
    if (extents[j].empty()) continue;
    uint64_t lo = alignDown(extents[j].lo, kBlockSize), hi = alignUp(extents[j].hi, kBlockSize);
    b->bufs[j] = kj::heapArray<kj::byte>(hi - lo);
    b->base[j] = lo;
    wants.push_back(Want{j, lo, b->bufs[j]});
  }
  auto& ref = *b;
  Layout layout = l;
  return readEc(chunk, kj::mv(wants), false)
      .then([&ref, layout, off, out](Status s) mutable {
        if (!s) return s;
        forEachRun(layout, off, out.size(), [&](uint64_t chunkOff, int shard, uint64_t shardOff, uint64_t n) {
          memcpy(out.begin() + (chunkOff - off), ref.bufs[shard].begin() + (shardOff - ref.base[shard]), n);
        });
        return s;
      })
      .attach(kj::mv(b));
}

kj::Promise<Result<uint32_t>> DataPath::joinShardWrites(const ChunkDesc& chunk,
                                                        kj::Array<kj::Promise<Status>> all,
                                                        std::vector<int> shards) {
  return kj::joinPromises(kj::mv(all)).then(
      [id = chunk.id, layout = chunk.layout, stale = chunk.staleShards,
       shards = kj::mv(shards)](kj::Array<Status> results) -> Result<uint32_t> {
        uint32_t failed = 0;
        std::optional<Error> first;
        for (size_t i = 0; i < results.size(); ++i) {
          if (results[i]) continue;
          const Error& e = results[i].error();
          // Fenced: another writer holds the lease now. Invalid: a bug, not a lost server.
          if (e.code == Errc::kStale || e.code == Errc::kInvalid) return e;
          failed |= 1u << shards[i];
          if (!first) first = e;
        }
        int lost = std::popcount(failed | stale);
        int tolerable = layout.isEc() ? layout.m : layout.shards() - 1;
        if (lost > tolerable) {
          return Error{Errc::kUnavailable,
                       "chunk " + std::to_string(id.value) + ": " + std::to_string(lost) + " of " +
                           std::to_string(layout.shards()) + " shards unwritable (" +
                           first->toString() + ")"};
        }
        if (failed) {
          log::warn("chunk ", id.value, ": write missed shards (mask ", failed, "): ",
                    first->toString().c_str(), "; they become stale");
        }
        return failed;
      });
}

kj::Promise<Result<uint32_t>> DataPath::write(const ChunkDesc& chunk, uint64_t off,
                                              kj::ArrayPtr<const kj::byte> data, bool sync,
                                              std::shared_ptr<FreshChunk> fresh, InodeId inode) {
  if (data.size() == 0) return Result<uint32_t>(0u);
  KJ_REQUIRE(off + data.size() <= kChunkSize, off, data.size());
  if (!chunk.layout.isEc()) return writeReplica(chunk, off, data, sync, kj::mv(fresh));
  if (logs(chunk, data.size(), inode, fresh.get())) {
    return writeLogged(chunk, off, data, inode, kj::mv(fresh));
  }
  // Straight to the stripes, after the log's records of the chunk: they are older.
  if (logs_.count(chunk.id.value)) {
    return drainLog(chunk.id).then(
        [this, chunk, off, data, sync, fresh = kj::mv(fresh)](Status s) mutable
        -> kj::Promise<Result<uint32_t>> {
          if (!s) return Result<uint32_t>(s.error());
          return writeEc(chunk, off, data, sync, kj::mv(fresh));
        });
  }
  return writeEc(chunk, off, data, sync, kj::mv(fresh));
}

bool DataPath::logs(const ChunkDesc& chunk, uint64_t size, InodeId inode,
                    const FreshChunk* fresh) const {
  // Small ec writes — except the first of a chunk this client placed, which creates its shards
  // (and has no old content to protect).
  return chunk.layout.isEc() && size < stripeWidth(chunk.layout) && logConfig_.enabled &&
         inode.value != 0 && chunk.epoch > 0 && !(fresh && !fresh->shardsCreated);
}

kj::Promise<Result<uint32_t>> DataPath::writeEc(const ChunkDesc& chunk, uint64_t off,
                                                kj::ArrayPtr<const kj::byte> data, bool sync,
                                                std::shared_ptr<FreshChunk> fresh,
                                                bool parityFirst) {
  struct State {
    std::shared_ptr<FreshChunk> fresh;
    ChunkDesc chunk;
    Extent rows;
    std::vector<Extent> extents;
    std::vector<kj::Array<kj::byte>> bufs;  // k + m shards, rows.lo .. rows.hi
    RangeLock::Guard guard;
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  const Layout& l = st->chunk.layout;
  st->rows = rowExtent(l, off, data.size());
  st->extents = dataExtents(l, off, data.size());
  st->fresh = kj::mv(fresh);
  auto& s = *st;
  return rows_.lock(chunk.id.value, s.rows.lo, s.rows.hi)
      .then([this, &s, off, data](RangeLock::Guard guard) {
        s.guard = kj::mv(guard);
        const Layout& l = s.chunk.layout;
        const uint64_t L = s.rows.lo, H = s.rows.hi;
        s.bufs.resize(l.shards());
        for (auto& b : s.bufs) b = kj::heapArray<kj::byte>(H - L);
        // Old contents of the data blocks this write does not cover entirely.
        std::vector<Want> wants;
        auto want = [&](int j, uint64_t lo, uint64_t hi) {
          if (hi <= lo) return;
          auto dest = s.bufs[j].slice(lo - L, hi - L);
          if (s.fresh && !s.fresh->overlaps(j, lo, hi)) {
            memset(dest.begin(), 0, dest.size());  // never written: zeros, nothing to read
            return;
          }
          wants.push_back(Want{j, lo, dest});
        };
        for (int j = 0; j < l.k; ++j) {
          const Extent& e = s.extents[j];
          if (e.empty()) {
            want(j, L, H);
            continue;
          }
          uint64_t prefixEnd = e.lo % kBlockSize ? alignUp(e.lo, kBlockSize) : e.lo;
          uint64_t suffixStart = e.hi % kBlockSize ? alignDown(e.hi, kBlockSize) : e.hi;
          if (prefixEnd >= suffixStart) {
            want(j, L, H);
          } else {
            want(j, L, prefixEnd);
            want(j, suffixStart, H);
          }
        }
        return readEc(s.chunk, kj::mv(wants), true, true);
      })
      .then([this, &s, off, data, sync, parityFirst](Status r) -> kj::Promise<Result<uint32_t>> {
        if (!r) return Result<uint32_t>(r.error());
        const Layout& l = s.chunk.layout;
        const uint64_t L = s.rows.lo, H = s.rows.hi;
        // A block this write covers in part keeps the rest of its old bytes, and a lost block
        // has none (its pattern was read for the parity's sake, fs/lost_block.h): refused,
        // before anything is written.
        for (int j = 0; j < l.k; ++j) {
          const Extent& e = s.extents[j];
          if (e.empty()) continue;
          for (uint64_t edge : {e.lo, e.hi}) {
            if (edge % kBlockSize == 0) continue;
            uint64_t block = alignDown(edge, kBlockSize);
            if (isLostBlock(s.bufs[j].begin() + (block - L))) {
              return Result<uint32_t>(Error{
                  Errc::kUnavailable, "chunk " + std::to_string(s.chunk.id.value) + " shard " +
                                          std::to_string(j) + ": the block at offset " +
                                          std::to_string(block) +
                                          " is lost: a write of part of it cannot know the rest"});
            }
          }
        }
        forEachRun(l, off, data.size(), [&](uint64_t chunkOff, int shard, uint64_t shardOff, uint64_t n) {
          memcpy(s.bufs[shard].begin() + (shardOff - L), data.begin() + (chunkOff - off), n);
        });
        std::vector<const uint8_t*> in;
        std::vector<uint8_t*> parity;
        for (int j = 0; j < l.k; ++j) in.push_back(s.bufs[j].begin());
        for (int j = l.k; j < l.shards(); ++j) parity.push_back(s.bufs[j].begin());
        code(l).encode(in.data(), parity.data(), H - L);
        // Testing only: a writer that dies between a large write's data and its parity.
        const bool dieAfterData = logConfig_.faultExitAfterData && !parityFirst;
        // Writes `parity` shards or the data shards; their mask of missed shards.
        auto writeSome = [this, &s, sync, parityFirst, dieAfterData](bool parity) {
          const Layout& l = s.chunk.layout;
          const uint64_t L = s.rows.lo;
          kj::Vector<kj::Promise<Status>> writes;
          std::vector<int> shards;
          bool create = s.fresh && !s.fresh->shardsCreated;
          auto add = [&](int j, uint64_t lo, kj::ArrayPtr<const kj::byte> bytes) {
            if (s.chunk.stale(j)) return;  // missed earlier writes: rebuilt whole later
            writes.add(
                writeShard(s.chunk, j, lo, bytes, sync || (parity && parityFirst), create));
            shards.push_back(j);
          };
          if (!parity) {
            for (int j = 0; j < l.k; ++j) {
              const Extent& e = s.extents[j];
              if (e.empty()) continue;
              uint64_t lo = alignDown(e.lo, kBlockSize), hi = alignUp(e.hi, kBlockSize);
              add(j, lo, s.bufs[j].slice(lo - L, hi - L));
            }
            if (create) {
              for (int j = 0; j < l.k; ++j) {
                if (s.extents[j].empty()) add(j, 0, kj::ArrayPtr<const kj::byte>());
              }
            }
          }
          if (parity || (!parityFirst && !dieAfterData)) {
            for (int j = l.k; j < l.shards(); ++j) add(j, L, s.bufs[j]);
          }
          return joinShardWrites(s.chunk, writes.releaseAsArray(), kj::mv(shards));
        };
        // An apply of log records writes, and syncs, the parity before the data: data never
        // runs ahead of parity (fs/row_agreement.h).
        kj::Promise<Result<uint32_t>> written =
            !parityFirst ? writeSome(false)
                         : writeSome(true).then(
                               [&s, writeSome](Result<uint32_t> p) -> kj::Promise<Result<uint32_t>> {
                                 if (!p) return kj::mv(p);
                                 s.chunk.staleShards |= *p;
                                 return writeSome(false).then([p = *p](Result<uint32_t> d) {
                                   if (!d) return d;
                                   return Result<uint32_t>(*d | p);
                                 });
                               });
        if (dieAfterData) {
          written = written.then([&s](Result<uint32_t> r) -> Result<uint32_t> {
            log::warn("chunk ", s.chunk.id.value,
                      ": exiting after a large write's data, before its parity "
                      "(--fault-exit-after-data)");
            _exit(9);
          });
        }
        return written.then([&s](Result<uint32_t> r) {
          // Recorded before the rows are unlocked: the next writer of these rows reads them.
          if (r && s.fresh) {
            for (int j = 0; j < s.chunk.layout.k; ++j) {
              const Extent& e = s.extents[j];
              if (!e.empty()) s.fresh->add(j, alignDown(e.lo, kBlockSize), alignUp(e.hi, kBlockSize));
            }
            s.fresh->shardsCreated = true;
          }
          // Unlocked now, not when the promise is dropped: a caller that joins several writes
          // of overlapping rows (the log's applier) drops them all only at the end.
          s.guard.release();
          return r;
        });
      })
      .then(
          [&s](Result<uint32_t> r) {
            s.guard.release();  // also after a failed read
            return r;
          },
          [&s](kj::Exception&& e) -> Result<uint32_t> {
            s.guard.release();
            kj::throwFatalException(kj::mv(e));
          })
      .attach(kj::mv(st));
}

kj::Promise<Result<uint32_t>> DataPath::writeReplica(const ChunkDesc& chunk, uint64_t off,
                                                     kj::ArrayPtr<const kj::byte> data,
                                                     bool sync,
                                                     std::shared_ptr<FreshChunk> fresh) {
  struct State {
    std::shared_ptr<FreshChunk> fresh;
    ChunkDesc chunk;
    uint64_t lo, hi;
    kj::Array<kj::byte> buf;
    RangeLock::Guard guard;
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  st->lo = alignDown(off, kBlockSize);
  st->hi = alignUp(off + data.size(), kBlockSize);
  st->fresh = kj::mv(fresh);
  auto& s = *st;
  return rows_.lock(chunk.id.value, s.lo, s.hi)
      .then([this, &s, off, data](RangeLock::Guard guard) -> kj::Promise<Status> {
        s.guard = kj::mv(guard);
        s.buf = kj::heapArray<kj::byte>(s.hi - s.lo);
        kj::Vector<kj::Promise<Status>> edges;
        memset(s.buf.begin(), 0, s.buf.size());
        // Edge blocks of a fresh chunk this client never wrote are zeros: nothing to read.
        auto unknown = [&](uint64_t lo) {
          return !s.fresh || s.fresh->overlaps(0, lo, lo + kBlockSize);
        };
        bool headPartial = off != s.lo && unknown(s.lo);
        bool tailPartial = off + data.size() != s.hi && unknown(s.hi - kBlockSize);
        if (headPartial) {
          edges.add(readReplica(s.chunk, s.lo, s.buf.slice(0, kBlockSize), 0));
        }
        if (tailPartial && !(headPartial && s.hi - s.lo == kBlockSize)) {
          edges.add(readReplica(s.chunk, s.hi - kBlockSize,
                                s.buf.slice(s.buf.size() - kBlockSize, s.buf.size()), 0));
        }
        return joinStatus(edges.releaseAsArray());
      })
      .then([this, &s, off, data, sync](Status r) -> kj::Promise<Result<uint32_t>> {
        if (!r) return Result<uint32_t>(r.error());
        memcpy(s.buf.begin() + (off - s.lo), data.begin(), data.size());
        kj::Vector<kj::Promise<Status>> writes;
        std::vector<int> shards;
        for (int j = 0; j < s.chunk.layout.shards(); ++j) {
          if (s.chunk.stale(j)) continue;
          writes.add(writeShard(s.chunk, j, s.lo, s.buf, sync,
                                s.fresh && !s.fresh->shardsCreated));
          shards.push_back(j);
        }
        return joinShardWrites(s.chunk, writes.releaseAsArray(), kj::mv(shards))
            .then([&s](Result<uint32_t> r) {
          if (r && s.fresh) {
            s.fresh->add(0, s.lo, s.hi);
            s.fresh->shardsCreated = true;
          }
          return r;
        });
      })
      .attach(kj::mv(st));
}

kj::Promise<Result<uint32_t>> DataPath::truncate(const ChunkDesc& chunk, uint64_t len) {
  KJ_REQUIRE(len > 0 && len < kChunkSize, len);
  const Layout& l = chunk.layout;
  // The stripe (ec) or block (replica) holding the new last byte keeps only zeros after it, so
  // growing the file later reads zeros there; everything after that stripe is cut off.
  uint64_t width = stripeWidth(l);
  uint64_t end = alignUp(len, width);
  uint64_t shardLen = l.isEc() ? end / l.k : end;
  auto chunkCopy = kj::heap<ChunkDesc>(chunk);
  auto& c = *chunkCopy;
  // The log's records of the chunk first: some may lie past the cut.
  kj::Promise<Status> drained = logs_.count(c.id.value) ? drainLog(c.id) : kj::Promise<Status>(Status());
  auto zeroing = drained.then([this, &c, len, end](Status d) -> kj::Promise<Result<uint32_t>> {
    if (!d) return Result<uint32_t>(d.error());
    if (end <= len) return Result<uint32_t>(0u);
    auto zeros = kj::heapArray<kj::byte>(end - len);
    memset(zeros.begin(), 0, zeros.size());
    auto ptr = zeros.asPtr();
    return write(c, len, ptr, false).attach(kj::mv(zeros));
  });
  return zeroing
      .then([this, &c, shardLen](Result<uint32_t> zeroed) -> kj::Promise<Result<uint32_t>> {
        if (!zeroed) return zeroed;
        // Shards the zeroing missed are stale already: cut the others.
        c.staleShards |= *zeroed;
        kj::Vector<kj::Promise<Status>> cuts;
        std::vector<int> shards;
        for (int j = 0; j < c.layout.shards(); ++j) {
          if (c.stale(j)) continue;
          ServerId server = c.servers[j];
          uint64_t chunkId = c.id.value;
          uint64_t epoch = c.epoch;
          shards.push_back(j);
          cuts.add(servers_.get(server).then(
              [this, server, chunkId, epoch, j, shardLen](
                  Result<proto::ChunkService::Client> service) -> kj::Promise<Status> {
                if (!service) return Status(service.error());
                auto req = service->truncateRequest();
                req.setChunk(chunkId);
                req.setShard(uint8_t(j));
                req.setLength(shardLen);
                req.setEpoch(epoch);
                return withTimeout(timer_, ioTimeoutMs_, req.send())
                    .then([](capnp::Response<proto::ChunkService::TruncateResults> r) {
                      auto st = fromWire(r.getError());
                      // A shard never written has nothing to cut.
                      if (!st && st.error().code == Errc::kNotFound) return Status();
                      return st;
                    },
                    [this, server, used = *service](kj::Exception&& e) mutable -> Status {
                      servers_.failed(server, used, e);
                      return errorFromException(e, "truncate shard");
                    });
              }));
        }
        return joinShardWrites(c, cuts.releaseAsArray(), kj::mv(shards))
            .then([zeroed = *zeroed](Result<uint32_t> cut) -> Result<uint32_t> {
              if (!cut) return cut;
              return *cut | zeroed;
            });
      })
      .attach(kj::mv(chunkCopy));
}

// Re-sync after an unclean lease handover: the last holder may have died (or been fenced) in
// the middle of a write, leaving rows whose parity (ec) or replicas (replica) disagree with the
// data. The next holder, before its first write, makes every row of [0, len) consistent again:
// ec re-encodes the parity of each row from its data shards; replica copies the first readable
// replica over the others. Each row's data is then either the old or the new content of the
// interrupted write, and so is everything a degraded read decodes from it.
kj::Promise<Result<uint32_t>> DataPath::resync(const ChunkDesc& chunk, uint64_t len) {
  struct State {
    ChunkDesc chunk;
    uint64_t shardLen = 0;  // bytes of each shard to make consistent
    uint32_t missed = 0;
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  const Layout& l = chunk.layout;
  uint64_t end = alignUp(std::min<uint64_t>(len, kChunkSize), stripeWidth(l));
  st->shardLen = l.isEc() ? end / l.k : end;
  auto& s = *st;
  return resyncFrom(s.chunk, 0, s.shardLen, 0).attach(kj::mv(st));
}

kj::Promise<Result<uint32_t>> DataPath::resyncFrom(const ChunkDesc& chunk, uint64_t lo,
                                                   uint64_t end, uint32_t missed) {
  if (lo >= end) return Result<uint32_t>(missed);
  uint64_t hi = std::min(end, lo + kMaxTransfer);
  struct Piece {
    std::vector<kj::Array<kj::byte>> bufs;
    RangeLock::Guard guard;
    std::vector<uint64_t> torn;  // rows left as they are: a lost data block, decoded from a mix
  };
  auto piece = kj::heap<Piece>();
  auto& p = *piece;
  const Layout& l = chunk.layout;
  (void)l;
  // Rows [lo, hi) of every shard (what the RangeLock counts in): this client's writes wait.
  return rows_.lock(chunk.id.value, lo, hi)
      .then([this, &chunk, &p, lo, hi](RangeLock::Guard guard) -> kj::Promise<Status> {
        p.guard = kj::mv(guard);
        const Layout& l = chunk.layout;
        if (!l.isEc()) {
          p.bufs.push_back(kj::heapArray<kj::byte>(hi - lo));
          return readReplica(chunk, lo, p.bufs[0], 0);
        }
        std::vector<Want> wants;
        for (int j = 0; j < l.shards(); ++j) {
          p.bufs.push_back(kj::heapArray<kj::byte>(hi - lo));
          if (j < l.k) wants.push_back(Want{j, lo, p.bufs[j]});
        }
        return readEc(chunk, kj::mv(wants), true, true, &p.torn);
      })
      .then([this, &chunk, &p, lo, hi](Status r) -> kj::Promise<Result<uint32_t>> {
        if (!r) return Result<uint32_t>(r.error());
        const Layout& l = chunk.layout;
        kj::Vector<kj::Promise<Status>> writes;
        std::vector<int> shards;
        if (l.isEc()) {
          std::vector<const uint8_t*> in;
          std::vector<uint8_t*> parity;
          for (int j = 0; j < l.k; ++j) in.push_back(p.bufs[j].begin());
          for (int j = l.k; j < l.shards(); ++j) parity.push_back(p.bufs[j].begin());
          code(l).encode(in.data(), parity.data(), p.bufs[0].size());
          // A row whose lost data block decoded from a mix of old and new blocks (the last
          // holder died between a large write's data and its parity, and a data shard is lost
          // too) cannot be made whole: that block's bytes are known nowhere. Its parity is left
          // as it is, so readers keep finding the mix and answer EIO, never garbage; parity
          // encoded over the garbage would make it read as valid data.
          std::sort(p.torn.begin(), p.torn.end());
          if (!p.torn.empty()) {
            log::warn("chunk ", chunk.id.value, ": re-sync leaves ", p.torn.size(),
                      " block rows from shard offset ", p.torn[0],
                      " as they are: a data shard is lost and they hold an interrupted write's "
                      "mix; reads of the lost blocks there fail");
          }
          std::vector<Extent> runs;
          uint64_t at = lo;
          for (uint64_t t : p.torn) {
            if (t > at) runs.push_back(Extent{at, t});
            at = t + kBlockSize;
          }
          if (at < hi) runs.push_back(Extent{at, hi});
          for (int j = l.k; j < l.shards(); ++j) {
            if (chunk.stale(j)) continue;
            for (const Extent& e : runs) {
              writes.add(writeShard(chunk, j, e.lo, p.bufs[j].slice(e.lo - lo, e.hi - lo), true,
                                    false));
              shards.push_back(j);
            }
          }
        } else {
          for (int j = 0; j < l.shards(); ++j) {
            if (chunk.stale(j)) continue;
            writes.add(writeShard(chunk, j, lo, p.bufs[0], true, false));
            shards.push_back(j);
          }
        }
        return joinShardWrites(chunk, writes.releaseAsArray(), kj::mv(shards));
      })
      .attach(kj::mv(piece))
      .then([this, &chunk, hi, end, missed](Result<uint32_t> r) -> kj::Promise<Result<uint32_t>> {
        if (!r) return r;
        return resyncFrom(chunk, hi, end, missed | *r);
      });
}

kj::Promise<Result<uint32_t>> DataPath::fence(const ChunkDesc& chunk, uint32_t* logRecords) {
  kj::Vector<kj::Promise<Status>> fences;
  std::vector<int> shards;
  for (int j = 0; j < chunk.layout.shards(); ++j) {
    if (chunk.stale(j)) continue;
    ServerId server = chunk.servers[j];
    uint64_t chunkId = chunk.id.value, epoch = chunk.epoch;
    shards.push_back(j);
    fences.add(servers_.get(server).then(
        [this, server, chunkId, epoch, logRecords](Result<proto::ChunkService::Client> service)
            -> kj::Promise<Status> {
          if (!service) return Status(service.error());
          auto req = service->fenceRequest();
          req.setChunk(chunkId);
          req.setEpoch(epoch);
          return withTimeout(timer_, ioTimeoutMs_, req.send())
              .then([logRecords](capnp::Response<proto::ChunkService::FenceResults> r) {
                if (logRecords) *logRecords = std::max(*logRecords, r.getLogRecords());
                return fromWire(r.getError());
              },
              [this, server, used = *service](kj::Exception&& e) mutable -> Status {
                servers_.failed(server, used, e);
                return errorFromException(e, "fence chunk");
              });
        }));
  }
  return joinShardWrites(chunk, fences.releaseAsArray(), kj::mv(shards));
}

kj::Promise<Status> DataPath::sync(ServerId server, const std::vector<ShardKey>& shards) {
  auto list = shards;
  return servers_.get(server).then(
      [this, server, list = kj::mv(list)](Result<proto::ChunkService::Client> service)
          -> kj::Promise<Status> {
        if (!service) return Status(service.error());
        auto req = service->syncRequest();
        auto refs = req.initShards(list.size());
        for (size_t i = 0; i < list.size(); ++i) {
          refs[i].setChunk(list[i].chunk.value);
          refs[i].setShard(uint8_t(list[i].shard));
        }
        return withTimeout(timer_, ioTimeoutMs_, req.send())
            .then([server](capnp::Response<proto::ChunkService::SyncResults> r) -> Status {
              auto st = fromWire(r.getError());
              // A shard this client wrote is gone: its data is lost there, not "no such file".
              if (!st && st.error().code == Errc::kNotFound) {
                return Error{Errc::kIo, "chunk server " + std::to_string(server.value) +
                                            " lost a shard before it was synced: " +
                                            st.error().detail};
              }
              return st;
            },
            [this, server, used = *service](kj::Exception&& e) mutable -> Status {
              servers_.failed(server, used, e);
              return errorFromException(e, "sync shards");
            });
      });
}

}  // namespace tessera::client
