// Write leases (DESIGN.md rule 3) with real processes: a mount frozen with SIGSTOP loses its
// lease to a second mount once it has been silent past the lease timeout; when it thaws, the
// chunk servers refuse what it still had to write (its process sees EIO) and the new writer's
// data stays intact. A live holder gives a lease back when another mount asks for it.
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

using Clock = std::chrono::steady_clock;

std::string slurpFile(const std::string& path) {
  try {
    return readAll(path);
  } catch (...) {
    return "";
  }
}

void leaseTakeover(const std::string& policy) {
  CAPTURE(policy);
  Cluster::Options o;
  o.policy = policy;
  o.metaArgs = {"--lease-timeout", "2s"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(4242));
  const size_t kSize = 3 << 20;
  std::string first = randomBytes(rng, kSize), stale = randomBytes(rng, kSize),
              fresh = randomBytes(rng, kSize);

  ExtraMount a(cluster, "mnt-a");
  ExtraMount b(cluster, "mnt-b");
  std::string pathA = a.path + "/image", pathB = b.path + "/image";

  // A writes and syncs: it holds the write leases of the file's chunk.
  int fdA = open(pathA.c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fdA >= 0);
  pwriteAll(fdA, first, 0);
  REQUIRE(fsync(fdA) == 0);

  // A freezes with a write and an fsync on their way to it.
  a.process.signal(SIGSTOP);
  std::atomic<int> staleErrno{-1};
  std::thread staleWriter([&] {
    int err = 0;
    if (pwrite(fdA, stale.data(), stale.size(), 0) != ssize_t(stale.size())) err = errno;
    if (err == 0 && fsync(fdA) != 0) err = errno;
    staleErrno = err;
  });

  // B wants to write the same bytes: it waits while A's lease is alive, takes it over once A
  // has been silent past the lease timeout, and its data is durable.
  auto started = Clock::now();
  int fdB = open(pathB.c_str(), O_RDWR);
  REQUIRE(fdB >= 0);
  pwriteAll(fdB, fresh, 0);
  REQUIRE(fsync(fdB) == 0);
  REQUIRE(close(fdB) == 0);
  MESSAGE("B took over the lease and synced after "
          << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count()
          << " ms");
  CHECK(staleErrno == -1);  // A is still frozen: its write has not come back

  // A thaws: whatever it still sends carries the old epoch and is refused; its process hears EIO.
  a.process.signal(SIGCONT);
  staleWriter.join();
  CHECK(staleErrno == EIO);
  close(fdA);

  // The new writer's data is what every reader sees, through a mount that never cached it.
  ExtraMount c(cluster, "mnt-c");
  std::string got = slurpFile(c.path + "/image");
  CHECK(got.size() == kSize);
  CHECK((got == fresh));
  CHECK(slurpFile(a.log).find("was taken over by another writer") != std::string::npos);
}

}  // namespace

TEST_CASE("leases: a frozen writer loses its lease and is fenced out, ec(4,2)") {
  TESSERA_REQUIRE_FUSE();
  leaseTakeover("ec(4,2)");
}

TEST_CASE("leases: a frozen writer loses its lease and is fenced out, replica(3)") {
  TESSERA_REQUIRE_FUSE();
  leaseTakeover("replica(3)");
}

