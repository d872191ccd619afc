#include "meta/raft/file_storage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fs/checksum.h"
#include "fs/log.h"

namespace tessera::meta::raft {
namespace {

constexpr uint8_t kEntryRecord = 1;
constexpr uint8_t kHardStateRecord = 2;
constexpr uint8_t kSnapshotRecord = 3;
// A body larger than this is not something we wrote: the length field is garbage.
constexpr uint32_t kMaxBody = 256 << 20;

Error ioError(const std::string& what, int err) {
  return Error{err == ENOSPC ? Errc::kNoSpace : Errc::kIo, what + ": " + strerror(err)};
}

void put32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
void put64(std::string& s, uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
}
uint32_t get32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}
uint64_t get64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

std::string segmentName(uint64_t seq) {
  char name[40];
  snprintf(name, sizeof name, "wal-%016lx.log", (unsigned long)seq);
  return name;
}

std::string encodeEntry(const Entry& e) {
  std::string s;
  s.reserve(17 + e.data.size());
  put64(s, e.term.value);
  put64(s, e.index.value);
  s.push_back(char(e.type));
  s += e.data;
  return s;
}

std::string encodeHardState(const HardState& hs) {
  std::string s;
  put64(s, hs.term.value);
  put64(s, hs.vote.value);
  put64(s, hs.commit.value);
  return s;
}

std::string encodeSnapshot(const SnapshotMeta& m, bool installed) {
  std::string s;
  put64(s, m.index.value);
  put64(s, m.term.value);
  s.push_back(char(installed ? 1 : 0));
  put32(s, uint32_t(m.conf.voters.size()));
  for (NodeId v : m.conf.voters) put64(s, v.value);
  return s;
}

Status writeAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ioError("write to the raft log", errno);
    }
    done += size_t(n);
  }
  return Status();
}

Result<std::string> readWhole(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ioError("open " + path, errno);
  std::string out;
  char buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return ioError("read " + path, e);
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return out;
}

Status syncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ioError("open " + dir, errno);
  int r = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (r != 0) return ioError("sync " + dir, e);
  return Status();
}

}  // namespace

FileStorage::FileStorage(std::string dir, ConfState initial, uint64_t segmentBytes)
    : dir_(std::move(dir)), segmentBytes_(segmentBytes), view_(initial) {
  lastSnapshot_ = view_.snapshot();
}

FileStorage::~FileStorage() {
  if (fd_ >= 0) ::close(fd_);
}

Result<std::unique_ptr<FileStorage>> FileStorage::open(const std::string& dir, ConfState initial,
                                                       uint64_t segmentBytes) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ioError("create raft log directory " + dir, errno);
  }
  std::unique_ptr<FileStorage> s(new FileStorage(dir, initial, segmentBytes));
  DIR* d = ::opendir(dir.c_str());
  if (!d) return ioError("open raft log directory " + dir, errno);
  std::vector<uint64_t> seqs;
  while (dirent* e = ::readdir(d)) {
    unsigned long seq;
    char tail[8];
    if (sscanf(e->d_name, "wal-%16lx.%7s", &seq, tail) == 2 && strcmp(tail, "log") == 0 &&
        strlen(e->d_name) == 24) {
      seqs.push_back(seq);
    }
  }
  ::closedir(d);
  std::sort(seqs.begin(), seqs.end());
  std::vector<Record> records;
  for (size_t i = 0; i < seqs.size(); ++i) {
    s->segments_.push_back({seqs[i], 0});
    auto st = s->readSegment(dir + "/" + segmentName(seqs[i]), i + 1 == seqs.size(), records);
    if (!st) return st.error();
  }
  if (auto st = s->replay(records); !st) return st.error();
  s->lastHardState_ = s->view_.hardState();
  s->lastSnapshot_ = s->view_.snapshot();
  // Always write into a new segment: it starts with the state in force, and a torn tail (cut
  // off by replay) is behind us.
  auto st = s->openSegment(seqs.empty() ? 1 : seqs.back() + 1);
  if (!st) return st.error();
  if (auto synced = s->sync(); !synced) return synced.error();
  return s;
}

