// fallocate(2) on a real mount (issue 5, thin provisioning): mode 0 reserves (disk space on the
// chunk servers, before any write: measured on disks of their own), PUNCH_HOLE frees
// (whole chunks dropped — a hole to SEEK_HOLE and st_blocks —, whole stripes punched on the
// chunk servers' shard files, the rest zeroed), ZERO_RANGE zeroes; every byte outside the
// range stays exact, every byte inside reads zero, also on a mount with cold caches and after
// the write log of small writes has been applied.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/integration/helpers.h"
#include "tests/integration/loop_disk.h"

using namespace tessera::test;

namespace {

constexpr off_t M = 1 << 20;
constexpr off_t kChunk = 64 * M;

// 0, or the errno of the fallocate.
int falloc(int fd, int mode, off_t off, off_t len) {
  return fallocate(fd, mode, off, len) == 0 ? 0 : errno;
}

std::string firstDifference(const std::string& path, const std::string& model) {
  return difference(readAll(path), model);
}

void zero(std::string& model, off_t off, off_t len) {
  std::fill(model.begin() + off, model.begin() + off + len, '\0');
}

off_t seekTo(int fd, off_t off, int whence) {
  errno = 0;
  off_t r = lseek(fd, off, whence);
  return r < 0 ? -errno : r;
}

// Six chunk servers, each with one small ext4 disk of its own (tests/integration/loop_disk.h),
// so that what the cluster stores shows in those disks' figures alone.
struct OwnDisks {
  std::vector<std::unique_ptr<LoopDisk>> disks;
  OwnDisks(const TempDir& tmp, uint64_t bytes, Cluster::Options& o) {
    for (int i = 0; i < o.chunks; ++i) {
      std::string name = "disk" + std::to_string(i);
      disks.push_back(std::make_unique<LoopDisk>(tmp / (name + ".img"), tmp / name, bytes));
      o.chunkData[i] = {disks.back()->dir()};
    }
  }
  uint64_t used() const {
    uint64_t total = 0;
    for (auto& d : disks) total += d->usedBytes();
    return total;
  }
};

// Free space as the mount's statfs reports it.
uint64_t mountFree(const std::string& mnt) {
  struct statvfs v;
  REQUIRE(statvfs(mnt.c_str(), &v) == 0);
  return uint64_t(v.f_bavail) * v.f_frsize;
}

double mib(uint64_t bytes) { return double(bytes) / double(M); }

// The least FREE figure (MiB) among the chunk servers of `tessera status` (lines "ID ADDRESS
// STATE SITE/RACK/HOST CAPACITY USED FREE ..."; sizes are a number and a unit), -1 if none.
double minServerFreeMiB(const std::string& status) {
  std::istringstream lines(status);
  std::string line;
  double least = -1;
  while (std::getline(lines, line)) {
    std::istringstream cols(line);
    std::vector<std::string> t;
    for (std::string w; cols >> w;) t.push_back(w);
    if (t.size() < 10 || t[1].find("127.0.0.1:") != 0 || t[2] != "up") continue;
    double free = std::stod(t[8]);
    if (t[9] == "GiB") free *= 1024;
    if (t[9] == "KiB") free /= 1024;
    if (t[9] == "B") free /= 1024 * 1024;
    if (least < 0 || free < least) least = free;
  }
  return least;
}

}  // namespace

