#include "chunk/shard_file.h"

#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <vector>

#include "fs/checksum.h"
#include "fs/lost_block.h"

namespace tessera::chunk {
namespace {

constexpr char kMagic[8] = {'T', 'S', 'H', 'A', 'R', 'D', '0', '1'};
constexpr size_t kHeaderCrcOffset = kShardHeaderSize - 4;

void put32(kj::byte* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = kj::byte(v >> (8 * i));
}
void put64(kj::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = kj::byte(v >> (8 * i));
}
uint32_t get32(const kj::byte* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(p[i]) << (8 * i);
  return v;
}
uint64_t get64(const kj::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

Errc codeFor(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      return Errc::kNoSpace;
    // ENOENT too: only open() may say a shard is missing, and it says so itself.
    default:
      return Errc::kIo;
  }
}

Error sysError(const std::string& what, int err) {
  return Error{codeFor(err), what + ": " + strerror(err)};
}

// Reads up to buf.size() bytes at `offset`; fewer only at the end of the file. -1 and errno on
// failure.
ssize_t preadFull(int fd, kj::ArrayPtr<kj::byte> buf, uint64_t offset) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pread(fd, buf.begin() + done, buf.size() - done, off_t(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += size_t(n);
  }
  return ssize_t(done);
}

// 0, or -1 and errno.
int pwriteFull(int fd, kj::ArrayPtr<const kj::byte> buf, uint64_t offset) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pwrite(fd, buf.begin() + done, buf.size() - done, off_t(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    // A zero-byte write of a non-empty buffer means no room is left.
    if (n == 0) {
      errno = ENOSPC;
      return -1;
    }
    done += size_t(n);
  }
  return 0;
}

std::string dirOf(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// Makes a new directory entry durable.
int fsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int r = ::fsync(fd);
  int err = errno;
  ::close(fd);
  errno = err;
  return r;
}

void encodeHeader(kj::byte* h, ShardKey key, Layout layout) {
  memset(h, 0, kShardHeaderSize);
  memcpy(h, kMagic, sizeof kMagic);
  put32(h + 8, kShardFormatVersion);
  put64(h + 16, key.chunk.value);
  h[24] = key.shard;
  h[25] = kj::byte(layout.kind);
  h[26] = layout.k;
  h[27] = layout.m;
  put32(h + kHeaderCrcOffset, crc32c(h, kHeaderCrcOffset));
}

}  // namespace

std::string ShardKey::toString() const {
  char name[32];
  snprintf(name, sizeof name, "%016llx.%u", static_cast<unsigned long long>(chunk.value),
           unsigned(shard));
  return name;
}

Status checkRange(uint64_t offset, uint64_t length) {
  if (offset % kBlockSize != 0 || length % kBlockSize != 0) {
    return Error{Errc::kInvalid, "offset " + std::to_string(offset) + " and length " +
                                     std::to_string(length) + " must be multiples of 4096"};
  }
  if (offset > kChunkSize || length > kChunkSize - offset) {
    return Error{Errc::kInvalid, "range " + std::to_string(offset) + "+" + std::to_string(length) +
                                     " exceeds a 64 MiB shard"};
  }
  return Status();
}

namespace {

// The table entry of a lost block: the inverse of its CRC's, so it never checks.
uint32_t lostBlockEntry() {
  static const uint32_t entry = ~crc32c(lostBlockBytes(), kBlockSize) ^ zeroBlockCrc();
  return entry;
}

}  // namespace

Status verifyBlocks(uint64_t offset, kj::ArrayPtr<const kj::byte> data,
                    kj::ArrayPtr<const uint32_t> crcs) {
  if (data.size() % kBlockSize != 0 || crcs.size() != data.size() / kBlockSize) {
    return Error{Errc::kInvalid, std::to_string(crcs.size()) + " CRCs for " +
                                     std::to_string(data.size()) + " bytes (one per 4096)"};
  }
  for (size_t i = 0; i < crcs.size(); ++i) {
    if (crc32c(data.begin() + i * kBlockSize, kBlockSize) != crcs[i]) {
      return Error{Errc::kCorruption, "block at offset " + std::to_string(offset + i * kBlockSize) +
                                          " does not match its CRC: damaged in transit"};
    }
  }
  return Status();
}

ShardFile::ShardFile(kj::AutoCloseFd fd, std::string path, ShardKey key, Layout layout)
    : fd_(kj::mv(fd)), path_(std::move(path)), key_(key), layout_(layout) {
  refreshAllocated();
}

Error ShardFile::ioError(const char* what, int err) const {
  return sysError(std::string(what) + " shard " + key_.toString(), err);
}

void ShardFile::refreshAllocated() {
  struct stat st;
  // On failure keep the last value: the figure only feeds the capacity report.
  if (::fstat(fd_.get(), &st) == 0) allocated_ = uint64_t(st.st_blocks) * 512;
}

Result<ShardFile> ShardFile::open(const std::string& path, ShardKey key) {
  int raw = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (raw < 0) {
    int err = errno;
    if (err == ENOENT) return Error{Errc::kNotFound, "no shard " + key.toString()};
    return sysError("open " + path, err);
  }
  kj::AutoCloseFd fd(raw);
  kj::byte h[kShardHeaderSize];
  ssize_t n = preadFull(fd.get(), kj::arrayPtr(h, sizeof h), 0);
  if (n < 0) return sysError("read header of " + path, errno);
  auto corrupt = [&](const char* why) {
    return Error{Errc::kCorruption, "shard " + key.toString() + ": header " + why};
  };
  if (size_t(n) < sizeof h) return corrupt("is short");
  if (memcmp(h, kMagic, sizeof kMagic) != 0) return corrupt("has a bad magic");
  if (get32(h + kHeaderCrcOffset) != crc32c(h, kHeaderCrcOffset)) return corrupt("fails its CRC");
  if (get32(h + 8) != kShardFormatVersion) return corrupt("has an unknown format version");
  if (get64(h + 16) != key.chunk.value || h[24] != key.shard) {
    return corrupt("names another shard");
  }
  if (h[25] > kj::byte(Layout::Kind::kReplica)) return corrupt("has an unknown layout kind");
  Layout layout{Layout::Kind(h[25]), h[26], h[27]};
  if (!layout.valid() || key.shard >= layout.shards()) return corrupt("has a bad layout");
  return ShardFile(kj::mv(fd), path, key, layout);
}

Result<ShardFile> ShardFile::create(const std::string& path, ShardKey key, Layout layout) {
  if (!layout.valid() || key.shard >= layout.shards()) {
    return Error{Errc::kInvalid,
                 "shard " + key.toString() + " is not part of " + layout.toString()};
  }
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return Error{Errc::kExists, "shard " + key.toString()};
  if (errno != ENOENT) return sysError("stat " + path, errno);

  std::string tmp = path + ".tmp";
  int raw = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (raw < 0) return sysError("create " + tmp, errno);
  kj::AutoCloseFd fd(raw);
  kj::byte h[kShardHeaderSize];
  encodeHeader(h, key, layout);
  const char* step = nullptr;
  if (pwriteFull(fd.get(), kj::arrayPtr(h, sizeof h), 0) != 0) {
    step = "write header of ";
  } else if (::rename(tmp.c_str(), path.c_str()) != 0) {
    step = "rename ";
  }
  if (step) {
    int err = errno;
    ::unlink(tmp.c_str());
    return sysError(step + tmp, err);
  }
  // Not synced here: a shard only has to survive a crash once someone syncs it, and then
  // sync() makes its data and its directory entry durable (see the crash notes).
  return ShardFile(kj::mv(fd), path, key, layout);
}

Status ShardFile::write(uint64_t offset, kj::ArrayPtr<const kj::byte> data,
                        kj::ArrayPtr<const uint32_t> crcs) {
  if (auto s = checkRange(offset, data.size()); !s) return s;
  if (auto s = verifyBlocks(offset, data, crcs); !s) return s;
  if (data.size() == 0) return Status();
  if (pwriteFull(fd_.get(), data, kDataOffset + offset) != 0) return ioError("write", errno);
  auto table = kj::heapArray<kj::byte>(crcs.size() * 4);
  for (size_t i = 0; i < crcs.size(); ++i) put32(&table[i * 4], crcs[i] ^ zeroBlockCrc());
  if (pwriteFull(fd_.get(), table, kCrcTableOffset + offset / kBlockSize * 4) != 0) {
    return ioError("write CRCs of", errno);
  }
  refreshAllocated();
  return Status();
}

Status ShardFile::read(uint64_t offset, kj::ArrayPtr<kj::byte> out, kj::ArrayPtr<uint32_t> crcs,
                       bool lostAsStored) {
  if (auto s = checkRange(offset, out.size()); !s) return s;
  if (crcs.size() != out.size() / kBlockSize) {
    return Error{Errc::kInvalid, "read: CRC buffer does not match the length"};
  }
  auto fail = [&](Error e) -> Status {
    memset(out.begin(), 0, out.size());
    return e;
  };
  ssize_t got = preadFull(fd_.get(), out, kDataOffset + offset);
  if (got < 0) return fail(ioError("read", errno));
  memset(out.begin() + got, 0, out.size() - size_t(got));
  auto table = kj::heapArray<kj::byte>(crcs.size() * 4);
  ssize_t tgot = preadFull(fd_.get(), table, kCrcTableOffset + offset / kBlockSize * 4);
  if (tgot < 0) return fail(ioError("read CRCs of", errno));
  memset(table.begin() + tgot, 0, table.size() - size_t(tgot));
  for (size_t i = 0; i < crcs.size(); ++i) {
    uint32_t actual = crc32c(out.begin() + i * kBlockSize, kBlockSize);
    uint32_t entry = get32(&table[i * 4]);
    if (actual != (entry ^ zeroBlockCrc())) {
      uint64_t at = offset + i * kBlockSize;
      bool lost = entry == lostBlockEntry() && isLostBlock(out.begin() + i * kBlockSize);
      if (lost && lostAsStored) {
        crcs[i] = actual;
        continue;
      }
      return fail(Error{lost ? Errc::kLost : Errc::kCorruption,
                        "shard " + key_.toString() + ": block " + std::to_string(at / kBlockSize) +
                            " (offset " + std::to_string(at) + ")" +
                            (lost ? " is lost (rebuilt from a row holding a mix of two writes)"
                                  : " fails its CRC")});
    }
    crcs[i] = actual;
  }
  return Status();
}

Status ShardFile::truncate(uint64_t length) {
  if (auto s = checkRange(0, length); !s) return s;
  uint64_t from = kCrcTableOffset + length / kBlockSize * 4;
  if (from < kDataOffset) {
    // Clear the CRCs first: see the crash notes in the header. Punching keeps the table sparse.
    if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(from),
                    off_t(kDataOffset - from)) != 0) {
      if (errno != EOPNOTSUPP) return ioError("truncate", errno);
      auto zeros = kj::heapArray<kj::byte>(kDataOffset - from);
      memset(zeros.begin(), 0, zeros.size());
      if (pwriteFull(fd_.get(), zeros, from) != 0) return ioError("truncate", errno);
    }
  }
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ioError("truncate", errno);
  if (uint64_t(st.st_size) > kDataOffset + length &&
      ::ftruncate(fd_.get(), off_t(kDataOffset + length)) != 0) {
    return ioError("truncate", errno);
  }
  refreshAllocated();
  return Status();
}

