// client/data_path_log.cc — the write log of ec chunks (DESIGN.md rule 2), on the client side.
//
// The argument. A small write to an ec(k,m) chunk would be a read-modify-write of its rows: the
// new data blocks and all m parity blocks, on k + ... servers that a crash can catch half done
// (the write hole). Instead, the lease holder (only it writes the chunk, fenced by epoch: rule
// 3) cuts the write into whole 4 KiB blocks per data shard (reading the old bytes of a partial
// edge block first, under its row lock) and appends each piece as a record (epoch, seq, shard,
// shard offset, blocks) to m + 1 of the chunk's shard servers — the server of its data shard
// first, then the parity servers, then other data servers — each of which fsyncs it (group
// commit) before answering. The write is acknowledged when m + 1 have it, so it survives the
// loss of any m servers (rule 1), with one round trip and no read of other shards.
//
// Meanwhile the stripe is untouched, so it stays decodable to its old content; what makes the
// new content visible is that the data shard's server returns the newest record's blocks in
// place of its stored ones to every reader (chunk/chunk_log.h), and a reader that rebuilds a
// lost data shard decodes the stored (raw) stripe and lays the records it fetches from the
// other servers over it. A record that missed its data shard's server makes that shard stale
// before the write is acknowledged, so no reader asks that server.
//
// The applier (one per chunk at a time, in the background, batching what arrived meanwhile:
// client/data_path_apply.cc) writes the records into the stripes in seq order by re-encoding
// their rows — reading the other data blocks raw, so the parity it computes matches the stored
// bytes — syncs the shards it wrote, and only then trims the records (epoch, seq <= the last
// applied) on every server it sent them to. A crash at any point of that leaves the records in
// place: re-applying a record writes the same data and re-encodes the same rows from what is
// stored, so it is idempotent, and the next lease holder does it (fence reports how many records
// a server holds; recoverLog applies every record older than its epoch, in order, then trims
// them). A row the crash left half written is made consistent by that re-apply, and by the
// re-sync an unclean lease handover orders for the whole chunk. Any failure to write, sync or
// trim a shard makes the shard stale (repair rebuilds it, and a rebuilt shard's server drops
// the chunk's records), so a record can never linger on a server that is still read from
// after the stripes moved past it. Large writes go straight to the stripes after the chunk's
// log is drained (older records must not land over them); truncate drains first too, and a
// lease is released only after its chunks' logs are drained.
//
// A second fault while a row is half applied: the client dies in the middle of an apply AND
// the server of another data shard of that row is lost (one host can run both). That shard's
// block in the row is in no record, and a plain decode from the half-written row mixes old and
// new blocks into garbage. So the applier writes and syncs a batch's parity before its data
// (data never runs ahead of parity), and a reader that rebuilds a lost data shard, and the
// next holder's recoverLog, decode such a block by agreement of the parity blocks instead
// (fs/row_agreement.h has the argument): exact with two parity shards readable; with one,
// a row whose records leave it ambiguous is an error (kUnavailable), never a guess. recoverLog
// runs before the re-sync, which would otherwise re-encode the half-written rows first.
//
// Repair does the same: the chunk server's rebuilder decodes the blocks of rows that unapplied
// records touch by agreement too (Rebuilder::redecodeLoggedRows), so a data shard rebuilt while a
// dead writer's half-applied rows wait for the next writer does not keep garbage there.
//
// Large writes go straight to the stripes, data and parity at once, with no record of their
// bytes. A writer killed in the middle of one leaves rows whose blocks mix old and new (each
// block is either); a data block of such a row lost before the re-sync cannot be known. So
// every decode of a lost data block is checked against a parity block to spare
// (rowsDisagreeingWithParity): readers answer EIO, the re-sync leaves the row, and the
// rebuilder marks the block lost (chunk/rebuilder.h) — never garbage passed off as data. From
// then on the block's own server answers kLost for it (unless a record holds it), and readers
// fail at once, without a decode: that holds with no parity left to spare too. Before it is
// marked, with no parity block to spare (one left, or two data shards lost), the mix cannot be
// told.
#include <kj/debug.h>

#include <algorithm>
#include <bit>
#include <set>

#include "client/data_path.h"
#include "fs/checksum.h"
#include "fs/log.h"
#include "fs/row_agreement.h"
#include "fs/rpc.h"
#include "fs/wire.h"