TEST_CASE(
    "fallocate: mode 0 takes its space on the chunk servers' disks before any write — 1.5x on "
    "ec(4,2), 3x on replica(3) — statfs shows it gone, and the range then writes into it") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("falloc-space");
  if (std::string why = loopDisksUnavailable(tmp.path()); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  Cluster::Options o;  // ec(4,2) at the root
  // A loop disk writes through to its image file on the machine's disk: on a busy machine one
  // synced write of the 1.1 GiB this test stores can wait longer than the default 10 s.
  o.ioTimeout = "60s";
  OwnDisks own(tmp, 400 * uint64_t(M), o);
  Cluster cluster(o);
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  std::mt19937_64 rng(testSeed(256));
  const off_t kLen = 256 * M;
  struct Case {
    std::string dir;
    double overhead;  // disk bytes per byte of data
  };
  for (const Case& c : {Case{cluster.mnt(), 1.5}, Case{rep, 3.0}}) {
    CAPTURE(c.dir);
    std::string path = c.dir + "/image";
    int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    uint64_t usedBefore = own.used(), freeBefore = mountFree(cluster.mnt());
    REQUIRE(falloc(fd, 0, 0, kLen) == 0);
    uint64_t usedReserved = own.used();
    uint64_t grown = usedReserved - usedBefore;
    uint64_t want = uint64_t(double(kLen) * c.overhead);
    MESSAGE(c.dir << ": fallocate of " << mib(kLen) << " MiB: the chunk servers' disks use "
                  << mib(usedBefore) << " -> " << mib(usedReserved) << " MiB (+" << mib(grown)
                  << ", " << double(grown) / double(kLen) << "x)");
    // The shard ranges themselves, plus their CRC table entries (1/1024) and file-system
    // metadata.
    CHECK(grown >= want);
    CHECK(grown <= want + want / 50 + 8 * uint64_t(M));
    // statfs on the mount: the free space the meta leader hears of from the servers'
    // heartbeats, counted in data bytes of the root's ec(4,2) (4 of every 6 disk bytes).
    uint64_t freeNow = freeBefore;
    bool dropped = waitUntilMs(15'000, [&] {
      freeNow = mountFree(cluster.mnt());
      return freeNow + grown * 4 / 6 * 9 / 10 <= freeBefore;
    });
    MESSAGE(c.dir << ": statfs free " << mib(freeBefore) << " -> " << mib(freeNow) << " MiB");
    CHECK(dropped);
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0);
    CHECK(st.st_size == kLen);
    CHECK(uint64_t(st.st_blocks) * 512 == uint64_t(kLen));
    CHECK(difference(preadAt(fd, 100 * M + 12345, 8192), std::string(8192, '\0')) == "");

    // Writing the range takes no more room: it lands in what was reserved.
    std::string model = randomBytes(rng, size_t(kLen));
    for (off_t at = 0; at < kLen; at += M) pwriteAll(fd, model.substr(size_t(at), M), at);
    REQUIRE(fsync(fd) == 0);
    REQUIRE(close(fd) == 0);
    uint64_t usedWritten = own.used();
    MESSAGE(c.dir << ": after writing the range: " << mib(usedWritten) << " MiB");
    CHECK(usedWritten <= usedReserved + want / 100 + 8 * uint64_t(M));
    ExtraMount cold(cluster, "mnt-cold");
    CHECK(firstDifference(cold.path + path.substr(cluster.mnt().size()), model) == "");
  }

  // KEEP_SIZE: reserved past the end, the size stays.
  std::string path = cluster.mnt() + "/image";
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  uint64_t usedBefore = own.used();
  REQUIRE(falloc(fd, FALLOC_FL_KEEP_SIZE, kLen, 64 * M) == 0);
  uint64_t grown = own.used() - usedBefore;
  MESSAGE("KEEP_SIZE fallocate of 64 MiB past the end of the ec(4,2) file: +" << mib(grown)
                                                                              << " MiB");
  CHECK(grown >= 96 * uint64_t(M));
  CHECK(grown <= 100 * uint64_t(M));
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == kLen);
  REQUIRE(close(fd) == 0);
}

