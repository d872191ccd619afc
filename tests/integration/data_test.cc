// Data through a real mount: random overwrites against a model, large files, holes.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <vector>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kChunk = 64 * kMiB;

void checkAgainstModel(const std::string& path, const std::string& model) {
  std::string got = readAll(path);
  REQUIRE(got.size() == model.size());
  if (got != model) {
    size_t i = 0;
    while (got[i] == model[i]) ++i;
    FAIL("first difference at byte " << i << " of " << model.size());
  }
}

// Offsets that exercise block, cell, stripe and chunk edges as often as plain random ones.
uint64_t pickOffset(std::mt19937_64& rng, uint64_t maxSize) {
  switch (rng() % 4) {
    case 0: return rng() % maxSize;
    case 1: return (rng() % (maxSize / kChunk + 1)) * kChunk + (rng() % 400'000) - 200'000;
    case 2: return (rng() % (maxSize / (256 * 1024))) * 256 * 1024 + rng() % 9000;
    default: return (rng() % (maxSize / 4096)) * 4096;
  }
}

void randomOpsAgainstModel(Cluster& cluster, const std::string& policy, uint64_t seed) {
  std::string dir = cluster.mnt() + "/" + policy;
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  auto set = run({adminBin(), "policy", "set", dir, policy});
  REQUIRE_MESSAGE(set.exitCode == 0, set.output);
  auto get = run({adminBin(), "policy", "get", dir});
  CHECK(get.output == policy + "\n");

  std::mt19937_64 rng(seed);
  const uint64_t maxSize = 140 * kMiB;  // three chunks
  std::string path = dir + "/model";
  std::string model;
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  std::deque<std::string> history;  // the last ops, printed when a check fails
  auto note = [&](std::string what) {
    history.push_back(std::move(what));
    if (history.size() > 12) history.pop_front();
  };
  auto recent = [&] {
    std::string all;
    for (auto& h : history) all += "\n  " + h;
    return all;
  };
  INFO("recent ops:" << recent());
  for (int op = 0; op < 240; ++op) {
    CAPTURE(op);
    unsigned kind = unsigned(rng() % 20);
    if (kind < 13) {
      uint64_t off = std::min(pickOffset(rng, maxSize), maxSize - 1);
      uint64_t len = 1 + rng() % (rng() % 4 == 0 ? 3 * kMiB : 70'000);
      len = std::min(len, maxSize - off);
      std::string data = randomBytes(rng, len);
      note(std::to_string(op) + ": pwrite " + std::to_string(off) + " +" + std::to_string(len));
      REQUIRE(pwrite(fd, data.data(), len, off_t(off)) == ssize_t(len));
      if (model.size() < off + len) model.resize(off + len, '\0');
      memcpy(&model[off], data.data(), len);
    } else if (kind < 15) {
      uint64_t size = rng() % 3 == 0 ? pickOffset(rng, maxSize) % maxSize : rng() % maxSize;
      note(std::to_string(op) + ": ftruncate " + std::to_string(size));
      REQUIRE(ftruncate(fd, off_t(size)) == 0);
      model.resize(size, '\0');
    } else if (kind < 18) {
      uint64_t off = model.empty() ? 0 : rng() % model.size();
      uint64_t len = 1 + rng() % (2 * kMiB);
      std::string buf(len, '\0');
      note(std::to_string(op) + ": pread " + std::to_string(off) + " +" + std::to_string(len) +
           " (model size " + std::to_string(model.size()) + ")");
      ssize_t n = pread(fd, buf.data(), len, off_t(off));
      REQUIRE(n >= 0);
      uint64_t expect = off >= model.size() ? 0 : std::min(len, model.size() - off);
      REQUIRE(uint64_t(n) == expect);
      CHECK(buf.compare(0, expect, model, off, expect) == 0);
    } else {
      // Close and reopen: write-back flushed, size committed, cached chunk map refreshed.
      note(std::to_string(op) + ": close, open");
      int rc = close(fd), e = errno;
      REQUIRE_MESSAGE(rc == 0, std::string(strerror(e)));
      fd = open(path.c_str(), O_RDWR);
      REQUIRE(fd >= 0);
      struct stat st;
      REQUIRE(fstat(fd, &st) == 0);
      CHECK(uint64_t(st.st_size) == model.size());
    }
  }
  int rc = fsync(fd), e = errno;
  REQUIRE_MESSAGE(rc == 0, std::string(strerror(e)));
  rc = close(fd), e = errno;
  REQUIRE_MESSAGE(rc == 0, std::string(strerror(e)));
  checkAgainstModel(path, model);
  // A fresh mount (cold caches, new session) sees the same bytes.
  cluster.unmount();
  cluster.mount();
  checkAgainstModel(path, model);
}

}  // namespace

TEST_CASE("data: random writes, overwrites and truncates on ec(4,2) match an in-memory model") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  randomOpsAgainstModel(cluster, "ec(4,2)", testSeed(20261125));
}

TEST_CASE("data: random writes, overwrites and truncates on replica(3) match an in-memory model") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  randomOpsAgainstModel(cluster, "replica(3)", testSeed(20261126));
}

TEST_CASE("data: random writes on ec(3,2), whose stripes do not divide a chunk, match a model") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.chunks = 5;
  Cluster cluster(o);
  randomOpsAgainstModel(cluster, "ec(3,2)", testSeed(20261127));
}

