// chunk/epochs.h — the newest write-lease epoch this chunk server has seen for each chunk
// (DESIGN.md rule 3: one writer per chunk at a time, fenced). A write, truncate or create with
// an older epoch is refused (kStale): its sender lost the lease to a newer writer. The table
// lives in memory and in an append-only file of fixed 24-byte records
//
//   chunk u64 LE, epoch u64 LE, crc32c of those 16 bytes u32 LE, zero u32
//
// so a restart forgets no fence. A raise is refused-against at once in memory and durable
// (fdatasync, one per batch of raises) before its promise resolves. A torn or damaged tail is cut
// when the file is opened; the file is rewritten compactly at open when it holds mostly
// superseded records. Epoch 1 (a chunk's first lease) is never written: nothing older than it
// can exist but epoch 0, which only unleased test clients use.
// Not thread-safe: owned by the chunk server's event loop; file I/O runs on a worker thread.
#pragma once
#include <kj/async.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/group_commit.h"
#include "fs/result.h"
#include "fs/types.h"
#include "fs/worker.h"

namespace tessera::chunk {

class EpochTable {
 public:
  // Reads (creating if missing) the table at `path`. Blocks; call before serving.
  static Result<kj::Own<EpochTable>> open(std::string path);
  ~EpochTable();

  uint64_t get(ChunkId chunk) const;
  // The kStale refusal of a write with `epoch` to a chunk fenced at `newest`.
  static Error fenced(ChunkId chunk, uint64_t newest, uint64_t epoch);
  // ok if `epoch` may write the chunk: kStale if a newer epoch fenced it. A newer epoch becomes
  // the chunk's own first (durably, before the promise resolves).
  kj::Promise<Status> admit(ChunkId chunk, uint64_t epoch);
  // Makes `epoch` the newest of the chunk if it is newer (durable when resolved).
  kj::Promise<Status> raise(ChunkId chunk, uint64_t epoch);

  size_t size() const { return epochs_.size(); }

  // Needed by kj::heap; use open().
  EpochTable(std::string path, int fd, std::unordered_map<uint64_t, uint64_t> epochs);

 private:
  kj::Promise<Status> flush();

  std::string path_;
  int fd_;
  std::unordered_map<uint64_t, uint64_t> epochs_;
  std::string pending_;  // records not yet handed to the worker
  std::optional<Error> broken_;                 // a write failed: no more raises
  GroupCommit commits_;
  WorkerThread worker_;
};

}  // namespace tessera::chunk
