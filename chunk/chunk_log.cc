#include "chunk/chunk_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "chunk/shard_file.h"
#include "fs/checksum.h"
#include "fs/log.h"

namespace tessera::chunk {
namespace {

constexpr uint32_t kMagic = 0x32474c54;  // "TLG2"
constexpr size_t kHeader = 56;
enum Type : uint8_t { kAppend = 1, kTrim = 2, kDrop = 3, kPad = 4 };
// Batches are padded to this, the alignment direct I/O needs on any disk with sectors of up to
// 4 KiB; where the disk's own is smaller (512), to that (see ChunkLog::open).
constexpr size_t kMaxAlign = 4096;
// Record bytes after the header: a pad's zeros (counted in its offset field), or an append's
// CRCs and data.
size_t bodySize(Type type, uint64_t offset, uint32_t length) {
  return type == kPad ? size_t(offset) : length / kBlockSize * 4 + length;
}

void putU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = char((v >> (8 * i)) & 0xff);
}
void putU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = char((v >> (8 * i)) & 0xff);
}
uint32_t getU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}
uint64_t getU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

std::string encode(uint64_t segment, Type type, ChunkId chunk, uint8_t shard, uint64_t epoch,
                   uint64_t seq, uint64_t offset, kj::ArrayPtr<const uint32_t> crcs,
                   kj::ArrayPtr<const kj::byte> data) {
  std::string r(kHeader + bodySize(type, offset, uint32_t(data.size())), '\0');
  putU32(r.data(), kMagic);
  r[4] = char(type);
  r[5] = char(shard);
  putU64(r.data() + 8, chunk.value);
  putU64(r.data() + 16, epoch);
  putU64(r.data() + 24, seq);
  putU64(r.data() + 32, offset);
  putU32(r.data() + 40, uint32_t(data.size()));
  putU64(r.data() + 48, segment);
  for (size_t i = 0; i < crcs.size(); ++i) putU32(r.data() + kHeader + 4 * i, crcs[i]);
  if (data.size()) memcpy(r.data() + kHeader + crcs.size() * 4, data.begin(), data.size());
  putU32(r.data() + 44, crc32c(r.data(), r.size()));
  return r;
}

Error ioError(const std::string& what, const std::string& path, int err) {
  return Error{err == ENOSPC ? Errc::kNoSpace : Errc::kIo,
               what + " " + path + ": " + strerror(err)};
}

std::string pathOf(const std::string& dir, uint64_t n, const char* kind = "log") {
  char name[40];
  snprintf(name, sizeof name, "%s.%08llu", kind, static_cast<unsigned long long>(n));
  return dir + "/" + name;
}

// Opens segment `path` to be written from its start: `spare` renamed to it (a spare keeps its
// blocks, so writing over them changes no metadata and an fdatasync is the data alone, with no
// journal commit; what it held before reads as the end, being of other segments), or, without
// one, a new empty file.
// `direct`: opened with O_DIRECT.
Result<int> startSegment(const std::string& path, const std::optional<std::string>& spare,
                         bool direct) {
  int flags = O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0);
  if (spare && ::rename(spare->c_str(), path.c_str()) == 0) {
    int fd = ::open(path.c_str(), flags);
    if (fd >= 0) return fd;
  }
  int fd = ::open(path.c_str(), flags | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return ioError("cannot create", path, errno);
  return fd;
}

}  // namespace

std::string ChunkLog::segmentPath(uint64_t n) const { return pathOf(dir_, n); }