TEST_CASE("data: a 1 GiB file written through the mount reads back with the same sha256") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::string path = cluster.mnt() + "/big";
  std::string local = cluster.dir() + "/big.local";
  auto made = run({"/bin/bash", "-c",
                   "head -c 1073741824 /dev/urandom > " + local + " && cp " + local + " " + path},
                  900'000);
  REQUIRE_MESSAGE(made.exitCode == 0, made.output);
  std::string want = sha256(local);
  REQUIRE(want.size() == 64);
  CHECK(sha256(path) == want);
  cluster.unmount();  // cold read through a new mount
  cluster.mount();
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(st.st_size == 1073741824);
  CHECK(sha256(path) == want);
  unlink(local.c_str());
}

TEST_CASE("data: SEEK_DATA and SEEK_HOLE report a sparse file's chunks, cp keeps the holes") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::string path = cluster.mnt() + "/sparse";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  const off_t M = 1 << 20;
  // Chunk 0 and chunk 3 (192 MiB - 256 MiB) hold data; the rest is holes. The writes are still
  // buffered in the mount when the seeks come.
  REQUIRE(pwrite(fd, "head", 4, 0) == 4);
  REQUIRE(pwrite(fd, "tail", 4, 200 * M) == 4);
  const off_t size = 200 * M + 4;
  auto seek = [](int fd, off_t off, int whence) {
    errno = 0;
    off_t r = lseek(fd, off, whence);
    return r < 0 ? -errno : r;
  };
  auto checkMap = [&](int fd) {
    CHECK(seek(fd, 0, SEEK_DATA) == 0);
    CHECK(seek(fd, 100, SEEK_DATA) == 100);
    CHECK(seek(fd, 0, SEEK_HOLE) == 64 * M);
    CHECK(seek(fd, 64 * M, SEEK_HOLE) == 64 * M);
    CHECK(seek(fd, 64 * M, SEEK_DATA) == 192 * M);
    CHECK(seek(fd, 150 * M, SEEK_DATA) == 192 * M);
    CHECK(seek(fd, 192 * M, SEEK_HOLE) == size);  // the end is a hole
    CHECK(seek(fd, size - 1, SEEK_DATA) == size - 1);
    CHECK(seek(fd, size, SEEK_DATA) == -ENXIO);
    CHECK(seek(fd, size, SEEK_HOLE) == -ENXIO);
    CHECK(seek(fd, -1, SEEK_DATA) == -EINVAL);
  };
  checkMap(fd);
  REQUIRE(close(fd) == 0);
  {
    ExtraMount other(cluster, "mnt-b");  // cold caches
    int fd2 = open((other.path + "/sparse").c_str(), O_RDONLY);
    REQUIRE(fd2 >= 0);
    checkMap(fd2);
    close(fd2);
  }
  // A file of holes only: no data anywhere, a hole at 0. Then 16 TiB with data at the end.
  std::string empty = cluster.mnt() + "/holes";
  fd = open(empty.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, 1024 * M) == 0);
  CHECK(seek(fd, 0, SEEK_DATA) == -ENXIO);
  CHECK(seek(fd, 0, SEEK_HOLE) == 0);
  const off_t huge = off_t(16) << 40;
  REQUIRE(ftruncate(fd, huge) == 0);
  REQUIRE(pwrite(fd, "end", 3, huge - 3) == 3);
  CHECK(seek(fd, 0, SEEK_DATA) == huge - 64 * M);
  CHECK(seek(fd, huge - 64 * M, SEEK_HOLE) == huge);
  REQUIRE(close(fd) == 0);
  struct stat st;
  REQUIRE(stat(empty.c_str(), &st) == 0);
  CHECK(st.st_size == huge);
  // cp keeps the holes (coreutils looks for them with SEEK_HOLE and, in a file that looks sparse,
  // for runs of zeros): the copy on the local disk is identical and as sparse.
  std::string copy = cluster.dir() + "/sparse-copy";
  auto cp = run({"/bin/cp", "--sparse=auto", path, copy});
  REQUIRE_MESSAGE(cp.exitCode == 0, cp.output);
  CHECK(readAll(copy) == readAll(path));
  REQUIRE(stat(copy.c_str(), &st) == 0);
  MESSAGE("cp of a " << size << "-byte file with two 4-byte writes takes " << st.st_blocks * 512
                     << " bytes on the local disk");
  CHECK(st.st_blocks * 512 < 140 * M);  // the hole between the chunks was skipped
}

TEST_CASE("data: unwritten ranges read as zeros and take no space on the chunk servers") {
  TESSERA_REQUIRE_FUSE();
  Cluster cluster;
  std::string path = cluster.mnt() + "/sparse";
  int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  const off_t far = off_t(5) * 1024 * 1024 * 1024;  // 5 GiB: chunk 80
  REQUIRE(pwrite(fd, "tail", 4, far) == 4);
  REQUIRE(pwrite(fd, "head", 4, 0) == 4);
  REQUIRE(close(fd) == 0);
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK(st.st_size == far + 4);
  fd = open(path.c_str(), O_RDONLY);
  std::string buf(1 << 20, 'x');
  REQUIRE(pread(fd, buf.data(), buf.size(), 3 * 1024 * 1024) == ssize_t(buf.size()));
  CHECK(buf == std::string(buf.size(), '\0'));
  REQUIRE(pread(fd, buf.data(), 8, far - 4) == 8);
  CHECK(buf.substr(0, 8) == std::string("\0\0\0\0tail", 8));
  close(fd);
  // Two chunks of ec(4,2) with a 4-byte write each: a few blocks per shard file, not gigabytes.
  auto du = sh("find " + cluster.dir() + "/chunk*/shards -type f -printf '%b\\n' | "
               "awk '{s+=$1} END {print s*512}'");
  REQUIRE(du.exitCode == 0);
  MESSAGE("shard files of a 5 GiB sparse file use " << du.output.substr(0, du.output.size() - 1)
                                                     << " bytes");
  CHECK(std::stoll(du.output) < 1024 * 1024);
}