TEST_CASE(
    "fallocate: mode 0 that the chunk servers' disks cannot hold fails with ENOSPC, leaves "
    "nothing taken, and the mount keeps working") {
  TESSERA_REQUIRE_FUSE();
  TempDir tmp("falloc-nospace");
  if (std::string why = loopDisksUnavailable(tmp.path()); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  Cluster::Options o;  // ec(4,2): every chunk has a shard on each of the six servers
  OwnDisks own(tmp, 48 * uint64_t(M), o);
  Cluster cluster(o);
  std::mt19937_64 rng(testSeed(48));
  std::string before = cluster.mnt() + "/before";
  std::string model = randomBytes(rng, size_t(M));
  writeAll(before, model);
  uint64_t used0 = own.used();

  // 256 MiB of new chunks: 64 MiB on each server, more than its 48 MiB disk holds.
  std::string big = cluster.mnt() + "/big";
  int fd = open(big.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  CHECK(falloc(fd, 0, 0, 256 * M) == ENOSPC);
  MESSAGE("disks use " << mib(own.used()) << " MiB as the refused fallocate returns");
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == 0);
  CHECK(st.st_blocks == 0);
  REQUIRE(close(fd) == 0);
  // No chunk left behind: `tessera chunks` lists none (a header line only).
  auto listed = run({adminBin(), "--meta", cluster.meta(), "chunks", big}, 30'000);
  INFO(listed.output);
  REQUIRE(listed.exitCode == 0);
  CHECK(std::count(listed.output.begin(), listed.output.end(), '\n') <= 1);
  // The shards of the chunks it placed go (the garbage collector removes them): the disks hold
  // what they held before.
  uint64_t usedNow = 0;
  bool freed = waitUntilMs(30'000, [&] {
    usedNow = own.used();
    return usedNow <= used0 + 2 * uint64_t(M);
  });
  MESSAGE("disks use " << mib(used0) << " MiB before the refused fallocate, " << mib(usedNow)
                       << " MiB after");
  CHECK(freed);

  // A small write to the file written before goes through (its shards' disks take writes).
  int bf = open(before.c_str(), O_RDWR);
  REQUIRE(bf >= 0);
  std::string patch = randomBytes(rng, 4096);
  pwriteAll(bf, patch, 8192);
  model.replace(8192, 4096, patch);
  REQUIRE(fsync(bf) == 0);

  // In a chunk that exists: each server with 8 MiB left cannot take its 16 MiB, and gives back
  // what it took of them at once (no garbage collection involved here).
  std::vector<std::string> fillers;
  for (size_t i = 0; i < own.disks.size(); ++i) {
    fillers.push_back(own.disks[i]->mountpoint() + "/filler");
    int ff = open(fillers.back().c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(ff >= 0);
    uint64_t room = own.disks[i]->freeBytes();
    REQUIRE(room > 8 * uint64_t(M));
    REQUIRE(fallocate(ff, 0, 0, off_t(room - 8 * uint64_t(M))) == 0);
    close(ff);
  }
  uint64_t usedFull = own.used();
  CHECK(falloc(bf, FALLOC_FL_KEEP_SIZE, 0, 64 * M) == ENOSPC);
  uint64_t usedAfter = own.used();
  MESSAGE("disks use " << mib(usedFull) << " MiB before the refused fallocate in an existing "
                       << "chunk, " << mib(usedAfter) << " MiB after");
  CHECK(usedAfter <= usedFull + uint64_t(M));
  REQUIRE(fstat(bf, &st) == 0);
  CHECK(st.st_size == M);
  for (auto& f : fillers) REQUIRE(unlink(f.c_str()) == 0);
  CHECK(difference(preadAt(bf, 0, size_t(M)), model) == "");
  REQUIRE(close(bf) == 0);

  // The disks that ran out of room take new shards again at the next probe, which reports the
  // room the fillers gave back (`tessera status` shows the servers' last heartbeats: until
  // then it may predate the refusal); new files then write and read back.
  std::string status;
  bool ok = waitUntilMs(15'000, [&] {
    status = cluster.status();
    return status.find("FULL") == std::string::npos && minServerFreeMiB(status) >= 20;
  });
  INFO(status);
  CHECK(ok);
  std::string after = randomBytes(rng, size_t(M));
  writeAll(cluster.mnt() + "/after", after);
  ExtraMount cold(cluster, "mnt-cold");
  CHECK(firstDifference(cold.path + "/after", after) == "");
  CHECK(firstDifference(cold.path + "/before", model) == "");
}

TEST_CASE(
    "fallocate: mode 0 grows the size, keeps the data and reads zeros — KEEP_SIZE does not "
    "grow — other modes are EOPNOTSUPP") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;  // ec(4,2)
  std::mt19937_64 rng(testSeed(5150));
  std::string path = cluster.mnt() + "/image";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  std::string model = randomBytes(rng, 100'000);
  pwriteAll(fd, model, 0);  // still buffered in the mount when the fallocate comes

  REQUIRE(falloc(fd, 0, 50'000, 130 * M) == 0);
  model.resize(50'000 + 130 * M, '\0');
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == off_t(model.size()));
  // Every chunk of the range exists: data to SEEK_DATA, counted in st_blocks.
  CHECK(seekTo(fd, kChunk, SEEK_DATA) == kChunk);
  CHECK(seekTo(fd, 0, SEEK_HOLE) == off_t(model.size()));
  CHECK(uint64_t(st.st_blocks) * 512 >= model.size());
  CHECK(difference(preadAt(fd, 0, 100'000), model.substr(0, 100'000)) == "");
  CHECK(difference(preadAt(fd, 100 * M, 4096), std::string(4096, '\0')) == "");
  // Growing over existing data keeps it; a range inside the file changes nothing.
  REQUIRE(falloc(fd, 0, 0, 4096) == 0);
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == off_t(model.size()));

  // KEEP_SIZE: chunks placed past the end, the size stays; growing the file later reads zeros
  // there (the chunk's shards exist, empty).
  off_t size = off_t(model.size());
  REQUIRE(falloc(fd, FALLOC_FL_KEEP_SIZE, size, 100 * M) == 0);
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == size);
  REQUIRE(ftruncate(fd, size + 90 * M) == 0);
  model.resize(size + 90 * M, '\0');
  CHECK(difference(preadAt(fd, size + 80 * M, 8192), std::string(8192, '\0')) == "");

  // What the kernel does not pass on and what we refuse: EOPNOTSUPP, never ENOSYS (which would
  // turn fallocate off for the whole mount).
  CHECK(falloc(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096) == EOPNOTSUPP);  // punch must keep the size
  CHECK(falloc(fd, FALLOC_FL_COLLAPSE_RANGE, 0, kChunk) == EOPNOTSUPP);
  CHECK(falloc(fd, FALLOC_FL_INSERT_RANGE, 0, kChunk) == EOPNOTSUPP);
  CHECK(falloc(fd, 0, 0, 0) == EINVAL);
  REQUIRE(falloc(fd, 0, size + 90 * M, 4096) == 0);  // still on after the refusals
  model.resize(size + 90 * M + 4096, '\0');
  REQUIRE(close(fd) == 0);

  ExtraMount cold(cluster, "mnt-cold");
  CHECK(firstDifference(cold.path + "/image", model) == "");
}

TEST_CASE(
    "fallocate: PUNCH_HOLE reads zeros in the range and exact bytes around it, frees "
    "stripes and drops whole chunks — ec(4,2) and replica(3)") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  uint64_t seed = testSeed(20261126);
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  for (std::string dir : {cluster.mnt(), rep}) {
    CAPTURE(dir);
    std::mt19937_64 rng(seed++);
    std::string path = dir + "/image";
    // st_blocks counts the MiBs written (meta/ns/records.cc): a punch takes away those it
    // covers wholly.
    std::string model = randomBytes(rng, 3 * kChunk);
    std::set<off_t> punchedMiB;
    auto punched = [&](off_t off, off_t len) {
      for (off_t mib = (off + M - 1) / M; mib < (off + len) / M; ++mib) punchedMiB.insert(mib);
    };
    auto blocksNow = [&] { return blkcnt_t((3 * kChunk / M - off_t(punchedMiB.size())) * M / 512); };
    writeAll(path, model);
    int fd = open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    struct stat st;
    REQUIRE(fstat(fd, &st) == 0);
    blkcnt_t blocksBefore = st.st_blocks;
    CHECK(blocksBefore == blkcnt_t(3 * kChunk / 512));  // every MiB written

    // Unaligned and small: every byte exact.
    REQUIRE(falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 5000) == 0);
    zero(model, 1000, 5000);
    CHECK(difference(preadAt(fd, 0, 16384), model.substr(0, 16384)) == "");
    // In the middle of chunk 0, 30 MiB: whole stripes freed on the chunk servers.
    uint64_t usedBefore = chunkServersDiskUsed(cluster);
    const off_t at = 5 * M + 12345, len = 30 * M + 777;
    REQUIRE(falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, len) == 0);
    zero(model, at, len);
    punched(at, len);
    uint64_t usedAfter = chunkServersDiskUsed(cluster);
    // ec(4,2) stores 1.5 bytes per byte, replica(3) 3: at least 1.2x of the 30 MiB go (the
    // zeros around the whole stripes are written, some to the write log).
    MESSAGE("chunk servers' disk use " << usedBefore << " -> " << usedAfter << " bytes");
    CHECK(usedAfter + uint64_t(len) * 12 / 10 <= usedBefore);
    CHECK(difference(preadAt(fd, at - 8192, 16384), model.substr(at - 8192, 16384)) == "");
    CHECK(difference(preadAt(fd, at + len - 8192, 16384), model.substr(at + len - 8192, 16384)) ==
          "");
    // Across the end of chunk 0 into chunk 1.
    REQUIRE(falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kChunk - 3 * M - 5, 4 * M + 9) ==
            0);
    zero(model, kChunk - 3 * M - 5, 4 * M + 9);
    punched(kChunk - 3 * M - 5, 4 * M + 9);
    REQUIRE(fstat(fd, &st) == 0);
    CHECK(st.st_size == off_t(model.size()));
    MESSAGE("st_blocks " << blocksBefore << " -> " << st.st_blocks << " after "
                         << punchedMiB.size() << " MiB punched");
    CHECK(st.st_blocks == blocksNow());

    // Chunk 1 wholly, and a bit around it: it goes — a hole to SEEK_HOLE, off st_blocks.
    REQUIRE(falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kChunk - 100, kChunk + 200) ==
            0);
    zero(model, kChunk - 100, kChunk + 200);
    punched(kChunk - 100, kChunk + 200);
    REQUIRE(fstat(fd, &st) == 0);
    CHECK(st.st_size == off_t(model.size()));
    MESSAGE("st_blocks " << blocksBefore << " -> " << st.st_blocks);
    CHECK(st.st_blocks == blocksNow());
    CHECK(seekTo(fd, 0, SEEK_HOLE) == kChunk);
    CHECK(seekTo(fd, kChunk, SEEK_DATA) == 2 * kChunk);
    CHECK(difference(preadAt(fd, kChunk - 8192, 16384), model.substr(kChunk - 8192, 16384)) == "");
    CHECK(difference(preadAt(fd, 2 * kChunk - 8192, 16384),
                     model.substr(2 * kChunk - 8192, 16384)) == "");
    CHECK(firstDifference(path, model) == "");
    REQUIRE(close(fd) == 0);
    {
      ExtraMount cold(cluster, "mnt-cold");
      CHECK(firstDifference(cold.path + path.substr(cluster.mnt().size()), model) == "");
    }
  }
}