namespace {

// Zeroes [offset, offset + length) of the file, freeing the space where the file system can.
// 0, or -1 and errno.
int zeroRange(int fd, uint64_t offset, uint64_t length) {
  if (length == 0) return 0;
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(length)) ==
      0) {
    return 0;
  }
  if (errno != EOPNOTSUPP) return -1;
  auto zeros = kj::heapArray<kj::byte>(std::min<uint64_t>(length, 1 << 20));
  memset(zeros.begin(), 0, zeros.size());
  for (uint64_t done = 0; done < length;) {
    uint64_t n = std::min<uint64_t>(zeros.size(), length - done);
    if (pwriteFull(fd, zeros.slice(0, n), offset + done) != 0) return -1;
    done += n;
  }
  return 0;
}

}  // namespace

Status ShardFile::markLost(uint64_t offset, uint64_t length) {
  if (auto s = checkRange(offset, length); !s) return s;
  if (length == 0) return Status();
  size_t blocks = length / kBlockSize;
  auto data = kj::heapArray<kj::byte>(length);
  auto table = kj::heapArray<kj::byte>(blocks * 4);
  for (size_t i = 0; i < blocks; ++i) {
    memcpy(data.begin() + i * kBlockSize, lostBlockBytes(), kBlockSize);
    put32(&table[i * 4], lostBlockEntry());
  }
  // Data first, then the entries, as a write does (see the crash notes above): a crash in
  // between leaves blocks that fail their CRC, which is what they are meant to do.
  if (pwriteFull(fd_.get(), data, kDataOffset + offset) != 0) return ioError("mark lost", errno);
  if (pwriteFull(fd_.get(), table, kCrcTableOffset + offset / kBlockSize * 4) != 0) {
    return ioError("mark lost CRCs of", errno);
  }
  refreshAllocated();
  return Status();
}

