// client/client_fallocate.cc — fallocate: reserving (mode 0), punching holes (what a guest's
// discard/TRIM becomes) and zeroing ranges of a file (client.h, Client::fallocate).
//
// A reservation takes the write lease of every chunk of the range in turn (placing the chunks
// that do not exist, and creating their shards), and has every shard server of the chunk
// allocate the part of its shard file that writes inside the range can touch
// (DataPath::reserve, client/data_path_reserve.cc says what that covers and what not). Only
// when every chunk is done does the file grow (without KEEP_SIZE) and the range count as
// written for st_blocks. A server without room makes the whole call fail with ENOSPC; then the
// chunks this call placed are dropped again, so a refused reservation leaves no chunk behind.
//
// A punch is a write of zeros to the file as far as ordering goes, and keeps the write path's
// rules the same way: what this client buffered goes out first (drain), each chunk it zeroes in
// part is zeroed under that chunk's write lease (DataPath::punch drains the chunk's write log
// before it touches the stripes), and the chunks it drops whole have their write logs applied
// and any release of their leases finished before the meta server drops them — so nothing of
// this client lands on a dropped chunk's shards afterwards. The drop itself is one Raft op per
// kMaxPunchChunks chunks (meta/ns/ops/chunks.cc punchChunks): the chunk records go, their
// shards to the garbage list, as a truncate's do.
//
// Writers on other mounts are fenced for the chunks zeroed in part (the lease moves here, and
// the epoch with it); a chunk dropped whole is not leased first — as with truncate, a mount
// that writes a chunk while another drops it loses that write.
#include <fcntl.h>
#include <time.h>

#include <algorithm>

#include "client/client.h"
#include "client/file_state.h"
#include "client/replies.h"
#include "fs/log.h"
#include "fs/proto/meta.capnp.h"
#include "fs/wire.h"