TEST_CASE(
    "fallocate: a punch over small writes still in the ec write log stays zero after the "
    "log is applied") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;  // ec(4,2)
  std::mt19937_64 rng(testSeed(424242));
  const size_t kSize = 8 * M;
  std::string model = randomBytes(rng, kSize);
  writeAll(cluster.mnt() + "/image", model);  // large writes: straight to the stripes
  // Mount A logs small writes and does not apply them on its own (for an hour); mount B
  // applies them after the default delay, so some applies race the punch.
  for (std::string delay : {"1h", "200ms"}) {
    CAPTURE(delay);
    ExtraMount a(cluster, "mnt-a", "", {"--ec-log-apply-delay", delay});
    int fd = open((a.path + "/image").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    const off_t lo = 1 * M + 333, hi = 5 * M + 4444;
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 40; ++i) {
        size_t n = 1 + rng() % 6000;
        size_t at = size_t(lo - 20'000) + rng() % size_t(hi - lo + 40'000 - off_t(n));
        std::string bytes = randomBytes(rng, n);
        pwriteAll(fd, bytes, off_t(at));
        model.replace(at, n, bytes);
        if (i % 8 == 7) REQUIRE(fdatasync(fd) == 0);  // logged for sure: acknowledged
      }
      off_t from = lo + off_t(rng() % 100'000), to = hi - off_t(rng() % 100'000);
      REQUIRE(falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, from, to - from) == 0);
      zero(model, from, to - from);
      CHECK(difference(preadAt(fd, 0, kSize), model) == "");
    }
    // The file is closed: A applies what is left of its log and gives its leases back.
    REQUIRE(close(fd) == 0);
    ExtraMount cold(cluster, "mnt-cold");
    CHECK(firstDifference(cold.path + "/image", model) == "");
  }
}

