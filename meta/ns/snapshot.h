// meta/ns/snapshot.h — the namespace as a Raft snapshot: the leader reads a consistent LevelDB
// snapshot of its store in pieces (SnapshotReader); a member that is behind writes the pieces
// into a staging store beside its own (SnapshotWriter) and then swaps it in
// (Namespace::installSnapshot). Neither side ever holds more than one piece in memory.
//
// Stream format. The stream is every key/value pair of the store in key order, as records
//
//   u32 key length | u32 value length | key | value          (integers little-endian)
//
// cut into pieces of whole records. A piece travels with its offset in the stream and its
// crc32c; the last one with the stream's total size. The receiver refuses (and writes nothing
// of) a piece at an unexpected offset, with a CRC that does not match, with a record that is
// cut short, an empty key, or a key not above the previous one. finish() then checks that it
// received `total` bytes and that the store holds the applied index the snapshot claims.
//
// Installing. With the store at PATH, the staging store is PATH.install while pieces arrive.
// finish() syncs it (every piece is written with sync, then the directory), then renames it to
// PATH.ready: from then on it is complete. installSnapshot() closes the store, renames PATH to
// PATH.old and PATH.ready to PATH, reopens PATH and deletes PATH.old. A crash leaves one of:
//   PATH.install          an unfinished install: deleted at open, the old store stays;
//   PATH.ready + PATH     finished, not switched: open() completes the switch if the staged
//                         store applied more than PATH (else the node had dropped it);
//   PATH.ready + PATH.old (no PATH): mid-switch: open() completes it;
//   PATH + PATH.old       switched: open() deletes PATH.old.
// So the member ends up on its old state (and the leader sends the snapshot again) or on the
// whole new one, never on part of it.
//
// Threads: a SnapshotReader is used on the meta event loop (LevelDB reads). A SnapshotWriter
// touches only its staging store, so add() and finish() may run on a worker thread while the
// loop goes on with the live store; one call at a time.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "fs/result.h"
#include "meta/ns/namespace.h"

namespace leveldb {
class DB;
class Iterator;
class Snapshot;
}  // namespace leveldb

namespace tessera::meta {

class SnapshotReader {
 public:
  // A consistent view of `ns` as of now. `ns` must outlive the reader and must not install a
  // snapshot while it exists.
  explicit SnapshotReader(Namespace& ns);
  ~SnapshotReader();
  SnapshotReader(const SnapshotReader&) = delete;
  SnapshotReader& operator=(const SnapshotReader&) = delete;

  // The last Raft log entry the view has applied (0 if none).
  uint64_t appliedIndex() const { return applied_; }
  // The next piece: whole records, at most `maxBytes` unless a single record is larger; empty
  // once done(). kIo/kCorruption if LevelDB cannot read.
  Result<std::string> next(size_t maxBytes);
  bool done() const;
  // Bytes handed out so far: the offset of the next piece.
  uint64_t offset() const { return offset_; }

 private:
  Namespace::Impl& impl_;
  const leveldb::Snapshot* snapshot_;
  std::unique_ptr<leveldb::Iterator> it_;
  uint64_t applied_ = 0;
  uint64_t offset_ = 0;
};

class SnapshotWriter {
 public:
  // A fresh staging store beside `ns`'s (replacing any an earlier install left). `ns` must
  // outlive the writer. kIo if it cannot be created.
  static Result<std::unique_ptr<SnapshotWriter>> create(Namespace& ns);
  // Closes the staging store; an unfinished one stays on disk until the next create(),
  // discardSnapshot() or open() removes it.
  ~SnapshotWriter();
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;

  // Writes one piece (synced). kInvalid if `offset` is not received(), kCorruption if `crc`
  // does not match or the records do not hold together; nothing of a refused piece is
  // written, and later pieces may still come. kIo if LevelDB fails.
  Status add(uint64_t offset, std::string_view piece, uint32_t crc);
  // Completes the staging store: kInvalid unless exactly `total` bytes arrived and the store's
  // applied index is `appliedIndex` (nothing is renamed then); kIo if syncing fails. After
  // success only Namespace::installSnapshot() is left to do.
  Status finish(uint64_t total, uint64_t appliedIndex);

  uint64_t received() const { return received_; }
  uint64_t records() const { return records_; }

 private:
  SnapshotWriter(Namespace::Impl& impl, std::unique_ptr<leveldb::DB> db);

  Namespace::Impl& impl_;
  std::unique_ptr<leveldb::DB> db_;
  std::string lastKey_;
  uint64_t received_ = 0;
  uint64_t records_ = 0;
  bool finished_ = false;
};

}  // namespace tessera::meta