TEST_CASE("leases: a writer killed in a stream of partial-stripe writes leaves consistent stripes") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;  // ec(4,2) on 6 servers
  o.metaArgs = {"--lease-timeout", "2s"};
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  std::mt19937_64 rng(testSeed(777));
  const size_t kSize = 8 << 20;
  writeAll(cluster.mnt() + "/disk", randomBytes(rng, kSize));

  // Mount A: four threads write small unaligned pieces at random places (every one a
  // read-modify-write of a partial stripe) until A is killed -9 in the middle of them.
  {
    ExtraMount a(cluster, "mnt-a");
    int fd = open((a.path + "/disk").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    std::atomic<bool> stop{false};
    std::atomic<long> writes{0};
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t) {
      writers.emplace_back([&, t] {
        std::mt19937_64 r(rng() + uint64_t(t));
        while (!stop) {
          size_t n = 1 + r() % 12'000;
          off_t at = off_t(r() % (kSize - n));
          std::string bytes = randomBytes(r, n);
          if (pwrite(fd, bytes.data(), n, at) != ssize_t(n)) break;
          if (r() % 4 == 0 && fdatasync(fd) != 0) break;
          ++writes;
        }
      });
    }
    bool busy = false;
    for (int i = 0; i < 2000 && !(busy = writes >= 200); ++i) usleep(10'000);  // bounded: 20 s
    a.process.signal(SIGKILL);
    a.process.wait(5'000);
    stop = true;
    for (auto& w : writers) w.join();
    close(fd);
    MESSAGE(writes.load() << " writes through A before it was killed");
    REQUIRE(busy);
  }

  // The next writer (mount B) takes the lease over once A's has lapsed, re-syncs the chunk
  // before its own first write, and writes.
  {
    int fd = open((cluster.mnt() + "/disk").c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    REQUIRE(pwrite(fd, "B", 1, 12'345) == 1);
    REQUIRE(fsync(fd) == 0);
    close(fd);
  }
  CHECK(readAll(cluster.dir() + "/mount.log").find("re-syncing") != std::string::npos);

  // Every stripe decodes to what its data shards say: a reader that must rebuild two shards
  // of every row from parity reads exactly what a reader of the data shards read.
  std::string whole;
  {
    ExtraMount c(cluster, "mnt-c");
    whole = readAll(c.path + "/disk");
  }
  REQUIRE(whole.size() == kSize);
  CHECK(whole[12'345] == 'B');
  cluster.stopChunk(0, SIGKILL);
  cluster.stopChunk(1, SIGKILL);
  ExtraMount d(cluster, "mnt-d");
  std::string degraded = readAll(d.path + "/disk");
  CHECK(degraded.size() == kSize);
  CHECK((degraded == whole));
}

TEST_CASE("leases: a live holder gives its lease back when another mount wants to write") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.chunks = 3;
  o.policy = "replica(3)";
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(3));
  // A keeps its leases of an open file for 10 minutes of idleness: only a recall takes one away.
  ExtraMount a(cluster, "mnt-a", "", {"--lease-idle", "600s"});
  ExtraMount b(cluster, "mnt-b");
  int fdA = open((a.path + "/image").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fdA >= 0);
  pwriteAll(fdA, std::string(1 << 20, 'a'), 0);
  REQUIRE(fsync(fdA) == 0);

  // B writes the same chunk while A, alive and idle, holds it open with the lease.
  auto started = Clock::now();
  int fdB = open((b.path + "/image").c_str(), O_RDWR);
  REQUIRE(fdB >= 0);
  pwriteAll(fdB, std::string(4096, 'b'), 0);
  REQUIRE(fsync(fdB) == 0);
  MESSAGE("B got the lease from the live holder and synced after "
          << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count()
          << " ms");
  REQUIRE(close(fdB) == 0);
  // A gave it back cleanly: it was not taken over, and A reads B's bytes and writes again.
  std::string head(4096, '\0');
  REQUIRE(pread(fdA, head.data(), head.size(), 0) == ssize_t(head.size()));
  CHECK(head == std::string(4096, 'b'));
  pwriteAll(fdA, std::string(4096, 'c'), 4096);
  CHECK(fsync(fdA) == 0);
  CHECK(close(fdA) == 0);
  CHECK(slurpFile(a.log).find("was taken over by another writer") == std::string::npos);
}

// A truncate or a punch through one mount drops whole chunks that another mount holds the
// write lease of. The holder must not go on writing into the dropped chunk under its old
// lease (the chunk servers would take the bytes, and no file would name them): its next write
// takes a lease again, in a new chunk, and every mount reads it.
TEST_CASE("leases: a chunk dropped by a truncate or punch on another mount takes its lease along") {
  TESSERA_REQUIRE_FUSE();
  for (std::string policy : {"ec(4,2)", "replica(3)"}) {
    for (bool punch : {false, true}) {
      CAPTURE(policy);
      CAPTURE(punch);
      Cluster::Options o;
      o.policy = policy;
      Cluster cluster(o);
      REQUIRE(cluster.waitChunksUp(6));
      ExtraMount a(cluster, "mnt-a");
      // B keeps its leases while the file is open: only a recall or the drop takes one away.
      ExtraMount b(cluster, "mnt-b", "", {"--lease-idle", "600s"});
      const uint64_t kChunk = 64ull << 20;
      int fdB = open((b.path + "/image").c_str(), O_RDWR | O_CREAT, 0644);
      REQUIRE(fdB >= 0);
      pwriteAll(fdB, std::string(4096, 'h'), 0);
      pwriteAll(fdB, std::string(1 << 20, 'b'), kChunk);
      REQUIRE(fsync(fdB) == 0);

      // A drops chunk 1 (B holds its lease): truncate to 4 KiB, or punch the whole chunk.
      std::string pathA = a.path + "/image";
      if (punch) {
        int fdA = open(pathA.c_str(), O_RDWR);
        REQUIRE(fdA >= 0);
        REQUIRE(fallocate(fdA, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(kChunk),
                          off_t(kChunk)) == 0);
        REQUIRE(close(fdA) == 0);
      } else {
        REQUIRE(truncate(pathA.c_str(), 4096) == 0);
      }

      // B writes into chunk 1 again and syncs: acknowledged, so every mount must read it.
      pwriteAll(fdB, std::string(8192, 'n'), kChunk + 4096);
      REQUIRE(fsync(fdB) == 0);
      REQUIRE(close(fdB) == 0);

      int fdA = open(pathA.c_str(), O_RDONLY);
      REQUIRE(fdA >= 0);
      struct stat st {};
      REQUIRE(fstat(fdA, &st) == 0);
      CHECK(uint64_t(st.st_size) >= kChunk + 4096 + 8192);
      std::string got(8192, '\0');
      CHECK(pread(fdA, got.data(), got.size(), off_t(kChunk + 4096)) == ssize_t(got.size()));
      CHECK(got == std::string(8192, 'n'));
      // What the drop took reads as zeros.
      std::string before(4096, 'x');
      CHECK(pread(fdA, before.data(), before.size(), off_t(kChunk)) == ssize_t(before.size()));
      CHECK(before == std::string(4096, '\0'));
      REQUIRE(close(fdA) == 0);
    }
  }
}

// An unmount right after the last close: the kernel's release of the file may still be on its
// way, and the mount may still hold the chunk's write lease and unapplied write-log records.
// The mount finishes them before it exits, so the next mount to write the chunk finds nothing
// left behind: it neither waits for the lease to expire nor re-syncs the chunk. Left behind,
// both show in its log, as they did before (the next write waited out the lease timeout).
TEST_CASE("leases: a mount unmounted right after a close hands its leases back") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.policy = "ec(4,2)";
  o.mount = false;
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(6));
  uint64_t seed = testSeed(77);
  std::mt19937_64 rng(seed);
  const size_t kSize = 4 << 20;
  std::string model = randomBytes(rng, kSize);
  {
    ExtraMount a(cluster, "mnt-a");
    writeAll(a.path + "/image", model);
    // Small O_DIRECT writes: through the chunk's write log, applied in the background.
    int fd = open((a.path + "/image").c_str(), O_RDWR | O_DIRECT);
    REQUIRE(fd >= 0);
    void* buf = nullptr;
    REQUIRE(posix_memalign(&buf, 4096, 4096) == 0);
    for (int i = 0; i < 200; ++i) {
      size_t off = (rng() % (kSize / 4096)) * 4096;
      std::string block = randomBytes(rng, 4096);
      memcpy(buf, block.data(), 4096);
      REQUIRE(pwrite(fd, buf, 4096, off_t(off)) == 4096);
      model.replace(off, 4096, block);
    }
    free(buf);
    REQUIRE(close(fd) == 0);
    auto r = run({"/usr/bin/fusermount3", "-u", a.path}, 10'000);
    REQUIRE_MESSAGE(r.exitCode == 0, r.output);
    REQUIRE_MESSAGE(a.process.wait(60'000) == 0, slurpFile(a.log));
    CHECK(slurpFile(a.log).find("unmount: gave up") == std::string::npos);
  }
  ExtraMount b(cluster, "mnt-b");
  int fd = open((b.path + "/image").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  std::string block = randomBytes(rng, 4096);
  pwriteAll(fd, block, 8192);
  REQUIRE(fsync(fd) == 0);
  REQUIRE(close(fd) == 0);
  model.replace(8192, 4096, block);
  CHECK((readAll(b.path + "/image") == model));
  std::string log = slurpFile(b.log);
  CHECK_MESSAGE(log.find("let go uncleanly") == std::string::npos, log);
  CHECK_MESSAGE(log.find("records its last writer left") == std::string::npos, log);
}