// Checks every record of one segment and collects them; cuts a torn tail of the last one.
Status FileStorage::readSegment(const std::string& path, bool last, std::vector<Record>& out) {
  auto bytes = readWhole(path);
  if (!bytes) return bytes.error();
  const std::string& b = *bytes;
  size_t pos = 0;
  uint64_t maxIndex = 0;
  auto torn = [&](const char* why) -> Status {
    segments_.back().second = maxIndex;
    if (!last) {
      return Error{Errc::kCorruption, "raft log segment " + path + " is damaged at byte " +
                                          std::to_string(pos) + " (" + why + ")"};
    }
    tornBytes_ = b.size() - pos;
    log::warn("raft log ", path.c_str(), ": cutting a torn tail of ", tornBytes_,
              " bytes at byte ", pos, " (", why, ")");
    if (::truncate(path.c_str(), off_t(pos)) != 0) return ioError("truncate " + path, errno);
    return Status();
  };
  while (pos < b.size()) {
    if (b.size() - pos < 9) return torn("short record header");
    uint32_t len = get32(&b[pos]);
    uint32_t crc = get32(&b[pos + 4]);
    if (len == 0 || len > kMaxBody || len > b.size() - pos - 8) return torn("bad length");
    const char* body = &b[pos + 8];
    if (crc32c(body, len) != crc) return torn("checksum mismatch");
    Record r;
    r.type = uint8_t(body[0]);
    r.where = path + " byte " + std::to_string(pos);
    const char* p = body + 1;
    size_t n = len - 1;
    if (r.type == kEntryRecord && n >= 17) {
      r.entry.term = Term(get64(p));
      r.entry.index = LogIndex(get64(p + 8));
      uint8_t et = uint8_t(p[16]);
      if (et > uint8_t(Entry::Type::kConfChange)) return torn("bad entry type");
      r.entry.type = Entry::Type(et);
      r.entry.data.assign(p + 17, n - 17);
      maxIndex = std::max(maxIndex, r.entry.index.value);
    } else if (r.type == kHardStateRecord && n == 24) {
      r.hardState = HardState{Term(get64(p)), NodeId(get64(p + 8)), LogIndex(get64(p + 16))};
    } else if (r.type == kSnapshotRecord && n >= 21) {
      r.snapshot.index = LogIndex(get64(p));
      r.snapshot.term = Term(get64(p + 8));
      r.installed = p[16] != 0;
      uint32_t voters = get32(p + 17);
      if (n != 21 + size_t(voters) * 8) return torn("bad snapshot record");
      for (uint32_t i = 0; i < voters; ++i) {
        r.snapshot.conf.voters.push_back(NodeId(get64(p + 21 + 8 * i)));
      }
    } else {
      return torn("unknown record");
    }
    out.push_back(std::move(r));
    pos += 8 + len;
  }
  segments_.back().second = maxIndex;
  return Status();
}

// Two passes, because segments covered by a snapshot are deleted: the log starts at the newest
// snapshot recorded anywhere, entries it covers are skipped, and the rest replays in order. An
// installed snapshot discards every entry recorded before it (they came from an older leader
// and conflict with what the snapshot holds).
Status FileStorage::replay(const std::vector<Record>& records) {
  const Record* newest = nullptr;
  size_t lastInstall = 0;  // entries recorded before it were replaced by the leader's snapshot
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    if (r.type != kSnapshotRecord) continue;
    if (!newest || r.snapshot.index > newest->snapshot.index) newest = &r;
    if (r.installed) lastInstall = i;
  }
  if (newest && newest->snapshot.index) {
    if (auto s = view_.applySnapshot(newest->snapshot, ""); !s) return s;
  }
  const LogIndex base = view_.snapshot().index;
  for (size_t i = 0; i < records.size(); ++i) {
    const Record& r = records[i];
    Status applied;
    if (r.type == kEntryRecord) {
      if (r.entry.index <= base || i < lastInstall) continue;
      applied = view_.append({r.entry});
    } else if (r.type == kHardStateRecord) {
      view_.setHardState(r.hardState);
    }
    if (!applied) {
      return Error{Errc::kCorruption, "raft log record at " + r.where +
                                          " does not fit the log: " + applied.error().toString()};
    }
  }
  HardState hs = view_.hardState();
  if (hs.commit < base) {
    hs.commit = base;
    view_.setHardState(hs);
  }
  return Status();
}

