#include "chunk/scrubber.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

#include "fs/log.h"

namespace tessera::chunk {
namespace {

constexpr const char* kStateFile = "scrub.state";

uint64_t dataBytes(const struct stat& st) {
  uint64_t size = uint64_t(st.st_size);
  if (size <= kDataOffset) return 0;
  uint64_t data = (size - kDataOffset + kBlockSize - 1) / kBlockSize * kBlockSize;
  return std::min(data, kChunkSize);
}

}  // namespace

// What one piece of a shard gave. Built on the worker thread.
struct Scrubber::PieceResult {
  enum Kind { kOk, kGone, kHeaderBad, kError } kind = kOk;
  uint64_t bytes = 0;  // read
  bool end = false;    // the shard's data ends with this piece
  std::vector<uint64_t> bad;
  uint64_t lost = 0;  // blocks a rebuild marked lost (ShardFile::markLost): known, not rot
  std::string error;
};

namespace {

// Runs on the Disk's worker thread (blocking). Every shard file of the data directory, with
// the size of its data region.
std::vector<std::pair<ShardKey, uint64_t>> listShards(const std::string& dir) {
  std::vector<std::pair<ShardKey, uint64_t>> out;
  for (unsigned b = 0; b < 256; ++b) {
    char bucket[8];
    snprintf(bucket, sizeof bucket, "%02x", b);
    std::string path = dir + "/shards/" + bucket;
    DIR* d = ::opendir(path.c_str());
    if (!d) continue;
    while (struct dirent* e = ::readdir(d)) {
      ShardKey key;
      auto parsed = parseShardName(e->d_name);
      if (!parsed) continue;
      key = *parsed;
      struct stat st;
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (!S_ISREG(st.st_mode)) continue;
      out.emplace_back(key, dataBytes(st));
    }
    ::closedir(d);
  }
  return out;
}

}  // namespace

Scrubber::Scrubber(DiskSet& disk, kj::Timer& timer, Config config)
    : disk_(disk), timer_(timer), config_(config), nextPass_(timer.now()) {
  KJ_REQUIRE(config_.rateBytesPerSec > 0, "scrub rate must be more than 0");
}

uint64_t Scrubber::nowMs() const {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1'000'000;
}

kj::Promise<void> Scrubber::run() {
  return loadState().then([this] { return waitForPass(); });
}

// The next pass is due an interval after the last one ended; a data directory that never
// finished one (new, or from before the scrubber) counts from now.
kj::Promise<void> Scrubber::loadState() {
  return disk_.readFile(kStateFile).then([this](Result<std::string> text) {
    uint64_t last = 0;
    if (text) {
      const std::string& t = *text;
      auto at = t.find("last_pass_end_ms = ");
      if (at != std::string::npos) {
        const char* p = t.data() + at + strlen("last_pass_end_ms = ");
        std::from_chars(p, t.data() + t.size(), last);
      }
    }
    uint64_t now = nowMs();
    progress_.lastPassEndMs = last;
    uint64_t sinceMs = last && last <= now ? now - last : 0;
    uint64_t waitMs = config_.intervalMs > sinceMs ? config_.intervalMs - sinceMs : 0;
    if (last == 0) waitMs = config_.intervalMs;
    nextPass_ = timer_.now() + int64_t(waitMs) * kj::MILLISECONDS;
  });
}

void Scrubber::request(uint64_t id) {
  if (id == 0 || id == progress_.request || id == requested_) return;
  log::info("scrub requested by the meta leader (request ", id, ")");
  requested_ = id;
  if (progress_.running) restart_ = true;
}

kj::Promise<void> Scrubber::waitForPass() {
  bool due = requested_ != 0 || (config_.intervalMs != 0 && timer_.now() >= nextPass_);
  if (due) return pass().then([this] { return waitForPass(); });
  // Polled, so a request from a heartbeat reply starts a pass within this much.
  return timer_.afterDelay(200 * kj::MILLISECONDS).then([this] { return waitForPass(); });
}

kj::Promise<void> Scrubber::pass() {
  restart_ = false;
  if (requested_ != 0) {
    progress_.request = requested_;
    requested_ = 0;
  }
  progress_.running = true;
  progress_.bytesThisPass = 0;
  lostThisPass_.clear();
  progress_.passBytes = 0;
  // Every disk that has not failed, listed on its own worker thread.
  kj::Vector<kj::Promise<std::vector<Listed>>> lists;
  for (size_t d = 0; d < disk_.size(); ++d) {
    Disk* one = disk_.diskAt(d);
    if (!one) continue;
    std::string dir = disk_.dirAt(d);
    lists.add(one->onWorkerThread([dir] { return listShards(dir); })
                  .then([d](std::vector<std::pair<ShardKey, uint64_t>> found) {
                    std::vector<Listed> out;
                    for (auto& [key, bytes] : found) out.push_back(Listed{key, bytes, d});
                    return out;
                  }));
  }
  return kj::joinPromises(lists.releaseAsArray())
      .then([this](kj::Array<std::vector<Listed>> perDisk) {
        std::vector<Listed> shards;
        std::set<ShardKey, KeyLess> present;
        for (auto& list : perDisk) {
          for (auto& l : list) {
            shards.push_back(l);
            progress_.passBytes += l.bytes;
            present.insert(l.key);
          }
        }
        // Damage of shards deleted since is no longer news.
        for (auto it = damaged_.begin(); it != damaged_.end();) {
          it = present.count(it->first) ? std::next(it) : damaged_.erase(it);
        }
        log::debug("scrub pass: ", shards.size(), " shards, ", progress_.passBytes, " bytes");
        return scrubShards(kj::mv(shards), 0, 0, {});
      })
      .then([this]() -> kj::Promise<void> {
        if (restart_) return pass();
        progress_.running = false;
        progress_.passes++;
        progress_.lastPassEndMs = nowMs();
        progress_.lostShards = lostThisPass_;
        nextPass_ = timer_.now() + int64_t(config_.intervalMs) * kj::MILLISECONDS;
        log::info("scrub pass done: ", progress_.bytesThisPass, " bytes, ", damaged_.size(),
                  " damaged shards known");
        std::string text = "# written by tessera-chunk: when the scrubber last finished a pass\n"
                           "last_pass_end_ms = " +
                           std::to_string(progress_.lastPassEndMs) + "\n";
        return disk_.writeFile(kStateFile, text).then([](Status s) {
          if (!s) log::warn("saving the scrub state: ", s.error().toString().c_str());
        });
      });
}

kj::Promise<void> Scrubber::scrubShards(std::vector<Listed> shards, size_t i, uint64_t offset,
                                        std::vector<uint64_t> bad) {
  if (i >= shards.size() || restart_) return kj::READY_NOW;
  ShardKey key = shards[i].key;
  Disk* disk = disk_.diskAt(shards[i].disk);
  if (!disk) return scrubShards(kj::mv(shards), i + 1, 0, {});  // its disk failed since
  std::string path = disk->shardPath(key);
  kj::TimePoint started = timer_.now();
  return disk
      ->onWorkerThread([path, key, offset]() {
        // On the worker thread: blocking reads, between the client operations queued there.
        PieceResult r;
        auto file = ShardFile::open(path, key);
        if (!file) {
          r.kind = file.code() == Errc::kNotFound     ? PieceResult::kGone
                   : file.code() == Errc::kCorruption ? PieceResult::kHeaderBad
                                                      : PieceResult::kError;
          r.error = file.error().toString();
          r.end = true;
          return r;
        }
        struct stat st;
        if (::stat(path.c_str(), &st) != 0) {
          r.kind = errno == ENOENT ? PieceResult::kGone : PieceResult::kError;
          r.error = std::string("stat ") + path + ": " + strerror(errno);
          r.end = true;
          return r;
        }
        uint64_t data = dataBytes(st);
        if (offset >= data) {
          r.end = true;
          return r;
        }
        uint64_t len = std::min(kPieceBytes, data - offset);
        auto buf = kj::heapArray<kj::byte>(len);
        auto crcs = kj::heapArray<uint32_t>(len / kBlockSize);
        r.bytes = len;
        r.end = offset + len >= data;
        // Read what the disk holds, not what the page cache remembers (rot is on the media),
        // and leave no scrubbed pages behind to push out the clients' hot ones. Dirty pages
        // stay: they are the newest data and reach the disk with the next sync.
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        KJ_DEFER(if (fd >= 0) ::close(fd));
        auto dropCache = [&] {
          if (fd >= 0) {
            ::posix_fadvise(fd, off_t(kDataOffset + offset), off_t(len), POSIX_FADV_DONTNEED);
          }
        };
        dropCache();
        KJ_DEFER(dropCache());
        Status s = file->read(offset, buf, crcs);
        if (s) return r;
        if (s.code() != Errc::kCorruption && s.code() != Errc::kLost && s.code() != Errc::kIo) {
          r.kind = PieceResult::kError;
          r.error = s.error().toString();
          return r;
        }
        // Name every bad block, not only the first. A block marked lost is not rot: a rebuild
        // would only mark it lost again (its content is known nowhere); the next write of it
        // replaces it.
        for (uint64_t o = offset; o < offset + len; o += kBlockSize) {
          if (file->read(o, buf.slice(0, kBlockSize), crcs.slice(0, 1))) continue;
          if (auto lost = file->isLost(o); lost && *lost) {
            ++r.lost;
          } else {
            r.bad.push_back(o);
          }
        }
        if (r.bad.empty() && r.lost == 0) {
          r.kind = PieceResult::kError;
          r.error = s.error().toString() + " (not on re-reading block by block)";
        }
        return r;
      })
      .then([this, shards = kj::mv(shards), i, offset, bad = kj::mv(bad), key,
             started](PieceResult r) mutable -> kj::Promise<void> {
        progress_.bytesThisPass += r.bytes;
        switch (r.kind) {
          case PieceResult::kOk:
            break;
          case PieceResult::kGone:
            damaged_.erase(key);
            break;
          case PieceResult::kHeaderBad:
            log::warn("scrub: shard ", key.toString().c_str(),
                      " is unreadable: ", r.error.c_str());
            progress_.badBlocks++;
            record(key, {}, /*whole=*/true);
            break;
          case PieceResult::kError:
            log::warn("scrub: shard ", key.toString().c_str(), " at ", offset, ": ",
                      r.error.c_str());
            break;
        }
        if (r.lost > 0) {
          lostThisPass_[key] += r.lost;
          log::warn("scrub: shard ", key.toString().c_str(), " has ", r.lost,
                    " blocks marked lost from ", offset,
                    " (rebuilt from rows holding a mix of two writes); reads of them fail");
        }
        for (uint64_t o : r.bad) {
          log::warn("scrub: shard ", key.toString().c_str(), " block at ", o,
                    " fails its CRC32C");
          progress_.badBlocks++;
        }
        bad.insert(bad.end(), r.bad.begin(), r.bad.end());
        size_t next = i;
        uint64_t nextOffset = offset + r.bytes;
        if (r.end) {
          // The pass's size counts what the shard turned out to hold (it may have grown,
          // shrunk, gone or be unreadable since the listing).
          uint64_t listed = shards[i].bytes, read = offset + r.bytes;
          progress_.passBytes += read;
          progress_.passBytes -= std::min(listed, progress_.passBytes);
          if (r.kind == PieceResult::kOk || r.kind == PieceResult::kError) {
            // A whole shard read: what it holds now is the finding (clean drops an old one).
            if (!bad.empty()) {
              record(key, bad, false);
            } else if (r.kind == PieceResult::kOk) {
              damaged_.erase(key);
            }
          }
          bad.clear();
          ++next;
          nextOffset = 0;
        }
        // Pace: a piece of B bytes takes at least B / rate seconds, reading included.
        kj::TimePoint due = started + int64_t(r.bytes * 1000 / config_.rateBytesPerSec) *
                                          kj::MILLISECONDS;
        kj::Promise<void> pause = kj::READY_NOW;
        if (due > timer_.now()) pause = timer_.atTime(due);
        return pause.then([this, shards = kj::mv(shards), next, nextOffset,
                           bad = kj::mv(bad)]() mutable {
          return scrubShards(kj::mv(shards), next, nextOffset, kj::mv(bad));
        });
      });
}

void Scrubber::record(ShardKey key, const std::vector<uint64_t>& blocks, bool whole) {
  std::set<uint64_t> set;
  if (!whole) set.insert(blocks.begin(), blocks.end());
  auto it = damaged_.find(key);
  if (it != damaged_.end() && it->second.blocks == set) return;
  auto& d = damaged_[key];
  d.blocks = kj::mv(set);
  d.version++;
  d.acked = false;
  std::string what = whole ? "the whole shard" : std::to_string(d.blocks.size()) + " bad blocks";
  log::warn("scrub: shard ", key.toString().c_str(), " is damaged (", what.c_str(),
            "); reporting it to the meta leader");
}

void Scrubber::noteLost(ShardKey key, uint64_t blocks) {
  progress_.lostShards[key] += blocks;
}

Scrubber::Sent Scrubber::fillHeartbeat(proto::ScrubProgress::Builder b) const {
  b.setRunning(progress_.running);
  b.setBytesThisPass(progress_.bytesThisPass);
  b.setPassBytes(progress_.passBytes);
  b.setPasses(progress_.passes);
  b.setLastPassEndMs(progress_.lastPassEndMs);
  b.setBadBlocks(progress_.badBlocks);
  b.setRequest(progress_.request);
  b.setLostBlocks(progress_.lostBlocks());
  auto lost = b.initLostShards(
      uint32_t(std::min(progress_.lostShards.size(), kMaxLostShards)));
  uint32_t n = 0;
  for (auto& [key, blocks] : progress_.lostShards) {
    if (n == lost.size()) break;
    lost[n].setChunk(key.chunk.value);
    lost[n].setShard(key.shard);
    lost[n].setBlocks(blocks);
    ++n;
  }
  Sent sent;
  for (auto& [key, d] : damaged_) {
    if (d.acked) continue;
    if (sent.reports.size() >= kMaxReportsPerHeartbeat) break;
    sent.reports.emplace_back(key, d.version);
  }
  auto list = b.initDamaged(unsigned(sent.reports.size()));
  for (size_t i = 0; i < sent.reports.size(); ++i) {
    const ShardKey& key = sent.reports[i].first;
    const Damage& d = damaged_.at(key);
    auto r = list[unsigned(i)];
    r.setChunk(key.chunk.value);
    r.setShard(key.shard);
    auto blocks = r.initBlocks(unsigned(std::min(d.blocks.size(), kMaxBlocksPerReport)));
    unsigned j = 0;
    for (uint64_t o : d.blocks) {
      if (j == blocks.size()) break;
      blocks.set(j++, o);
    }
  }
  return sent;
}

void Scrubber::heartbeatAccepted(const Sent& sent) {
  for (auto& [key, version] : sent.reports) {
    auto it = damaged_.find(key);
    if (it != damaged_.end() && it->second.version == version) it->second.acked = true;
  }
}

void Scrubber::leaderChanged() {
  for (auto& [key, d] : damaged_) d.acked = false;
}

}  // namespace tessera::chunk