Result<kj::Own<ChunkLog>> ChunkLog::open(std::string dir, Config config) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return ioError("cannot create", dir, errno);
  std::vector<uint64_t> segments;
  std::vector<std::string> spares;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      unsigned long long n = 0;
      char rest = 0;
      if (sscanf(e->d_name, "log.%llu%c", &n, &rest) == 1 && n > 0) segments.push_back(n);
      if (sscanf(e->d_name, "spare.%llu%c", &n, &rest) == 1) spares.push_back(dir + "/" + e->d_name);
    }
    ::closedir(d);
  } else {
    return ioError("cannot list", dir, errno);
  }
  std::sort(segments.begin(), segments.end());
  std::unordered_map<uint64_t, ChunkRecords> chunks;
  std::map<uint64_t, uint64_t> live;
  auto forgetChunk = [&](uint64_t chunk, auto keep) {
    auto c = chunks.find(chunk);
    if (c == chunks.end()) return;
    for (auto it = c->second.begin(); it != c->second.end();) {
      if (keep(it->first)) {
        ++it;
        continue;
      }
      live[it->second.segment]--;
      it = c->second.erase(it);
    }
    if (c->second.empty()) chunks.erase(c);
  };
  for (uint64_t seg : segments) {
    std::string path = pathOf(dir, seg);
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return ioError("cannot open", path, errno);
    std::string bytes;
    char buf[1 << 16];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0) {
        int err = errno;
        ::close(fd);
        return ioError("cannot read", path, err);
      }
      if (n == 0) break;
      bytes.append(buf, size_t(n));
    }
    ::close(fd);
    live[seg] += 0;
    size_t pos = 0;
    bool damaged = false;
    while (pos + kHeader <= bytes.size()) {
      const char* h = bytes.data() + pos;
      // The end: never written (zeros), or what a recycled segment held before.
      if (getU32(h) != kMagic || getU64(h + 48) != seg) break;
      damaged = true;
      uint32_t length = getU32(h + 40);
      if (length % kBlockSize || length > kChunkSize) break;
      Type type = Type(uint8_t(h[4]));
      if (type == kPad && (length != 0 || getU64(h + 32) >= kMaxAlign)) break;
      size_t size = kHeader + bodySize(type, getU64(h + 32), length);
      if (pos + size > bytes.size()) break;
      std::string copy(h, size);
      putU32(copy.data() + 44, 0);
      if (crc32c(copy.data(), copy.size()) != getU32(h + 44)) break;
      damaged = false;
      uint64_t chunk = getU64(h + 8), epoch = getU64(h + 16), seq = getU64(h + 24);
      if (type == kAppend) {
        Record r;
        r.chunk = ChunkId(chunk);
        r.shard = uint8_t(h[5]);
        r.epoch = epoch;
        r.seq = seq;
        r.offset = getU64(h + 32);
        size_t blocks = length / kBlockSize;
        r.crcs = kj::heapArray<uint32_t>(blocks);
        for (size_t i = 0; i < blocks; ++i) r.crcs[i] = getU32(h + kHeader + 4 * i);
        r.data = kj::heapArray<kj::byte>(length);
        memcpy(r.data.begin(), h + kHeader + blocks * 4, length);
        auto& recs = chunks[chunk];
        auto key = std::make_pair(epoch, seq);
        auto old = recs.find(key);
        if (old != recs.end()) live[old->second.segment]--;
        live[seg]++;
        recs[key] = Entry{kj::mv(r), seg};
      } else if (type == kTrim) {
        forgetChunk(chunk, [&](std::pair<uint64_t, uint64_t> k) {
          return k > std::make_pair(epoch, seq);
        });
      } else if (type == kDrop) {
        forgetChunk(chunk, [](std::pair<uint64_t, uint64_t>) { return false; });
      } else if (type == kPad) {
        // The zeros that end a batch on a sector boundary.
      } else {
        break;
      }
      pos += size;
    }
    // A record of this segment that does not check out: a torn group commit (never
    // acknowledged) or damage, behind which nothing is trusted. Appends never come back to a
    // segment read here, so it needs no cutting.
    if (damaged) {
      log::warn("chunk log ", path.c_str(), ": ignored a damaged tail from byte ", pos);
    }
  }
  // Appends go to a new segment after the last one read (whose tail may be torn).
  uint64_t seg = segments.empty() ? 1 : segments.back() + 1;
  auto self = kj::heap<ChunkLog>(dir, config, -1, seg, 0, kj::mv(chunks), kj::mv(live));
  std::sort(spares.begin(), spares.end());
  while (spares.size() > config.spareSegments) {
    ::unlink(spares.back().c_str());
    spares.pop_back();
  }
  self->spares_.assign(spares.begin(), spares.end());
  std::optional<std::string> spare;
  if (!self->spares_.empty()) {
    spare = self->spares_.front();
    self->spares_.pop_front();
  }
  auto fd = startSegment(self->segmentPath(seg), spare, false);
  if (!fd) return fd.error();
  self->fd_ = *fd;
  self->useDirectIo();
  self->live_[seg] += 0;
  if (Status s = ShardFile::syncDirectory(dir); !s) return s.error();
  for (auto& [chunk, recs] : self->chunks_) {
    for (auto& [key, e] : recs) self->bytes_ += e.record.data.size();
  }
  self->collect();
  return kj::mv(self);
}