Result<bool> ShardFile::isLost(uint64_t offset) {
  if (auto s = checkRange(offset, kBlockSize); !s) return s.error();
  kj::byte entry[4];
  auto table = kj::arrayPtr(entry, 4);
  ssize_t got = preadFull(fd_.get(), table, kCrcTableOffset + offset / kBlockSize * 4);
  if (got < 0) return ioError("read CRCs of", errno);
  if (got < 4 || get32(entry) != lostBlockEntry()) return false;
  auto block = kj::heapArray<kj::byte>(kBlockSize);
  got = preadFull(fd_.get(), block, kDataOffset + offset);
  if (got < 0) return ioError("read", errno);
  return got == ssize_t(kBlockSize) && isLostBlock(block.begin());
}

Status ShardFile::punch(uint64_t offset, uint64_t length) {
  if (auto s = checkRange(offset, length); !s) return s;
  if (length == 0) return Status();
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ioError("punch", errno);
  uint64_t fileEnd = uint64_t(st.st_size);
  // A table entry of 0 matches an all-zero block. Cleared first (see the crash notes); only the
  // entries that exist: past the end of the file they are zero already.
  uint64_t tableLo = kCrcTableOffset + offset / kBlockSize * 4;
  uint64_t tableHi = std::min(tableLo + length / kBlockSize * 4, std::max(fileEnd, tableLo));
  if (zeroRange(fd_.get(), tableLo, tableHi - tableLo) != 0) return ioError("punch CRCs of", errno);
  uint64_t dataLo = kDataOffset + offset;
  uint64_t dataHi = std::min(dataLo + length, std::max(fileEnd, dataLo));
  if (zeroRange(fd_.get(), dataLo, dataHi - dataLo) != 0) return ioError("punch", errno);
  refreshAllocated();
  return Status();
}