namespace tessera::client {
namespace {

int64_t nowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

uint32_t allShards(const Layout& layout) { return (1u << layout.shards()) - 1; }

}  // namespace

kj::Promise<Status> Client::fallocate(InodeId inode, int mode, uint64_t off, uint64_t len) {
  bool keepSize = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  int op = mode & ~FALLOC_FL_KEEP_SIZE;
  bool reserve = op == 0;
  // Linux refuses a punch that would change the size, and so do we.
  bool supported =
      reserve || op == FALLOC_FL_ZERO_RANGE || (op == FALLOC_FL_PUNCH_HOLE && keepSize);
  if (!supported) {
    return Status(Error{Errc::kNotSupported, "fallocate mode " + std::to_string(mode)});
  }
  if (len == 0) return Status(Error{Errc::kInvalid, "fallocate of 0 bytes"});
  uint64_t end = off + len;
  if (end < off || end > uint64_t(INT64_MAX)) {
    return Status(Error{Errc::kTooBig, "fallocate past the largest file"});
  }
  auto* fp = find(inode);
  if (!fp) return Status(Error{Errc::kStale, "fallocate of a file that is not open"});
  auto& f = *fp;
  f.opens++;  // keeps the state alive across the calls below
  log::debug("fallocate inode ", inode.value, " mode ", mode, " [", off, ", ", end, ")");
  return drain(f)
      .then([this, inode, reserve, off, end](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        if (reserve) return reserveRange(inode, off, end);
        return punchRange(inode, off, end);
      })
      .then([this, &f, reserve, keepSize, off, end](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        bool grows = !keepSize && end > f.size;
        if (grows) f.size = end;
        // st_blocks: a reservation counts as written; punched and zeroed MiBs no longer do.
        f.noteUsage(off, end - off, reserve);
        // A punch or zeroing changes the data: mtime. A reservation only if it grows the file.
        if (grows || !reserve) {
          f.mtimeNs = nowNs();
          f.attrDirty = true;
        }
        // Committed now: stat must show the new size, and st_blocks what the meta server
        // counts rather than the size a dirty file is assumed to fill (merge()).
        return commit(f);
      })
      .then([this, &f](Status s) {
        if (!s) {
          log::warn("fallocate of inode ", f.inode.value, ": ", s.error().toString().c_str());
        }
        f.opens--;
        dropIfIdle(f.inode);
        return s;
      });
}

kj::Promise<Status> Client::reserveRange(InodeId inode, uint64_t off, uint64_t end) {
  auto placed = std::make_shared<std::vector<uint64_t>>();
  return reserveChunks(inode, off, end, off / kChunkSize, placed)
      .then([this, inode, placed](Status s) -> kj::Promise<Status> {
        if (s || placed->empty()) return s;
        // A refused fallocate leaves no chunk behind that only it placed: their shards (and
        // what was reserved in them) go to the garbage. In chunks that existed before, what
        // was reserved before the refusal stays reserved (the servers cannot tell it from
        // earlier reservations); the server that had no room gave back what it took.
        return dropUnwritten(inode, *placed).then([inode, s](Status d) {
          if (!d) {
            log::warn("inode ", inode.value, ": dropping the chunks a failed fallocate placed: ",
                      d.error().toString().c_str());
          }
          return s;
        });
      });
}

kj::Promise<Status> Client::reserveChunks(InodeId inode, uint64_t off, uint64_t end,
                                          uint64_t index,
                                          std::shared_ptr<std::vector<uint64_t>> placed) {
  uint64_t base = index * kChunkSize;
  if (base >= end) return Status();
  if (!find(inode)) return Status(Error{Errc::kStale, "file closed"});
  uint64_t lo = std::max(off, base) - base, hi = std::min(end, base + kChunkSize) - base;
  // Under our lease (what a write does; placed first if it does not exist): the calls carry
  // its epoch, and a chunk shared with a clone is copied first, so the space is reserved in
  // this file's own copy.
  return useLease(inode, index)
      .then([this, inode, index, lo, hi, placed](Result<ChunkDesc> c) -> kj::Promise<Status> {
        if (!c) return Status(c.error());
        auto used = kj::defer([this, inode, index] { endUse(inode, index); });
        std::shared_ptr<FreshChunk> fresh;
        if (auto* f = find(inode)) {
          auto it = f->fresh.find(index);
          if (it != f->fresh.end()) fresh = it->second;
        }
        // Placed by us and never written: its shards are created along the way, so that it
        // reads as zeros rather than as a chunk whose shards are all missing.
        bool creating = fresh && !fresh->shardsCreated;
        if (creating) placed->push_back(index);
        ChunkDesc desc = *c;
        return data_.reserve(desc, lo, hi - lo, creating)
            .then([this, inode, desc, fresh,
                   creating](Result<DataPath::Reserved> r) -> kj::Promise<Status> {
              if (!r) {
                if (r.code() == Errc::kStale) leaseLost(inode, desc);
                return Status(r.error());
              }
              if (!creating) return Status();
              // Shards that could not be created are stale before the chunk counts as there.
              return markStale(inode, desc, r->missed).then([this, inode, fresh](Result<ChunkDesc> c) {
                if (!c) return Status(c.error());
                fresh->shardsCreated = true;
                // New shard files are durable once synced: the next fsync does it (those that
                // reserved something are synced already).
                if (auto* f = find(inode)) {
                  auto& u = f->unsynced[c->index];
                  u.chunk = *c;
                  u.shards |= allShards(c->layout) & ~c->staleShards;
                }
                return Status();
              });
            })
            .attach(kj::mv(used));
      })
      .then([this, inode, off, end, index, placed](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return reserveChunks(inode, off, end, index + 1, placed);
      });
}

kj::Promise<Status> Client::dropUnwritten(InodeId inode, std::vector<uint64_t> indexes) {
  auto* f = find(inode);
  if (!f) return Status();
  std::vector<uint64_t> unwritten;
  for (uint64_t index : indexes) {
    auto it = f->fresh.find(index);
    if (it == f->fresh.end()) continue;  // gone or no longer ours alone
    bool written = false;
    for (auto& extents : it->second->written) written |= !extents.empty();
    if (!written) unwritten.push_back(index);
  }
  std::sort(unwritten.begin(), unwritten.end());
  kj::Promise<Status> done = Status();
  for (size_t i = 0; i < unwritten.size();) {
    size_t j = i + 1;
    while (j < unwritten.size() && unwritten[j] == unwritten[j - 1] + 1) ++j;
    uint64_t first = unwritten[i], last = unwritten[j - 1];
    done = done.then([this, inode, first, last](Status s) -> kj::Promise<Status> {
      if (!s) return s;
      log::info("inode ", inode.value, ": dropping chunks ", first, "..", last,
                " placed by a fallocate that failed");
      return dropChunks(inode, first, last + 1);
    });
    i = j;
  }
  return done;
}

kj::Promise<Result<ChunkDesc>> Client::createFreshShards(InodeId inode, const ChunkDesc& chunk) {
  auto* f = find(inode);
  if (!f) return Result<ChunkDesc>(chunk);
  auto it = f->fresh.find(chunk.index);
  // Not placed by us (its writer created its shards), or written since.
  if (it == f->fresh.end() || it->second->shardsCreated) return Result<ChunkDesc>(chunk);
  std::shared_ptr<FreshChunk> fresh = it->second;
  return data_.createShards(chunk).then(
      [this, inode, chunk, fresh](Result<uint32_t> missed) -> kj::Promise<Result<ChunkDesc>> {
        if (!missed) {
          if (missed.code() == Errc::kStale) leaseLost(inode, chunk);
          return Result<ChunkDesc>(missed.error());
        }
        return markStale(inode, chunk, *missed).then([this, inode, fresh](Result<ChunkDesc> c) {
          if (!c) return c;
          fresh->shardsCreated = true;
          // A new shard file is durable once synced: the next fsync does it.
          if (auto* f = find(inode)) {
            auto& u = f->unsynced[c->index];
            u.chunk = *c;
            u.shards |= allShards(c->layout) & ~c->staleShards;
          }
          return c;
        });
      });
}

kj::Promise<Status> Client::punchRange(InodeId inode, uint64_t off, uint64_t end) {
  // Whole chunks [wholeFirst, wholeEnd) are dropped; the parts of at most two others zeroed.
  uint64_t wholeFirst = alignUp(off, kChunkSize) / kChunkSize;
  uint64_t wholeEnd = end / kChunkSize;
  struct Piece {
    uint64_t index, off, len;
  };
  std::vector<Piece> pieces;
  auto part = [&](uint64_t lo, uint64_t hi) {
    if (lo < hi) pieces.push_back(Piece{lo / kChunkSize, lo % kChunkSize, hi - lo});
  };
  if (wholeFirst >= wholeEnd) {
    wholeFirst = wholeEnd = 0;
    if (off / kChunkSize == (end - 1) / kChunkSize) {
      part(off, end);
    } else {
      part(off, alignUp(off, kChunkSize));
      part(alignDown(end, kChunkSize), end);
    }
  } else {
    part(off, wholeFirst * kChunkSize);
    part(wholeEnd * kChunkSize, end);
  }
  kj::Promise<Status> done = Status();
  for (const Piece& p : pieces) {
    done = done.then([this, inode, p](Status s) -> kj::Promise<Status> {
      if (!s) return s;
      return zeroInChunk(inode, p.index, p.off, p.len);
    });
  }
  if (wholeFirst < wholeEnd) {
    done = done.then([this, inode, wholeFirst, wholeEnd](Status s) -> kj::Promise<Status> {
      if (!s) return s;
      return dropChunks(inode, wholeFirst, wholeEnd);
    });
  }
  return done;
}

kj::Promise<Status> Client::zeroInChunk(InodeId inode, uint64_t index, uint64_t off, uint64_t len) {
  auto* f = find(inode);
  if (!f) return Status(Error{Errc::kStale, "file closed"});
  using Leased = Result<std::optional<ChunkDesc>>;
  return chunk(*f, index, false)
      .then([this, inode, index](Leased c) -> kj::Promise<Leased> {
        // A hole reads as zeros already.
        if (!c || !*c) return kj::mv(c);
        return useLease(inode, index).then([](Result<ChunkDesc> c) -> Leased {
          if (!c) return c.error();
          return std::optional<ChunkDesc>(kj::mv(*c));
        });
      })
      .then([this, inode, index, off, len](Leased leased) -> kj::Promise<Status> {
        if (!leased) return Status(leased.error());
        if (!*leased) return Status();
        Result<ChunkDesc> c(kj::mv(**leased));
        auto used = kj::defer([this, inode, index] { endUse(inode, index); });
        return createFreshShards(inode, *c)
            .then([this, inode, index, off,
                   len](Result<ChunkDesc> c) -> kj::Promise<Result<ChunkDesc>> {
              if (!c) return kj::mv(c);
              ChunkDesc desc = *c;
              std::shared_ptr<FreshChunk> fresh;
              if (auto* f = find(inode)) {
                auto it = f->fresh.find(index);
                if (it != f->fresh.end()) fresh = it->second;
              }
              return data_.punch(desc, off, len, kj::mv(fresh), inode)
                  .then([this, inode, desc](Result<uint32_t> missed) {
                    // Acknowledged only once the missed shards are marked stale (as a write).
                    return afterShardWrite(inode, desc, kj::mv(missed));
                  });
            })
            .then([this, inode, off, len](Result<ChunkDesc> c) -> Status {
              if (!c) return c.error();
              // The zeros around the punched rows may sit unsynced on the shard servers.
              if (auto* f = find(inode)) {
                auto& u = f->unsynced[c->index];
                u.chunk = *c;
                u.shards |= shardsWritten(c->layout, off, len, false) & ~c->staleShards;
              }
              return Status();
            })
            .attach(kj::mv(used));
      });
}

kj::Promise<Status> Client::dropChunks(InodeId inode, uint64_t first, uint64_t end) {
  // What this client still does on those chunks finishes first: an apply of their write logs
  // after the drop would write shards of chunks that no longer exist, and a lease release
  // under way syncs what was written under it.
  kj::Vector<kj::Promise<Status>> before;
  for (auto it = leases_.lower_bound({inode, first});
       it != leases_.end() && it->first.first == inode && it->first.second < end; ++it) {
    uint64_t index = it->first.second;
    KJ_IF_MAYBE (releasing, it->second.releasing) {
      before.add(releasing->addBranch().then([] { return Status(); }));
    }
    before.add(drainChunkLog(inode, index));
  }
  return joinStatus(before.releaseAsArray())
      .then([this, inode, first, end](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return dropBatch(inode, first, end);
      });
}

kj::Promise<Status> Client::dropBatch(InodeId inode, uint64_t first, uint64_t end) {
  if (first >= end) return Status();
  uint64_t count = std::min(end - first, kMaxPunchChunks);
  using MetaClient = proto::MetaService::Client;
  // Busy while another mount holds the lease of one of the chunks.
  return whileBusy<Attr>([this, inode, first, count] {
           return meta_.mutate<Attr>(
               "punchChunks", [inode, first, count](MetaClient m, MetaLink::Req r) {
                 auto req = m.punchChunksRequest();
                 r.fill(req.initReq());
                 req.setInode(inode.value);
                 req.setFirst(first);
                 req.setCount(count);
                 return req.send().then([](auto r) { return attrOf(r); });
               });
         })
      .then([this, inode, first, count, end](Result<Attr> a) -> kj::Promise<Status> {
        auto* f = find(inode);
        // Even after a failure: the drop may have been applied (a lost reply), and what is
        // cached is looked up again.
        if (f) forgetChunkRange(*f, first, first + count);
        if (!a) return Status(a.error());
        if (f) f->metaDirty = true;
        return dropBatch(inode, first + count, end);
      });
}

void Client::forgetChunkRange(FileState& f, uint64_t first, uint64_t end) {
  // Lookups that started before the drop must not cache what they found.
  f.mapEpoch++;
  for (auto it = f.chunks.lower_bound(first); it != f.chunks.end() && it->first < end;) {
    data_.forgetLog(it->second.id);
    it = f.chunks.erase(it);
  }
  auto eraseRange = [first, end](auto& map) {
    map.erase(map.lower_bound(first), map.lower_bound(end));
  };
  eraseRange(f.fresh);
  eraseRange(f.unsynced);
  // The meta server dropped the leases with the chunks.
  forgetLeases(f.inode, first, end);
  for (auto it = leases_.lower_bound({f.inode, first});
       it != leases_.end() && it->first.first == f.inode && it->first.second < end;) {
    if (it->second.inflight == 0 && it->second.releasing == nullptr) {
      it = leases_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace tessera::client