ChunkLog::ChunkLog(std::string dir, Config config, int fd, uint64_t segment, uint64_t segmentSize,
                   std::unordered_map<uint64_t, ChunkRecords> chunks,
                   std::map<uint64_t, uint64_t> live)
    : dir_(kj::mv(dir)),
      config_(config),
      fd_(fd),
      segment_(segment),
      segmentSize_(segmentSize),
      chunks_(kj::mv(chunks)),
      live_(kj::mv(live)) {}

ChunkLog::~ChunkLog() {
  if (fd_ >= 0) ::close(fd_);
}

void ChunkLog::queue(uint8_t type, ChunkId chunk, uint8_t shard, uint64_t epoch, uint64_t seq,
                     uint64_t offset, kj::ArrayPtr<const uint32_t> crcs,
                     kj::ArrayPtr<const kj::byte> data) {
  size_t size = kHeader + crcs.size() * 4 + data.size();
  if (segmentSize_ > 0 && segmentSize_ + size > config_.segmentBytes) {
    ++segment_;
    segmentSize_ = 0;
    live_[segment_] += 0;
    Batch roll{"", segment_, std::nullopt};
    if (!spares_.empty()) {
      roll.reuse = spares_.front();
      spares_.pop_front();
      counters_.reused++;
    }
    pending_.push_back(kj::mv(roll));
  }
  std::string bytes = encode(segment_, Type(type), chunk, shard, epoch, seq, offset, crcs, data);
  segmentSize_ += bytes.size();
  if (pending_.empty() || pending_.back().rollTo) {
    pending_.push_back(Batch{kj::mv(bytes), std::nullopt, std::nullopt});
  } else {
    pending_.back().bytes += bytes;
  }
}

void ChunkLog::add(Entry entry) {
  auto& recs = chunks_[entry.record.chunk.value];
  auto key = std::make_pair(entry.record.epoch, entry.record.seq);
  auto old = recs.find(key);
  if (old != recs.end()) forget(old, recs);
  bytes_ += entry.record.data.size();
  live_[entry.segment]++;
  recs.emplace(key, kj::mv(entry));
}

void ChunkLog::forget(ChunkRecords::iterator it, ChunkRecords& records) {
  bytes_ -= it->second.record.data.size();
  live_[it->second.segment]--;
  records.erase(it);
}

kj::Promise<Status> ChunkLog::append(Record r) {
  if (r.chunk.value == 0) return Status(Error{Errc::kInvalid, "chunk id 0"});
  if (r.shard >= kMaxShards) return Status(Error{Errc::kInvalid, "shard index out of range"});
  if (r.data.size() == 0) return Status(Error{Errc::kInvalid, "empty log record"});
  if (auto s = checkRange(r.offset, r.data.size()); !s) return s;
  if (auto s = verifyBlocks(r.offset, r.data, r.crcs); !s) return s;
  if (broken_) return Status(*broken_);
  if (bytes_ + r.data.size() > config_.memoryLimit) {
    return Status(Error{Errc::kBusy, "chunk log full (" + std::to_string(bytes_) +
                                         " bytes unapplied)"});
  }
  queue(kAppend, r.chunk, r.shard, r.epoch, r.seq, r.offset, r.crcs, r.data);
  counters_.appended++;
  add(Entry{kj::mv(r), segment_});
  return flush();
}

kj::Promise<Status> ChunkLog::trim(ChunkId chunk, uint64_t epoch, uint64_t seq) {
  auto c = chunks_.find(chunk.value);
  if (c == chunks_.end()) return Status();
  auto& recs = c->second;
  bool any = false;
  while (!recs.empty() && recs.begin()->first <= std::make_pair(epoch, seq)) {
    forget(recs.begin(), recs);
    counters_.trimmed++;
    any = true;
  }
  if (recs.empty()) chunks_.erase(c);
  if (!any) return Status();
  if (broken_) return Status(*broken_);
  queue(kTrim, chunk, 0, epoch, seq, 0, nullptr, nullptr);
  return flush();
}

kj::Promise<Status> ChunkLog::drop(ChunkId chunk) {
  auto c = chunks_.find(chunk.value);
  if (c == chunks_.end()) return Status();
  while (!c->second.empty()) forget(c->second.begin(), c->second);
  chunks_.erase(c);
  if (broken_) return Status(*broken_);
  queue(kDrop, chunk, 0, 0, 0, 0, nullptr, nullptr);
  return flush();
}

