// chunk/scrubber.h — the background scrubber of a chunk server: re-reads every block of every
// shard on its Disk and checks each against its CRC32C (ShardFile::read), so bit rot is found
// before a reader needs the block and before a second fault makes it unrecoverable.
//
// Passes. A pass lists the shard files, then reads each in pieces of at most kPieceBytes on the
// Disk's worker thread, between the client operations queued there, pausing between pieces so it
// reads no faster than `rateBytesPerSec`. A pass starts `intervalMs` after the last one ended
// (the end time is kept in DIR/scrub.state, so a restart does not rescrub at once), or at once
// when the meta leader asks (startNow, from a heartbeat reply; a request during a pass starts it
// over, so damage made before the request is surely seen). intervalMs 0: only on request.
// Each piece's pages are dropped from the page cache before it is read (so the media is read,
// not a cached copy) and after (so scrubbing does not evict the clients' hot pages).
//
// Findings. A piece that fails its CRCs is re-read block by block to name every bad block (an
// I/O error on a block counts as bad). A shard whose header is damaged is reported with no block
// offsets: the whole shard is unreadable. Each damaged shard is logged and kept in a table that
// the heartbeat sends (fillHeartbeat) until a reply acknowledges it; a new leader is sent the
// whole table again (leaderChanged). A later pass that finds the shard clean (rewritten or
// rebuilt) or gone drops it from the table.
//
// Not thread-safe: owned by the chunk server's main event loop; `disk` and `timer` outlive it,
// and the promise of run() must be destroyed before it.
#pragma once
#include <kj/async.h>
#include <kj/timer.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "chunk/disk_set.h"
#include "fs/proto/meta.capnp.h"

namespace tessera::chunk {

class Scrubber {
 public:
  struct Config {
    uint64_t rateBytesPerSec = 8'000'000;
    uint64_t intervalMs = 7ull * 24 * 3600 * 1000;  // 0: only when the meta leader asks
  };
  static constexpr uint64_t kPieceBytes = 512 * 1024;
  // Bounds on one heartbeat (1 MiB of offsets at most): the rest follows in the next ones, and
  // a shard with more bad blocks names its first kMaxBlocksPerReport (it is rebuilt whole).
  static constexpr size_t kMaxReportsPerHeartbeat = 256;
  static constexpr size_t kMaxLostShards = 1'000;
  static constexpr size_t kMaxBlocksPerReport = 512;

  Scrubber(DiskSet& disks, kj::Timer& timer, Config config);

  // Scrubs forever; never resolves. Disk errors are logged, never fatal.
  kj::Promise<void> run();

  // A scrub-now request from the meta leader (a heartbeat reply's scrubNow); ignored if 0 or
  // already acted on.
  void request(uint64_t id);

  // Fills the heartbeat's scrub progress and the damage reports not acknowledged yet; returns a
  // token for heartbeatAccepted.
  struct Sent {
    std::vector<std::pair<ShardKey, uint64_t>> reports;  // key and version sent
  };
  Sent fillHeartbeat(proto::ScrubProgress::Builder b) const;
  // The heartbeat that carried `sent` was accepted: those reports are acknowledged.
  void heartbeatAccepted(const Sent& sent);
  // Registered with a (possibly new) meta leader, which may know nothing: send every report again.
  void leaderChanged();
  // A rebuild here left `blocks` blocks of shard `key` marked lost: counted until the next
  // pass counts them all.
  void noteLost(ShardKey key, uint64_t blocks);

  struct KeyLess {
    bool operator()(const ShardKey& a, const ShardKey& b) const {
      return a.chunk.value != b.chunk.value ? a.chunk.value < b.chunk.value : a.shard < b.shard;
    }
  };
  // --- what the heartbeat reports, also for tests ---
  struct Progress {
    bool running = false;
    uint64_t bytesThisPass = 0, passBytes = 0, passes = 0, lastPassEndMs = 0, badBlocks = 0;
    uint64_t request = 0;
    // Blocks marked lost (ShardFile::markLost) per shard: what the last finished pass found,
    // plus what noteLost() was told of since (a heartbeat names at most kMaxLostShards shards,
    // the first by chunk and shard, and the sum of all).
    std::map<ShardKey, uint64_t, KeyLess> lostShards;
    uint64_t lostBlocks() const {
      uint64_t n = 0;
      for (auto& [key, blocks] : lostShards) n += blocks;
      return n;
    }
  };
  const Progress& progress() const { return progress_; }
  struct Damage {
    std::set<uint64_t> blocks;  // shard offsets; empty: the whole shard
    uint64_t version = 0;       // bumped when the finding changes
    bool acked = false;
  };
  const std::map<ShardKey, Damage, KeyLess>& damaged() const { return damaged_; }

 private:
  struct Listed {
    ShardKey key;
    uint64_t bytes;
    size_t disk = 0;  // which disk of the DiskSet holds it
  };
  struct PieceResult;

  kj::Promise<void> loadState();
  kj::Promise<void> waitForPass();
  kj::Promise<void> pass();
  // Shard i from `offset` on; `bad`: bad blocks found in shard i so far.
  kj::Promise<void> scrubShards(std::vector<Listed> shards, size_t i, uint64_t offset,
                                std::vector<uint64_t> bad);
  // Shard `key` was read whole and has these bad blocks (whole: its header is damaged).
  void record(ShardKey key, const std::vector<uint64_t>& blocks, bool whole);
  uint64_t nowMs() const;

  DiskSet& disk_;
  kj::Timer& timer_;
  Config config_;
  Progress progress_;
  uint64_t requested_ = 0;  // a request not started yet (0: none)
  bool restart_ = false;    // a request came during a pass: start over
  std::map<ShardKey, uint64_t, KeyLess> lostThisPass_;
  kj::TimePoint nextPass_;
  std::map<ShardKey, Damage, KeyLess> damaged_;
};

}  // namespace tessera::chunk
