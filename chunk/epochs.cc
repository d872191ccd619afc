#include "chunk/epochs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fs/checksum.h"
#include "fs/log.h"
#include "fs/rpc.h"

namespace tessera::chunk {
namespace {

constexpr size_t kRecord = 24;

void putU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = char((v >> (8 * i)) & 0xff);
}
uint64_t getU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

std::string record(uint64_t chunk, uint64_t epoch) {
  std::string r(kRecord, '\0');
  putU64(r.data(), chunk);
  putU64(r.data() + 8, epoch);
  uint32_t crc = crc32c(r.data(), 16);
  for (int i = 0; i < 4; ++i) r[16 + i] = char((crc >> (8 * i)) & 0xff);
  return r;
}

Error ioError(const std::string& what, const std::string& path, int err) {
  return Error{err == ENOSPC ? Errc::kNoSpace : Errc::kIo,
               what + " " + path + ": " + strerror(err)};
}

}  // namespace

Result<kj::Own<EpochTable>> EpochTable::open(std::string path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return ioError("cannot open", path, errno);
  std::string bytes;
  char buf[65536];
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
  std::unordered_map<uint64_t, uint64_t> epochs;
  size_t good = 0, records = 0;
  for (; good + kRecord <= bytes.size(); good += kRecord, ++records) {
    const char* r = bytes.data() + good;
    uint32_t crc = 0;
    for (int i = 3; i >= 0; --i) crc = (crc << 8) | uint8_t(r[16 + i]);
    if (crc != crc32c(r, 16) || memcmp(r + 20, "\0\0\0\0", 4) != 0) break;
    uint64_t chunk = getU64(r), epoch = getU64(r + 8);
    uint64_t& e = epochs[chunk];
    e = std::max(e, epoch);
  }
  if (good != bytes.size()) {
    // A raise the crash interrupted (or damage): it was never acknowledged, so it is dropped.
    log::warn("epoch table ", path.c_str(), ": cut a damaged tail of ", bytes.size() - good,
              " bytes");
    if (::ftruncate(fd, off_t(good)) != 0) {
      int err = errno;
      ::close(fd);
      return ioError("cannot cut", path, err);
    }
  }
  if (records > 1024 && records > 2 * epochs.size()) {
    std::string text;
    for (auto& [chunk, epoch] : epochs) text += record(chunk, epoch);
    ::close(fd);
    if (Status s = writeFileAtomic(path, text); !s) return s.error();
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return ioError("cannot open", path, errno);
  }
  if (::lseek(fd, 0, SEEK_END) < 0) {
    int err = errno;
    ::close(fd);
    return ioError("cannot seek", path, err);
  }
  return kj::heap<EpochTable>(kj::mv(path), fd, kj::mv(epochs));
}

EpochTable::EpochTable(std::string path, int fd, std::unordered_map<uint64_t, uint64_t> epochs)
    : path_(kj::mv(path)), fd_(fd), epochs_(kj::mv(epochs)) {}

EpochTable::~EpochTable() { ::close(fd_); }

uint64_t EpochTable::get(ChunkId chunk) const {
  auto it = epochs_.find(chunk.value);
  return it == epochs_.end() ? 0 : it->second;
}

kj::Promise<Status> EpochTable::admit(ChunkId chunk, uint64_t epoch) {
  uint64_t newest = get(chunk);
  if (epoch < newest) return Status(fenced(chunk, newest, epoch));
  if (epoch == newest) return Status();
  return raise(chunk, epoch);
}

Error EpochTable::fenced(ChunkId chunk, uint64_t newest, uint64_t epoch) {
  return Error{Errc::kStale, "chunk " + std::to_string(chunk.value) + " is fenced at lease epoch " +
                                 std::to_string(newest) + "; this writer's lease (epoch " +
                                 std::to_string(epoch) + ") moved to another writer"};
}

kj::Promise<Status> EpochTable::raise(ChunkId chunk, uint64_t epoch) {
  uint64_t& newest = epochs_[chunk.value];
  if (epoch <= newest) return Status();
  newest = epoch;
  if (epoch <= 1) return Status();
  pending_ += record(chunk.value, epoch);
  return flush();
}

// Group commit: every raise waiting when a write starts goes in it; the ones that come while it
// runs share the next. After a failed write the file may end in a partial record, behind which
// later records would be lost at the next open: the table then refuses every raise.
kj::Promise<Status> EpochTable::flush() {
  return commits_.flush([this]() -> kj::Promise<Status> {
    if (broken_) return Status(*broken_);
    auto batch = kj::heap<std::string>(kj::mv(pending_));
    pending_.clear();
    auto& bytes = *batch;
    return worker_
        .run([this, &bytes]() -> Status {
          size_t done = 0;
          while (done < bytes.size()) {
            ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
            if (n < 0) {
              if (errno == EINTR) continue;
              return ioError("cannot write", path_, errno);
            }
            done += size_t(n);
          }
          if (::fdatasync(fd_) != 0) return ioError("cannot sync", path_, errno);
          return Status();
        })
        .then([this](Status s) {
          if (!s && !broken_) {
            log::error("epoch table ", path_.c_str(), ": ", s.error().toString().c_str());
            broken_ = s.error();
          }
          return s;
        })
        .attach(kj::mv(batch));
  });
}

}  // namespace tessera::chunk
