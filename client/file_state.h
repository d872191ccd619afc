// client/file_state.h — what a Client keeps per file it has open or still works on (private
// to the client library's .cc files: client.cc, client_fallocate.cc). Lives on the client's
// event loop.
#pragma once
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "client/client.h"

namespace tessera::client {

struct Client::FileState {
  InodeId inode;
  int opens = 0;
  uint64_t size = 0;  // as this client knows it, including its own writes
  int64_t mtimeNs = 0;
  bool attrDirty = false;  // size/mtime written here and not yet committed
  bool metaDirty = false;  // metadata changed since the meta server last synced for us
  std::map<uint64_t, ChunkDesc> chunks;
  std::map<uint64_t, std::shared_ptr<FreshChunk>> fresh;  // chunks this client placed
  std::set<uint64_t> absent;                              // chunk indexes known not to exist
  // Bumped whenever the cached chunk map is dropped (truncate, close-to-open refresh): an answer
  // to a lookup that started before must not be cached, it may name chunks since deleted.
  uint64_t mapEpoch = 0;
  // Bumped when another mount's change is reported (client_watch.cc): a chunk lookup that
  // started before must not be cached either (it may miss a chunk just written).
  uint64_t lookupEpoch = 0;
  bool sizeStale = false;  // reported changed: refetch the size before the next read
  // The file's security.capability as the meta server last answered (nullopt inside: it has
  // none), kept while this client is coherent (Client::getxattr). A new xattrEpoch (unique
  // in the client) comes with every drop: an answer to a lookup that started before is not
  // kept.
  std::optional<std::optional<std::string>> capability;
  uint64_t xattrEpoch = 0;
  std::map<uint64_t, kj::ForkedPromise<void>> allocating;
  // Chunks written since the last fsync (by chunk index) and which of their shards: fsync syncs
  // those. Kept after the last close too — a later fsync on a new open must cover them.
  std::map<uint64_t, Unsynced> unsynced;
  uint64_t durableSize = 0;  // the size the meta server has on disk for us (fdatasync skips it)
  int commitsInFlight = 0;   // the meta server may not have the size we committed yet

  // Write-back.
  uint64_t pendingOff = 0;
  std::vector<kj::byte> pending;
  uint64_t inflightBytes = 0;
  kj::Promise<void> flushChain = kj::READY_NOW;
  std::vector<kj::Own<kj::PromiseFulfiller<void>>> waiters;
  std::optional<Error> writeError;

  // MiBs written (`set`) and punched (`clear`) per chunk index since the last commit, for the
  // meta server's st_blocks (ChunkDesc.written). Noted as a write of the chunk starts (the
  // chunk exists by then): a write that fails counts anyway (a little high, never low).
  struct Usage {
    uint64_t set = 0, clear = 0;
  };
  std::map<uint64_t, Usage> usage;
  // Marks the MiBs that [off, off + len) touches as written, or those it covers wholly as
  // punched.
  void noteUsage(uint64_t off, uint64_t len, bool written) {
    constexpr uint64_t kPerChunk = kChunkSize / kUsageUnit;  // 64: one bit each
    if (len == 0) return;
    uint64_t end = off + len;
    uint64_t mib = written ? off / kUsageUnit : (off + kUsageUnit - 1) / kUsageUnit;
    uint64_t last = written ? (end - 1) / kUsageUnit + 1 : end / kUsageUnit;  // exclusive
    while (mib < last) {
      uint64_t bit = mib % kPerChunk;
      uint64_t n = std::min(last - mib, kPerChunk - bit);
      uint64_t bits = (n == kPerChunk ? ~uint64_t(0) : ((uint64_t(1) << n) - 1)) << bit;
      auto& u = usage[mib / kPerChunk];
      if (written) {
        u.set |= bits;
        u.clear &= ~bits;
      } else {
        u.clear |= bits;
        u.set &= ~bits;
      }
      mib += n;
    }
  }

  uint64_t pendingEnd() const { return pendingOff + pending.size(); }
  bool busy() const { return !pending.empty() || inflightBytes > 0 || !waiters.empty(); }
  void wake() {
    auto w = std::move(waiters);
    waiters.clear();
    for (auto& f : w) f->fulfill();
  }
};

}  // namespace tessera::client