TEST_CASE("fallocate: ZERO_RANGE zeroes and grows the file, unless KEEP_SIZE") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::mt19937_64 rng(testSeed(777));
  std::string path = cluster.mnt() + "/image";
  std::string model = randomBytes(rng, kChunk + 3 * M);
  writeAll(path, model);
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  int r = falloc(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 3 * M + 17, 2 * M + 100);
  if (r == EOPNOTSUPP) {
    // Kernels before FUSE passed ZERO_RANGE on answer it themselves.
    MESSAGE("skipped: this kernel's FUSE does not pass FALLOC_FL_ZERO_RANGE on");
    close(fd);
    return;
  }
  REQUIRE(r == 0);
  zero(model, 3 * M + 17, 2 * M + 100);
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == off_t(model.size()));
  // Past the end with KEEP_SIZE: the size stays.
  REQUIRE(falloc(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, kChunk + 2 * M, 10 * M) == 0);
  zero(model, kChunk + 2 * M, 1 * M);
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == off_t(model.size()));
  // Without KEEP_SIZE: zeroes to the end and grows the file.
  REQUIRE(falloc(fd, FALLOC_FL_ZERO_RANGE, kChunk + 1 * M + 5, 10 * M) == 0);
  zero(model, kChunk + 1 * M + 5, 2 * M - 5);
  model.resize(kChunk + 11 * M + 5, '\0');
  REQUIRE(fstat(fd, &st) == 0);
  CHECK(st.st_size == off_t(model.size()));
  CHECK(difference(preadAt(fd, 0, model.size()), model) == "");
  REQUIRE(close(fd) == 0);
  ExtraMount cold(cluster, "mnt-cold");
  CHECK(firstDifference(cold.path + "/image", model) == "");
}

