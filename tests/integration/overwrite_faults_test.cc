// Random overwrites checked against a model while chunk servers are killed -9 and restarted
// (issue 4): writes go on degraded while a server is down (the shards it misses become stale),
// nothing acknowledged is lost, and every byte reads back as the model says.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <thread>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

struct Region {
  std::string path;
  off_t base = 0;
  size_t size = 0;
  std::string model;  // what the region must read back as
};

void overwritesUnderServerKills(uint64_t seed) {
  Cluster::Options o;
  o.chunks = 7;  // one down still leaves 6 for placing ec(4,2) chunks
  o.ioTimeout = "5s";
  Cluster cluster(o);
  REQUIRE(cluster.waitChunksUp(7));
  std::mt19937_64 rng(seed);

  const size_t kFile = 12 << 20;
  std::vector<std::string> files;
  for (std::string policy : {"ec(4,2)", "replica(3)"}) {
    std::string dir = cluster.mnt() + "/" + policy;
    REQUIRE(mkdir(dir.c_str(), 0755) == 0);
    auto set = run({adminBin(), "policy", "set", dir, policy});
    REQUIRE_MESSAGE(set.exitCode == 0, set.output);
    files.push_back(dir + "/image");
  }
  // Two writers per file, each in its own half, so that the model of each is exact.
  std::vector<Region> regions;
  for (auto& path : files) {
    std::string content = randomBytes(rng, kFile);
    writeAll(path, content);
    for (int half = 0; half < 2; ++half) {
      regions.push_back(Region{path, off_t(half * kFile / 2), kFile / 2,
                               content.substr(half * kFile / 2, kFile / 2)});
    }
  }

  std::atomic<bool> stop{false};
  std::atomic<long> writes{0};
  std::mutex failMutex;
  std::string failure;
  std::vector<std::thread> writers;
  for (size_t w = 0; w < regions.size(); ++w) {
    uint64_t wseed = rng();
    writers.emplace_back([&, w, wseed] {
      Region& r = regions[w];
      std::mt19937_64 wr(wseed);
      int fd = open(r.path.c_str(), O_RDWR);
      auto fail = [&](const std::string& what) {
        std::lock_guard<std::mutex> lock(failMutex);
        if (failure.empty()) failure = r.path + ": " + what + ": " + strerror(errno);
      };
      if (fd < 0) return fail("open");
      while (!stop) {
        // 4 KiB .. 1 MiB, unaligned.
        size_t n = 4096 + wr() % ((1 << 20) - 4096);
        if (wr() % 3) n = 1 + wr() % 20'000;
        size_t at = wr() % (r.size - n);
        std::string bytes = randomBytes(wr, n);
        if (pwrite(fd, bytes.data(), n, r.base + off_t(at)) != ssize_t(n)) return fail("pwrite");
        r.model.replace(at, n, bytes);
        if (wr() % 5 == 0 && fdatasync(fd) != 0) return fail("fdatasync");
        ++writes;
      }
      if (fsync(fd) != 0) fail("final fsync");
      if (close(fd) != 0) fail("close");
    });
  }

  // The killer: one server at a time, at random moments, down for a random while. Two servers
  // take turns, so no chunk ever misses more shards than ec(4,2) or replica(3) can lose.
  int victims[2] = {int(rng() % 7), 0};
  victims[1] = int((victims[0] + 1 + rng() % 6) % 7);
  for (int round = 0; round < 4; ++round) {
    usleep(useconds_t(200'000 + rng() % 800'000));
    int v = victims[round % 2];
    MESSAGE("round " << round << ": killing chunk server " << v << " after " << writes.load()
                     << " writes");
    cluster.stopChunk(v, SIGKILL);
    usleep(useconds_t(300'000 + rng() % 1'200'000));
    cluster.startChunk(v);
    REQUIRE(cluster.waitChunksUp(7));
  }
  usleep(500'000);
  stop = true;
  for (auto& t : writers) t.join();
  MESSAGE(writes.load() << " writes in all");
  REQUIRE_MESSAGE(failure.empty(), failure);

  // Every byte as the model says, through a mount that never saw the writes.
  ExtraMount fresh(cluster, "mnt-check");
  for (auto& r : regions) {
    std::string name = r.path.substr(cluster.mnt().size());
    std::string got = readAll(fresh.path + name);
    REQUIRE(got.size() == kFile);
    CAPTURE(name);
    CAPTURE(r.base);
    CHECK((got.compare(size_t(r.base), r.size, r.model) == 0));
  }
}

}  // namespace

TEST_CASE("faults: random overwrites on ec(4,2) and replica(3) while chunk servers are killed and restarted") {
  TESSERA_REQUIRE_FUSE();
  overwritesUnderServerKills(testSeed(20261125));
}