void ChunkLog::overlay(ChunkId chunk, uint8_t shard, uint64_t offset, kj::ArrayPtr<kj::byte> out,
                       kj::ArrayPtr<uint32_t> crcs) const {
  auto c = chunks_.find(chunk.value);
  if (c == chunks_.end()) return;
  uint64_t end = offset + out.size();
  // In (epoch, seq) order: a later record's blocks land over an earlier one's.
  for (auto& [key, e] : c->second) {
    const Record& r = e.record;
    if (r.shard != shard) continue;
    uint64_t lo = std::max(offset, r.offset), hi = std::min(end, r.offset + r.data.size());
    if (lo >= hi) continue;
    memcpy(out.begin() + (lo - offset), r.data.begin() + (lo - r.offset), hi - lo);
    for (uint64_t b = lo; b < hi; b += kBlockSize) {
      crcs[(b - offset) / kBlockSize] = r.crcs[(b - r.offset) / kBlockSize];
    }
  }
}

std::vector<const ChunkLog::Record*> ChunkLog::records(ChunkId chunk, int shard, uint64_t lo,
                                                       uint64_t hi) const {
  std::vector<const Record*> out;
  auto c = chunks_.find(chunk.value);
  if (c == chunks_.end()) return out;
  for (auto& [key, e] : c->second) {
    const Record& r = e.record;
    if (shard >= 0 && r.shard != shard) continue;
    if (r.offset >= hi || r.offset + r.data.size() <= lo) continue;
    out.push_back(&r);
  }
  return out;
}

size_t ChunkLog::count(ChunkId chunk) const {
  auto c = chunks_.find(chunk.value);
  return c == chunks_.end() ? 0 : c->second.size();
}

ChunkLog::Stats ChunkLog::stats() const {
  Stats s = counters_;
  for (auto& [chunk, recs] : chunks_) s.records += recs.size();
  s.bytes = bytes_;
  s.segments = live_.size();
  return s;
}

// Group commit (fs/group_commit.h): what is queued when a write starts goes in it, what
// comes while it runs shares the next. After a failed write the segment may end in a partial
// record behind which later ones would be lost at the next open: the log then refuses all.
kj::Promise<Status> ChunkLog::flush() {
  return commits_.flush([this]() -> kj::Promise<Status> {
    if (broken_) return Status(*broken_);
    padBatches();
    auto batches = kj::heap<std::vector<Batch>>(kj::mv(pending_));
    pending_.clear();
    auto& work = *batches;
    return worker_
        .run([this, &work]() -> Status {
          for (auto& b : work) {
            if (b.rollTo) {
              if (::fdatasync(fd_) != 0) return ioError("cannot sync", segmentPath(*b.rollTo - 1), errno);
              auto fd = startSegment(segmentPath(*b.rollTo), b.reuse, direct_);
              if (!fd) return fd.error();
              ::close(fd_);
              fd_ = *fd;
              fileAt_ = 0;
              if (Status s = ShardFile::syncDirectory(dir_); !s) return s;
              continue;
            }
            if (Status s = writeAt(b.bytes); !s) return s;
            fileAt_ += b.bytes.size();
          }
          if (::fdatasync(fd_) != 0) return ioError("cannot sync", dir_ + "/log", errno);
          return Status();
        })
        .then([this](Status s) {
          if (!s && !broken_) {
            log::error("chunk log ", dir_.c_str(), ": ", s.error().toString().c_str());
            broken_ = s.error();
          }
          if (s) collect();
          return s;
        })
        .attach(kj::mv(batches));
  });
}

// Each batch ends on a sector boundary, with a pad record, so the next one starts on one:
// a group commit then writes (direct) the sectors of its own records, where through the page
// cache it wrote their pages, and the next commit wrote the last of them again — two 4 KiB pages
// per 4 KiB record, 4.5 KiB now.
void ChunkLog::padBatches() {
  uint64_t segment = segment_;
  for (size_t i = pending_.size(); i-- > 0;) {
    Batch& b = pending_[i];
    if (b.rollTo) {
      segment = *b.rollTo - 1;
      continue;
    }
    size_t pad = (align_ - (b.bytes.size() + kHeader) % align_) % align_;
    std::string bytes = encode(segment, kPad, ChunkId(0), 0, 0, 0, pad, nullptr, nullptr);
    b.bytes += bytes;
    if (segment == segment_) segmentSize_ += bytes.size();
  }
}