TEST_CASE(
    "fallocate: random writes, truncates, punches, zero ranges and reservations match a "
    "model — ec(4,2) and ec(3,2), whose stripes do not divide a chunk") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  uint64_t seed = testSeed(31415);
  for (std::string policy : {"ec(4,2)", "ec(3,2)"}) {
    CAPTURE(policy);
    std::string dir = cluster.mnt() + "/" + policy;
    REQUIRE(mkdir(dir.c_str(), 0755) == 0);
    REQUIRE(run({adminBin(), "policy", "set", dir, policy}).exitCode == 0);
    std::mt19937_64 rng(seed++);
    const off_t maxSize = 2 * kChunk + 8 * M;
    // Offsets near chunk, stripe and block edges as often as plain random ones.
    auto pick = [&]() -> off_t {
      switch (rng() % 4) {
        case 0:
          return off_t(rng() % uint64_t(maxSize));
        case 1:
          return off_t(rng() % 3) * kChunk + off_t(rng() % 400'000) - 200'000;
        case 2:
          return off_t(rng() % uint64_t(maxSize / (192 * 1024))) * 192 * 1024;
        default:
          return off_t(rng() % uint64_t(maxSize / 4096)) * 4096;
      }
    };
    std::string path = dir + "/model";
    std::string model;
    int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    std::string last;  // the last op, named when a check fails
    for (int op = 0; op < 120; ++op) {
      CAPTURE(op);
      CAPTURE(last);
      off_t off = std::clamp<off_t>(pick(), 0, maxSize - 1);
      off_t len =
          std::min<off_t>(1 + off_t(rng() % (rng() % 3 == 0 ? 70 * M : 300'000)), maxSize - off);
      unsigned kind = unsigned(rng() % 10);
      last = std::to_string(kind) + " at " + std::to_string(off) + " +" + std::to_string(len);
      if (kind < 4) {
        len = std::min<off_t>(len, 3 * M);
        std::string data = randomBytes(rng, size_t(len));
        pwriteAll(fd, data, off);
        if (model.size() < size_t(off + len)) model.resize(size_t(off + len), '\0');
        model.replace(size_t(off), size_t(len), data);
      } else if (kind < 7) {
        REQUIRE(falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0);
        if (size_t(off) < model.size()) {
          zero(model, off, std::min<off_t>(len, off_t(model.size()) - off));
        }
      } else if (kind == 7) {
        bool keep = rng() % 2 == 0;
        REQUIRE(falloc(fd, FALLOC_FL_ZERO_RANGE | (keep ? FALLOC_FL_KEEP_SIZE : 0), off, len) == 0);
        if (size_t(off) < model.size()) {
          zero(model, off, std::min<off_t>(len, off_t(model.size()) - off));
        }
        if (!keep && model.size() < size_t(off + len)) model.resize(size_t(off + len), '\0');
      } else if (kind == 8) {
        REQUIRE(falloc(fd, 0, off, len) == 0);
        if (model.size() < size_t(off + len)) model.resize(size_t(off + len), '\0');
      } else {
        off_t size = off_t(rng() % uint64_t(maxSize));
        REQUIRE(ftruncate(fd, size) == 0);
        model.resize(size_t(size), '\0');
      }
      if (op % 20 == 19) {
        struct stat st;
        REQUIRE(fstat(fd, &st) == 0);
        REQUIRE(st.st_size == off_t(model.size()));
        CHECK(difference(model.empty() ? "" : preadAt(fd, 0, model.size()), model) == "");
      }
    }
    REQUIRE(fsync(fd) == 0);
    REQUIRE(close(fd) == 0);
    CHECK(firstDifference(path, model) == "");
    ExtraMount cold(cluster, "mnt-cold");
    CHECK(firstDifference(cold.path + "/" + policy + "/model", model) == "");
  }
}

TEST_CASE(
    "fallocate: a punch with a chunk server down succeeds degraded — the range reads zeros "
    "with any one more server missing after it is back") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;  // ec(4,2) on 6 servers
  std::mt19937_64 rng(testSeed(99));
  std::string path = cluster.mnt() + "/image";
  std::string model = randomBytes(rng, 16 * M);
  writeAll(path, model);
  cluster.stopChunk(2, SIGKILL);
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(falloc(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * M + 5, 9 * M) == 0);
  zero(model, 3 * M + 5, 9 * M);
  CHECK(difference(preadAt(fd, 0, model.size()), model) == "");
  REQUIRE(fsync(fd) == 0);
  REQUIRE(close(fd) == 0);
  cluster.startChunk(2);
  REQUIRE(cluster.waitChunksUp(6));
  // The mount applies the punch's logged rows after the close returned (FUSE sends the release
  // later): a server stopped below while that runs would miss the apply, its shard stale too.
  REQUIRE(cluster.waitLogsApplied());
  // The server that missed the punch keeps the old bytes of its shard: it is stale and never
  // read, so any one more server may go and the rest still decode to the punched content.
  for (int down = 0; down < 6; ++down) {
    CAPTURE(down);
    cluster.stopChunk(down, SIGKILL);
    {
      ExtraMount r(cluster, "mnt-r");
      CHECK(firstDifference(r.path + "/image", model) == "");
    }
    cluster.startChunk(down);
    REQUIRE(cluster.waitChunksUp(6));
  }
}

TEST_CASE("du: a sparse file counts the MiBs written into it, on every mount") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::string path = cluster.mnt() + "/sparse";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  std::string block(4096, 'x');
  pwriteAll(fd, block, 0);
  pwriteAll(fd, block, 101 * M - 100);      // straddles MiBs 100 and 101
  pwriteAll(fd, block, 3 * kChunk + 7 * M);  // another chunk
  REQUIRE(ftruncate(fd, 4 * kChunk) == 0);
  REQUIRE(fsync(fd) == 0);
  REQUIRE(close(fd) == 0);
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(st.st_size == 4 * kChunk);
  CHECK(uint64_t(st.st_blocks) * 512 == 4 * uint64_t(M));
  auto du = run({"/usr/bin/du", "-k", path});
  REQUIRE(du.exitCode == 0);
  CHECK(du.output.rfind("4096\t", 0) == 0);
  // Another mount sees the same.
  ExtraMount other(cluster, "other");
  REQUIRE(stat((other.path + "/sparse").c_str(), &st) == 0);
  CHECK(uint64_t(st.st_blocks) * 512 == 4 * uint64_t(M));
}