namespace tessera::client {

namespace {
// A server whose log is full is asked again every kLogFullRetryMs, kLogFullRetries times (2 s).
constexpr int kLogFullRetries = 20;
constexpr uint64_t kLogFullRetryMs = 100;
}  // namespace

struct DataPath::LogChunk {
  ChunkDesc chunk;  // the newest descriptor seen: epoch, stale shards
  InodeId inode;
  uint64_t nextSeq = 1;
  // Records by seq: `done` once their appends finished (acknowledged or failed).
  struct Pending {
    LogRecord record;
    bool done = false;
  };
  std::map<uint64_t, Pending> pending;
  uint64_t bytes = 0;
  bool scheduled = false;
  bool applying = false;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> changed;  // woken on any progress

  void wake() {
    for (auto& f : changed) f->fulfill();
    changed.clear();
  }
};

void DataPath::TaskErrors::taskFailed(kj::Exception&& e) {
  log::warn("write log: ", e.getDescription().cStr());
}

DataPath::~DataPath() = default;

uint64_t DataPath::loggingEpoch(ChunkId chunk) const {
  auto it = logs_.find(chunk.value);
  return it == logs_.end() ? 0 : it->second->chunk.epoch;
}

DataPath::LogStats DataPath::logStats() const {
  LogStats s = logStats_;
  s.pendingBytes = logBytes_;
  return s;
}

kj::Promise<void> DataPath::waitForLogRoom() {
  if (logBytes_ < logConfig_.memoryLimit) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  logRoomWaiters_.push_back(kj::mv(paf.fulfiller));
  return paf.promise.then([this] { return waitForLogRoom(); });
}

kj::Promise<Result<uint32_t>> DataPath::writeLogged(const ChunkDesc& chunk, uint64_t off,
                                                    kj::ArrayPtr<const kj::byte> data,
                                                    InodeId inode,
                                                    std::shared_ptr<FreshChunk> fresh) {
  struct State {
    ChunkDesc chunk;
    Extent rows;
    RangeLock::Guard guard;
    struct Piece {
      int shard;
      uint64_t lo, hi;  // block-aligned shard range
      kj::Array<kj::byte> buf;
    };
    std::vector<Piece> pieces;
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  auto& s = *st;
  const Layout& l = s.chunk.layout;
  s.rows = rowExtent(l, off, data.size());
  return waitForLogRoom()
      .then([this, &s] { return rows_.lock(s.chunk.id.value, s.rows.lo, s.rows.hi); })
      .then([this, &s, off, data, fresh = kj::mv(fresh)](RangeLock::Guard guard) {
        s.guard = kj::mv(guard);
        const Layout& l = s.chunk.layout;
        std::vector<Want> wants;
        // The old bytes of an edge block: zeros if this client placed the chunk and never wrote
        // the block, else as readers see them (our earlier records too).
        auto old = [&](int shard, uint64_t lo, kj::ArrayPtr<kj::byte> dest) {
          if (fresh && !fresh->overlaps(shard, lo, lo + kBlockSize)) {
            memset(dest.begin(), 0, dest.size());
          } else {
            wants.push_back(Want{shard, lo, dest});
          }
        };
        forEachRun(l, off, data.size(), [&](uint64_t, int shard, uint64_t shardOff, uint64_t n) {
          State::Piece p;
          p.shard = shard;
          p.lo = alignDown(shardOff, kBlockSize);
          p.hi = alignUp(shardOff + n, kBlockSize);
          p.buf = kj::heapArray<kj::byte>(p.hi - p.lo);
          bool head = shardOff != p.lo, tail = shardOff + n != p.hi;
          if (head) old(shard, p.lo, p.buf.slice(0, kBlockSize));
          if (tail && !(head && p.hi - p.lo == kBlockSize)) {
            old(shard, p.hi - kBlockSize, p.buf.slice(p.hi - p.lo - kBlockSize, p.hi - p.lo));
          }
          s.pieces.push_back(kj::mv(p));
        });
        // Recorded before the rows are unlocked, and even if an append fails (the blocks may
        // then hold either content): the next direct write of these rows must read them.
        if (fresh) {
          for (auto& p : s.pieces) fresh->add(p.shard, p.lo, p.hi);
        }
        if (wants.empty()) return kj::Promise<Status>(Status());
        return readEc(s.chunk, kj::mv(wants), true);
      })
      .then([this, &s, off, data, inode](Status r) -> kj::Promise<Result<uint32_t>> {
        if (!r) return Result<uint32_t>(r.error());
        const Layout& l = s.chunk.layout;
        forEachRun(l, off, data.size(), [&](uint64_t chunkOff, int shard, uint64_t shardOff, uint64_t n) {
          for (auto& p : s.pieces) {
            if (p.shard == shard && shardOff >= p.lo && shardOff + n <= p.hi) {
              memcpy(p.buf.begin() + (shardOff - p.lo), data.begin() + (chunkOff - off), n);
            }
          }
        });
        auto& slot = logs_[s.chunk.id.value];
        if (!slot || slot->chunk.epoch != s.chunk.epoch) {
          if (slot) forgetLog(s.chunk.id);
          logs_[s.chunk.id.value] = std::make_shared<LogChunk>();
        }
        auto& lc = *logs_[s.chunk.id.value];
        lc.chunk = s.chunk;
        lc.inode = inode;
        kj::Vector<kj::Promise<Result<uint32_t>>> appends;
        for (auto& p : s.pieces) {
          uint64_t seq = lc.nextSeq++;
          auto& pend = lc.pending[seq];
          pend.record.epoch = s.chunk.epoch;
          pend.record.seq = seq;
          pend.record.shard = p.shard;
          pend.record.offset = p.lo;
          pend.record.data = kj::mv(p.buf);
          lc.bytes += pend.record.data.size();
          logBytes_ += pend.record.data.size();
          logStats_.appended++;
          logStats_.loggedBytes += pend.record.data.size();
          // The record lives in `lc`, which forgetLog may drop from logs_ meanwhile (a server
          // with a full log is asked again seconds later): kept alive until the append is done.
          appends.add(appendRecord(s.chunk, pend.record)
                          .attach(std::shared_ptr<LogChunk>(logs_[s.chunk.id.value]))
                          .then([this, id = s.chunk.id.value, seq](Result<uint32_t> r) {
                            auto it = logs_.find(id);
                            if (it != logs_.end()) {
                              auto rec = it->second->pending.find(seq);
                              if (rec != it->second->pending.end()) rec->second.done = true;
                              it->second->wake();
                              scheduleApply(id);
                            }
                            return r;
                          })
                          .eagerlyEvaluate(nullptr));
        }
        return kj::joinPromises(appends.releaseAsArray())
            .then([&s](kj::Array<Result<uint32_t>> results) -> Result<uint32_t> {
              s.guard.release();
              uint32_t missed = 0;
              for (auto& r : results) {
                if (!r) return r.error();
                missed |= *r;
              }
              return missed;
            });
      })
      .attach(kj::mv(st));
}

// To m + 1 servers of the chunk: the data shard's, the parity shards', then the other data
// shards' in order, skipping stale ones and replacing any that fails with the next. A server
// whose log is full (kBusy) is asked again a little later, for up to kLogFullRetries rounds,
// before it counts as failed: its room comes back as the records it holds are applied (this
// client's own, among others), and a record that missed the data shard's server would make that
// shard stale, for repair to rebuild.
kj::Promise<Result<uint32_t>> DataPath::appendRecord(const ChunkDesc& chunk, LogRecord& rec) {
  const Layout& l = chunk.layout;
  struct State {
    ChunkDesc chunk;
    std::vector<int> candidates;
    size_t next = 0;
    int ok = 0;
    bool dataOk = false;
    std::optional<Error> last;
    std::vector<int> full;  // asked again next round: their logs were full
    int fullRounds = 0;
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  auto add = [&](int j) {
    if (!chunk.stale(j)) st->candidates.push_back(j);
  };
  add(rec.shard);
  for (int j = l.k; j < l.shards(); ++j) add(j);
  for (int j = 0; j < l.k; ++j) {
    if (j != rec.shard) add(j);
  }
  auto& s = *st;
  const int need = l.m + 1;
  // One round: send to as many candidates as are still needed, then see.
  struct Round {
    static kj::Promise<Status> run(DataPath& dp, State& s, LogRecord& rec, int need) {
      int want = need - s.ok;
      if (want <= 0) return Status();
      std::vector<int> targets = kj::mv(s.full);
      s.full.clear();
      bool later = !targets.empty();
      want -= int(targets.size());
      while (want-- > 0 && s.next < s.candidates.size()) {
        targets.push_back(s.candidates[s.next++]);
      }
      if (targets.empty()) {
        return Status(Error{Errc::kUnavailable,
                            "chunk " + std::to_string(s.chunk.id.value) + ": log record on " +
                                std::to_string(s.ok) + " of " + std::to_string(need) +
                                " servers (" + (s.last ? s.last->toString() : "none left") + ")"});
      }
      kj::Promise<void> ready = kj::READY_NOW;
      if (later) ready = dp.timer_.afterDelay(kLogFullRetryMs * kj::MILLISECONDS);
      return ready
          .then([&dp, &s, &rec, targets] {
            kj::Vector<kj::Promise<Status>> sends;
            for (int j : targets) {
              rec.holders |= 1u << j;
              sends.add(dp.appendTo(s.chunk, j, rec));
            }
            return kj::joinPromises(sends.releaseAsArray());
          })
          .then([&dp, &s, &rec, need, targets](kj::Array<Status> results) -> kj::Promise<Status> {
            bool retried = false;
            for (size_t i = 0; i < results.size(); ++i) {
              if (results[i]) {
                s.ok++;
                if (targets[i] == rec.shard) s.dataOk = true;
                continue;
              }
              const Error& e = results[i].error();
              if (e.code == Errc::kStale || e.code == Errc::kInvalid) return Status(e);
              s.last = e;
              if (e.code == Errc::kBusy && s.fullRounds < kLogFullRetries) {
                s.full.push_back(targets[i]);
                retried = true;
              }
            }
            if (retried) ++s.fullRounds;
            return run(dp, s, rec, need);
          });
    }
  };
  return Round::run(*this, s, rec, need)
      .then([&s, &rec](Status r) -> Result<uint32_t> {
        if (!r) return r.error();
        // The data shard's server did not take it: its reads would miss it, so it is stale.
        if (!s.dataOk && !s.chunk.stale(rec.shard)) {
          log::warn("chunk ", s.chunk.id.value, ": log record missed shard ", rec.shard,
                    " (", s.last ? s.last->toString().c_str() : "", "); it becomes stale");
          return 1u << rec.shard;
        }
        return 0u;
      })
      .attach(kj::mv(st));
}

kj::Promise<Status> DataPath::appendTo(const ChunkDesc& chunk, int target, const LogRecord& rec) {
  ServerId server = chunk.servers[target];
  uint64_t chunkId = chunk.id.value;
  Layout layout = chunk.layout;
  auto data = rec.data.asPtr();
  uint64_t epoch = rec.epoch, seq = rec.seq, offset = rec.offset;
  int shard = rec.shard;
  return servers_.get(server).then([this, server, chunkId, layout, shard, data, epoch, seq,
                                    offset](Result<proto::ChunkService::Client> service)
                                       -> kj::Promise<Status> {
    if (!service) return Status(service.error());
    auto req = service->logAppendRequest();
    req.setChunk(chunkId);
    req.setShard(uint8_t(shard));
    toWire(layout, req.initLayout());
    req.setOffset(offset);
    req.setData(data);
    setBlockCrcs(req.initCrcs(uint32_t(data.size() / kBlockSize)), data);
    req.setEpoch(epoch);
    req.setSeq(seq);
    return withTimeout(timer_, ioTimeoutMs_, req.send())
        .then([](capnp::Response<proto::ChunkService::LogAppendResults> r) {
          return fromWire(r.getError());
        },
        [this, server, used = *service](kj::Exception&& e) mutable -> Status {
          servers_.failed(server, used, e);
          return errorFromException(e, "append to chunk log");
        });
  });
}

void DataPath::scheduleApply(uint64_t id) {
  auto it = logs_.find(id);
  if (it == logs_.end()) return;
  auto& lc = *it->second;
  if (lc.scheduled || lc.applying || lc.pending.empty()) return;
  lc.scheduled = true;
  uint64_t delay = lc.bytes >= logConfig_.applyBytes || logBytes_ >= logConfig_.memoryLimit
                       ? 0
                       : logConfig_.applyDelayMs;
  logTasks_.add(timer_.afterDelay(delay * kj::MILLISECONDS).then([this] { return applySlot(); })
                    .then([this, id] {
    auto slot = kj::defer([this] { releaseApplySlot(); });  // however this ends
    auto it = logs_.find(id);
    if (it == logs_.end()) return kj::Promise<void>(kj::READY_NOW);
    it->second->scheduled = false;
    return applyNow(id).attach(kj::mv(slot)).then([this, id](Status s) -> kj::Promise<void> {
      if (s) {
        scheduleApply(id);
        return kj::READY_NOW;
      }
      log::warn("chunk ", id, ": applying its write log failed (", s.error().toString().c_str(),
                "); trying again in 1 s");
      return timer_.afterDelay(1 * kj::SECONDS).then([this, id] { scheduleApply(id); });
    });
  }));
}

kj::Promise<void> DataPath::applySlot() {
  if (appliesRunning_ < std::max(1u, logConfig_.maxApplies)) {
    ++appliesRunning_;
    return kj::READY_NOW;
  }
  auto paf = kj::newPromiseAndFulfiller<void>();
  applyWaiters_.push_back(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void DataPath::releaseApplySlot() {
  while (!applyWaiters_.empty()) {
    auto next = kj::mv(applyWaiters_.front());
    applyWaiters_.pop_front();
    if (next->isWaiting()) {
      next->fulfill();  // the slot passes on
      return;
    }
  }
  --appliesRunning_;
}

kj::Promise<Status> DataPath::applyNow(uint64_t id) {
  auto it = logs_.find(id);
  if (it == logs_.end()) return Status();
  std::shared_ptr<LogChunk> keep = it->second;  // the batch's data, even if forgotten meanwhile
  LogChunk* lc = keep.get();
  if (lc->applying) {
    auto paf = kj::newPromiseAndFulfiller<void>();
    lc->changed.push_back(kj::mv(paf.fulfiller));
    return paf.promise.then([] { return Status(); });
  }
  // The finished prefix: a record still being appended may not be trimmed yet (its append
  // could land after the trim).
  std::vector<const LogRecord*> batch;
  uint32_t holders = 0;
  uint64_t last = 0;
  for (auto& [seq, p] : lc->pending) {
    if (!p.done) break;
    batch.push_back(&p.record);
    holders |= p.record.holders;
    last = seq;
  }
  if (batch.empty()) return Status();
  log::debug("chunk ", id, ": applying ", batch.size(), " log records up to ", last);
  lc->applying = true;
  size_t count = batch.size();
  // Still this client's log of the chunk (not forgotten: lease lost)?
  auto current = [this, id, lc]() {
    auto it = logs_.find(id);
    return it != logs_.end() && it->second.get() == lc;
  };
  // Missed shards become stale (the chunk's lease is ours) before anything is trimmed.
  auto markMissed = [this, lc, current](Result<uint32_t> missed) -> kj::Promise<Status> {
    if (!missed) return Status(missed.error());
    if (*missed == 0 || !missed_ || !current()) return Status();
    return missed_(lc->inode, lc->chunk, *missed).then([lc](Result<ChunkDesc> c) -> Status {
      if (!c) return c.error();
      lc->chunk.staleShards = c->staleShards;
      return Status();
    });
  };
  inRowOrder(batch);
  return applyRecords(lc->chunk, kj::mv(batch))
      .then(kj::cp(markMissed))  // a copy: then() keeps a reference to an lvalue
      .then([this, lc, holders, last, current](Status r) -> kj::Promise<Result<uint32_t>> {
        if (!r) return Result<uint32_t>(r.error());
        if (!current()) return Result<uint32_t>(0u);
        return trimLog(lc->chunk, holders, lc->chunk.epoch, last);
      })
      .then(kj::cp(markMissed))  // a copy: then() keeps a reference to an lvalue
      .then([this, id, lc, last, count, current](Status r) -> Status {
        log::debug("chunk ", id, ": applied up to ", last, ": ", r ? "ok" : r.error().toString().c_str());
        lc->applying = false;
        lc->wake();
        if (!current()) return r;
        if (!r) {
          logStats_.applyErrors++;
          if (r.code() == Errc::kStale) forgetLog(ChunkId(id));  // the next holder applies them
          return r;
        }
        while (!lc->pending.empty() && lc->pending.begin()->first <= last) {
          uint64_t n = lc->pending.begin()->second.record.data.size();
          lc->bytes -= n;
          logBytes_ -= n;
          lc->pending.erase(lc->pending.begin());
        }
        logStats_.appliedRecords += count;
        for (auto& f : logRoomWaiters_) f->fulfill();
        logRoomWaiters_.clear();
        if (lc->pending.empty()) logs_.erase(id);
        return Status();
      })
      .attach(kj::mv(keep));
}

kj::Promise<Result<uint32_t>> DataPath::trimLog(const ChunkDesc& chunk, uint32_t holders,
                                                uint64_t epoch, uint64_t seq) {
  kj::Vector<kj::Promise<Status>> trims;
  std::vector<int> shards;
  for (int j = 0; j < chunk.layout.shards(); ++j) {
    if (!((holders >> j) & 1u) || chunk.stale(j)) continue;
    ServerId server = chunk.servers[j];
    uint64_t chunkId = chunk.id.value;
    shards.push_back(j);
    trims.add(servers_.get(server).then(
        [this, server, chunkId, epoch, seq](Result<proto::ChunkService::Client> service)
            -> kj::Promise<Status> {
          if (!service) return Status(service.error());
          auto req = service->logTrimRequest();
          req.setChunk(chunkId);
          req.setEpoch(epoch);
          req.setSeq(seq);
          return withTimeout(timer_, ioTimeoutMs_, req.send())
              .then([](capnp::Response<proto::ChunkService::LogTrimResults> r) {
                return fromWire(r.getError());
              },
              [this, server, used = *service](kj::Exception&& e) mutable -> Status {
                servers_.failed(server, used, e);
                return errorFromException(
                    e, "trim chunk log on server " + std::to_string(server.value));
              });
        }));
  }
  return joinShardWrites(chunk, trims.releaseAsArray(), kj::mv(shards));
}

kj::Promise<Result<std::map<std::pair<uint64_t, uint64_t>, DataPath::LogRecord>>>
DataPath::fetchLog(const ChunkDesc& chunk, uint32_t from, int shard, uint64_t lo, uint64_t hi) {
  using Records = std::map<std::pair<uint64_t, uint64_t>, LogRecord>;
  using R = Result<Records>;
  struct State {
    Records merged;
    int answered = 0, asked = 0;
    std::optional<Error> last;
  };
  auto st = kj::heap<State>();
  auto& s = *st;
  kj::Vector<kj::Promise<void>> fetches;
  for (int j = 0; j < chunk.layout.shards(); ++j) {
    if (!((from >> j) & 1u) || chunk.stale(j)) continue;
    s.asked++;
    ServerId server = chunk.servers[j];
    uint64_t chunkId = chunk.id.value;
    // Pages until the server says there is no more.
    struct Pager {
      static kj::Promise<Status> page(DataPath& dp, proto::ChunkService::Client service,
                                      ServerId server, uint64_t chunkId, int shard, uint64_t lo,
                                      uint64_t hi, std::pair<uint64_t, uint64_t> after,
                                      Records& out) {
        auto req = service.logFetchRequest();
        req.setChunk(chunkId);
        req.setShard(shard < 0 ? 255 : uint8_t(shard));
        req.setOffset(lo);
        req.setLength(hi - lo);
        req.setMaxBytes(4 << 20);
        req.setAfterEpoch(after.first);
        req.setAfterSeq(after.second);
        return withTimeout(dp.timer_, dp.ioTimeoutMs_, req.send())
            .then(
                [&dp, service, server, chunkId, shard, lo, hi, &out](
                    capnp::Response<proto::ChunkService::LogFetchResults> r) mutable
                -> kj::Promise<Status> {
                  if (auto e = fromWire(r.getError()); !e) return e;
                  std::pair<uint64_t, uint64_t> lastKey{0, 0};
                  for (auto w : r.getRecords()) {
                    auto data = w.getData();
                    if (data.size() == 0 || w.getOffset() % kBlockSize ||
                        w.getOffset() + data.size() > kChunkSize) {
                      return Status(Error{Errc::kCorruption, "malformed log record"});
                    }
                    if (auto ok = checkBlockCrcs(data, w.getCrcs(), "log record"); !ok) return ok;
                    auto key = std::make_pair(w.getEpoch(), w.getSeq());
                    lastKey = key;
                    if (out.count(key)) continue;
                    LogRecord rec;
                    rec.epoch = key.first;
                    rec.seq = key.second;
                    rec.shard = w.getShard();
                    rec.offset = w.getOffset();
                    rec.data = kj::heapArray<kj::byte>(data);
                    out.emplace(key, kj::mv(rec));
                  }
                  if (!r.getMore() || lastKey == std::make_pair(uint64_t(0), uint64_t(0))) {
                    return Status();
                  }
                  return page(dp, service, server, chunkId, shard, lo, hi, lastKey, out);
                },
                [&dp, server, service](kj::Exception&& e) mutable -> Status {
                  dp.servers_.failed(server, service, e);
                  return errorFromException(e, "fetch chunk log");
                });
      }
    };
    fetches.add(servers_.get(server).then(
        [this, &s, server, chunkId, shard, lo, hi](Result<proto::ChunkService::Client> service) {
          kj::Promise<Status> p =
              service ? Pager::page(*this, *service, server, chunkId, shard, lo, hi, {0, 0},
                                    s.merged)
                      : kj::Promise<Status>(Status(service.error()));
          return p.then([&s](Status r) {
            if (r) {
              s.answered++;
            } else {
              s.last = r.error();
            }
          });
        }));
  }
  return kj::joinPromises(fetches.releaseAsArray())
      .then([&s, chunk]() -> R {
        // Every record is on m + 1 servers: with at most m silent, each is among the answers.
        if (s.asked > 0 && s.asked - s.answered > chunk.layout.m) {
          return Error{Errc::kUnavailable,
                       "chunk " + std::to_string(chunk.id.value) + ": its write log could be read from " +
                           std::to_string(s.answered) + " of " + std::to_string(s.asked) +
                           " servers (" + (s.last ? s.last->toString() : "") + ")"};
        }
        return kj::mv(s.merged);
      })
      .attach(kj::mv(st));
}

kj::Promise<Result<std::vector<DataPath::LogRecord>>> DataPath::lostBlocksOfRecords(
    const ChunkDesc& chunk, std::vector<const LogRecord*> records) {
  using R = Result<std::vector<LogRecord>>;
  const Layout& l = chunk.layout;
  std::vector<int> lost;
  for (int j = 0; j < l.k; ++j) {
    if (chunk.stale(j)) lost.push_back(j);
  }
  if (lost.empty() || records.empty()) return R(std::vector<LogRecord>());
  struct State {
    ChunkDesc chunk;
    std::vector<const LogRecord*> records;
    std::vector<int> lost;
    std::vector<uint64_t> rows;  // shard offsets of the block rows the records touch
    size_t next = 0;             // the first row of the next group
    std::vector<LogRecord> out;
  };
  auto st = kj::heap<State>();
  auto& s = *st;
  s.chunk = chunk;
  s.records = kj::mv(records);
  s.lost = kj::mv(lost);
  std::set<uint64_t> rows;
  for (auto* r : s.records) {
    for (uint64_t at = r->offset; at < r->offset + r->data.size(); at += kBlockSize) rows.insert(at);
  }
  s.rows.assign(rows.begin(), rows.end());
  // Groups of rows, one after the other: a vectored read of each readable shard, then the
  // lost block of each row.
  struct Loop {
    static kj::Promise<R> run(DataPath& dp, State& s) {
      if (s.next == s.rows.size()) return R(kj::mv(s.out));
      const Layout& l = s.chunk.layout;
      size_t first = s.next, count = std::min(s.rows.size() - first, kMaxTransfer / kBlockSize);
      s.next += count;
      auto bufs = kj::heap<std::vector<kj::Array<kj::byte>>>();
      kj::Vector<kj::Promise<Status>> reads;
      std::vector<int> asked;
      for (int j = 0; j < l.shards(); ++j) {
        bufs->push_back(kj::heapArray<kj::byte>(count * kBlockSize));
        if (s.chunk.stale(j)) continue;
        std::vector<Want> wants;
        for (size_t i = 0; i < count; ++i) {
          wants.push_back(Want{j, s.rows[first + i], (*bufs)[j].slice(i * kBlockSize, (i + 1) * kBlockSize)});
        }
        reads.add(dp.readShardV(s.chunk, j, kj::mv(wants)));
        asked.push_back(j);
      }
      auto& b = *bufs;
      return kj::joinPromises(reads.releaseAsArray())
          .then([&dp, &s, &b, first, count, asked](kj::Array<Status> results) -> kj::Promise<R> {
            const Layout& l = s.chunk.layout;
            std::vector<bool> readable(l.shards(), false);
            for (size_t i = 0; i < results.size(); ++i) {
              if (results[i]) {
                readable[asked[i]] = true;
              } else if (results[i].code() == Errc::kStale) {
                return R(results[i].error());
              }
            }
            for (size_t i = 0; i < count; ++i) {
              uint64_t at = s.rows[first + i];
              std::vector<const uint8_t*> stored(l.shards(), nullptr);
              for (int j = 0; j < l.shards(); ++j) {
                if (readable[j]) stored[j] = b[j].begin() + i * kBlockSize;
              }
              std::vector<RowRecord> rowRecords;
              std::vector<const LogRecord*> newest(l.k, nullptr);
              for (auto* r : s.records) {
                if (at < r->offset || at >= r->offset + r->data.size()) continue;
                newest[r->shard] = r;
                if (!s.chunk.stale(r->shard)) {
                  rowRecords.push_back(RowRecord{r->shard, r->data.begin() + (at - r->offset)});
                }
              }
              for (int L : s.lost) {
                LogRecord synthetic;
                synthetic.shard = L;
                synthetic.offset = at;
                synthetic.data = kj::heapArray<kj::byte>(kBlockSize);
                if (newest[L]) {
                  // Its newest record's block: what the row ends with, known.
                  memcpy(synthetic.data.begin(), newest[L]->data.begin() + (at - newest[L]->offset),
                         kBlockSize);
                } else if (auto ok = agreeOnLostBlock(dp.code(l), L, stored, rowRecords,
                                                      synthetic.data.begin());
                           !ok) {
                  return R(Error{Errc::kUnavailable,
                                 "chunk " + std::to_string(s.chunk.id.value) + " shard " +
                                     std::to_string(L) + " offset " + std::to_string(at) +
                                     ": a lost block of a row its last writer may have left "
                                     "half applied: " + ok.error().detail});
                }
                s.out.push_back(kj::mv(synthetic));
              }
            }
            return run(dp, s);
          })
          .attach(kj::mv(bufs));
    }
  };
  return Loop::run(*this, s).attach(kj::mv(st));
}

kj::Promise<Result<uint32_t>> DataPath::recoverLog(const ChunkDesc& chunk) {
  uint32_t all = 0;
  for (int j = 0; j < chunk.layout.shards(); ++j) all |= 1u << j;
  struct State {
    ChunkDesc chunk;
    std::map<std::pair<uint64_t, uint64_t>, LogRecord> recs;
    std::vector<const LogRecord*> older;
    std::vector<LogRecord> lostBlocks;
  };
  auto st = kj::heap<State>();
  st->chunk = chunk;
  auto& s = *st;
  auto& c = s.chunk;
  return fetchLog(c, all, -1, 0, kChunkSize)
      .then([this, &s](Result<std::map<std::pair<uint64_t, uint64_t>, LogRecord>> recs)
                -> kj::Promise<Result<std::vector<LogRecord>>> {
        if (!recs) return Result<std::vector<LogRecord>>(recs.error());
        s.recs = kj::mv(*recs);
        for (auto& [key, r] : s.recs) {
          if (r.epoch < s.chunk.epoch && r.shard < s.chunk.layout.k) s.older.push_back(&r);
        }
        // A lost data shard's blocks in the rows the records touch: known before the apply,
        // which re-encodes those rows (the apply writes them as if records, first).
        return lostBlocksOfRecords(s.chunk, s.older);
      })
      .then([this, &s, &c, all](Result<std::vector<LogRecord>> lostBlocks)
                -> kj::Promise<Result<uint32_t>> {
        if (!lostBlocks) return Result<uint32_t>(lostBlocks.error());
        s.lostBlocks = kj::mv(*lostBlocks);
        std::vector<const LogRecord*> older;
        for (auto& r : s.lostBlocks) older.push_back(&r);
        older.insert(older.end(), s.older.begin(), s.older.end());
        std::string lostNote =
            s.lostBlocks.empty() ? ""
                                 : ", over " + std::to_string(s.lostBlocks.size()) +
                                       " blocks of lost data shards in their rows, decoded by "
                                       "agreement of the parity";
        log::info("chunk ", c.id.value, ": applying ", s.older.size(),
                  " write-log records its last writer left", lostNote.c_str());
        logStats_.recovered += s.older.size();
        return applyRecords(c, kj::mv(older))
            .then([this, &c, all](Result<uint32_t> missed) -> kj::Promise<Result<uint32_t>> {
              if (!missed) return kj::mv(missed);
              c.staleShards |= *missed;
              return trimLog(c, all, c.epoch, 0).then([m = *missed](Result<uint32_t> t) -> Result<uint32_t> {
                if (!t) return t;
                return *t | m;
              });
            });
      })
      .attach(kj::mv(st));
}

kj::Promise<Status> DataPath::drainLog(ChunkId chunk) {
  auto it = logs_.find(chunk.value);
  if (it == logs_.end()) return Status();
  auto& lc = *it->second;
  bool ready = false;
  for (auto& [seq, p] : lc.pending) {
    ready = p.done;
    break;
  }
  if (lc.applying || !ready) {
    // An apply is running, or the first record is still on its way: wait for a change.
    auto paf = kj::newPromiseAndFulfiller<void>();
    lc.changed.push_back(kj::mv(paf.fulfiller));
    return paf.promise.then([this, chunk] { return drainLog(chunk); });
  }
  return applyNow(chunk.value).then([this, chunk](Status s) -> kj::Promise<Status> {
    if (!s) return s;
    return drainLog(chunk);
  });
}

void DataPath::forgetLog(ChunkId chunk) {
  auto it = logs_.find(chunk.value);
  if (it == logs_.end()) return;
  logBytes_ -= it->second->bytes;
  it->second->wake();
  logs_.erase(it);
  for (auto& f : logRoomWaiters_) f->fulfill();
  logRoomWaiters_.clear();
}

}  // namespace tessera::client