Status FileStorage::openSegment(uint64_t seq) {
  std::string path = dir_ + "/" + segmentName(seq);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return ioError("create " + path, errno);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  seq_ = seq;
  written_ = 0;
  segments_.push_back({seq, 0});
  if (auto s = appendRecord(kHardStateRecord, encodeHardState(lastHardState_)); !s) return s;
  if (auto s = appendRecord(kSnapshotRecord, encodeSnapshot(lastSnapshot_, false)); !s) return s;
  return syncDir(dir_);
}

Status FileStorage::appendRecord(uint8_t type, const std::string& payload) {
  std::string body;
  body.reserve(1 + payload.size());
  body.push_back(char(type));
  body += payload;
  std::string rec;
  rec.reserve(8 + body.size());
  put32(rec, uint32_t(body.size()));
  put32(rec, crc32c(body.data(), body.size()));
  rec += body;
  if (auto s = writeAll(fd_, rec); !s) return s;
  written_ += rec.size();
  return Status();
}

Status FileStorage::write(const Batch& batch) {
  // One buffer, one write(2): the records of a Ready go out together.
  if (batch.snapshot) {
    if (auto s = appendRecord(kSnapshotRecord, encodeSnapshot(*batch.snapshot, batch.installSnapshot));
        !s) {
      return s;
    }
    lastSnapshot_ = *batch.snapshot;
  }
  for (const Entry& e : batch.entries) {
    if (auto s = appendRecord(kEntryRecord, encodeEntry(e)); !s) return s;
    auto& seg = segments_.back();
    seg.second = std::max(seg.second, e.index.value);
  }
  if (batch.hardState) {
    if (auto s = appendRecord(kHardStateRecord, encodeHardState(*batch.hardState)); !s) return s;
    lastHardState_ = *batch.hardState;
  }
  return Status();
}

Status FileStorage::sync() {
  if (::fdatasync(fd_) != 0) return ioError("sync the raft log", errno);
  if (written_ >= segmentBytes_) {
    if (auto s = openSegment(seq_ + 1); !s) return s;
    if (::fdatasync(fd_) != 0) return ioError("sync the raft log", errno);
  }
  return deleteCoveredSegments();
}

Status FileStorage::rotate() {
  if (auto s = openSegment(seq_ + 1); !s) return s;
  if (::fdatasync(fd_) != 0) return ioError("sync the raft log", errno);
  return deleteCoveredSegments();
}

Status FileStorage::deleteCoveredSegments() {
  // A segment other than the current one goes once every entry it holds is in the snapshot:
  // the segments after it repeat the hard state and snapshot at their head.
  uint64_t covered = lastSnapshot_.index.value;
  // (A segment with no entries at all holds only heads: covered too.)
  while (segments_.size() > 1 && segments_.front().first != seq_ &&
         segments_.front().second <= covered) {
    std::string path = dir_ + "/" + segmentName(segments_.front().first);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ioError("delete " + path, errno);
    segments_.erase(segments_.begin());
  }
  return Status();
}

Status FileStorage::commit(const Batch& batch) {
  if (batch.snapshot) {
    Status s = batch.installSnapshot ? view_.applySnapshot(*batch.snapshot, "")
                                     : view_.compact(*batch.snapshot, "");
    if (!s) return s;
  }
  if (!batch.entries.empty()) {
    if (auto s = view_.append(batch.entries); !s) return s;
  }
  if (batch.hardState) view_.setHardState(*batch.hardState);
  return Status();
}

}  // namespace tessera::meta::raft