namespace {

struct FileRange {
  uint64_t lo = 0, hi = 0;
};

// The parts of file range [lo, hi) where the file has no blocks at all (no extent of any kind:
// written, unwritten or delayed), each widened to whole file-system blocks of `fsBlock` bytes
// within its hole: exactly the blocks a fallocate of [lo, hi) adds, so punching them again
// frees what it took and nothing that was there before. Dirty pages are flushed first
// (FIEMAP_FLAG_SYNC), so data not yet allocated on disk counts as data. nullopt if the file
// system does not answer FIEMAP.
std::optional<std::vector<FileRange>> holesIn(int fd, uint64_t lo, uint64_t hi, uint64_t fsBlock) {
  std::vector<FileRange> holes;
  // A hole between extents ending at `prevEnd` and starting at `nextStart` (block-aligned, as
  // extents are), clipped to [lo, hi), then widened to blocks without leaving the hole.
  auto gap = [&](uint64_t prevEnd, uint64_t nextStart) {
    uint64_t a = std::max(prevEnd, lo), b = std::min(nextStart, hi);
    if (a >= b) return;
    holes.push_back(FileRange{std::max(prevEnd, a / fsBlock * fsBlock),
                              std::min(nextStart, (b + fsBlock - 1) / fsBlock * fsBlock)});
  };
  constexpr unsigned kExtents = 64;
  std::vector<uint64_t> buf((sizeof(struct fiemap) + kExtents * sizeof(struct fiemap_extent)) / 8 +
                            1);
  auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
  uint64_t prevEnd = 0;  // end of the last extent seen (every extent overlapping [lo, hi) is)
  for (uint64_t cursor = lo; cursor < hi;) {
    memset(buf.data(), 0, buf.size() * 8);
    fm->fm_start = cursor;
    fm->fm_length = hi - cursor;
    fm->fm_flags = FIEMAP_FLAG_SYNC;
    fm->fm_extent_count = kExtents;
    if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0) return std::nullopt;
    bool last = fm->fm_mapped_extents < kExtents;
    for (unsigned i = 0; i < fm->fm_mapped_extents; ++i) {
      const auto& e = fm->fm_extents[i];
      gap(prevEnd, e.fe_logical);
      prevEnd = std::max<uint64_t>(prevEnd, e.fe_logical + e.fe_length);
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last || prevEnd <= cursor) break;
    cursor = prevEnd;
  }
  gap(prevEnd, UINT64_MAX);
  return holes;
}

}  // namespace