void ChunkLog::useDirectIo() {
  // Linux 6.1 and later say whether and how the file takes direct I/O; before, ext4 and xfs
  // take it aligned to the disk's sector, at most 4 KiB.
  struct statx st {};
  size_t align = kMaxAlign;
  if (::statx(fd_, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) == 0 && (st.stx_mask & STATX_DIOALIGN)) {
    if (st.stx_dio_offset_align == 0 || st.stx_dio_offset_align > kMaxAlign ||
        st.stx_dio_mem_align > kMaxAlign) {
      return;
    }
    align = st.stx_dio_offset_align;
  }
  int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_DIRECT) != 0) return;
  direct_ = true;
  align_ = align;
}

Status ChunkLog::writeAt(const std::string& bytes) {
  const char* from = bytes.data();
  std::unique_ptr<char, decltype(&::free)> aligned(nullptr, &::free);
  if (direct_) {
    KJ_ASSERT(bytes.size() % align_ == 0 && fileAt_ % align_ == 0, bytes.size(), fileAt_);
    size_t room = (bytes.size() + kMaxAlign - 1) / kMaxAlign * kMaxAlign;
    aligned.reset(static_cast<char*>(::aligned_alloc(kMaxAlign, room)));
    KJ_ASSERT(aligned != nullptr);
    memcpy(aligned.get(), bytes.data(), bytes.size());
    from = aligned.get();
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd_, from + done, bytes.size() - done, off_t(fileAt_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && direct_) {
      // The file system refused the direct write after all: go on through the page cache.
      int flags = ::fcntl(fd_, F_GETFL);
      if (flags >= 0 && ::fcntl(fd_, F_SETFL, flags & ~O_DIRECT) == 0) {
        log::warn("chunk log ", dir_.c_str(), ": direct I/O refused, writing through the cache");
        direct_ = false;
        continue;
      }
    }
    if (n < 0) return ioError("cannot write", dir_ + "/log", errno);
    done += size_t(n);
  }
  return Status();
}

void ChunkLog::collect() {
  // Move the live records out of the oldest segment when there are too many segments.
  if (live_.size() > config_.maxSegments && !broken_) {
    uint64_t oldest = live_.begin()->first;
    if (oldest != segment_ && live_.begin()->second > 0) {
      std::vector<std::pair<uint64_t, std::pair<uint64_t, uint64_t>>> moves;
      for (auto& [chunk, recs] : chunks_) {
        for (auto& [key, e] : recs) {
          if (e.segment == oldest) moves.push_back({chunk, key});
        }
      }
      for (auto& [chunk, key] : moves) {
        Entry& e = chunks_[chunk][key];
        const Record& r = e.record;
        queue(kAppend, r.chunk, r.shard, r.epoch, r.seq, r.offset, r.crcs, r.data);
        live_[e.segment]--;
        e.segment = segment_;
        live_[segment_]++;
      }
      // Deleted after the next flush, which makes the moved copies durable.
      flush().detach([](kj::Exception&&) {});
      return;
    }
  }
  // Dead segments become spares (up to config_.spareSegments), the rest are deleted. Oldest
  // first: a segment's records may be trimmed by records in later ones, never earlier ones, so
  // a dead segment never lies behind a live one that a crash could bring back alone.
  std::vector<std::pair<std::string, std::string>> doomed;  // (path, spare path or "")
  while (live_.size() > 1 && live_.begin()->first != segment_ && live_.begin()->second == 0) {
    uint64_t n = live_.begin()->first;
    std::string spare;
    if (spares_.size() < config_.spareSegments) {
      spare = pathOf(dir_, n, "spare");
      spares_.push_back(spare);  // the worker renames it before any later roll reuses it
    }
    doomed.emplace_back(segmentPath(n), spare);
    live_.erase(live_.begin());
  }
  if (doomed.empty()) return;
  worker_
      .run([this, doomed = kj::mv(doomed)] {
        bool renamed = false;
        for (auto& [path, spare] : doomed) {
          if (!spare.empty() && ::rename(path.c_str(), spare.c_str()) == 0) {
            renamed = true;
          } else {
            ::unlink(path.c_str());
          }
        }
        // Its records must not come back under the old name after a crash.
        if (renamed) (void)ShardFile::syncDirectory(dir_);
      })
      .detach([](kj::Exception&&) {});
}

}  // namespace tessera::chunk
