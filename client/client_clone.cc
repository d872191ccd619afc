// Client: copy_file_range as a copy-on-write clone where whole chunks line up, and a plain copy
// of the bytes elsewhere (client.h, copyRange).
//
// A chunk is shared only whole, so a range is cloned only where it covers whole chunks of the
// source at the same position within a chunk of the destination; a range's unaligned head
// and short tail are copied as data. Cloning the source's last chunk whole is right when the
// range runs to the source's end (the chunk holds zeros past it) and the destination holds
// nothing past the range's end in that chunk (its size ends there or before).
//
// Before the clone the bytes must be where the meta service's chunk map says: both files'
// buffered writes go out, and the write leases this session holds on chunks of the ranges go
// back (their logs drained into the stripes and synced; client_leases.cc). A source chunk
// another session holds, or that a dead writer left to be re-synced, is settled first by
// taking its lease here (the meta leader recalls it from a live holder; the new holder
// re-syncs) and giving it back. Should another writer take it again meanwhile, the meta leader
// answers busy and we ask again.
#include "client/client.h"
#include "client/file_state.h"
#include "client/replies.h"
#include "fs/log.h"
#include "fs/proto/meta.capnp.h"
#include "fs/wire.h"

namespace tessera::client {

namespace {
// A data copy moves at most this much per call; the caller asks again for the rest.
constexpr uint64_t kCopyPiece = 8 << 20;
}  // namespace

kj::Promise<Result<uint64_t>> Client::copyRange(InodeId src, uint64_t srcOff, InodeId dst,
                                                uint64_t dstOff, uint64_t len) {
  using R = Result<uint64_t>;
  if (!find(src) || !find(dst)) return R(Error{Errc::kStale, "copy of a file that is not open"});
  if (src == dst) return copyBytes(src, srcOff, dst, dstOff, std::min(len, kCopyPiece));
  // Both sizes as the meta server has them once our own writes are committed.
  return flush(src)
      .then([this, dst](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return flush(dst);
      })
      .then([this, src](Status s) -> kj::Promise<Result<Attr>> {
        if (!s) return Result<Attr>(s.error());
        return getattr(src);
      })
      .then([this, dst](Result<Attr> a) {
        return getattr(dst).then([a = kj::mv(a)](Result<Attr> b) mutable {
          return std::make_pair(kj::mv(a), kj::mv(b));
        });
      })
      .then([this, src, srcOff, dst, dstOff, len](
                std::pair<Result<Attr>, Result<Attr>> sizes) -> kj::Promise<R> {
        auto& [srcAttr, dstAttr] = sizes;
        if (!srcAttr) return R(srcAttr.error());
        if (!dstAttr) return R(dstAttr.error());
        uint64_t srcSize = srcAttr->size;
        if (srcOff >= srcSize) return R(uint64_t(0));
        uint64_t n = std::min(len, srcSize - srcOff);
        if (dstOff > uint64_t(INT64_MAX) || n > uint64_t(INT64_MAX) - dstOff) {
          return R(Error{Errc::kTooBig, "copy beyond the largest file"});
        }
        uint64_t within = srcOff % kChunkSize;
        if (within != dstOff % kChunkSize) {
          return copyBytes(src, srcOff, dst, dstOff, std::min(n, kCopyPiece));
        }
        if (within != 0) {
          // Up to the next chunk boundary; the caller's next call starts aligned.
          return copyBytes(src, srcOff, dst, dstOff, std::min(n, kChunkSize - within));
        }
        uint64_t chunks = n / kChunkSize;
        uint64_t cloned = chunks * kChunkSize;
        bool toEnd = srcOff + n == srcSize;
        if (n % kChunkSize != 0 && toEnd && dstAttr->size <= dstOff + n) {
          ++chunks;
          cloned = n;
        }
        if (chunks == 0) return copyBytes(src, srcOff, dst, dstOff, n);
        if (chunks > kMaxCloneChunks) {
          chunks = kMaxCloneChunks;
          cloned = chunks * kChunkSize;
        }
        return cloneChunks(src, srcOff / kChunkSize, dst, dstOff / kChunkSize, chunks,
                           dstOff + cloned)
            .then([cloned](Status s) -> R {
              if (!s) return s.error();
              return cloned;
            });
      });
}

kj::Promise<Result<uint64_t>> Client::copyBytes(InodeId src, uint64_t srcOff, InodeId dst,
                                                uint64_t dstOff, uint64_t len) {
  using R = Result<uint64_t>;
  return read(src, srcOff, len).then(
      [this, dst, dstOff](Result<kj::Array<kj::byte>> data) -> kj::Promise<R> {
        if (!data) return R(data.error());
        uint64_t n = data->size();
        if (n == 0) return R(uint64_t(0));
        return write(dst, dstOff, kj::mv(*data), WriteMode::kBuffered).then([n](Status s) -> R {
          if (!s) return s.error();
          return n;
        });
      });
}

kj::Promise<Status> Client::giveBackLeases(InodeId inode, uint64_t first, uint64_t end) {
  kj::Vector<kj::Promise<Status>> waits;
  std::vector<uint64_t> held;
  for (auto it = leases_.lower_bound({inode, first});
       it != leases_.end() && it->first.first == inode && it->first.second < end; ++it) {
    if (it->second.held) held.push_back(it->first.second);
  }
  for (uint64_t index : held) letGo(inode, index, "the chunk is cloned");
  for (auto it = leases_.lower_bound({inode, first});
       it != leases_.end() && it->first.first == inode && it->first.second < end; ++it) {
    KJ_IF_MAYBE (releasing, it->second.releasing) {
      waits.add(releasing->addBranch().then([] { return Status(); }));
    }
  }
  return joinStatus(waits.releaseAsArray()).then([this, inode, first, end](Status s) -> Status {
    if (!s) return s;
    // A lease kept because its sync failed: the clone would miss what is not durable.
    for (auto it = leases_.lower_bound({inode, first});
         it != leases_.end() && it->first.first == inode && it->first.second < end; ++it) {
      if (it->second.held) {
        return Error{Errc::kIo, "chunk index " + std::to_string(it->first.second) +
                                    ": its writes could not be synced"};
      }
    }
    return Status();
  });
}

kj::Promise<Status> Client::settleForClone(InodeId src, uint64_t first, uint64_t count) {
  return getChunks(src, first, count)
      .then([this, src](Result<std::vector<ChunkDesc>> list) -> kj::Promise<Status> {
        if (!list) return Status(list.error());
        auto* f = find(src);
        if (!f) return Status(Error{Errc::kStale, "clone of a file that is not open"});
        kj::Vector<kj::Promise<Status>> takes;
        for (const ChunkDesc& c : *list) {
          bool other = c.leaseSession && c.leaseSession != session_;
          if (c.shared || (!other && !c.resync)) continue;
          // Taking the lease waits for a live holder to give it back (recalled), takes it
          // from a silent one, and re-syncs what a dead one left; giveBackLeases then lets go.
          takes.add(chunk(*f, c.index, true).then([](Result<std::optional<ChunkDesc>> r) {
            return r ? Status() : Status(r.error());
          }));
        }
        return joinStatus(takes.releaseAsArray());
      });
}

kj::Promise<Status> Client::cloneFile(InodeId src, InodeId dst) {
  if (src == dst) return Status(Error{Errc::kInvalid, "clone of a file onto itself"});
  if (!find(src) || !find(dst)) {
    return Status(Error{Errc::kStale, "clone of a file that is not open"});
  }
  return flush(src)
      .then([this, dst](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return flush(dst);
      })
      .then([this, dst](Status s) -> kj::Promise<Result<Attr>> {
        if (!s) return Result<Attr>(s.error());
        return getattr(dst);
      })
      .then([this, src](Result<Attr> d) -> kj::Promise<Result<Attr>> {
        if (!d) return kj::mv(d);
        // What it held past the source's end would show again were it extended.
        if (d->size != 0) {
          return Result<Attr>(Error{Errc::kInvalid, "clone onto a file that is not empty"});
        }
        return getattr(src);
      })
      .then([this, src, dst](Result<Attr> a) -> kj::Promise<Status> {
        if (!a) return Status(a.error());
        // The chunks the source has now; what it grows into while the clone waits is not part
        // of it (its size then may cover it: those bytes read as zeros in the clone).
        uint64_t chunks = std::max<uint64_t>(1, (a->size + kChunkSize - 1) / kChunkSize);
        return clonePieces(src, dst, 0, chunks);
      });
}

kj::Promise<Status> Client::clonePieces(InodeId src, InodeId dst, uint64_t first,
                                        uint64_t chunks) {
  if (first >= chunks) return Status();
  uint64_t count = std::min(kMaxCloneChunks, chunks - first);
  return cloneChunks(src, first, dst, first, count, 0, true)
      .then([this, src, dst, first, count, chunks](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return clonePieces(src, dst, first + count, chunks);
      });
}

kj::Promise<Status> Client::cloneChunks(InodeId src, uint64_t srcFirst, InodeId dst,
                                        uint64_t dstFirst, uint64_t count, uint64_t size,
                                        bool sizeOfSrc) {
  // Our own leases of both ranges go back first; then one try. Busy means another session
  // holds a lease of the range, or a chunk waits for a re-sync: the meta leader has recalled
  // those leases and holds new ones back for a while (so that a writer that never pauses lets
  // the clone through), and settleForClone takes what a dead writer left. Then we ask until
  // it goes through.
  return giveBackLeases(src, srcFirst, srcFirst + count)
      .then([this, dst, dstFirst, count](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return giveBackLeases(dst, dstFirst, dstFirst + count);
      })
      .then([this, src, srcFirst, dst, dstFirst, count, size,
             sizeOfSrc](Status s) -> kj::Promise<Status> {
        if (!s) return s;
        return cloneCall(src, srcFirst, dst, dstFirst, count, size, sizeOfSrc, timer_.now());
      })
      .then([this, src, srcFirst, dst, dstFirst, count, size,
             sizeOfSrc](Status s) -> kj::Promise<Status> {
        if (s || s.code() != Errc::kBusy) return s;
        return settleForClone(src, srcFirst, count)
            .then([this, src, srcFirst, count](Status s) -> kj::Promise<Status> {
              if (!s) return s;
              return giveBackLeases(src, srcFirst, srcFirst + count);
            })
            .then([this, src, srcFirst, dst, dstFirst, count, size,
                   sizeOfSrc](Status s) -> kj::Promise<Status> {
              if (!s) return s;
              auto deadline = timer_.now() + config_.metaRetryMs * kj::MILLISECONDS;
              return cloneCall(src, srcFirst, dst, dstFirst, count, size, sizeOfSrc, deadline);
            });
      });
}

kj::Promise<Status> Client::cloneCall(InodeId src, uint64_t srcFirst, InodeId dst,
                                      uint64_t dstFirst, uint64_t count, uint64_t size,
                                      bool sizeOfSrc, kj::TimePoint deadline) {
  using MetaClient = proto::MetaService::Client;
  auto call = [=, this] {
    return meta_
        .mutate<Attr>("clone",
                      [=](MetaClient m, MetaLink::Req r) {
                        auto req = m.cloneRequest();
                        r.fill(req.initReq());
                        req.setSession(r.session);  // the session it is sent under
                        req.setSrc(src.value);
                        req.setDst(dst.value);
                        req.setSrcFirst(srcFirst);
                        req.setDstFirst(dstFirst);
                        req.setCount(count);
                        req.setSize(size);
                        req.setSizeOfSrc(sizeOfSrc);
                        return req.send().then([](auto r) { return attrOf(r); });
                      })
        .then([this, dst, dstFirst, count](Result<Attr> a) {
          // Even after a failure: it may have been applied (a lost reply); look again.
          if (auto* f = find(dst)) forgetChunkRange(*f, dstFirst, dstFirst + count);
          return a;
        });
  };
  // Busy: another session writes the range, and the meta leader recalled its lease.
  return whileBusy<Attr>(call, deadline).then([this, dst](Result<Attr> a) -> Status {
    if (!a) return a.error();
    if (auto* f = find(dst)) {
      f->size = std::max(f->size, a->size);
      f->durableSize = a->size;
      f->metaDirty = true;
    }
    merge(*a);
    return Status();
  });
}

}  // namespace tessera::client
