// meta/raft/file_storage.h — the durable Raft state of one meta server: a write-ahead log of
// records in segment files, and the in-memory view of it that the core reads (RaftStorage).
//
// On-disk format. DIR holds segments named wal-<seq, 16 hex digits>.log, read in seq order.
// A segment is a sequence of records:
//
//   u32 length of the body | u32 crc32c of the body | body = u8 type, payload
//
//   type 1, entry:      u64 term, u64 index, u8 entry type, data (the rest)
//   type 2, hard state: u64 term, u64 vote, u64 commit
//   type 3, snapshot:   u64 index, u64 term, u8 installed (1: from the leader, replacing
//                       the log; 0: compaction of our own log), u32 n, n x u64 voters
//
// integers little-endian. Replay starts the log at the newest snapshot recorded in any segment
// and applies the records in order: entries the snapshot covers are skipped; an entry whose
// index is at or below the last one replays as the overwrite it was (the log from that index
// on is replaced); the last hard state wins; a snapshot installed from the leader discards
// the entries recorded before it.
//
// Every segment starts with the hard state and snapshot records in force when it was opened,
// so segments whose entries are all covered by a later snapshot are deleted whole.
//
// Crash behaviour. Records are appended with write(2) and made durable by sync() (fdatasync);
// a crash can leave the last segment ending in a record that is cut short or garbled. Replay
// stops at the first record of the last segment that is short, has an impossible length or
// fails its CRC, and the file is truncated there: that tail was never synced, so nothing it
// held was acknowledged. The same damage in an earlier segment is not a torn tail but lost
// history: open() refuses with kCorruption rather than guess.
//
// Threads: the write calls (append, setHardState, setSnapshot, sync) may run on a worker
// thread while the core reads the view on the event loop: every write only touches the files;
// the view changes in commit(), which the node calls on the loop after the write is durable.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fs/result.h"
#include "meta/raft/storage.h"
#include "meta/raft/types.h"

namespace tessera::meta::raft {

class FileStorage final : public RaftStorage {
 public:
  // Opens (creating DIR if needed) the log in DIR. A fresh log starts with configuration
  // `initial`. A segment is closed once it passes `segmentBytes`. kCorruption as described
  // above; kIo if DIR cannot be used.
  static Result<std::unique_ptr<FileStorage>> open(const std::string& dir, ConfState initial,
                                                   uint64_t segmentBytes = 64 << 20);
  ~FileStorage() override;

  // RaftStorage: what is durable and committed to the view.
  HardState hardState() const override { return view_.hardState(); }
  const SnapshotMeta& snapshot() const override { return view_.snapshot(); }
  LogIndex lastIndex() const override { return view_.lastIndex(); }
  Result<Term> term(LogIndex index) const override { return view_.term(index); }
  Result<std::vector<Entry>> entries(LogIndex lo, LogIndex hi, uint64_t maxBytes) const override {
    return view_.entries(lo, hi, maxBytes);
  }

  // One Ready's worth of writes, in this order: a snapshot (installed or compacted), entries,
  // the hard state. Writes the records (not synced); the view is unchanged until commit().
  struct Batch {
    std::optional<SnapshotMeta> snapshot;
    bool installSnapshot = false;  // from the leader: replaces the whole log
    std::vector<Entry> entries;
    std::optional<HardState> hardState;
  };
  Status write(const Batch& batch);
  // fdatasync of the segment written to; rotates to a new segment past the segment size and
  // deletes segments wholly covered by the snapshot.
  Status sync();
  // Applies `batch` (already written and synced) to the view the core reads.
  Status commit(const Batch& batch);
  // Closes the segment written to (after sync()) and starts the next one, which opens with the
  // newest hard state and snapshot; then deletes the segments wholly covered by the snapshot.
  // The node calls it after a compaction so that the entries it covers leave the disk now, not
  // only once a segment fills up. Same threading as sync().
  Status rotate();

  // Bytes cut off a torn tail at open (0 for a clean log), for the log line and tests.
  uint64_t tornBytes() const { return tornBytes_; }
  size_t segmentCount() const { return segments_.size(); }

 private:
  FileStorage(std::string dir, ConfState initial, uint64_t segmentBytes);
  struct Record {
    uint8_t type = 0;
    Entry entry;
    HardState hardState;
    SnapshotMeta snapshot;
    bool installed = false;
    std::string where;  // segment and byte, for errors
  };
  Status readSegment(const std::string& path, bool last, std::vector<Record>& out);
  Status replay(const std::vector<Record>& records);
  Status openSegment(uint64_t seq);
  Status appendRecord(uint8_t type, const std::string& payload);
  Status deleteCoveredSegments();

  std::string dir_;
  uint64_t segmentBytes_;
  MemoryStorage view_;
  int fd_ = -1;            // the segment being written
  uint64_t seq_ = 0;       // its sequence number
  uint64_t written_ = 0;   // its size
  // Every segment: its seq and the highest entry index it holds (0 if none).
  std::vector<std::pair<uint64_t, uint64_t>> segments_;
  // The newest hard state and snapshot written, for the head of the next segment.
  HardState lastHardState_;
  SnapshotMeta lastSnapshot_;
  uint64_t tornBytes_ = 0;
};

}  // namespace tessera::meta::raft