Result<uint64_t> ShardFile::reserve(uint64_t offset, uint64_t length) {
  if (auto s = checkRange(offset, length); !s) return s.error();
  uint64_t capacity = shardCapacity(layout_);
  if (offset + length > capacity) {
    return Error{Errc::kInvalid, "range " + std::to_string(offset) + "+" + std::to_string(length) +
                                     " is past the " + std::to_string(capacity) +
                                     " bytes a shard of " + layout_.toString() + " holds"};
  }
  if (length == 0) return uint64_t(0);
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) return ioError("reserve", errno);
  uint64_t fsBlock = st.st_blksize > 0 ? uint64_t(st.st_blksize) : kBlockSize;
  uint64_t before = allocated_;
  // The CRC table entries of the blocks are rewritten by every write of them: they need room
  // as much as the blocks do.
  const FileRange wanted[2] = {
      {kCrcTableOffset + offset / kBlockSize * 4, kCrcTableOffset + (offset + length) / kBlockSize * 4},
      {kDataOffset + offset, kDataOffset + offset + length}};
  std::vector<FileRange> taken;  // holes filled (or being filled when it failed)
  std::optional<Error> failed;
  for (const FileRange& r : wanted) {
    auto holes = holesIn(fd_.get(), r.lo, r.hi, fsBlock);
    bool known = holes.has_value();
    for (const FileRange& h : known ? *holes : std::vector<FileRange>{r}) {
      int rc;
      do {
        rc = ::fallocate(fd_.get(), 0, off_t(h.lo), off_t(h.hi - h.lo));
      } while (rc != 0 && errno == EINTR);
      // A failed fallocate may have taken part of its range: that hole is given back too.
      if (known) taken.push_back(h);
      if (rc != 0) {
        int err = errno;
        if (err == EOPNOTSUPP) {
          failed = Error{Errc::kNotSupported, "reserve shard " + key_.toString() +
                                                  ": the file system cannot reserve space"};
        } else {
          failed = ioError("reserve", err);
        }
        break;
      }
    }
    if (failed) break;
  }
  if (failed) {
    // Best effort: a hole that cannot be punched again stays allocated, which wastes space but
    // breaks nothing (it reads as zeros, like the hole it was).
    for (const FileRange& h : taken) {
      ::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(h.lo),
                  off_t(h.hi - h.lo));
    }
    refreshAllocated();
    return *failed;
  }
  refreshAllocated();
  return allocated_ > before ? allocated_ - before : 0;
}

Status ShardFile::sync() {
  if (::fdatasync(fd_.get()) != 0) return ioError("sync", errno);
  return Status();
}

Status ShardFile::syncDirectory(const std::string& dir) {
  if (fsyncDir(dir) != 0) return sysError("sync directory " + dir, errno);
  return Status();
}

std::string ShardFile::directoryOf(const std::string& path) { return dirOf(path); }

}  // namespace tessera::chunk
